//! forecast-api on a Redis Cluster (3 primaries, 3 replicas, on loopback): the log split into
//! partitions spread over the primaries, each event in its channel's partition exactly once,
//! each channel's events in order, and `WAIT` answered by the primary that took the write.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};

use protocol::partition::{Partitions, key_slot};
use testkit::eventually;
use testkit::forecast_process::{ADMIN_KEY, Api, DbKind, ForecastBuilder, TestDb};
use testkit::redis_cluster::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_to_their_channels_partition_once_and_in_order_with_partitions_on_every_primary() {
    const PARTITIONS: u32 = 3;
    let cluster = RedisCluster::start(3, 1);
    let db = TestDb::new(DbKind::Sqlite).await;
    // The URL is not used in cluster mode (it could carry credentials).
    let process = ForecastBuilder::new(&db, "redis://127.0.0.1:1")
        .env("REDIS__CLUSTER__NODES", cluster.seed_nodes()[..2].join(","))
        .env("REDIS__LOG_PARTITIONS", PARTITIONS)
        .env("REDIS__MIN_REPLICAS", 1)
        .start();
    process.wait_ready().await;
    let api = Api::new(&process);

    let mut forecasts = Vec::new();
    for n in 0..6 {
        forecasts.push(api.create("2026-11-23", n, "Created").await);
    }
    for (n, forecast) in forecasts.iter().enumerate() {
        let path = format!("/api/weatherforecast/{}", forecast["id"].as_str().unwrap());
        let updated = api
            .put(&path, ADMIN_KEY)
            .json(&json!({ "date": "2026-11-24", "temperatureC": 50 + n, "summary": "Updated" }))
            .send()
            .await
            .unwrap();
        assert_eq!(updated.status(), 200);
    }
    let key = api
        .post("/api/admin/apikeys", ADMIN_KEY)
        .json(&json!({ "name": "ci", "scopes": ["forecasts:write"] }));
    assert_eq!(key.send().await.unwrap().status(), 201);
    let partitions = Partitions::cluster(PARTITIONS);
    let mut connection = cluster.client().get_connection().unwrap();
    // The pending gauge alone could say 0 before the dispatcher first looked: wait for the
    // events themselves.
    eventually(Duration::from_secs(20), "13 events in the log", || {
        let logged: usize = (0..PARTITIONS)
            .map(|partition| {
                let log = partitions.log_key("sse:log", partition);
                redis::cmd("XLEN").arg(&log).query::<usize>(&mut connection).unwrap()
            })
            .sum();
        std::future::ready((logged >= 13).then_some(()))
    })
    .await;
    process.wait_metric("forecast_api_outbox_pending", |pending| pending == 0.0).await;
    assert_eq!(
        process.metric("forecast_api_outbox_unreplicated_total").await,
        0.0,
        "WAIT reached the right primaries"
    );
    let mut by_event: HashMap<String, u32> = HashMap::new();
    let mut channels_per_partition: Vec<HashSet<String>> = vec![HashSet::new(); PARTITIONS as usize];
    let mut updates_in_order = Vec::new();
    let mut primaries = HashSet::new();
    for partition in 0..PARTITIONS {
        let log = partitions.log_key("sse:log", partition);
        primaries.insert(cluster.primary_for_slot(key_slot(log.as_bytes())));
        let entries: Vec<(String, HashMap<String, String>)> =
            redis::cmd("XRANGE").arg(&log).arg("-").arg("+").query(&mut connection).unwrap();
        for (_, fields) in entries {
            let channel = fields["ch"].clone();
            assert_eq!(partitions.of_channel(channel.as_bytes()), partition, "{channel} is in its partition");
            let envelope: Value = serde_json::from_str(&fields["m"]).unwrap();
            let event_id = envelope["event_id"].as_str().unwrap().to_owned();
            assert!(by_event.insert(event_id, partition).is_none(), "each event once");
            if channel == "weatherforecast.updated" {
                updates_in_order.push(envelope["data"]["temperatureC"].as_i64().unwrap());
            }
            channels_per_partition[partition as usize].insert(channel);
        }
    }
    assert_eq!(
        by_event.len(),
        6 + 6 + 1,
        "every event is in the log; the cluster:\n{}\nforecast-api logged:\n{}",
        cluster.describe(),
        process.logs().join("\n")
    );
    assert_eq!(updates_in_order, (50..56).collect::<Vec<_>>(), "a channel's events stay in order");
    assert_eq!(primaries.len(), 3, "the partitions are spread over the three primaries");
}

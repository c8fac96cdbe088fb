use std::collections::HashSet;

use serde_json::{Value, json};

use testkit::event_tap::EventTap;
use testkit::forecast_process::{ADMIN_KEY, DbKind, TestApi};

on_both_databases!(writes_succeed_while_redis_is_down_and_every_event_goes_out_once_in_order_after);

async fn writes_succeed_while_redis_is_down_and_every_event_goes_out_once_in_order_after(db: DbKind) {
    let TestApi { mut redis, db: _db, process, api } = TestApi::start(db).await;
    let forecast = api.create("2026-11-23", 0, "Before").await;
    let path = format!("/api/weatherforecast/{}", forecast["id"].as_str().unwrap());
    process
        .wait_metric("forecast_api_events_published_total{channel=\"weatherforecast.created\"}", |n| n == 1.0)
        .await;

    redis.kill();
    // A burst of writes: creates and updates of one forecast, all answered 2xx.
    let mut expected = Vec::new();
    for i in 1..=20 {
        if i % 2 == 0 {
            let response = api
                .put(&path, ADMIN_KEY)
                .json(&json!({ "date": "2026-11-23", "temperatureC": i, "summary": "Updated" }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "update {i} while Redis is down");
            expected.push(("weatherforecast.updated".to_owned(), i));
        } else {
            api.create("2026-11-24", i, "Created").await;
            expected.push(("weatherforecast.created".to_owned(), i));
        }
    }
    assert_eq!(process.get("/readyz").await.status(), 200, "Redis being down does not make the API unready");
    process.wait_metric("forecast_api_outbox_pending", |pending| pending == 20.0).await;
    assert!(process.metric("forecast_api_outbox_publish_failures_total").await >= 1.0);

    redis.restart();
    let tap = EventTap::log(&redis).await;
    process.wait_metric("forecast_api_outbox_pending", |pending| pending == 0.0).await;
    let messages = tap.wait_for(20).await;

    let received: Vec<(String, i64)> = messages
        .iter()
        .map(|m| (m.channel.clone(), m.json()["data"]["temperatureC"].as_i64().unwrap()))
        .collect();
    assert_eq!(received, expected, "every event, once, in write order");
    let event_ids: HashSet<String> =
        messages.iter().map(|m| m.json()["event_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(event_ids.len(), 20);
    let log_length: i64 = redis::cmd("XLEN").arg("sse:log").query(&mut redis.connection()).unwrap();
    assert_eq!(log_length, 20);
    let versions: Vec<i64> = messages
        .iter()
        .filter(|m| m.channel == "weatherforecast.updated")
        .map(|m| m.json()["data"]["temperatureC"].as_i64().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "updates of one forecast stay in order: {versions:?}");
    let _: Value = api.get(&path).send().await.unwrap().json().await.unwrap();
}

/// With `redis.min_replicas`, a row is done only once a replica holds its event: until then the
/// event is published again and again (and logged once, thanks to its dedup key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_no_replica_confirmed_stays_in_the_outbox_until_one_does() {
    use testkit::redis_server::{RedisConfig, RedisServer};

    let TestApi { redis, db: _db, process, api } = TestApi::with(DbKind::Sqlite, |api| {
        api.env("REDIS__MIN_REPLICAS", 1).env("REDIS__WAIT_TIMEOUT_MS", 100)
    })
    .await;
    let tap = EventTap::log(&redis).await;
    api.create("2026-12-04", 7, "Unconfirmed").await;
    process.wait_metric("forecast_api_outbox_unreplicated_total", |n| n >= 3.0).await;
    assert_eq!(process.metric("forecast_api_outbox_pending").await, 1.0, "kept while no replica confirms");
    assert_eq!(tap.messages().len(), 1, "published again, logged once");

    let _replica = RedisServer::start_configured(RedisConfig {
        replica_of: Some(redis.port()),
        ..RedisConfig::default()
    });
    process.wait_metric("forecast_api_outbox_pending", |pending| pending == 0.0).await;
    let log_length: i64 = redis::cmd("XLEN").arg("sse:log").query(&mut redis.connection()).unwrap();
    assert_eq!(log_length, 1);
}

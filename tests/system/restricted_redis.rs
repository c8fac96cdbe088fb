//! A managed Redis without PSUBSCRIBE, WAIT, FUNCTION, CLIENT, CONFIG and KEYS (ElastiCache
//! Serverless and the like), played by a `redis-server` with those commands renamed away: with
//! `redis.restricted`, both services work — envelope channels end to end with resume, raw
//! channels by exact name.

use std::time::Duration;

use serde_json::json;

use testkit::forecast_process::{ADMIN_KEY, Api, DbKind, ForecastBuilder, TestDb};
use testkit::redis_server::{RedisConfig, RedisServer};
use testkit::relay_process::RelayBuilder;

const WAIT: Duration = Duration::from_secs(15);

const DISABLED: [&str; 6] = ["PSUBSCRIBE", "WAIT", "FUNCTION", "CLIENT", "CONFIG", "KEYS"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_work_on_a_redis_without_admin_commands_or_pattern_subscriptions() {
    let redis = RedisServer::start_configured(RedisConfig {
        disabled_commands: DISABLED.iter().map(|name| (*name).to_owned()).collect(),
        ..RedisConfig::default()
    });
    let refused: redis::RedisResult<()> =
        redis::cmd("CONFIG").arg("GET").arg("maxmemory").query(&mut redis.connection());
    assert!(refused.is_err(), "CONFIG is gone from this Redis");

    let db = TestDb::new(DbKind::Sqlite).await;
    let api_process = ForecastBuilder::new(&db, redis.url()).env("REDIS__RESTRICTED", true).start();
    api_process.wait_ready().await;
    let api = Api::new(&api_process);
    let relay = RelayBuilder::new(redis.url())
        .channels(
            "[[channels]]\npattern = \"weatherforecast.*\"\nformat = \"envelope\"\n\n\
             [[channels]]\npattern = \"alerts.fire\"\nformat = \"raw\"\n",
        )
        .env("REDIS__RESTRICTED", true)
        .start();
    relay.wait_ready().await;

    let mut stream = relay.open_stream("").await;
    let created = api.create("2026-11-23", 21, "Mild").await;
    let event = stream.next_event(WAIT).await;
    assert_eq!(event.event.as_deref(), Some("weatherforecast.created"));
    let first_id = event.id.expect("an envelope event carries its log id");
    assert!(event.data.unwrap().contains(created["id"].as_str().unwrap()));

    // A raw channel by its exact name, through SUBSCRIBE.
    assert_eq!(redis.publish("alerts.fire", "evacuate"), 1, "the relay subscribed by name");
    let raw = stream.next_event(WAIT).await;
    assert_eq!((raw.event.as_deref(), raw.data.as_deref()), (Some("alerts.fire"), Some("evacuate")));

    // Resume from the log.
    let path = format!("/api/weatherforecast/{}", created["id"].as_str().unwrap());
    let updated = api
        .put(&path, ADMIN_KEY)
        .json(&json!({ "date": "2026-11-24", "temperatureC": 22 }))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    let (mut resumed, _) = relay.resume_stream("", Some(&first_id)).await;
    assert_eq!(resumed.next_event(WAIT).await.event.as_deref(), Some("weatherforecast.updated"));
    // The dispatcher counts what is left after the batch it published: it may lag the event.
    api_process.wait_metric("forecast_api_outbox_pending", |pending| pending == 0.0).await;
}

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
    // The oldest waiting event is the first written, before this test's twenty writes ended.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let oldest = process.metric("forecast_api_outbox_oldest_event_timestamp_seconds").await;
    assert!(
        oldest > now - 60.0 && oldest <= now,
        "the oldest waiting event was written at {oldest}, now {now}"
    );

    redis.restart();
    let tap = EventTap::log(&redis).await;
    process.wait_metric("forecast_api_outbox_pending", |pending| pending == 0.0).await;
    assert_eq!(process.metric("forecast_api_outbox_oldest_event_timestamp_seconds").await, 0.0, "none waits");
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

/// While PostgreSQL cannot be reached, requests that need it get `503` with `Retry-After` and a
/// problem body — after the first one found it so, at once rather than after the connection
/// timeout each — and work again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_a_prompt_503_with_retry_after_until_it_returns() {
    const CONNECT_TIMEOUT_MS: u64 = 3_000;
    let redis = testkit::redis_server::RedisServer::start();
    let db = testkit::forecast_process::TestDb::new(DbKind::Postgres).await;
    let (host_port, rest) = db.url.strip_prefix("postgres://postgres@").unwrap().split_once('/').unwrap();
    let proxy = testkit::proxy::WedgingProxy::start(host_port.parse().unwrap()).await;
    let through_proxy = format!("postgres://postgres@{}/{rest}", proxy.addr());
    let process = testkit::forecast_process::ForecastBuilder::new(&db, redis.url())
        .env("DATABASE__URL", &through_proxy)
        .env("DATABASE__CONNECT_TIMEOUT_MS", CONNECT_TIMEOUT_MS)
        .start();
    process.wait_ready().await;
    let api = testkit::forecast_process::Api::new(&process);
    api.create("2026-11-23", 1, "Before").await;

    proxy.go_down();
    let write = || {
        api.post("/api/weatherforecast", ADMIN_KEY)
            .json(&json!({ "date": "2026-11-24", "temperatureC": 2, "summary": "During" }))
            .send()
    };
    // The first request finds the database unreachable (within the connection timeout).
    let first = write().await.unwrap();
    assert_eq!(first.status(), 503);
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let response = write().await.unwrap();
        let took = started.elapsed();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "2");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains("database is unreachable"), "{problem}");
        assert!(
            took < std::time::Duration::from_millis(CONNECT_TIMEOUT_MS / 2),
            "refused without waiting for a connection: {took:?}"
        );
    }
    let reads = api.get("/api/weatherforecast").send().await.unwrap();
    assert_eq!(reads.status(), 503, "reads need the database too");
    assert_eq!(process.get("/readyz").await.status(), 503);

    proxy.come_back();
    testkit::eventually(std::time::Duration::from_secs(20), "writes to work again", || async {
        (write().await.ok()?.status() == 201).then_some(())
    })
    .await;
    assert!(!process.log_events("database unreachable").is_empty(), "the outage is logged");
}

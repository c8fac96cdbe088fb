use serde_json::json;

use testkit::event_tap::EventTap;
use testkit::forecast_process::{ADMIN_KEY, Api, DbKind, ForecastBuilder, TestDb};
use testkit::redis_server::RedisServer;

/// Two replicas share one PostgreSQL database and both run outbox dispatchers. Updates of one
/// forecast, made alternately through each while Redis is away, pile up in the outbox; when
/// Redis returns, both dispatchers wake at once, and the events still go out in the order the
/// updates were made, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgres_publish_the_events_of_a_forecast_in_order() {
    let mut redis = RedisServer::start();
    let db = TestDb::new(DbKind::Postgres).await;
    let replicas =
        [ForecastBuilder::new(&db, redis.url()).start(), ForecastBuilder::new(&db, redis.url()).start()];
    let apis = [Api::new(&replicas[0]), Api::new(&replicas[1])];
    redis.kill();
    let forecast = apis[0].create("2026-11-23", 0, "Start").await;
    let path = format!("/api/weatherforecast/{}", forecast["id"].as_str().unwrap());
    for i in 1..=40 {
        let response = apis[i % 2]
            .put(&path, ADMIN_KEY)
            .json(&json!({ "date": "2026-11-23", "temperatureC": i }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    for replica in &replicas {
        replica.wait_metric("forecast_api_outbox_pending", |pending| pending == 41.0).await;
    }
    redis.restart();
    let tap = EventTap::log(&redis).await;
    let messages = tap.wait_for(41).await;
    let temperatures: Vec<i64> =
        messages.iter().map(|m| m.json()["data"]["temperatureC"].as_i64().unwrap()).collect();
    assert_eq!(temperatures, (0..=40).collect::<Vec<_>>());
    for replica in &replicas {
        replica.wait_metric("forecast_api_outbox_pending", |pending| pending == 0.0).await;
    }
    assert_eq!(tap.messages().len(), 41, "each event once");
}

/// The mechanism behind the ordering: while one replica publishes a batch, another replica's
/// dispatcher gets no batch at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_replica_at_a_time_takes_an_outbox_batch_on_postgres() {
    use forecast_api::events::{DomainEvent, EventContext};
    use forecast_api::model::ForecastInput;
    use forecast_api::settings::DatabaseSettings;
    use forecast_api::store::Store;

    let db = TestDb::new(DbKind::Postgres).await;
    let settings = DatabaseSettings { url: db.url.clone(), ..DatabaseSettings::default() };
    let first = Store::connect(&settings).await.unwrap();
    let second = Store::connect(&settings).await.unwrap();
    let input = ForecastInput { date: "2026-11-23".into(), temperature_c: 1, summary: None };
    let context = EventContext::default();
    first.create_forecast(&input, |f| DomainEvent::forecast_created(f, &context)).await.unwrap();

    let batch = first.next_outbox_batch(10).await.unwrap().expect("the first replica gets the batch");
    assert_eq!(batch.rows.len(), 1);
    assert!(second.next_outbox_batch(10).await.unwrap().is_none(), "the second replica waits its turn");
    let seqs: Vec<i64> = batch.rows.iter().map(|row| row.seq).collect();
    batch.complete(&seqs).await.unwrap();
    let next = second.next_outbox_batch(10).await.unwrap().expect("the lock is free again");
    assert!(next.rows.is_empty(), "published rows are gone");
    next.complete(&[]).await.unwrap();
}

//! The EventPublisher isolates handlers: this test runs the API in-process to register a
//! failing and a panicking handler beside the standard ones.

use std::sync::Arc;

use forecast_api::ForecastApi;
use forecast_api::events::DomainEvent;
use forecast_api::publisher::EventHandler;
use forecast_api::settings::ForecastSettings;
use futures_util::future::BoxFuture;
use serde_json::json;

use testkit::event_tap::EventTap;
use testkit::forecast_process::{ADMIN_KEY, DbKind, TestDb};
use testkit::redis_server::RedisServer;

struct Failing;
impl EventHandler for Failing {
    fn name(&self) -> &'static str {
        "failing"
    }
    fn handle<'a>(&'a self, _: &'a DomainEvent) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { anyhow::bail!("downstream unavailable") })
    }
}

struct Panicking;
impl EventHandler for Panicking {
    fn name(&self) -> &'static str {
        "panicking"
    }
    fn handle<'a>(&'a self, _: &'a DomainEvent) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { panic!("handler bug") })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_panicking_handler_affects_neither_the_others_nor_the_response() {
    let redis = RedisServer::start();
    let db = TestDb::new(DbKind::Sqlite).await;
    let mut settings = ForecastSettings { listen: "127.0.0.1:0".into(), ..ForecastSettings::default() };
    settings.database.url = db.url.clone();
    settings.redis.url = redis.url();
    settings.auth.admin_key = ADMIN_KEY.into();
    let api = ForecastApi::build_with_handlers(settings, vec![Arc::new(Failing), Arc::new(Panicking)])
        .await
        .unwrap();
    let base = format!("http://{}", api.local_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(api.run_until_stopped(stop.clone().cancelled_owned()));
    let tap = EventTap::log(&redis).await;

    let response = reqwest::Client::new()
        .post(format!("{base}/api/weatherforecast"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "date": "2026-11-23", "temperatureC": 25, "summary": "Warm" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "the request succeeds whatever the handlers do");
    // The standard handlers still ran: the event is published and counted.
    let messages = tap.wait_for(1).await;
    assert_eq!(messages[0].channel, "weatherforecast.created");
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    use testkit::metric;
    assert_eq!(metric(&metrics, "forecast_api_event_handler_failures_total{handler=\"failing\"}"), 1.0);
    assert_eq!(metric(&metrics, "forecast_api_event_handler_failures_total{handler=\"panicking\"}"), 1.0);
    assert_eq!(
        metric(&metrics, "forecast_api_domain_events_total{channel=\"weatherforecast.created\"}"),
        1.0
    );
    assert_eq!(metric(&metrics, "forecast_api_event_handler_duration_seconds_count{handler=\"audit\"}"), 1.0);
    assert_eq!(
        metric(&metrics, "forecast_api_event_handler_duration_seconds_count{handler=\"failing\"}"),
        1.0
    );

    stop.cancel();
    server.await.unwrap().unwrap();
}

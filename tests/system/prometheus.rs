//! The services as Prometheus sees them: a real Prometheus scraping two relays and forecast-api,
//! and `promtool`'s check of what each exposes.

use std::time::Duration;

use testkit::forecast_process::{Api, DbKind, ForecastBuilder, TestDb};
use testkit::prometheus::{Prometheus, check_metrics};
use testkit::relay_process::{ENVELOPE_CHANNELS, RelayBuilder, TestRelay};

const WAIT: Duration = Duration::from_secs(10);

/// Both services are up in Prometheus, and queries over their metrics return what the traffic
/// implies: the streams open on each relay, every event delivered to every stream, the outbox
/// back to empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_both_services_and_their_figures_match_the_traffic() {
    const EVENTS: usize = 4;
    let TestRelay { redis, relay } = TestRelay::with(|relay| relay.channels(ENVELOPE_CHANNELS)).await;
    let second = RelayBuilder::new(redis.url()).channels(ENVELOPE_CHANNELS).start();
    second.wait_ready().await;
    let db = TestDb::new(DbKind::Sqlite).await;
    let api_process = ForecastBuilder::new(&db, redis.url()).start();
    let api = Api::new(&api_process);
    let prometheus = Prometheus::start(&[
        ("sse-relay", vec![relay.addr(), second.addr()]),
        ("forecast-api", vec![api_process.addr()]),
    ])
    .await;
    prometheus.wait_for("count(up == 1)", |up| up == 3.0).await;
    assert_eq!(prometheus.query("up == 0").await.len(), 0);

    let mut streams = Vec::new();
    for (relay, count) in [(&relay, 3), (&second, 2)] {
        for _ in 0..count {
            streams.push(relay.open_stream("?channel=weatherforecast.*").await);
        }
    }
    let by_pod = "sum by (instance) (sse_relay_connections)";
    prometheus.wait_for("sum(sse_relay_connections)", |open| open == 5.0).await;
    let open: std::collections::BTreeMap<String, f64> = prometheus
        .query(by_pod)
        .await
        .into_iter()
        .map(|sample| (sample.labels["instance"].clone(), sample.value))
        .collect();
    let expected = [(relay.addr().to_string(), 3.0), (second.addr().to_string(), 2.0)].into();
    assert_eq!(open, expected, "{by_pod}");

    for day in 0..EVENTS {
        api.create(&format!("2026-12-{:02}", day + 1), 20, "Mild").await;
    }
    for stream in &mut streams {
        for _ in 0..EVENTS {
            assert_eq!(stream.next_event(WAIT).await.event.as_deref(), Some("weatherforecast.created"));
        }
    }
    let deliveries = (EVENTS * streams.len()) as f64;
    prometheus.wait_for("sum(sse_relay_events_delivered_total)", |n| n == deliveries).await;
    prometheus.wait_for("sum(sse_relay_events_received_total)", |n| n == 2.0 * EVENTS as f64).await;
    prometheus
        .wait_for("sum(forecast_api_events_published_total{channel=\"weatherforecast.created\"})", |n| {
            n == EVENTS as f64
        })
        .await;
    prometheus.wait_for("sum(forecast_api_outbox_pending)", |pending| pending == 0.0).await;
    prometheus.wait_for("min(sse_relay_redis_connected)", |connected| connected == 1.0).await;
    prometheus.wait_for("min(sse_relay_ready)", |ready| ready == 1.0).await;
    prometheus.wait_for("min(forecast_api_outbox_oldest_event_timestamp_seconds)", |none| none == 0.0).await;

    // The on-call figures: each pod read the log a moment ago, is not behind it, holds the
    // events just written, and is far from its connection limit.
    prometheus.wait_for("max(time() - sse_relay_log_read_timestamp_seconds)", |ago| ago < 10.0).await;
    prometheus.wait_for("max(time() - sse_relay_last_event_read_timestamp_seconds)", |ago| ago < 60.0).await;
    prometheus.wait_for("max(sse_relay_log_lag_seconds)", |lag| (0.0..5.0).contains(&lag)).await;
    prometheus
        .wait_for("max(time() - sse_relay_log_oldest_entry_timestamp_seconds)", |age| {
            (0.0..120.0).contains(&age)
        })
        .await;
    prometheus
        .wait_for("max(sse_relay_connections / sse_relay_max_connections)", |used| used > 0.0 && used < 0.01)
        .await;

    // Every query of the Grafana dashboard parses and returns data here.
    let dashboard = concat!(env!("CARGO_MANIFEST_DIR"), "/helm/sse-relay/files/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            // Grafana's own variable, as it would expand it at this scrape interval.
            let expr = target["expr"].as_str().unwrap().replace("$__rate_interval", "1m");
            let samples = prometheus.query(&expr).await;
            assert!(!samples.is_empty(), "panel {}: {expr} returned no data", panel["title"]);
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries");
}

/// `promtool check metrics` finds nothing to say of either service's `/metrics`, with every
/// labelled series present (after traffic and refusals), and the README lists every metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_metrics_pass_promtool() {
    let TestRelay { redis, relay } = TestRelay::with(|relay| relay.channels(ENVELOPE_CHANNELS)).await;
    let db = TestDb::new(DbKind::Sqlite).await;
    let api_process = ForecastBuilder::new(&db, redis.url()).start();
    let api = Api::new(&api_process);
    let mut stream = relay.open_stream("?channel=weatherforecast.*").await;
    api.create("2026-12-05", 21, "Mild").await;
    stream.next_event(WAIT).await;
    assert_eq!(reqwest::get(relay.url("/events?channel=[")).await.unwrap().status(), 400);
    assert_eq!(reqwest::get(api_process.url("/api/weatherforecast/nope")).await.unwrap().status(), 404);

    for (service, exposition) in
        [("sse-relay", relay.metrics().await), ("forecast-api", api_process.metrics().await)]
    {
        assert_eq!(check_metrics(&exposition), "", "promtool check metrics on {service}'s /metrics");
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let undocumented: Vec<&str> = exposition
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| !readme.contains(&format!("`{name}")))
            .collect();
        assert!(undocumented.is_empty(), "{service}'s metrics missing from the README: {undocumented:?}");
    }
}

use std::time::Duration;

use testkit::eventually;
use testkit::relay_process::TestRelay;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn connections_beyond_the_limit_get_503_with_retry_after_until_a_slot_frees() {
    let TestRelay { redis, relay } = TestRelay::with(|relay| relay.env("LIMITS__MAX_CONNECTIONS", 2)).await;

    let mut first = relay.open_stream("").await;
    let second = relay.open_stream("").await;

    let refused = relay.get("/events").await;
    assert_eq!(refused.status(), 503);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("maximum number of connections (2)"), "{problem}");
    assert_eq!(relay.metric("sse_relay_connections_refused_total{reason=\"max_connections\"}").await, 1.0);

    // Existing streams are unaffected.
    redis.publish("weatherforecast.created", "still here");
    assert_eq!(first.next_event(WAIT).await.data.as_deref(), Some("still here"));

    drop(second);
    relay.wait_metric("sse_relay_connections", |open| open == 1.0).await;
    let mut third = eventually(WAIT, "a free slot", || async {
        let response = reqwest::get(relay.url("/events")).await.ok()?;
        (response.status() == 200).then_some(response)
    })
    .await;
    assert!(third.chunk().await.unwrap().is_some());
}

/// At its connection limit a pod says it is not ready (a balancer then sends new clients
/// elsewhere), and ready again only once well below it.
#[tokio::test]
async fn readiness_turns_off_at_the_connection_limit_and_back_on_below_ninety_percent() {
    let TestRelay { redis: _redis, relay } =
        TestRelay::with(|relay| relay.env("LIMITS__MAX_CONNECTIONS", 10)).await;
    let mut streams = Vec::new();
    for _ in 0..10 {
        streams.push(relay.open_stream("").await);
    }
    let body = relay.wait_unready().await;
    assert!(
        body["reason"].as_str().unwrap().contains("at the connection limit: 10 streams open of 10"),
        "{body}"
    );
    assert_eq!(relay.metric("sse_relay_ready").await, 0.0);
    assert_eq!(relay.metric("sse_relay_max_connections").await, 10.0);
    // One below the limit: still full (hysteresis).
    streams.pop();
    relay.wait_metric("sse_relay_connections", |open| open == 9.0).await;
    assert_eq!(relay.get("/readyz").await.status(), 503);
    streams.pop();
    relay.wait_metric("sse_relay_connections", |open| open == 8.0).await;
    relay.wait_ready().await;
}

/// With `metrics_listen`, `/metrics` is served there and not on the public listener.
#[tokio::test]
async fn metrics_can_be_served_on_a_listener_of_their_own() {
    let port = testkit::redis_server::free_port();
    let TestRelay { redis: _redis, relay } =
        TestRelay::with(|relay| relay.env("METRICS_LISTEN", format!("127.0.0.1:{port}"))).await;
    let public = relay.get("/metrics").await;
    assert_eq!(public.status(), 404);
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("sse_relay_connections "));
    assert_eq!(relay.get("/healthz").await.status(), 200);
}

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

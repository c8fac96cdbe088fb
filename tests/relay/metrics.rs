use std::time::Duration;

use testkit::metric;
use testkit::relay_process::TestRelay;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn metrics_reflect_deliveries_refusals_and_dropped_messages() {
    let TestRelay { redis, relay } =
        TestRelay::with(|relay| relay.env("LIMITS__MAX_MESSAGE_BYTES", 1000)).await;

    let mut a = relay.open_stream("").await;
    let mut b = relay.open_stream("?channel=weatherforecast.*").await;

    for i in 0..5 {
        redis.publish("weatherforecast.created", format!("event {i}"));
    }
    redis.publish("admin.user.registered", "only a");
    // Bad messages: dropped, counted, and no stream is disturbed by them.
    redis.publish("weatherforecast.created", "x".repeat(1001));
    redis.publish("weatherforecast.created", b"\xff\xfe not utf-8".to_vec());
    redis.publish("weatherforecast.\nevent: injected", "x");
    redis.publish(b"weatherforecast.\xff".to_vec(), "x");
    redis.publish("weatherforecast.created", "after the bad ones");

    for client in [&mut a, &mut b] {
        for i in 0..5 {
            assert_eq!(client.next_event(WAIT).await.data, Some(format!("event {i}")));
        }
    }
    assert_eq!(a.next_event(WAIT).await.data.as_deref(), Some("only a"));
    for client in [&mut a, &mut b] {
        let next = client.next_event(WAIT).await;
        assert_eq!(next.data.as_deref(), Some("after the bad ones"), "{next:?}");
        assert_eq!(next.event.as_deref(), Some("weatherforecast.created"));
    }

    let _ = relay.get("/events?channel=%5B").await;
    let text = relay.metrics().await;
    assert_eq!(metric(&text, "sse_relay_connections"), 2.0);
    assert_eq!(metric(&text, "sse_relay_connections_accepted_total"), 2.0);
    assert_eq!(metric(&text, "sse_relay_connections_refused_total{reason=\"bad_request\"}"), 1.0);
    assert_eq!(metric(&text, "sse_relay_events_received_total"), 11.0);
    assert_eq!(metric(&text, "sse_relay_events_delivered_total"), 5.0 * 2.0 + 1.0 + 2.0);
    assert_eq!(metric(&text, "sse_relay_events_dropped_total{reason=\"too_large\"}"), 1.0);
    assert_eq!(metric(&text, "sse_relay_events_dropped_total{reason=\"invalid_utf8\"}"), 1.0);
    assert_eq!(metric(&text, "sse_relay_events_dropped_total{reason=\"line_break_in_field\"}"), 1.0);
    assert_eq!(metric(&text, "sse_relay_events_dropped_total{reason=\"invalid_channel\"}"), 1.0);
    assert_eq!(metric(&text, "sse_relay_redis_connected"), 1.0);
    assert_eq!(metric(&text, "sse_relay_redis_reconnects_total"), 0.0);
    assert_eq!(metric(&text, "sse_relay_slow_client_disconnects_total"), 0.0);
    assert!(metric(&text, "sse_relay_probe_rtt_seconds_count") >= 1.0);

    drop(a);
    relay.wait_metric("sse_relay_connections", |open| open == 1.0).await;
    let text = relay.metrics().await;
    assert_eq!(metric(&text, "sse_relay_connection_duration_seconds_count"), 1.0);
}

//! Envelope channels are delivered from the log: ids come only from there, so what anyone can
//! PUBLISH does not touch them; raw channels keep their subscription.

use std::time::Duration;

use testkit::log_publisher::LogPublisher;
use testkit::relay_process::{ENVELOPE_CHANNELS, TestRelay};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_envelopes_published_on_a_channel_do_not_affect_delivery() {
    let TestRelay { redis, relay } = TestRelay::with(|relay| relay.channels(ENVELOPE_CHANNELS)).await;
    let mut stream = relay.open_stream("?channel=weatherforecast.*").await;
    let mut publisher = LogPublisher::connect(&redis.url()).await;

    // An id far in the future: with live ids compared to it, every real event would look
    // delivered already.
    redis.publish("weatherforecast.created", r#"{"id":"99999999999999-0","data":{"forged":true}}"#);
    redis.publish("weatherforecast.created", r#"{"data":{"forged":true}}"#);
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            publisher.publish("weatherforecast.created", &format!(r#"{{"n":{n}}}"#), None).await.unwrap(),
        );
    }
    for (n, id) in ids.iter().enumerate() {
        let event = stream.next_event(WAIT).await;
        assert_eq!(
            event.data.as_deref(),
            Some(format!(r#"{{"n":{n}}}"#).as_str()),
            "forged events are not delivered"
        );
        assert_eq!(event.id.as_deref(), Some(id.as_str()), "the id is the log's");
    }
    assert_eq!(relay.get("/readyz").await.status(), 200);
    assert_eq!(relay.metric("sse_relay_events_received_total").await, 3.0, "only the log's events were read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_only_envelope_channels_needs_no_subscription() {
    let channels = "[[channels]]\npattern = \"weatherforecast.*\"\nformat = \"envelope\"\n";
    let TestRelay { redis, relay } = TestRelay::with(|relay| relay.channels(channels)).await;
    let clients: Vec<String> = redis::cmd("CLIENT")
        .arg("LIST")
        .query::<String>(&mut redis.connection())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        clients.iter().all(|client| client.contains("psub=0") && client.contains("sub=0")),
        "no connection subscribes: {clients:#?}"
    );
    let mut stream = relay.open_stream("").await;
    let mut publisher = LogPublisher::connect(&redis.url()).await;
    let id = publisher.publish("weatherforecast.updated", "{}", None).await.unwrap();
    assert_eq!(stream.next_event(WAIT).await.id, Some(id));
}

/// `sse_relay_log_lag_seconds` tells how far behind the log the tail is: once the tail has
/// caught up it is 0, not the age of the last entry it read (entries of a gap filled after an
/// outage are old, and a quiet log brings no newer one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_lag_returns_to_zero_once_the_tail_has_caught_up_with_an_old_entry() {
    let TestRelay { redis, relay } = TestRelay::with(|relay| relay.channels(ENVELOPE_CHANNELS)).await;
    let mut stream = relay.open_stream("?channel=weatherforecast.*").await;
    // An entry written (by its id) in 1970: what a tail a long way behind would read.
    let _: String = redis::cmd("XADD")
        .arg("sse:log")
        .arg("1000-0")
        .arg("ch")
        .arg("weatherforecast.created")
        .arg("m")
        .arg(r#"{"event_id":"e-1970","data":{"n":1},"correlation_id":"c","ts":1000000}"#)
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(stream.next_event(WAIT).await.id.as_deref(), Some("1000-0"));
    relay.wait_metric("sse_relay_log_lag_seconds", |lag| lag == 0.0).await;
    assert!(relay.metric("sse_relay_log_read_timestamp_seconds").await > 1.7e9);
    assert!(relay.metric("sse_relay_last_event_read_timestamp_seconds").await > 1.7e9);
}

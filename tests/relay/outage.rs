use std::time::Duration;

use testkit::log_publisher::LogPublisher;
use testkit::proxy::WedgingProxy;
use testkit::redis_server::RedisServer;
use testkit::relay_process::{ENVELOPE_CHANNELS, RelayBuilder, TestRelay};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_stream_survives_a_redis_restart_and_receives_what_comes_after() {
    let TestRelay { mut redis, relay } =
        TestRelay::with(|relay| relay.env("SSE__KEEPALIVE_SECS", 1).env("REDIS__UNREADY_AFTER_SECS", 1))
            .await;
    let mut client = relay.open_stream("").await;
    redis.publish("weatherforecast.created", "before");
    assert_eq!(client.next_event(WAIT).await.data.as_deref(), Some("before"));

    redis.kill();
    relay.wait_metric("sse_relay_redis_connected", |connected| connected == 0.0).await;
    // The stream stays open, kept alive by pings, while Redis is away...
    let ping = client.next_block(WAIT).await;
    assert_eq!(ping.comments, ["ping"]);
    // ...and after unready_after_secs the pod stops taking new clients, saying why.
    let body = relay.wait_unready().await;
    assert_eq!(body["redis"], "reconnecting");
    assert!(body["reason"].as_str().unwrap().contains("no working Redis subscription"), "{body}");
    assert!(body["last_error"].is_string(), "{body}");
    assert_eq!(relay.metric("sse_relay_ready").await, 0.0, "what /readyz says, in the metrics");

    redis.restart();
    relay.wait_ready().await;
    assert_eq!(relay.metric("sse_relay_ready").await, 1.0);
    assert!(relay.metric("sse_relay_redis_reconnects_total").await >= 1.0);
    redis.publish("weatherforecast.created", "after");
    assert_eq!(client.next_event(WAIT).await.data.as_deref(), Some("after"));

    let downs = relay.log_events("redis subscription down");
    assert!(!downs.is_empty(), "the outage is logged");
    assert!(relay.log_events("redis subscribed").len() >= 2);
}

/// After Redis comes back, the first probe goes out on a working connection: the fresh
/// subscription and log tail are kept, not torn down again by a probe sent on the command
/// connection Redis closed.
#[tokio::test]
async fn the_first_probes_after_redis_returns_succeed_and_nothing_reconnects_twice() {
    let TestRelay { mut redis, relay } = TestRelay::with(|relay| {
        relay.env("REDIS__PROBE_INTERVAL_MS", 200).env("REDIS__UNREADY_AFTER_SECS", 1)
    })
    .await;
    // Probes went through the command connection before the restart.
    relay.wait_metric("sse_relay_probe_rtt_seconds_count", |probes| probes >= 2.0).await;

    redis.kill();
    relay.wait_metric("sse_relay_redis_connected", |connected| connected == 0.0).await;
    redis.restart();
    let reconnects = relay.wait_metric("sse_relay_redis_reconnects_total", |count| count >= 1.0).await;
    let probes = relay.metric("sse_relay_probe_rtt_seconds_count").await;
    // Well past the probe timeout (2 s): 15 probes of each source since, every one back.
    relay.wait_metric("sse_relay_probe_rtt_seconds_count", |count| count >= probes + 30.0).await;
    assert_eq!(relay.metric("sse_relay_probe_failures_total").await, 0.0);
    assert_eq!(relay.metric("sse_relay_redis_reconnects_total").await, reconnects, "no second reconnect");
    assert!(relay.log_events("probe not").is_empty(), "no probe was given up");
}

/// A relay started while Redis cannot be reached takes streams and reports why it is not
/// ready; what is logged before it gets through (forecast-api reached Redis first) reaches
/// those streams once it does, not only what comes after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_started_before_redis_is_reachable_delivers_what_was_logged_meanwhile() {
    let redis = RedisServer::start();
    let proxy = WedgingProxy::start(format!("127.0.0.1:{}", redis.port()).parse().unwrap()).await;
    proxy.go_down();
    let relay = RelayBuilder::new(proxy.url()).channels(ENVELOPE_CHANNELS).start();
    let body = relay.wait_unready().await;
    assert_eq!(body["redis"], "connecting", "{body}");
    let mut stream = relay.open_stream("?channel=weatherforecast.*").await;

    let mut publisher = LogPublisher::connect(&redis.url()).await;
    let id = publisher.publish("weatherforecast.created", r#"{"n":1}"#, None).await.unwrap();
    proxy.come_back();
    relay.wait_ready().await;
    let event = stream.next_event(WAIT).await;
    assert_eq!((event.id, event.data.as_deref()), (Some(id), Some(r#"{"n":1}"#)));
    let id = publisher.publish("weatherforecast.created", r#"{"n":2}"#, None).await.unwrap();
    assert_eq!(stream.next_event(WAIT).await.id, Some(id), "and what comes after");
}

use std::time::{Duration, Instant};

use testkit::log_publisher::LogPublisher;
use testkit::proxy::WedgingProxy;
use testkit::redis_server::RedisServer;
use testkit::relay_process::{ENVELOPE_CHANNELS, RelayBuilder, RelayProcess, TestRelay};
use testkit::sse_client::SseClient;

const WAIT: Duration = Duration::from_secs(15);

/// A subscription whose socket stays open but delivers nothing (as after a failover behind a
/// proxy) is noticed by the delivery probe, reported by /readyz, and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_subscription_is_detected_reported_and_reconnected() {
    let redis = RedisServer::start();
    let upstream = format!("127.0.0.1:{}", redis.port()).parse().unwrap();
    let proxy = WedgingProxy::start(upstream).await;
    let relay = RelayBuilder::new(proxy.url())
        .env("REDIS__PROBE_INTERVAL_MS", 200)
        .env("REDIS__PROBE_TIMEOUT_MS", 500)
        .env("REDIS__CONNECT_TIMEOUT_MS", 500)
        .env("REDIS__UNREADY_AFTER_SECS", 1)
        .start();
    relay.wait_ready().await;
    let mut client = relay.open_stream("").await;
    redis.publish("weatherforecast.created", "before");
    assert_eq!(client.next_event(WAIT).await.data.as_deref(), Some("before"));

    proxy.wedge_all();
    let body = relay.wait_unready().await;
    assert!(relay.metric("sse_relay_probe_failures_total").await >= 1.0, "{body}");
    let wedged = relay.log_events("redis subscription down");
    assert!(
        wedged.iter().any(|line| line["error"].as_str().unwrap_or("").contains("probe not echoed")),
        "the wedge is logged with its cause: {wedged:?}"
    );

    proxy.heal_new_connections();
    relay.wait_ready().await;
    assert!(relay.metric("sse_relay_redis_reconnects_total").await >= 1.0);
    redis.publish("weatherforecast.created", "after");
    assert_eq!(client.next_event(WAIT).await.data.as_deref(), Some("after"));
}

/// Streams whose selections the relay matches one by one against every channel, none of which
/// they want: each message then costs the relay a scan of all their patterns.
async fn open_expensive_streams(relay: &RelayProcess, streams: usize) -> Vec<SseClient> {
    let mut opened = Vec::new();
    for i in 0..streams {
        let query: Vec<String> = (0..16).map(|j| format!("channel={}{i}x{j}*b", "*a".repeat(60))).collect();
        opened.push(relay.open_stream(&format!("?{}", query.join("&"))).await);
    }
    opened
}

/// A relay kept busy by its own deliveries for longer than the probe timeout is not a silent
/// connection: neither the subscription nor the log tail reconnects, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_busy_for_longer_than_the_probe_timeout_keeps_its_connections_and_loses_nothing() {
    const MESSAGES: usize = 400;
    let probe_timeout = Duration::from_millis(100);
    let TestRelay { redis, relay } = TestRelay::with(|relay| {
        relay
            .channels(ENVELOPE_CHANNELS)
            .env("REDIS__PROBE_INTERVAL_MS", 20)
            .env("REDIS__PROBE_TIMEOUT_MS", probe_timeout.as_millis())
    })
    .await;
    let _expensive = open_expensive_streams(&relay, 60).await;
    let mut raw = relay.open_stream("?channel=raw.*").await;
    let mut logged = relay.open_stream("?channel=weatherforecast.*").await;

    // Each message on a channel of its own, long enough to make every pattern work.
    let long = "a".repeat(100);
    let mut burst = redis::pipe();
    for i in 0..MESSAGES {
        burst.cmd("PUBLISH").arg(format!("raw.{long}.{i}")).arg(i.to_string()).ignore();
    }
    let () = burst.query(&mut redis.connection()).expect("raw burst");
    let mut publisher = LogPublisher::connect(&redis.url()).await;
    for i in 0..MESSAGES {
        publisher
            .publish(&format!("weatherforecast.{long}.{i}"), &i.to_string(), None)
            .await
            .expect("publish");
    }

    let published = Instant::now();
    for (name, stream) in [("raw", &mut raw), ("logged", &mut logged)] {
        for i in 0..MESSAGES {
            let event = stream.next_event(Duration::from_secs(30)).await;
            assert_eq!(event.data, Some(i.to_string()), "{name} stream, message {i}");
        }
    }
    // Otherwise the relay was not kept busy and this test proves nothing.
    assert!(
        published.elapsed() > probe_timeout * 3,
        "the burst was delivered within {:?}: make it larger",
        published.elapsed()
    );
    assert_eq!(relay.metric("sse_relay_probe_failures_total").await, 0.0);
    assert_eq!(relay.metric("sse_relay_redis_reconnects_total").await, 0.0);
    assert!(relay.log_events("redis subscription down").is_empty());
    assert!(relay.log_events("redis log tail down").is_empty());
}

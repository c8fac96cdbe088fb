use std::time::Duration;

use testkit::proxy::WedgingProxy;
use testkit::redis_server::RedisServer;
use testkit::relay_process::RelayBuilder;

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

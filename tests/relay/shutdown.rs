use std::time::{Duration, Instant};

use testkit::eventually;
use testkit::relay_process::TestRelay;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_drains_streams_over_the_window_and_exits_0() {
    let TestRelay { redis, mut relay } = TestRelay::with(|relay| {
        relay
            .env("SHUTDOWN__DRAIN_DELAY_MS", 1000)
            .env("SHUTDOWN__DRAIN_WINDOW_MS", 2000)
            .env("SHUTDOWN__GRACE_PERIOD_MS", 10000)
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(relay.open_stream("").await);
    }

    relay.signal("TERM");
    let readiness = eventually(WAIT, "/readyz to fail", || async {
        let response = relay.get("/readyz").await;
        (response.status() == 503).then_some(response)
    })
    .await;
    let body: serde_json::Value = readiness.json().await.unwrap();
    assert_eq!(body["redis"], "draining");
    // During the drain delay new streams are still accepted (an EventSource would give up for
    // good on an error status); they are closed with the others.
    clients.push(relay.open_stream("").await);
    redis.publish("weatherforecast.created", "during drain");

    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut client in clients {
        tasks.push(tokio::spawn(async move {
            let seen = client.expect_end(WAIT * 2).await;
            (start.elapsed(), seen)
        }));
    }
    let mut ended = Vec::new();
    for task in tasks {
        let (at, seen) = task.await.unwrap();
        assert!(
            seen.iter().any(|event| event.data.as_deref() == Some("during drain")),
            "the stream delivered what was published before it closed: {seen:?}"
        );
        ended.push(at);
    }
    ended.sort();
    let spread = *ended.last().unwrap() - ended[0];
    assert!(spread >= Duration::from_millis(500), "streams closed over the window, not at once: {ended:?}");

    let status = tokio::task::spawn_blocking(move || {
        let status = relay.wait_exit(Duration::from_secs(15));
        (status, relay.log_events("shutdown complete").len())
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0));
    assert_eq!(status.1, 1);
}

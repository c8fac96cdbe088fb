use std::time::Duration;

use testkit::relay_process::TestRelay;

/// Hostile selections: 400 anonymous streams, each asking for 16 distinct 247-byte patterns
/// with 120 wildcards (which no index finds), cannot starve a normal stream: at 1,000 raw
/// messages per second it receives every one, in order. Each hostile selection is matched once
/// per channel, not once per message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_wildcard_selections_do_not_starve_a_normal_stream() {
    const STREAMS: usize = 400;
    const MESSAGES: usize = 2_000;
    let TestRelay { redis, relay } = TestRelay::start().await;
    let mut hostile = Vec::new();
    for i in 0..STREAMS {
        let query: Vec<String> =
            (0..16).map(|j| format!("channel={}{i:03}x{j:02}*b", "*a".repeat(120))).collect();
        hostile.push(relay.open_stream(&format!("?{}", query.join("&"))).await);
    }
    let mut normal = relay.open_stream("?channel=weatherforecast.*").await;

    // 1,000 messages per second, in batches of ten, on channels long enough to make every
    // hostile pattern work.
    let channels: Vec<String> = (0..10).map(|c| format!("weatherforecast.{}{c}", "a".repeat(40))).collect();
    let mut connection = redis.connection();
    let mut batches = tokio::time::interval(Duration::from_millis(10));
    for batch in 0..MESSAGES / 10 {
        batches.tick().await;
        let mut pipe = redis::pipe();
        for i in batch * 10..batch * 10 + 10 {
            pipe.cmd("PUBLISH").arg(&channels[i % channels.len()]).arg(i.to_string()).ignore();
        }
        let () = pipe.query(&mut connection).expect("publish");
    }
    // Published over two seconds: a relay keeping up has them all within a few more.
    for i in 0..MESSAGES {
        let event = normal.next_event(Duration::from_secs(10)).await;
        assert_eq!(event.data, Some(i.to_string()), "message {i}");
    }
    assert_eq!(relay.metric("sse_relay_redis_reconnects_total").await, 0.0);
    let checks = relay.metric("sse_relay_selection_checks_total").await;
    assert!(
        checks <= (STREAMS * channels.len()) as f64,
        "{checks} selections matched one by one for {MESSAGES} messages on {} channels",
        channels.len()
    );
    drop(hostile);
}

//! When the log itself is lost — Redis restarted without persistence, the key deleted or
//! evicted — no client is silently given another log's events: a resume from an id of the
//! lost log gets `relay.reset` first, a replay under way when the log goes gets it in its place
//! and once, and an evicting Redis is pointed out.

use std::time::Duration;

use serde_json::Value;

use testkit::log_publisher::LogPublisher;
use testkit::redis_server::RedisServer;
use testkit::relay_process::{ENVELOPE_CHANNELS, RelayProcess, TestRelay};

const WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy)]
enum Loss {
    Restart,
    Delete,
    Eviction,
}

/// Makes Redis evict the log: `allkeys-lru` under a memory limit, then more data than fits.
fn evict_the_log(redis: &RedisServer, relay_sees_it: impl Fn() -> bool) {
    let mut connection = redis.connection();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut connection).unwrap();
    let used: u64 = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut connection)
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used + (4 << 20))
        .query(&mut connection)
        .unwrap();
    assert!(relay_sees_it(), "the relay says Redis may evict the log");
    let filler = vec![b'x'; 100 * 1024];
    for n in 0..2_000 {
        let exists: i64 = redis::cmd("EXISTS").arg("sse:log").query(&mut connection).unwrap();
        if exists == 0 {
            let _: () =
                redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query(&mut connection).unwrap();
            return;
        }
        let _: () = redis::cmd("SET").arg(format!("filler:{n}")).arg(&filler).query(&mut connection).unwrap();
    }
    panic!("Redis did not evict the log");
}

async fn lose_the_log(loss: Loss, redis: &mut RedisServer, relay: &RelayProcess) {
    match loss {
        Loss::Restart => {
            redis.restart();
            relay.wait_metric("sse_relay_redis_reconnects_total", |n| n >= 1.0).await;
        }
        Loss::Delete => {
            let _: i64 = redis::cmd("DEL").arg("sse:log").query(&mut redis.connection()).unwrap();
        }
        Loss::Eviction => {
            let handle = tokio::runtime::Handle::current();
            let said = || {
                tokio::task::block_in_place(|| {
                    handle.block_on(async {
                        relay.wait_metric("sse_relay_redis_log_evictable", |n| n == 1.0).await;
                        let ready: Value = relay.get("/readyz").await.json().await.unwrap();
                        ready["warnings"][0].as_str().is_some_and(|w| w.contains("may evict the event log"))
                    })
                })
            };
            evict_the_log(redis, said);
            relay.wait_metric("sse_relay_redis_log_evictable", |n| n == 0.0).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_a_lost_log_gets_a_reset_before_any_event_of_the_new_one() {
    for loss in [Loss::Restart, Loss::Delete, Loss::Eviction] {
        let TestRelay { mut redis, relay } = TestRelay::with(|relay| relay.channels(ENVELOPE_CHANNELS)).await;
        let mut publisher = LogPublisher::connect(&redis.url()).await;
        let first = publisher.publish("weatherforecast.created", "1", None).await.unwrap();
        for n in 2..=3 {
            publisher.publish("weatherforecast.created", &n.to_string(), None).await.unwrap();
        }
        relay.wait_metric("sse_relay_resume_window_entries", |n| n == 3.0).await;

        lose_the_log(loss, &mut redis, &relay).await;
        let mut publisher = LogPublisher::connect(&redis.url()).await;
        publisher.publish("weatherforecast.updated", "4", None).await.unwrap();
        // The window follows the log: only the new log's entry is left in it.
        relay.wait_metric("sse_relay_resume_window_entries", |n| n == 1.0).await;

        let (mut stream, _) = relay.resume_stream("", Some(&first)).await;
        let reset = stream.next_event(WAIT).await;
        assert_eq!(reset.event.as_deref(), Some("relay.reset"), "{loss:?}: {reset:?}");
        let fifth = publisher.publish("weatherforecast.updated", "5", None).await.unwrap();
        let next = stream.next_event(WAIT).await;
        assert_eq!(next.id.as_deref(), Some(fifth.as_str()), "{loss:?}: then live events");
    }
}

/// A stream replaying a long backlog when Redis restarts without persistence: the events of
/// the lost log up to where it was, then one `relay.reset`, then the new log's events — never
/// the new log's events before the reset, never two resets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_under_way_when_the_log_is_lost_gets_one_reset_in_its_place() {
    let TestRelay { mut redis, relay } =
        TestRelay::with(|relay| relay.channels(ENVELOPE_CHANNELS).env("REDIS__RESUME_WINDOW_ENTRIES", 0))
            .await;
    let mut publisher = LogPublisher::connect(&redis.url()).await;
    let pad = "p".repeat(2_000);
    let mut old = Vec::new();
    for n in 0..5_000 {
        old.push(
            publisher
                .publish("weatherforecast.created", &format!("{{\"n\":{n},\"pad\":\"{pad}\"}}"), None)
                .await
                .unwrap(),
        );
    }
    relay.wait_metric("sse_relay_events_received_total", |n| n == 5_000.0).await;

    // Not read yet: the replay stops where the connection is full (10 MB of backlog, more
    // than the socket buffers hold).
    let (mut stream, _) = relay.resume_stream("", Some(&old[0])).await;
    relay.wait_metric("sse_relay_replayed_events_total", |n| n > 0.0).await;
    redis.restart();
    relay.wait_metric("sse_relay_redis_reconnects_total", |n| n >= 1.0).await;
    let mut publisher = LogPublisher::connect(&redis.url()).await;
    let mut new = Vec::new();
    for n in 0..5 {
        new.push(publisher.publish("weatherforecast.updated", &n.to_string(), None).await.unwrap());
    }

    let mut before_reset = Vec::new();
    let mut resets = 0;
    let mut after_reset = Vec::new();
    while after_reset.last() != new.last() {
        let event = stream.next_event(WAIT).await;
        if event.event.as_deref() == Some("relay.reset") {
            resets += 1;
            continue;
        }
        let id = event.id.expect("events carry ids");
        if resets == 0 { before_reset.push(id) } else { after_reset.push(id) }
    }
    assert!(before_reset.len() < 4_999, "the replay was under way: {} events before", before_reset.len());
    assert_eq!(before_reset, old[1..=before_reset.len()], "the lost log's events, in order, up to the reset");
    assert_eq!(resets, 1, "one incident, one reset");
    assert_eq!(after_reset, new, "then the new log's events, all after the reset");
}

//! Nothing lost: replay on resume (any pod), continuity after lost connections, resets,
//! malformed input, origin exclusion.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use protocol::glob::Pattern;
use serde_json::Value;

use testkit::log_publisher::{LogPublisher, log_ids};
use testkit::redis_server::RedisServer;
use testkit::relay_process::{ENVELOPE_CHANNELS, RelayBuilder, RelayProcess, TestRelay};

const WAIT: Duration = Duration::from_secs(10);

fn start_relay(redis: &RedisServer) -> RelayProcess {
    RelayBuilder::new(redis.url()).channels(ENVELOPE_CHANNELS).start()
}

/// A relay of envelope channels on a Redis of its own.
async fn start() -> TestRelay {
    TestRelay::with(|relay| relay.channels(ENVELOPE_CHANNELS)).await
}

/// Channels of the continuous publisher, in rotation.
const CHANNELS: [&str; 3] = ["weatherforecast.created", "weatherforecast.updated", "admin.user.loggedin"];

/// One client's life: sessions of a few events each, alternately on either relay, resuming
/// each time from the last id it received (by query parameter or by header). Returns every id
/// received, in order.
async fn client_life(
    relays: Arc<[RelayProcess; 2]>,
    client: usize,
    patterns: &'static [&'static str],
    done: Arc<AtomicBool>,
) -> Vec<String> {
    let query: String =
        patterns.iter().map(|p| format!("channel={}", urlencode(p))).collect::<Vec<_>>().join("&");
    let mut received: Vec<String> = Vec::new();
    for session in 0.. {
        let relay = &relays[(client + session) % 2];
        let last = received.last().cloned();
        let mut stream = match (&last, session % 2) {
            (Some(id), 0) => relay.resume_stream(&format!("?{query}&lastEventId={id}"), None).await.0,
            (Some(id), _) => relay.resume_stream(&format!("?{query}"), Some(id)).await.0,
            (None, _) => relay.resume_stream(&format!("?{query}"), None).await.0,
        };
        let quota = 7 + (client * 5 + session * 3) % 23;
        let mut got = 0;
        while got < quota {
            match stream.try_next_block(Duration::from_millis(1500)).await {
                Ok(Some(event)) if event.data.is_some() => {
                    assert_ne!(event.event.as_deref(), Some("relay.reset"), "client {client} was reset");
                    received.push(event.id.expect("envelope events carry ids"));
                    got += 1;
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("client {client}: stream ended"),
                // Quiet for a while: once the publisher is done, this client has everything.
                Err(()) if done.load(Ordering::SeqCst) => return received,
                Err(()) => {}
            }
        }
    }
    received
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_resuming_on_any_relay_receive_exactly_the_log_from_their_resume_point() {
    let redis = RedisServer::start();
    let relays = Arc::new([start_relay(&redis), start_relay(&redis)]);
    relays[0].wait_ready().await;
    relays[1].wait_ready().await;

    let selections: [&'static [&'static str]; 5] =
        [&[], &["weatherforecast.*"], &["admin.*"], &["weatherforecast.created", "admin.user.*"], &["*"]];
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = selections
        .iter()
        .enumerate()
        .map(|(i, patterns)| tokio::spawn(client_life(Arc::clone(&relays), i, patterns, Arc::clone(&done))))
        .collect();

    let mut publisher = LogPublisher::connect(&redis.url()).await;
    for n in 0..450 {
        publisher.publish(CHANNELS[n % 3], &format!("{{\"n\":{n}}}"), None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    done.store(true, Ordering::SeqCst);

    for (i, client) in clients.into_iter().enumerate() {
        let received = client.await.unwrap();
        assert!(received.len() > 10, "client {i} received events");
        let patterns: Vec<Pattern> = selections[i].iter().map(|p| Pattern::parse(p).unwrap()).collect();
        let wanted =
            |channel: &str| patterns.is_empty() || patterns.iter().any(|p| p.matches(channel.as_bytes()));
        let log = log_ids(&redis, wanted);
        let start = log.iter().position(|id| *id == received[0]).expect("first id is in the log");
        assert_eq!(received, log[start..], "client {i}: no gap, no duplicate, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_or_a_redis_restart_lose_nothing_for_connected_clients() {
    let mut redis = RedisServer::start_with(true);
    let relay = start_relay(&redis);
    relay.wait_ready().await;
    let mut stream = relay.open_stream("").await;
    let mut publisher = LogPublisher::connect(&redis.url()).await;

    for n in 0..300u32 {
        if n == 100 {
            // Every connection: the relay's log tail, its subscription, its command connection
            // (and the publisher's, which reconnects below).
            let mut killed = 0;
            for kind in ["normal", "pubsub"] {
                let n: i64 = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg(kind)
                    .query(&mut redis.connection())
                    .unwrap();
                killed += n;
            }
            assert!(killed >= 3, "the relay's connections were killed");
        }
        if n == 200 {
            redis.restart();
            publisher = LogPublisher::connect(&redis.url()).await;
        }
        let event_id = format!("event-{n}");
        // Retry until Redis takes it; the event id makes retries exactly-once.
        loop {
            match publisher
                .publish_with_event_id(&event_id, CHANNELS[n as usize % 3], &format!("{{\"n\":{n}}}"), None)
                .await
            {
                Ok(_) => break,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    publisher = LogPublisher::connect(&redis.url()).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let mut numbers = Vec::new();
    let mut ids = Vec::new();
    while numbers.len() < 300 {
        let event = stream.next_event(WAIT).await;
        assert_ne!(event.event.as_deref(), Some("relay.reset"));
        let data: Value = serde_json::from_str(event.data.as_deref().unwrap()).unwrap();
        numbers.push(data["n"].as_u64().unwrap());
        ids.push(event.id.unwrap());
    }
    assert_eq!(numbers, (0..300).collect::<Vec<_>>(), "every event exactly once, in order");
    assert_eq!(ids, log_ids(&redis, |_| true));
    // The tail reconnected after the kill and the restart (how many events it read as missed
    // depends on who reconnects first: the publisher or the tail).
    assert!(relay.metric("sse_relay_redis_reconnects_total").await >= 2.0);
}

#[tokio::test]
async fn a_resume_point_older_than_the_log_gets_relay_reset_then_live_events() {
    let TestRelay { redis, relay } = start().await;
    let mut publisher = LogPublisher::connect(&redis.url()).await;
    let first = publisher.publish("weatherforecast.created", "1", None).await.unwrap();
    let _second = publisher.publish("weatherforecast.created", "2", None).await.unwrap();
    let third = publisher.publish("weatherforecast.created", "3", None).await.unwrap();
    // The tail has read all three before the trim (else 1 entry could be the first alone).
    relay.wait_metric("sse_relay_resume_window_entries", |entries| entries == 3.0).await;
    let _: i64 =
        redis::cmd("XTRIM").arg("sse:log").arg("MAXLEN").arg(1).query(&mut redis.connection()).unwrap();
    // The relay's resume window follows the trim.
    relay.wait_metric("sse_relay_resume_window_entries", |entries| entries == 1.0).await;

    let (mut stale, _) = relay.resume_stream("", Some(&first)).await;
    let reset = stale.next_event(WAIT).await;
    assert_eq!(reset.event.as_deref(), Some("relay.reset"));
    assert!(reset.data.unwrap().contains("no longer in the log"));

    let (mut fresh, _) = relay.resume_stream(&format!("?lastEventId={third}"), None).await;
    let fourth = publisher.publish("weatherforecast.updated", "4", None).await.unwrap();
    for stream in [&mut stale, &mut fresh] {
        let event = stream.next_event(WAIT).await;
        assert_eq!(event.id.as_deref(), Some(fourth.as_str()));
        assert_eq!(event.event.as_deref(), Some("weatherforecast.updated"));
    }
    assert_eq!(relay.metric("sse_relay_resets_total").await, 1.0);
}

/// A resume from an id the relay's resume window holds is served from memory — the events the
/// log would give, without reading Redis; one from an older id reads the log.
#[tokio::test]
async fn a_resume_inside_the_window_is_served_from_memory_and_an_older_one_from_the_log() {
    let TestRelay { redis, relay } =
        TestRelay::with(|relay| relay.channels(ENVELOPE_CHANNELS).env("REDIS__RESUME_WINDOW_ENTRIES", 3))
            .await;
    let mut publisher = LogPublisher::connect(&redis.url()).await;
    let mut ids = Vec::new();
    for (i, channel) in ["weatherforecast.created", "admin.user.loggedin", "weatherforecast.updated"]
        .iter()
        .cycle()
        .take(5)
        .enumerate()
    {
        ids.push(publisher.publish(channel, &i.to_string(), None).await.unwrap());
    }
    relay.wait_metric("sse_relay_resume_window_bytes", |bytes| bytes > 0.0).await;
    relay.wait_metric("sse_relay_resume_window_entries", |entries| entries == 3.0).await;
    assert_eq!(redis.command_calls("xrange"), 0);

    let (mut stream, _) = relay.resume_stream("?channel=weatherforecast.*", Some(&ids[1])).await;
    let live = publisher.publish("weatherforecast.deleted", "5", None).await.unwrap();
    // ids[1] left the window last; ids[4] is admin's, not asked for.
    for expected in [&ids[2], &ids[3], &live] {
        assert_eq!(stream.next_event(WAIT).await.id.as_ref(), Some(expected));
    }
    assert_eq!(relay.metric("sse_relay_resumes_total{from=\"window\"}").await, 1.0);
    // A resume from the log starts with XRANGE (the tail reads with XREAD).
    assert_eq!(redis.command_calls("xrange"), 0, "the log was read");

    let (mut old, _) = relay.resume_stream("", Some(&ids[0])).await;
    for expected in ids[1..].iter().chain([&live]) {
        assert_eq!(old.next_event(WAIT).await.id.as_ref(), Some(expected));
    }
    assert_eq!(relay.metric("sse_relay_resumes_total{from=\"log\"}").await, 1.0);
    assert!(redis.command_calls("xrange") > 0);
}

/// A resume that would replay more than `redis.max_replay_entries` gets `relay.reset` before any
/// event, whether the window or the log would serve it; a closer one is replayed.
#[tokio::test]
async fn a_resume_too_far_behind_is_reset_rather_than_replayed() {
    for window in [0, 100] {
        let TestRelay { redis, relay } = TestRelay::with(|relay| {
            relay
                .channels(ENVELOPE_CHANNELS)
                .env("REDIS__MAX_REPLAY_ENTRIES", 5)
                .env("REDIS__RESUME_WINDOW_ENTRIES", window)
        })
        .await;
        let mut publisher = LogPublisher::connect(&redis.url()).await;
        let mut ids = Vec::new();
        for n in 0..10 {
            ids.push(publisher.publish("weatherforecast.created", &n.to_string(), None).await.unwrap());
        }
        relay.wait_metric("sse_relay_events_received_total", |events| events == 10.0).await;
        for (from, label) in [(ids[0].clone(), "nine behind"), ("0-0".to_owned(), "the whole log")] {
            let (mut stream, _) = relay.resume_stream("", Some(&from)).await;
            let reset = stream.next_event(WAIT).await;
            assert_eq!(reset.event.as_deref(), Some("relay.reset"), "window {window}, {label}");
            assert!(
                reset.data.unwrap().contains("more than a resume replays (5)"),
                "window {window}, {label}"
            );
            let live = publisher.publish("weatherforecast.updated", "\"live\"", None).await.unwrap();
            assert_eq!(stream.next_event(WAIT).await.id.as_deref(), Some(live.as_str()), "then live");
            ids.push(live);
        }
        // Five behind: replayed.
        let (mut close, _) = relay.resume_stream("", Some(&ids[ids.len() - 6])).await;
        for expected in &ids[ids.len() - 5..] {
            assert_eq!(close.next_event(WAIT).await.id.as_ref(), Some(expected), "window {window}");
        }
    }
}

#[tokio::test]
async fn a_malformed_last_event_id_is_a_400_with_a_reason() {
    let TestRelay { redis: _redis, relay } = start().await;
    for (query, header) in
        [("", Some("yesterday")), ("?lastEventId=12-x", None), ("?lastEventId=1-2-3", None)]
    {
        let mut request = reqwest::Client::new().get(relay.url(&format!("/events{query}")));
        if let Some(header) = header {
            request = request.header("last-event-id", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{query} {header:?}");
        let problem: Value = response.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains("Last-Event-ID"), "{problem}");
    }
}

#[tokio::test]
async fn malformed_log_entries_are_dropped_and_counted_while_the_next_valid_one_is_delivered() {
    let TestRelay { redis, relay } = start().await;
    let mut stream = relay.open_stream("").await;
    let mut connection = redis.connection();
    let mut append = |fields: &[(&str, &str)]| {
        let mut command = redis::cmd("XADD");
        command.arg("sse:log").arg("*");
        for (name, value) in fields {
            command.arg(name).arg(value);
        }
        command.query::<String>(&mut connection).unwrap()
    };
    append(&[("ch", "weatherforecast.created"), ("m", "not json")]);
    append(&[("ch", "weatherforecast.created"), ("m", r#"{"event_id":"no data"}"#)]);
    append(&[("ch", "weatherforecast.created"), ("m", r#"{"event":"x\nevent: injected","data":1}"#)]);
    append(&[("m", r#"{"data":"no channel"}"#)]);
    let mut publisher = LogPublisher::connect(&redis.url()).await;
    let id = publisher.publish("weatherforecast.created", r#"{"ok":true}"#, None).await.unwrap();
    let event = stream.next_event(WAIT).await;
    assert_eq!(event.id.as_deref(), Some(id.as_str()));
    assert_eq!(event.data.as_deref(), Some(r#"{"ok":true}"#));
    let text = relay.metrics().await;
    assert_eq!(testkit::metric(&text, "sse_relay_events_dropped_total{reason=\"bad_envelope\"}"), 3.0);
    assert_eq!(testkit::metric(&text, "sse_relay_events_dropped_total{reason=\"line_break_in_field\"}"), 1.0);
    assert!(testkit::metric(&text, "sse_relay_delivery_latency_seconds_count") >= 1.0);

    // A resuming client steps over them the same way.
    let (mut resumed, _) = relay.resume_stream("", Some("0-0")).await;
    assert_eq!(resumed.next_event(WAIT).await.id.as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn the_excluded_connection_does_not_receive_the_event_another_does() {
    let TestRelay { redis, relay } = start().await;
    let (mut origin, origin_id) = relay.resume_stream("", None).await;
    let (mut other, _) = relay.resume_stream("", None).await;
    let mut publisher = LogPublisher::connect(&redis.url()).await;
    publisher.publish("weatherforecast.updated", r#""mine""#, Some(&origin_id)).await.unwrap();
    publisher.publish("weatherforecast.updated", r#""theirs""#, None).await.unwrap();

    assert_eq!(other.next_event(WAIT).await.data.as_deref(), Some(r#""mine""#));
    assert_eq!(other.next_event(WAIT).await.data.as_deref(), Some(r#""theirs""#));
    assert_eq!(
        origin.next_event(WAIT).await.data.as_deref(),
        Some(r#""theirs""#),
        "its own change is not echoed"
    );
}

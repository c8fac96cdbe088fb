//! Nothing lost, nothing doubled across a Sentinel failover: 1 primary, 2 replicas and 3
//! `redis-sentinel` processes on loopback; forecast-api writing steadily (its outbox waiting
//! for one replica), 50 clients connected throughout and 50 that drop and resume with
//! Last-Event-ID all along; SIGKILL of the primary. Then the hard case: a failover that loses
//! the old primary's unreplicated writes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use testkit::event_source::EventSource;
use testkit::eventually;
use testkit::forecast_process::{ADMIN_KEY, Api, DbKind, ForecastBuilder, TestDb};
use testkit::relay_process::{ENVELOPE_CHANNELS, RelayBuilder, RelayProcess};
use testkit::sentinel::{MASTER_NAME, SentinelSet};
use testkit::service_process::ServiceProcess;
use testkit::sse_parser::SseEvent;

const STREAM: &str = "/events?channel=weatherforecast.*";

fn relay(set: &SentinelSet) -> RelayProcess {
    // Under Sentinel the URL's host is not used.
    RelayBuilder::new("redis://127.0.0.1:1")
        .channels(ENVELOPE_CHANNELS)
        .env("REDIS__SENTINEL__MASTER_NAME", MASTER_NAME)
        .env("REDIS__SENTINEL__ADDRESSES", set.addresses().join(","))
        .start()
}

fn api(set: &SentinelSet, db: &TestDb) -> ServiceProcess {
    ForecastBuilder::new(db, "redis://127.0.0.1:1")
        .env("REDIS__SENTINEL__MASTER_NAME", MASTER_NAME)
        .env("REDIS__SENTINEL__ADDRESSES", set.addresses().join(","))
        .env("REDIS__MIN_REPLICAS", 1)
        .env("REDIS__WAIT_TIMEOUT_MS", 200)
        .start()
}

/// An event as clients see it: channel, forecast id and the write's summary (unique per write).
type EventKey = (String, String, String);

fn key_of_forecast(channel: &str, forecast: &Value) -> EventKey {
    let field = |name: &str| forecast[name].as_str().unwrap_or_default().to_owned();
    (channel.to_owned(), field("id"), field("summary"))
}

/// Writes made so far, as the events clients must receive, in order.
#[derive(Clone, Default)]
struct Writes(Arc<Mutex<Vec<EventKey>>>);

impl Writes {
    fn snapshot(&self) -> Vec<EventKey> {
        self.0.lock().unwrap().clone()
    }

    /// `count` writes, one every `pace`: creates, and updates of the forecast created last.
    async fn make(&self, api: &Api, count: usize, pace: Duration) {
        let mut interval = tokio::time::interval(pace);
        let mut last: Option<Value> = None;
        for i in 0..count {
            interval.tick().await;
            let (channel, forecast) = match (&last, i % 3) {
                (Some(previous), 1 | 2) => {
                    let path = format!("/api/weatherforecast/{}", previous["id"].as_str().unwrap());
                    let summary = format!("{} update {i}", self.0.lock().unwrap().len());
                    let body =
                        json!({ "date": "2026-12-04", "temperatureC": (i % 50) as i64, "summary": summary });
                    let response = api.put(&path, ADMIN_KEY).json(&body).send().await.unwrap();
                    assert_eq!(response.status(), 200, "writes succeed through the failover");
                    ("weatherforecast.updated", response.json::<Value>().await.unwrap())
                }
                _ => {
                    let summary = format!("{} create {i}", self.0.lock().unwrap().len());
                    ("weatherforecast.created", api.create("2026-12-04", (i % 50) as i64, &summary).await)
                }
            };
            self.0.lock().unwrap().push(key_of_forecast(channel, &forecast));
            last = Some(forecast);
        }
    }
}

fn key_of(event: &SseEvent) -> EventKey {
    let data: Value = serde_json::from_str(event.data.as_deref().unwrap_or("")).expect("event data is JSON");
    key_of_forecast(event.event.as_deref().unwrap_or(""), &data)
}

/// What a client received: runs of events between `relay.reset`s.
fn runs(events: &[SseEvent]) -> Vec<Vec<EventKey>> {
    let mut runs = vec![Vec::new()];
    for event in events {
        if event.event.as_deref() == Some("relay.reset") {
            runs.push(Vec::new());
        } else {
            runs.last_mut().unwrap().push(key_of(event));
        }
    }
    runs
}

/// Every event exactly once and in order; a `relay.reset` (allowed only when `resets_allowed`)
/// may skip events, as it tells the client to refetch its state, but never repeat or reorder
/// them, and the run after it is gap-free to the end.
fn assert_complete(client: &str, events: &[SseEvent], expected: &[EventKey], resets_allowed: bool) {
    let runs = runs(events);
    if !resets_allowed {
        assert_eq!(runs.len(), 1, "{client}: no relay.reset");
    }
    let all: Vec<&EventKey> = runs.iter().flatten().collect();
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "{client}: no event twice");
    let mut next = 0;
    for (i, run) in runs.iter().enumerate() {
        let Some(first) = run.first() else { continue };
        let start = expected
            .iter()
            .position(|key| key == first)
            .unwrap_or_else(|| panic!("{client}: unknown {first:?}"));
        assert!(start >= next, "{client}: run {i} goes back in time");
        if i == 0 {
            assert_eq!(start, 0, "{client}: the first event is the first write");
        }
        assert_eq!(
            run[..],
            expected[start..start + run.len()],
            "{client}: run {i} has no gap and keeps the order"
        );
        next = start + run.len();
    }
    assert_eq!(next, expected.len(), "{client}: everything up to the last write");
}

/// Brings every client to the last write. A client whose last id vanished with a lost write is
/// told to reset whenever it resumes, and is live again only once a later write reaches it: so
/// write, give every client a moment to end with that write, and write again until all do.
async fn settle(
    clients: &[EventSource],
    writes: &Writes,
    api: &Api,
    api_process: &ServiceProcess,
) -> Vec<EventKey> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        writes.make(api, 1, Duration::from_millis(1)).await;
        api_process.wait_metric("forecast_api_outbox_pending", |pending| pending == 0.0).await;
        let expected = writes.snapshot();
        let last = expected.last().cloned();
        let round = Instant::now() + Duration::from_secs(3);
        while Instant::now() < round {
            if clients.iter().all(|client| client.events().last().map(key_of_any) == Some(last.clone())) {
                return expected;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(Instant::now() < deadline, "clients did not all end with the last write within 40 s");
    }
}

/// [`key_of`], and `None` for a `relay.reset`.
fn key_of_any(event: &SseEvent) -> Option<EventKey> {
    (event.event.as_deref() != Some("relay.reset")).then(|| key_of(event))
}

async fn wait_for_clients(clients: &[EventSource], count: usize) {
    eventually(Duration::from_secs(40), "every client to receive every event", || async {
        clients.iter().all(|client| client.event_count() >= count).then_some(())
    })
    .await;
}

/// 1 primary, 2 replicas and 3 sentinels; a relay and forecast-api following them; 50 clients
/// connected and 50 that drop and resume every 250–740 ms, all attached.
struct Scenario {
    set: SentinelSet,
    relay: RelayProcess,
    db: TestDb,
    api_process: ServiceProcess,
    api: Api,
    connected: Vec<EventSource>,
    resuming: Vec<EventSource>,
}

impl Scenario {
    async fn start() -> Self {
        let set = SentinelSet::start(2, 3);
        let relay = relay(&set);
        relay.wait_ready().await;
        let db = TestDb::new(DbKind::Sqlite).await;
        let api_process = api(&set, &db);
        let api = Api::new(&api_process);
        let http = reqwest::Client::new();
        let connected: Vec<EventSource> =
            (0..50).map(|_| EventSource::open(http.clone(), relay.url(STREAM))).collect();
        let resuming: Vec<EventSource> = (0..50)
            .map(|i| {
                EventSource::open_dropping(
                    http.clone(),
                    relay.url(STREAM),
                    Duration::from_millis(250 + 10 * i),
                )
            })
            .collect();
        eventually(Duration::from_secs(20), "every client attached", || async {
            connected.iter().chain(&resuming).all(|client| client.current().is_some()).then_some(())
        })
        .await;
        Self { set, relay, db, api_process, api, connected, resuming }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_mid_stream_loses_no_event_and_doubles_none() {
    let Scenario { mut set, relay, db: _db, api_process, api, connected, resuming } = Scenario::start().await;

    let writes = Writes::default();
    let writer = {
        let (writes, api) = (writes.clone(), api.clone());
        tokio::spawn(async move { writes.make(&api, 150, Duration::from_millis(30)).await })
    };
    eventually(Duration::from_secs(20), "some writes delivered", || async {
        (connected[0].event_count() >= 20).then_some(())
    })
    .await;
    let old = set.primary().port();
    set.primary().kill();
    let killed = Instant::now();
    let written_before_kill = writes.snapshot().len();
    let new = eventually(Duration::from_secs(30), "a new primary", || async {
        set.primary_port().filter(|port| *port != old)
    })
    .await;
    // Delivery resumed: a write made after the kill reaches a connected client.
    let first_after_kill = eventually(Duration::from_secs(30), "a write after the kill", || async {
        writes.snapshot().get(written_before_kill).cloned()
    })
    .await;
    eventually(Duration::from_secs(30), "delivery to resume", || async {
        connected[0].events().iter().any(|event| key_of(event) == first_after_kill).then_some(())
    })
    .await;
    eprintln!(
        "failover: primary {old} killed; {new} promoted; delivery resumed {} ms after the kill",
        killed.elapsed().as_millis()
    );

    writer.await.unwrap();
    let all: Vec<EventSource> = connected.into_iter().chain(resuming).collect();
    let expected = settle(&all, &writes, &api, &api_process).await;
    let (connected, resuming) = all.split_at(50);
    // A resuming client whose last id vanished with the old primary gets relay.reset: allowed
    // only when the relay saw the new primary's log lack entries it had read.
    let diverged = relay.metric("sse_relay_log_divergences_total").await > 0.0;
    for (i, client) in connected.iter().enumerate() {
        assert_complete(&format!("connected client {i}"), &client.events(), &expected, false);
    }
    for (i, client) in resuming.iter().enumerate() {
        assert!(client.connections() > 2, "resuming client {i} dropped and resumed");
        assert_complete(&format!("resuming client {i}"), &client.events(), &expected, diverged);
    }
    assert!(relay.metric("sse_relay_redis_failovers_total").await >= 1.0);
    let ready: Value = relay.get("/readyz").await.json().await.unwrap();
    let primary = set.primary_port().expect("the sentinels agree on a primary");
    assert_eq!(ready["node"], format!("127.0.0.1:{primary}"), "{ready}");
    assert!(ready["failovers"].as_u64() >= Some(1), "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_loses_the_old_primarys_latest_writes_loses_and_doubles_nothing_for_clients() {
    let Scenario { mut set, relay, db: _db, api_process, api, connected, resuming } = Scenario::start().await;

    let writes = Writes::default();
    writes.make(&api, 10, Duration::from_millis(20)).await;
    wait_for_clients(&connected, 10).await;

    // The replicas stop and lose their link (else the stream waiting in their sockets would
    // reach them when they resume): what the primary takes now is delivered, never replicated.
    let old = set.primary().port();
    for server in set.servers.iter().filter(|server| server.port() != old) {
        server.signal("STOP");
    }
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query(&mut set.primary().connection())
        .unwrap();
    writes.make(&api, 10, Duration::from_millis(20)).await;
    wait_for_clients(&connected, 20).await;
    let vanished_id = connected[0].events().last().unwrap().id.clone().unwrap();
    api_process.wait_metric("forecast_api_outbox_unreplicated_total", |n| n >= 1.0).await;
    assert!(
        api_process.metric("forecast_api_outbox_pending").await >= 1.0,
        "unconfirmed events stay in the outbox"
    );

    set.primary().kill();
    for server in set.servers.iter().filter(|server| server.port() != old) {
        server.signal("CONT");
    }
    eventually(Duration::from_secs(30), "a new primary", || async {
        set.primary_port().filter(|port| *port != old)
    })
    .await;
    writes.make(&api, 10, Duration::from_millis(20)).await;
    let all: Vec<EventSource> = connected.into_iter().chain(resuming).collect();
    let expected = settle(&all, &writes, &api, &api_process).await;
    let (connected, resuming) = all.split_at(50);

    for (i, client) in connected.iter().enumerate() {
        assert_complete(&format!("connected client {i}"), &client.events(), &expected, false);
    }
    assert!(relay.metric("sse_relay_log_divergences_total").await >= 1.0, "the new primary lacked entries");
    assert!(
        relay.metric("sse_relay_redelivered_events_skipped_total").await >= 1.0,
        "the republished events were not delivered twice"
    );
    for (i, client) in resuming.iter().enumerate() {
        assert_complete(&format!("resuming client {i}"), &client.events(), &expected, true);
    }

    // Resuming from an id that vanished with the lost writes: relay.reset, then live.
    let (mut stream, _) = relay.resume_stream("?channel=weatherforecast.*", Some(&vanished_id)).await;
    let reset = stream.next_event(Duration::from_secs(10)).await;
    assert_eq!(reset.event.as_deref(), Some("relay.reset"), "{reset:?}");
    let live = api.create("2026-12-05", 1, "after the failover").await;
    let event = stream.next_event(Duration::from_secs(10)).await;
    assert_eq!(key_of(&event), key_of_forecast("weatherforecast.created", &live));
}

/// Sentinel over mutual TLS: both services find the primary through TLS-only sentinels,
/// deliver through it, and follow a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_follow_a_primary_through_sentinels_over_mutual_tls() {
    use testkit::redis_server::RedisTls;
    use testkit::tls::TestCerts;

    let certs = TestCerts::generate();
    let mut set = SentinelSet::start_with(1, 3, Some(RedisTls::new(&certs, true)));
    let tls = |builder: RelayBuilder| {
        builder
            .env("REDIS__SENTINEL__TLS", true)
            .env("REDIS__TLS__CA_FILE", certs.ca().display())
            .env("REDIS__TLS__CERT_FILE", certs.client_cert().display())
            .env("REDIS__TLS__KEY_FILE", certs.client_key().display())
    };
    let relay = tls(RelayBuilder::new("rediss://127.0.0.1:1")
        .channels(ENVELOPE_CHANNELS)
        .env("REDIS__SENTINEL__MASTER_NAME", MASTER_NAME)
        .env("REDIS__SENTINEL__ADDRESSES", set.addresses().join(",")))
    .start();
    relay.wait_ready().await;
    let db = TestDb::new(DbKind::Sqlite).await;
    let api_process = ForecastBuilder::new(&db, "rediss://127.0.0.1:1")
        .env("REDIS__SENTINEL__MASTER_NAME", MASTER_NAME)
        .env("REDIS__SENTINEL__ADDRESSES", set.addresses().join(","))
        .env("REDIS__SENTINEL__TLS", true)
        .env("REDIS__TLS__CA_FILE", certs.ca().display())
        .env("REDIS__TLS__CERT_FILE", certs.client_cert().display())
        .env("REDIS__TLS__KEY_FILE", certs.client_key().display())
        .env("REDIS__MIN_REPLICAS", 1)
        .start();
    let api = Api::new(&api_process);
    let mut stream = relay.open_stream("?channel=weatherforecast.*").await;
    let before = api.create("2026-12-04", 2, "before the failover").await;
    let event = stream.next_event(Duration::from_secs(10)).await;
    assert_eq!(key_of(&event), key_of_forecast("weatherforecast.created", &before));

    let old = set.primary().port();
    set.primary().kill();
    eventually(Duration::from_secs(30), "a new primary", || async {
        set.primary_port().filter(|port| *port != old)
    })
    .await;
    let after = api.create("2026-12-04", 3, "after the failover").await;
    let event = stream.next_event(Duration::from_secs(30)).await;
    assert_eq!(key_of(&event), key_of_forecast("weatherforecast.created", &after));
    let ready: Value = relay.get("/readyz").await.json().await.unwrap();
    assert!(ready["failovers"].as_u64() >= Some(1), "{ready}");
}

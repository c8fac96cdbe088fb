//! Nothing lost, nothing doubled across a Sentinel failover: 1 primary, 2 replicas and 3
//! `redis-sentinel` processes on loopback; forecast-api writing steadily (its outbox waiting
//! for one replica), 50 clients connected throughout and 50 that drop and resume with
//! Last-Event-ID all along; SIGKILL of the primary. Then the hard case: a failover that loses
//! the old primary's unreplicated writes.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::steady_writes::{
    Order, Writes, assert_complete, attach_clients, key_of, key_of_forecast, settle, wait_for_clients,
};
use testkit::event_source::EventSource;
use testkit::eventually;
use testkit::forecast_process::{Api, DbKind, ForecastBuilder, TestDb};
use testkit::relay_process::{ENVELOPE_CHANNELS, RelayBuilder, RelayProcess};
use testkit::sentinel::{MASTER_NAME, SentinelSet};
use testkit::service_process::ServiceProcess;

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
        let (connected, resuming) = attach_clients(&relay).await;
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
        assert_complete(&format!("connected client {i}"), &client.events(), &expected, false, Order::Total);
    }
    for (i, client) in resuming.iter().enumerate() {
        assert!(client.connections() > 2, "resuming client {i} dropped and resumed");
        assert_complete(&format!("resuming client {i}"), &client.events(), &expected, diverged, Order::Total);
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
        assert_complete(&format!("connected client {i}"), &client.events(), &expected, false, Order::Total);
    }
    assert!(relay.metric("sse_relay_log_divergences_total").await >= 1.0, "the new primary lacked entries");
    assert!(
        relay.metric("sse_relay_redelivered_events_skipped_total").await >= 1.0,
        "the republished events were not delivered twice"
    );
    for (i, client) in resuming.iter().enumerate() {
        assert_complete(&format!("resuming client {i}"), &client.events(), &expected, true, Order::Total);
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

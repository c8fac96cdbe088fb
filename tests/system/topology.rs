//! The topology of a cluster, on loopback: two relays and two forecast-api replicas on one
//! PostgreSQL and one Redis, each pair behind nginx configured like the chart's ingress.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::Row;

use testkit::event_source::EventSource;
use testkit::eventually;
use testkit::forecast_process::{Api, DbKind, ForecastBuilder, TestDb};
use testkit::nginx::Nginx;
use testkit::proxy::WedgingProxy;
use testkit::redis_server::RedisServer;
use testkit::relay_process::{ENVELOPE_CHANNELS, RelayBuilder, RelayProcess};
use testkit::service_process::ServiceProcess;

pub const FORECAST_STREAM: &str = "/events?channel=weatherforecast.*";
/// Names the replicas give their database sessions (`application_name`), to tell which one
/// holds the outbox lock.
pub const API_NAMES: [&str; 2] = ["forecast-a", "forecast-b"];

pub struct Options {
    pub drain_delay_ms: u64,
    pub drain_window_ms: u64,
    /// Route the first API replica's Redis traffic through a proxy that can go silent.
    pub wedgeable_first_api: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { drain_delay_ms: 0, drain_window_ms: 500, wedgeable_first_api: false }
    }
}

pub struct Topology {
    _redis: RedisServer,
    pub db_url: String,
    pub relays: Vec<RelayProcess>,
    pub apis: Vec<ServiceProcess>,
    pub nginx: Nginx,
    pub http: reqwest::Client,
    /// Between the first API replica and Redis, when asked for.
    pub first_api_redis: Option<WedgingProxy>,
    _db: TestDb,
}

impl Topology {
    pub async fn start(options: Options) -> Self {
        let redis = RedisServer::start();
        let db = TestDb::new(DbKind::Postgres).await;
        let relays: Vec<RelayProcess> = ["relay-a", "relay-b"]
            .into_iter()
            .map(|pod| {
                RelayBuilder::new(redis.url())
                    .channels(ENVELOPE_CHANNELS)
                    .env("POD_ID", pod)
                    .env("LIMITS__TRUSTED_PROXY_HOPS", 1)
                    .env("SHUTDOWN__DRAIN_DELAY_MS", options.drain_delay_ms)
                    .env("SHUTDOWN__DRAIN_WINDOW_MS", options.drain_window_ms)
                    .env(
                        "SHUTDOWN__GRACE_PERIOD_MS",
                        options.drain_delay_ms + options.drain_window_ms + 5_000,
                    )
                    .start()
            })
            .collect();
        let first_api_redis = if options.wedgeable_first_api {
            Some(WedgingProxy::start(([127, 0, 0, 1], redis.port()).into()).await)
        } else {
            None
        };
        let apis: Vec<ServiceProcess> = API_NAMES
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let redis_url = match (&first_api_redis, i) {
                    (Some(proxy), 0) => proxy.url(),
                    _ => redis.url(),
                };
                let mut builder = ForecastBuilder::new(&db, redis_url)
                    .env("DATABASE__URL", format!("{}?application_name={name}", db.url));
                if first_api_redis.is_some() && i == 0 {
                    // A publish (or connect) into the silent proxy waits, holding the outbox lock,
                    // until the replica is killed.
                    builder = builder
                        .env("REDIS__RESPONSE_TIMEOUT_MS", 120_000)
                        .env("REDIS__CONNECT_TIMEOUT_MS", 120_000);
                }
                builder.start()
            })
            .collect();
        for relay in &relays {
            relay.wait_ready().await;
        }
        let relay_addrs: Vec<_> = relays.iter().map(|relay| relay.addr()).collect();
        let api_addrs: Vec<_> = apis.iter().map(ServiceProcess::addr).collect();
        let nginx = Nginx::start(&relay_addrs, &api_addrs).await;
        Self {
            _redis: redis,
            db_url: db.url.clone(),
            relays,
            apis,
            nginx,
            http: reqwest::Client::new(),
            first_api_redis,
            _db: db,
        }
    }

    /// The API replicas through the balancer.
    pub fn api(&self) -> Api {
        Api { base: self.nginx.api_base(), http: self.http.clone() }
    }

    /// One API replica directly.
    pub fn api_replica(&self, index: usize) -> Api {
        Api::new(&self.apis[index])
    }

    /// Which relay an upstream address reported by the balancer is.
    pub fn relay_index(&self, upstream: &str) -> usize {
        self.relays
            .iter()
            .position(|relay| relay.addr().to_string() == upstream)
            .unwrap_or_else(|| panic!("upstream {upstream} is none of the relays"))
    }

    /// `count` browsers on the forecast stream through the balancer, each attached to a relay.
    pub async fn clients(&self, count: usize) -> Vec<EventSource> {
        let clients: Vec<EventSource> = (0..count)
            .map(|_| EventSource::open(self.http.clone(), self.nginx.relay_url(FORECAST_STREAM)))
            .collect();
        eventually(Duration::from_secs(30), "every client attached to a relay", || async {
            clients.iter().all(|client| client.current().is_some()).then_some(())
        })
        .await;
        clients
    }

    /// The relays the clients are attached to now.
    pub fn relays_in_use(&self, clients: &[EventSource]) -> HashSet<usize> {
        clients.iter().filter_map(EventSource::current).map(|a| self.relay_index(&a.upstream)).collect()
    }

    /// The `application_name` of the replica whose transaction has held the outbox lock for at
    /// least `held_ms` (a batch that publishes normally holds it for milliseconds).
    pub async fn outbox_lock_holder(&self, db: &sqlx::PgPool, held_ms: i64) -> Option<String> {
        sqlx::query(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted \
             AND now() - a.xact_start >= make_interval(secs => $1 / 1000.0)",
        )
        .bind(held_ms)
        .fetch_optional(db)
        .await
        .expect("query pg_locks")
        .map(|row| row.get::<String, _>(0))
    }

    pub async fn outbox_pending(&self, db: &sqlx::PgPool) -> i64 {
        sqlx::query("SELECT count(*) FROM outbox").fetch_one(db).await.expect("count outbox").get(0)
    }
}

/// What identifies one event of a forecast: its channel, the forecast and its version.
pub type EventKey = (String, String, i64);

pub fn key_of_forecast(channel: &str, forecast: &serde_json::Value) -> EventKey {
    (
        channel.to_owned(),
        forecast["id"].as_str().expect("forecast id").to_owned(),
        forecast["version"].as_i64().unwrap_or(0),
    )
}

/// The keys of the events a client received, in arrival order.
pub fn received_keys(client: &EventSource) -> Vec<EventKey> {
    client
        .events()
        .iter()
        .map(|event| {
            let data: serde_json::Value =
                serde_json::from_str(event.data.as_deref().unwrap_or("")).expect("event data is JSON");
            key_of_forecast(event.event.as_deref().unwrap_or(""), &data)
        })
        .collect()
}

/// Waits until every client holds as many events as expected, then checks that each received
/// exactly the expected events, in order, each once.
pub async fn assert_every_client_received(clients: &[EventSource], expected: &[EventKey]) {
    eventually(Duration::from_secs(30), "every client to receive every event", || async {
        clients.iter().all(|client| client.event_count() >= expected.len()).then_some(())
    })
    .await;
    for (i, client) in clients.iter().enumerate() {
        let received = received_keys(client);
        assert_eq!(received.len(), expected.len(), "client {i}: each event exactly once");
        assert_eq!(received, expected, "client {i}: every event, in the order it was made");
        let ids: Vec<String> = client.events().iter().map(|e| e.id.clone().expect("event id")).collect();
        assert!(ids.windows(2).all(|w| log_id(&w[0]) < log_id(&w[1])), "client {i}: ids ascend");
    }
}

fn log_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("log id ms-seq");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

/// Creates `count` forecasts through the balancer, one every `pace`; returns their events.
pub fn publish_forecasts(api: Api, count: usize, pace: Duration) -> tokio::task::JoinHandle<Vec<EventKey>> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(pace);
        let mut keys = Vec::with_capacity(count);
        for i in 0..count {
            interval.tick().await;
            let forecast = api.create("2026-12-01", (i % 60) as i64 - 20, &format!("forecast {i}")).await;
            keys.push(key_of_forecast("weatherforecast.created", &forecast));
        }
        keys
    })
}

//! The real `sse-relay` binary, configured by a TOML file plus environment overrides, and
//! [`TestRelay`]: a relay with a Redis of its own, the prologue of a relay test.

use std::ops::{Deref, DerefMut};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::redis_server::RedisServer;
use crate::service_process::ServiceProcess;
use crate::sse_client::SseClient;

/// A fresh Redis and a relay reading it, ready (its subscription delivers); both stopped when
/// dropped. `let TestRelay { redis, relay } = TestRelay::start().await;`
pub struct TestRelay {
    pub redis: RedisServer,
    pub relay: RelayProcess,
}

impl TestRelay {
    /// With the default channels ([`DEFAULT_CHANNELS`]).
    pub async fn start() -> Self {
        Self::with(|relay| relay).await
    }

    /// With the relay configured by `configure`.
    pub async fn with(configure: impl FnOnce(RelayBuilder) -> RelayBuilder) -> Self {
        let redis = RedisServer::start();
        let relay = configure(RelayBuilder::new(redis.url())).start();
        relay.wait_ready().await;
        Self { redis, relay }
    }
}

/// A running relay: a service process that also opens event streams.
pub struct RelayProcess(ServiceProcess);

impl RelayProcess {
    pub fn new(process: ServiceProcess) -> Self {
        Self(process)
    }

    /// Opens `/events<query>` and reads past the `relay.connected` preamble.
    pub async fn open_stream(&self, query: &str) -> SseClient {
        self.resume_stream(query, None).await.0
    }

    /// Opens `/events<query>` with a `Last-Event-ID` header; returns the stream past its
    /// preamble and the connection id the relay announced.
    pub async fn resume_stream(&self, query: &str, last_event_id: Option<&str>) -> (SseClient, String) {
        let mut client =
            SseClient::connect_with_last_event_id(&self.url(&format!("/events{query}")), last_event_id).await;
        let connected = client.next_event(Duration::from_secs(10)).await;
        assert_eq!(connected.event.as_deref(), Some("relay.connected"), "{connected:?}");
        let data: serde_json::Value =
            serde_json::from_str(connected.data.as_deref().unwrap_or("")).expect("JSON");
        (client, data["connection_id"].as_str().expect("connection id").to_owned())
    }
}

impl Deref for RelayProcess {
    type Target = ServiceProcess;

    fn deref(&self) -> &ServiceProcess {
        &self.0
    }
}

impl DerefMut for RelayProcess {
    fn deref_mut(&mut self) -> &mut ServiceProcess {
        &mut self.0
    }
}

/// The channel rules most tests use.
pub const DEFAULT_CHANNELS: &str = r#"
[[channels]]
pattern = "weatherforecast.*"
format = "raw"
access = "public"

[[channels]]
pattern = "admin.*"
format = "raw"
access = "public"
"#;

/// Envelope channels (replayable), plus a raw one.
pub const ENVELOPE_CHANNELS: &str = r#"
[[channels]]
pattern = "weatherforecast.*"
format = "envelope"

[[channels]]
pattern = "admin.*"
format = "envelope"

[[channels]]
pattern = "raw.*"
format = "raw"
"#;

pub struct RelayBuilder {
    redis_url: String,
    channels_toml: String,
    env: Vec<(String, String)>,
}

impl RelayBuilder {
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self { redis_url: redis_url.into(), channels_toml: DEFAULT_CHANNELS.into(), env: Vec::new() }
    }

    pub fn channels(mut self, toml: &str) -> Self {
        self.channels_toml = toml.into();
        self
    }

    /// Forecast events public, admin events for holders of forecast-api's tokens (the test
    /// secret, audience and issuer).
    pub fn accepting_forecast_api_tokens(self) -> Self {
        self.channels(
            "[[channels]]\npattern = \"weatherforecast.*\"\nformat = \"envelope\"\n\n\
             [[channels]]\npattern = \"admin.*\"\nformat = \"envelope\"\naccess = \"token\"\n",
        )
        .env("AUTH__JWT_SECRET", crate::forecast_process::RELAY_JWT_SECRET)
        .env("AUTH__AUDIENCE", "sse-relay")
        .env("AUTH__ISSUER", "forecast-api")
    }

    /// Sets a key through its environment variable, e.g. `env("LIMITS__MAX_CONNECTIONS", "2")`.
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((format!("SSE_RELAY__{key}"), value.to_string()));
        self
    }

    /// Sets any environment variable of the process (`SSL_CERT_FILE`…).
    pub fn process_env(mut self, name: &str, value: impl ToString) -> Self {
        self.env.push((name.to_owned(), value.to_string()));
        self
    }

    pub fn start(self) -> RelayProcess {
        let dir = tempfile::tempdir().expect("temp dir for relay config");
        let config = dir.path().join("relay.toml");
        let toml = format!(
            "listen = \"127.0.0.1:0\"\npod_id = \"test-{}\"\n\n[redis]\nurl = \"{}\"\n{}",
            std::process::id(),
            self.redis_url,
            self.channels_toml
        );
        std::fs::write(&config, toml).expect("write relay config");
        let mut command = Command::new(crate::workspace_binary("sse-relay"));
        command
            .arg("--config")
            .arg(&config)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info,sse_relay=debug")
            // Fast reactions for tests; each test may override any of these.
            .env("SSE_RELAY__REDIS__BACKOFF_INITIAL_MS", "50")
            .env("SSE_RELAY__REDIS__BACKOFF_MAX_MS", "500")
            .env("SSE_RELAY__REDIS__PROBE_INTERVAL_MS", "500")
            .env("SSE_RELAY__REDIS__CONNECT_TIMEOUT_MS", "1000")
            .env("SSE_RELAY__SHUTDOWN__DRAIN_DELAY_MS", "0")
            .env("SSE_RELAY__SHUTDOWN__DRAIN_WINDOW_MS", "200")
            .env("SSE_RELAY__SHUTDOWN__GRACE_PERIOD_MS", "5000")
            .envs(self.env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        RelayProcess(ServiceProcess::spawn(command, dir))
    }
}

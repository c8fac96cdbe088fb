//! forecast-api configuration: typed sections, defaults, validation and `Duration` getters.
//!
//! Key names are a contract shared with the Helm chart and deployments (see the README).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use service::config::{ConfigError, ConfigErrors, Validate, require_positive};
use service::redis_target::{ClusterSettings, RedisEndpoint, SentinelSettings, TlsSettings};

/// Environment variables starting with `FORECAST_API__` override the file.
pub const ENV_PREFIX: &str = "FORECAST_API";
/// Keys whose environment value is a comma-separated list.
pub const LIST_KEYS: &[&str] = &["cors.allowed_origins", "redis.sentinel.addresses", "redis.cluster.nodes"];

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForecastSettings {
    pub listen: String,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub relay: RelaySettings,
    pub cors: CorsSettings,
    pub outbox: OutboxSettings,
    pub events: EventsSettings,
    pub http: HttpSettings,
}

/// The in-process handlers every domain event goes through (audit, outbox notifier, metrics).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSettings {
    /// A handler still running after this long is abandoned (logged and counted as failed);
    /// the request that caused the event waits for its handlers at most this long.
    pub handler_timeout_ms: u64,
}

impl Default for EventsSettings {
    fn default() -> Self {
        Self { handler_timeout_ms: 5_000 }
    }
}

impl EventsSettings {
    pub fn handler_timeout(&self) -> Duration {
        Duration::from_millis(self.handler_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` (created if missing) or `postgres://user:pass@host/db`.
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` (TLS); under Sentinel only its credentials and database count.
    pub url: String,
    /// ACL user; overrides the URL's.
    pub username: String,
    /// File holding the password (a mounted Secret); overrides the URL's.
    pub password_file: String,
    pub tls: TlsSettings,
    pub sentinel: SentinelSettings,
    pub cluster: ClusterSettings,
    /// History stream the publish script appends to; "" publishes without a log (no replay).
    pub log_stream: String,
    /// Streams the log is split into (Redis Cluster: spread over its primaries); 1 keeps the
    /// one `log_stream`.
    pub log_partitions: u32,
    /// A managed Redis without PSUBSCRIBE, WAIT, FUNCTION, CLIENT, CONFIG and KEYS (such as
    /// ElastiCache Serverless): events are published without waiting for replicas.
    pub restricted: bool,
    /// Approximate number of entries kept in the log stream.
    pub log_retention: u64,
    /// How long an event id is remembered to keep publishing exactly-once.
    pub dedup_ttl_secs: u64,
    pub dedup_prefix: String,
    /// Also PUBLISH each event on its channel, for subscribers other than the relay (which
    /// reads the log). Always done when `log_stream` is empty.
    pub publish_channels: bool,
    /// An outbox row is done only once `WAIT` confirms this many replicas hold its event; until
    /// then it is published again (the dedup key makes that a no-op where the first write
    /// survived). 0 for a standalone Redis; 1 or more under Sentinel, so that a failover cannot
    /// lose an event the outbox already forgot.
    pub min_replicas: u32,
    /// How long `WAIT` waits for those replicas.
    pub wait_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Bootstrap admin API key; when empty one is generated at first start and printed once.
    pub admin_key: String,
    /// HS256 secret shared with the relay (`auth.jwt_secret` there); empty disables relay tokens.
    pub relay_jwt_secret: String,
    /// Lifetime of tokens minted by `POST /api/relay-token`.
    pub relay_token_ttl_secs: u64,
    /// Lifetime of one-time tickets minted by `POST /api/relay-ticket`.
    pub relay_ticket_ttl_secs: u64,
    /// The session cookie's name.
    pub session_cookie_name: String,
    /// How long a session lasts from sign-in.
    pub session_ttl_secs: u64,
    /// Mark the session cookie `Secure` always; without this it is `Secure` when the request
    /// came over HTTPS (`X-Forwarded-Proto: https` from the ingress).
    pub secure_cookies: bool,
    /// Anyone may register (as a `viewer`) with `POST /api/users`; otherwise only admins may.
    pub open_registration: bool,
    /// Sign-in attempts allowed per account, and per client address, within
    /// `sign_in_window_secs` (each replica counts its own).
    pub sign_in_attempts_per_account: u32,
    pub sign_in_attempts_per_address: u32,
    pub sign_in_window_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// Where browsers reach the relay.
    pub public_url: String,
    /// Cookie the relay reads tokens from (its `auth.cookie_name`), for same-site deployments.
    pub cookie_name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsSettings {
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxSettings {
    /// How often the dispatcher looks for rows even when nothing woke it.
    pub poll_interval_ms: u64,
    pub batch_size: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    pub request_timeout_ms: u64,
    pub max_body_bytes: u64,
    /// A request head must arrive within this time (slowloris protection).
    pub header_read_timeout_secs: u64,
    /// Proxies in front whose `X-Forwarded-For` entries are believed, counted from the right
    /// (the client address that sign-in limits count by).
    pub trusted_proxy_hops: u32,
}

impl Default for ForecastSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8081".into(),
            database: DatabaseSettings::default(),
            redis: RedisSettings::default(),
            auth: AuthSettings::default(),
            relay: RelaySettings::default(),
            cors: CorsSettings::default(),
            outbox: OutboxSettings::default(),
            events: EventsSettings::default(),
            http: HttpSettings::default(),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self { url: "sqlite://data/forecast.db".into(), max_connections: 10, connect_timeout_ms: 5_000 }
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            username: String::new(),
            password_file: String::new(),
            tls: TlsSettings::default(),
            sentinel: SentinelSettings::default(),
            cluster: ClusterSettings::default(),
            log_stream: "sse:log".into(),
            log_partitions: 1,
            restricted: false,
            log_retention: 100_000,
            dedup_ttl_secs: 86_400,
            dedup_prefix: "sse:dedup:".into(),
            publish_channels: false,
            min_replicas: 0,
            wait_timeout_ms: 1_000,
            connect_timeout_ms: 2_000,
            response_timeout_ms: 2_000,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            admin_key: String::new(),
            relay_jwt_secret: String::new(),
            relay_token_ttl_secs: 300,
            relay_ticket_ttl_secs: 30,
            session_cookie_name: "forecast_session".into(),
            session_ttl_secs: 8 * 3600,
            secure_cookies: false,
            open_registration: false,
            sign_in_attempts_per_account: 10,
            sign_in_attempts_per_address: 50,
            sign_in_window_secs: 300,
        }
    }
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self { public_url: "http://localhost:8080".into(), cookie_name: "sse_relay_token".into() }
    }
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self { poll_interval_ms: 1_000, batch_size: 100, backoff_initial_ms: 100, backoff_max_ms: 5_000 }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            request_timeout_ms: 10_000,
            max_body_bytes: 65_536,
            header_read_timeout_secs: 10,
            trusted_proxy_hops: 0,
        }
    }
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

impl DatabaseSettings {
    pub fn kind(&self) -> Result<DatabaseKind, ConfigError> {
        if self.url.starts_with("sqlite:") {
            Ok(DatabaseKind::Sqlite)
        } else if self.url.starts_with("postgres://") || self.url.starts_with("postgresql://") {
            Ok(DatabaseKind::Postgres)
        } else {
            Err(ConfigError::new(
                "database.url",
                "must start with sqlite:// (embedded file) or postgres:// (PostgreSQL server)",
            ))
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

impl RedisSettings {
    /// Where Redis is and how to reach it.
    pub fn endpoint(&self) -> RedisEndpoint {
        RedisEndpoint {
            url: self.url.clone(),
            username: self.username.clone(),
            password_file: self.password_file.clone(),
            tls: self.tls.clone(),
            sentinel: self.sentinel.clone(),
            cluster: self.cluster.clone(),
        }
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn wait_timeout(&self) -> Duration {
        Duration::from_millis(self.wait_timeout_ms)
    }
    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }
}

impl OutboxSettings {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    pub fn backoff_initial(&self) -> Duration {
        Duration::from_millis(self.backoff_initial_ms)
    }
    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms)
    }
}

impl HttpSettings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }
}

impl ForecastSettings {
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            ConfigError::new("listen", format!("{:?} is not an address like 0.0.0.0:8081", self.listen))
        })
    }
}

impl Validate for ForecastSettings {
    fn validate(&self, errors: &mut ConfigErrors) {
        errors.check(self.listen_addr());
        errors.check(self.database.kind());
        errors.check(require_positive("database.max_connections", u64::from(self.database.max_connections)));
        errors.check(require_positive("database.connect_timeout_ms", self.database.connect_timeout_ms));
        self.redis.endpoint().validate("redis", errors);
        self.redis.endpoint().validate_log_partitions("redis", self.redis.log_partitions, errors);
        if self.redis.restricted && self.redis.min_replicas > 0 {
            errors.add(ConfigError::new(
                "redis.min_replicas",
                "needs WAIT, which a restricted Redis (redis.restricted) does not have: use 0",
            ));
        }
        errors.check(require_positive("redis.log_retention", self.redis.log_retention));
        errors.check(require_positive("redis.dedup_ttl_secs", self.redis.dedup_ttl_secs));
        errors.check(require_positive("redis.connect_timeout_ms", self.redis.connect_timeout_ms));
        errors.check(require_positive("redis.response_timeout_ms", self.redis.response_timeout_ms));
        errors.check(require_positive("redis.wait_timeout_ms", self.redis.wait_timeout_ms));
        if self.redis.dedup_prefix.is_empty() {
            errors.add(ConfigError::new("redis.dedup_prefix", "must not be empty"));
        }
        if !self.auth.admin_key.is_empty() && self.auth.admin_key.len() < 16 {
            errors.add(ConfigError::new("auth.admin_key", "must be at least 16 characters"));
        }
        if !self.auth.relay_jwt_secret.is_empty() && self.auth.relay_jwt_secret.len() < 32 {
            errors.add(ConfigError::new(
                "auth.relay_jwt_secret",
                "must be at least 32 characters (HS256 needs a strong shared secret)",
            ));
        }
        errors.check(require_positive("auth.relay_token_ttl_secs", self.auth.relay_token_ttl_secs));
        errors.check(require_positive("auth.relay_ticket_ttl_secs", self.auth.relay_ticket_ttl_secs));
        let cookie_ok = |name: &str| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !cookie_ok(&self.relay.cookie_name) {
            errors.add(ConfigError::new("relay.cookie_name", "must be letters, digits, '_' or '-'"));
        }
        if !cookie_ok(&self.auth.session_cookie_name) {
            errors.add(ConfigError::new("auth.session_cookie_name", "must be letters, digits, '_' or '-'"));
        } else if self.auth.session_cookie_name == self.relay.cookie_name {
            errors.add(ConfigError::new("auth.session_cookie_name", "must differ from relay.cookie_name"));
        }
        errors.check(require_positive("auth.session_ttl_secs", self.auth.session_ttl_secs));
        errors.check(require_positive(
            "auth.sign_in_attempts_per_account",
            u64::from(self.auth.sign_in_attempts_per_account),
        ));
        errors.check(require_positive(
            "auth.sign_in_attempts_per_address",
            u64::from(self.auth.sign_in_attempts_per_address),
        ));
        errors.check(require_positive("auth.sign_in_window_secs", self.auth.sign_in_window_secs));
        if !(self.relay.public_url.starts_with("http://") || self.relay.public_url.starts_with("https://")) {
            errors.add(ConfigError::new("relay.public_url", "must be an http:// or https:// URL"));
        }
        errors.check(service::config::validate_origins("cors.allowed_origins", &self.cors.allowed_origins));
        errors.check(require_positive("outbox.poll_interval_ms", self.outbox.poll_interval_ms));
        errors.check(require_positive("outbox.batch_size", u64::from(self.outbox.batch_size)));
        errors.check(require_positive("outbox.backoff_initial_ms", self.outbox.backoff_initial_ms));
        errors.check(require_positive("outbox.backoff_max_ms", self.outbox.backoff_max_ms));
        errors.check(require_positive("events.handler_timeout_ms", self.events.handler_timeout_ms));
        errors.check(require_positive("http.request_timeout_ms", self.http.request_timeout_ms));
        errors.check(require_positive("http.max_body_bytes", self.http.max_body_bytes));
        errors.check(require_positive("http.header_read_timeout_secs", self.http.header_read_timeout_secs));
    }
}

//! The relay's configuration: typed sections, defaults, validation and `Duration` getters.
//!
//! Key names are a contract shared with the Helm chart and deployments (see the README's
//! configuration reference); durations carry their unit in the name.

use std::net::SocketAddr;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::channels::{Access, ChannelRule};
use protocol::message::Format;

use protocol::glob::{Pattern, Shape};
use service::config::{ConfigError, ConfigErrors, Validate, require_positive};
use service::redis_target::{ClusterSettings, RedisEndpoint, SentinelSettings, TlsSettings};

/// Environment variables starting with `SSE_RELAY__` override the file.
pub const ENV_PREFIX: &str = "SSE_RELAY";
/// Keys whose environment value is a comma-separated list.
pub const LIST_KEYS: &[&str] = &["cors.allowed_origins", "redis.sentinel.addresses", "redis.cluster.nodes"];

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    pub listen: String,
    /// A second listener serving only `/metrics` (then not served on `listen`); empty: metrics
    /// on `listen`.
    pub metrics_listen: String,
    /// Identifies this process on its probe channel and in logs; defaults to the host name
    /// (the pod name in Kubernetes).
    pub pod_id: String,
    pub redis: RedisSettings,
    pub channels: Vec<ChannelSettings>,
    pub auth: AuthSettings,
    pub cors: CorsSettings,
    pub limits: LimitSettings,
    pub sse: SseSettings,
    pub shutdown: ShutdownSettings,
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
    /// Stream holding envelope history for replay; "" disables replay.
    pub log_stream: String,
    /// Streams the log is split into (Redis Cluster: spread over its primaries); 1 keeps the
    /// one `log_stream`.
    pub log_partitions: u32,
    /// A managed Redis without PSUBSCRIBE, WAIT, FUNCTION, CLIENT, CONFIG and KEYS (such as
    /// ElastiCache Serverless): raw channels must be exact names (SUBSCRIBE), not patterns.
    pub restricted: bool,
    pub connect_timeout_ms: u64,
    /// How long the relay stays ready without a working subscription before `/readyz` fails.
    pub unready_after_secs: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// How often a probe is published on the relay's own channel to prove delivery.
    pub probe_interval_ms: u64,
    /// A probe not back within this time marks the connection wedged.
    pub probe_timeout_ms: u64,
    /// How long one `XREAD` of the log waits for new entries (the reply timeout is this plus
    /// `connect_timeout_ms`).
    pub tail_block_ms: u64,
    /// Latest log entries kept in memory to serve resumes without reading Redis; 0: none.
    pub resume_window_entries: u64,
    /// Bound on the memory those entries hold.
    pub resume_window_bytes: u64,
    /// A resume that would replay more log entries than this gets `relay.reset` instead (the
    /// client refetches its state); 0: no bound.
    pub max_replay_entries: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    pub pattern: String,
    #[serde(default = "default_format")]
    pub format: Format,
    #[serde(default = "default_access")]
    pub access: Access,
    /// Raw, exact name, Redis Cluster: subscribed with sharded pub/sub (`SSUBSCRIBE`) on the
    /// node that owns the channel's slot, which publishers reach with `SPUBLISH`.
    #[serde(default)]
    pub sharded: bool,
}

fn default_format() -> Format {
    Format::Raw
}

fn default_access() -> Access {
    Access::Public
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret for token channels (at least 32 characters).
    pub jwt_secret: String,
    /// PEM public key (RSA → RS256, EC P-256 → ES256) for token channels.
    pub jwt_public_key_file: String,
    /// Required `aud` claim; empty: not checked.
    pub audience: String,
    /// Required `iss` claim; empty: not checked.
    pub issuer: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// A token whose `exp` is further ahead than this is refused (0: no limit), so that a
    /// leaked token cannot be one minted to live for years.
    pub max_token_lifetime_secs: u64,
    /// Cookie a token may be read from (same-site deployments).
    pub cookie_name: String,
    /// Redis key prefix for claimed one-time tickets.
    pub ticket_prefix: String,
}

impl AuthSettings {
    /// The PEM public key of `jwt_public_key_file`, if set: RSA keys verify RS256 tokens, EC
    /// (P-256) keys ES256 tokens.
    pub fn public_key(&self) -> Result<Option<(DecodingKey, Algorithm)>, ConfigError> {
        let path = &self.jwt_public_key_file;
        if path.is_empty() {
            return Ok(None);
        }
        let key = "auth.jwt_public_key_file";
        let pem = std::fs::read(path)
            .map_err(|error| ConfigError::new(key, format!("cannot read {path}: {error}")))?;
        if let Ok(rsa) = DecodingKey::from_rsa_pem(&pem) {
            return Ok(Some((rsa, Algorithm::RS256)));
        }
        DecodingKey::from_ec_pem(&pem)
            .map(|ec| Some((ec, Algorithm::ES256)))
            .map_err(|_| ConfigError::new(key, format!("{path} is not a PEM RSA or EC (P-256) public key")))
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            jwt_public_key_file: String::new(),
            audience: String::new(),
            issuer: String::new(),
            leeway_secs: 5,
            max_token_lifetime_secs: 86_400,
            cookie_name: "sse_relay_token".into(),
            ticket_prefix: "sse:ticket:".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins allowed to open streams cross-origin; empty means same-origin only.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    pub max_connections: u64,
    /// Frames buffered per client before it counts as slow and is disconnected.
    pub client_queue: u64,
    pub max_channels_per_request: u64,
    pub max_message_bytes: u64,
    /// Streams per client IP; 0: no limit.
    pub max_connections_per_ip: u64,
    /// Proxies in front of the relay that append to `X-Forwarded-For`; 0: use the peer address.
    pub trusted_proxy_hops: u64,
    /// Longest request target (path and query) accepted.
    pub max_url_bytes: u64,
    /// A request head must arrive within this time (slowloris protection).
    pub header_read_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SseSettings {
    pub keepalive_secs: u64,
    /// Reconnection delay sent to browsers; each stream gets up to half again as jitter.
    pub retry_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    /// Time between failing readiness and refusing connections, for load balancers to notice.
    pub drain_delay_ms: u64,
    /// Streams are closed spread over this window so clients reconnect gradually.
    pub drain_window_ms: u64,
    /// Hard limit for the whole shutdown, after which remaining connections are cut.
    pub grace_period_ms: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            metrics_listen: String::new(),
            pod_id: default_pod_id(),
            redis: RedisSettings::default(),
            channels: vec![ChannelSettings {
                pattern: "weatherforecast.*".into(),
                format: Format::Envelope,
                access: Access::Public,
                sharded: false,
            }],
            auth: AuthSettings::default(),
            cors: CorsSettings::default(),
            limits: LimitSettings::default(),
            sse: SseSettings::default(),
            shutdown: ShutdownSettings::default(),
        }
    }
}

fn default_pod_id() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "sse-relay".into())
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
            connect_timeout_ms: 2_000,
            unready_after_secs: 10,
            backoff_initial_ms: 100,
            backoff_max_ms: 5_000,
            probe_interval_ms: 5_000,
            probe_timeout_ms: 2_000,
            tail_block_ms: 1_000,
            resume_window_entries: 10_000,
            resume_window_bytes: 16 << 20,
            max_replay_entries: 10_000,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            client_queue: 1024,
            max_channels_per_request: 16,
            max_message_bytes: 65_536,
            max_connections_per_ip: 0,
            trusted_proxy_hops: 0,
            max_url_bytes: 8_192,
            header_read_timeout_secs: 10,
        }
    }
}

impl Default for SseSettings {
    fn default() -> Self {
        Self { keepalive_secs: 15, retry_ms: 3_000 }
    }
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self { drain_delay_ms: 5_000, drain_window_ms: 10_000, grace_period_ms: 25_000 }
    }
}

impl RelaySettings {
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            ConfigError::new("listen", format!("{:?} is not an address like 0.0.0.0:8080", self.listen))
        })
    }

    /// Where `/metrics` is served on its own, if anywhere.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.metrics_listen.is_empty() {
            return Ok(None);
        }
        self.metrics_listen.parse().map(Some).map_err(|_| {
            ConfigError::new(
                "metrics_listen",
                format!("{:?} is not an address like 0.0.0.0:9090", self.metrics_listen),
            )
        })
    }

    /// The validated channel rules, in configuration order (the first match wins).
    pub fn channel_rules(&self) -> Result<Vec<ChannelRule>, ConfigError> {
        self.channels
            .iter()
            .enumerate()
            .map(|(i, channel)| {
                let pattern = channel_pattern(i, &channel.pattern)?;
                Ok(ChannelRule {
                    pattern,
                    format: channel.format,
                    access: channel.access,
                    sharded: channel.sharded,
                })
            })
            .collect()
    }
}

fn channel_pattern(i: usize, pattern: &str) -> Result<Pattern, ConfigError> {
    Pattern::parse(pattern)
        .map_err(|error| ConfigError::new(format!("channels[{i}].pattern"), format!("{pattern:?}: {error}")))
}

impl Validate for RelaySettings {
    fn validate(&self, errors: &mut ConfigErrors) {
        errors.check(self.listen_addr());
        if let (Ok(listen), Ok(Some(metrics))) = (self.listen_addr(), self.metrics_addr())
            && listen == metrics
            // Port 0 picks a free port for each: two listeners, never the same.
            && listen.port() != 0
        {
            errors.add(ConfigError::new("metrics_listen", "must differ from listen"));
        }
        errors.check(self.metrics_addr());
        if self.pod_id.is_empty() || self.pod_id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            errors.add(ConfigError::new("pod_id", "must be a non-empty name without spaces"));
        }
        self.redis.endpoint().validate("redis", errors);
        self.redis.endpoint().validate_log_partitions("redis", self.redis.log_partitions, errors);
        if self.redis.restricted {
            for (i, channel) in self.channels.iter().enumerate() {
                let subscribed = channel.format == Format::Raw || self.redis.log_stream.is_empty();
                let pattern = Pattern::parse(&channel.pattern);
                if subscribed && pattern.is_ok_and(|pattern| !matches!(pattern.shape(), Shape::Exact(_))) {
                    errors.add(ConfigError::new(
                        format!("channels[{i}].pattern"),
                        format!(
                            "{:?} is a pattern, and a restricted Redis (redis.restricted) has no PSUBSCRIBE: \
                             use an envelope channel (read from the log) or exact channel names",
                            channel.pattern
                        ),
                    ));
                }
            }
        }
        for (i, channel) in self.channels.iter().enumerate().filter(|(_, channel)| channel.sharded) {
            let exact = Pattern::parse(&channel.pattern)
                .is_ok_and(|pattern| matches!(pattern.shape(), Shape::Exact(_)));
            let why = if channel.format != Format::Raw {
                Some("sharded pub/sub is for raw channels (envelope channels are read from the log)")
            } else if !exact {
                Some("sharded pub/sub has no patterns: name one exact channel per rule")
            } else if !self.redis.endpoint().is_cluster() {
                Some("sharded pub/sub (SSUBSCRIBE) is a Redis Cluster's: set redis.cluster.nodes")
            } else {
                None
            };
            if let Some(why) = why {
                errors.add(ConfigError::new(format!("channels[{i}].sharded"), why));
            }
        }
        errors.check(require_positive("redis.connect_timeout_ms", self.redis.connect_timeout_ms));
        errors.check(require_positive("redis.unready_after_secs", self.redis.unready_after_secs));
        errors.check(require_positive("redis.backoff_initial_ms", self.redis.backoff_initial_ms));
        errors.check(require_positive("redis.backoff_max_ms", self.redis.backoff_max_ms));
        errors.check(require_positive("redis.probe_interval_ms", self.redis.probe_interval_ms));
        errors.check(require_positive("redis.probe_timeout_ms", self.redis.probe_timeout_ms));
        // 0 would block forever: a dead connection could never be noticed.
        errors.check(require_positive("redis.tail_block_ms", self.redis.tail_block_ms));
        errors.check(require_positive("redis.resume_window_bytes", self.redis.resume_window_bytes));
        if self.redis.backoff_max_ms < self.redis.backoff_initial_ms {
            errors.add(ConfigError::new(
                "redis.backoff_max_ms",
                "must not be smaller than redis.backoff_initial_ms",
            ));
        }
        if self.channels.is_empty() {
            errors.add(ConfigError::new("channels", "at least one [[channels]] rule is required"));
        }
        for (i, channel) in self.channels.iter().enumerate() {
            errors.check(channel_pattern(i, &channel.pattern));
        }
        if let Some(i) = self.channels.iter().position(|channel| channel.access == Access::Token)
            && self.auth.jwt_secret.is_empty()
            && self.auth.jwt_public_key_file.is_empty()
        {
            errors.add(ConfigError::new(
                format!("channels[{i}].access"),
                "\"token\" channels need auth.jwt_secret or auth.jwt_public_key_file",
            ));
        }
        errors.check(self.auth.public_key());
        if !self.auth.jwt_secret.is_empty() && self.auth.jwt_secret.len() < 32 {
            errors.add(ConfigError::new("auth.jwt_secret", "must be at least 32 characters"));
        }
        if self.auth.leeway_secs > 300 {
            errors.add(ConfigError::new("auth.leeway_secs", "must be at most 300"));
        }
        let cookie_ok = !self.auth.cookie_name.is_empty()
            && self.auth.cookie_name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !cookie_ok {
            errors.add(ConfigError::new("auth.cookie_name", "must be letters, digits, '_' or '-'"));
        }
        errors.check(service::config::validate_origins("cors.allowed_origins", &self.cors.allowed_origins));
        errors.check(require_positive("limits.max_connections", self.limits.max_connections));
        errors.check(require_positive("limits.client_queue", self.limits.client_queue));
        errors
            .check(require_positive("limits.max_channels_per_request", self.limits.max_channels_per_request));
        errors.check(require_positive("limits.max_message_bytes", self.limits.max_message_bytes));
        errors.check(require_positive("limits.max_url_bytes", self.limits.max_url_bytes));
        errors
            .check(require_positive("limits.header_read_timeout_secs", self.limits.header_read_timeout_secs));
        if self.limits.trusted_proxy_hops > 16 {
            errors.add(ConfigError::new("limits.trusted_proxy_hops", "must be at most 16"));
        }
        errors.check(require_positive("sse.keepalive_secs", self.sse.keepalive_secs));
        errors.check(require_positive("sse.retry_ms", self.sse.retry_ms));
        errors.check(require_positive("shutdown.grace_period_ms", self.shutdown.grace_period_ms));
        // Checked: the durations are the operator's, any u64 (a wrapped sum would pass).
        let draining_ms = self.shutdown.drain_delay_ms.checked_add(self.shutdown.drain_window_ms);
        if draining_ms.is_none_or(|draining_ms| draining_ms >= self.shutdown.grace_period_ms) {
            errors.add(ConfigError::new(
                "shutdown.grace_period_ms",
                "must be longer than shutdown.drain_delay_ms + shutdown.drain_window_ms",
            ));
        }
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
    pub fn unready_after(&self) -> Duration {
        Duration::from_secs(self.unready_after_secs)
    }
    pub fn backoff_initial(&self) -> Duration {
        Duration::from_millis(self.backoff_initial_ms)
    }
    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms)
    }
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms)
    }
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_millis(self.probe_timeout_ms)
    }
    pub fn tail_block(&self) -> Duration {
        Duration::from_millis(self.tail_block_ms)
    }
}

impl LimitSettings {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }
}

impl SseSettings {
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_secs)
    }
}

impl ShutdownSettings {
    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }
    pub fn drain_window(&self) -> Duration {
        Duration::from_millis(self.drain_window_ms)
    }
    pub fn grace_period(&self) -> Duration {
        Duration::from_millis(self.grace_period_ms)
    }
}

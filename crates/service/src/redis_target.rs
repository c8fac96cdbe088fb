//! Where Redis is and how to reach it, for both services: one URL (standalone; `rediss://` for
//! TLS), a master name behind Sentinel, or the seed nodes of a Redis Cluster; ACL credentials from the URL or from a mounted file;
//! TLS verified against the system roots or a CA file, a client certificate for mutual TLS, and
//! an explicit, loudly logged opt-out of verification.
//!
//! [`RedisTarget::client`] answers "which node do I talk to now": it reads the credential and
//! certificate files and, under Sentinel, asks the sentinels for the current primary (checked
//! with `ROLE`), at every call. Callers call it on every (re)connect, so a failover, a rotated
//! password or a renewed certificate takes effect on the next reconnect, without a restart.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{IntCounter, IntGaugeVec};

use redis::aio::MultiplexedConnection;
use redis::cluster::{ClusterClient, ClusterClientBuilder, NodeAddress};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates, TlsMode};
use serde::Deserialize;

use crate::config::{ConfigError, ConfigErrors};
use crate::metrics::MetricsRegistry;

/// `[redis.tls]`: applies to `rediss://` URLs and to Sentinel with `sentinel.tls = true`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM bundle of the CA(s) that sign the server certificate; empty: the system roots.
    pub ca_file: String,
    /// Client certificate (PEM) for mutual TLS, with `key_file`.
    pub cert_file: String,
    pub key_file: String,
    /// Accept any server certificate. For tests and emergencies only: logged at every start.
    pub insecure_skip_verify: bool,
}

impl TlsSettings {
    fn is_set(&self) -> bool {
        *self != Self::default()
    }
}

/// `[redis.sentinel]`: set `master_name` to follow a primary through Sentinel.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SentinelSettings {
    pub master_name: String,
    /// `host:port` of each sentinel.
    pub addresses: Vec<String>,
    /// ACL user and password file for the sentinels themselves (they may differ from the data
    /// nodes').
    pub username: String,
    pub password_file: String,
    /// TLS to the sentinels and to the Redis nodes they name, with `[redis.tls]`.
    pub tls: bool,
}

impl SentinelSettings {
    pub fn enabled(&self) -> bool {
        !self.master_name.is_empty()
    }
}

/// `[redis.cluster]`: set `nodes` to talk to a Redis Cluster.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Seed nodes, `host:port`: any few nodes of the cluster; the rest is discovered.
    pub nodes: Vec<String>,
    /// TLS to every node, with `[redis.tls]`.
    pub tls: bool,
    /// Addresses the nodes advertise → addresses to reach them at (`host:port` both), for
    /// endpoints that advertise other names than their certificates carry, or than the
    /// network routes.
    pub address_map: std::collections::BTreeMap<String, String>,
}

impl ClusterSettings {
    pub fn enabled(&self) -> bool {
        !self.nodes.is_empty()
    }
}

/// The connection part of a `[redis]` section, as both services write it. Each service's
/// settings repeat these fields rather than flatten this struct into theirs: serde cannot
/// combine `flatten` with `deny_unknown_fields`, which turns a misspelt key into an error.
#[derive(Debug, Clone)]
pub struct RedisEndpoint {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…`; under Sentinel only its
    /// credentials and database are used.
    pub url: String,
    /// ACL user; overrides the URL's.
    pub username: String,
    /// File holding the password (a mounted Secret); overrides the URL's.
    pub password_file: String,
    pub tls: TlsSettings,
    pub sentinel: SentinelSettings,
    pub cluster: ClusterSettings,
}

impl RedisEndpoint {
    /// Checks what can be checked before connecting: the URL, readable files, certificates
    /// that parse, and no contradictory settings. `section` is the TOML section (`redis`).
    pub fn validate(&self, section: &str, errors: &mut ConfigErrors) {
        let key = |name: &str| format!("{section}.{name}");
        errors.check(validate_redis_url(&key("url"), &self.url));
        if !self.password_file.is_empty() {
            errors.check(read_secret(&key("password_file"), &self.password_file));
        }
        let tls_wanted = if self.sentinel.enabled() {
            self.sentinel.tls
        } else if self.cluster.enabled() {
            self.cluster.tls
        } else {
            self.url.starts_with("rediss://")
        };
        if self.tls.is_set() && !tls_wanted {
            let how = if self.sentinel.enabled() {
                "sentinel.tls = true"
            } else if self.cluster.enabled() {
                "cluster.tls = true"
            } else {
                "a rediss:// URL"
            };
            errors.add(ConfigError::new(
                key("tls"),
                format!("is set but the connection is not TLS: use {how}, or remove [{section}.tls]"),
            ));
        }
        let tls = &self.tls;
        if tls.insecure_skip_verify && !tls.ca_file.is_empty() {
            errors.add(ConfigError::new(
                key("tls.insecure_skip_verify"),
                "contradicts tls.ca_file: verify against the CA, or skip verification, not both",
            ));
        }
        if tls.cert_file.is_empty() != tls.key_file.is_empty() {
            errors.add(ConfigError::new(
                key(if tls.cert_file.is_empty() { "tls.cert_file" } else { "tls.key_file" }),
                "mutual TLS needs both tls.cert_file and tls.key_file",
            ));
        }
        for (name, path) in [
            ("tls.ca_file", &tls.ca_file),
            ("tls.cert_file", &tls.cert_file),
            ("tls.key_file", &tls.key_file),
        ] {
            if !path.is_empty() {
                errors.check(read_pem(&key(name), path));
            }
        }
        let sentinel = &self.sentinel;
        if sentinel.enabled() {
            if sentinel.addresses.is_empty() {
                errors.add(ConfigError::new(
                    key("sentinel.addresses"),
                    "must list at least one sentinel (host:port)",
                ));
            }
            for (i, address) in sentinel.addresses.iter().enumerate() {
                errors.check(parse_host_port(&format!("{section}.sentinel.addresses[{i}]"), address));
            }
            if !sentinel.password_file.is_empty() {
                errors.check(read_secret(&key("sentinel.password_file"), &sentinel.password_file));
            }
            if self.url.starts_with("rediss://") && !sentinel.tls {
                errors.add(ConfigError::new(
                    key("sentinel.tls"),
                    "the URL is rediss:// but sentinel.tls is false: under Sentinel, sentinel.tls says whether TLS is used",
                ));
            }
        } else if !sentinel.addresses.is_empty() {
            errors.add(ConfigError::new(
                key("sentinel.master_name"),
                "is empty but sentinel.addresses are set",
            ));
        }
        let cluster = &self.cluster;
        if cluster.enabled() && sentinel.enabled() {
            errors.add(ConfigError::new(
                key("cluster.nodes"),
                "and sentinel.master_name are both set: one Redis mode at a time (url, sentinel or cluster)",
            ));
        }
        for (i, node) in cluster.nodes.iter().enumerate() {
            errors.check(parse_host_port(&format!("{section}.cluster.nodes[{i}]"), node));
        }
        for (advertised, reachable) in &cluster.address_map {
            let name = format!("{section}.cluster.address_map[{advertised:?}]");
            errors.check(parse_host_port(&name, advertised));
            errors.check(parse_host_port(&name, reachable));
        }
        if cluster.enabled() {
            if self.url.starts_with("rediss://") && !cluster.tls {
                errors.add(ConfigError::new(
                    key("cluster.tls"),
                    "the URL is rediss:// but cluster.tls is false: in a cluster, cluster.tls says whether TLS is used",
                ));
            }
            if let Ok(info) = self.url.as_str().into_connection_info()
                && info.redis_settings().db() != 0
            {
                errors.add(ConfigError::new(
                    key("url"),
                    "selects a database; a Redis Cluster has only database 0",
                ));
            }
        } else if cluster.tls || !cluster.address_map.is_empty() {
            errors.add(ConfigError::new(key("cluster.nodes"), "is empty but other cluster settings are set"));
        }
    }

    /// Checks `log_partitions` against this endpoint: 1 to 64, and more than one only in a
    /// cluster (one Redis holds one log anyway).
    pub fn validate_log_partitions(&self, section: &str, partitions: u32, errors: &mut ConfigErrors) {
        let key = format!("{section}.log_partitions");
        if !(1..=64).contains(&partitions) {
            errors.add(ConfigError::new(key, format!("is {partitions}; it must be from 1 to 64")));
        } else if partitions > 1 && !self.is_cluster() {
            errors.add(ConfigError::new(
                key,
                format!("is {partitions}, but partitions spread the log over a Redis Cluster: set {section}.cluster.nodes, or use 1"),
            ));
        }
    }

    /// Whether this endpoint is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster.enabled()
    }
}

/// Why no client could be made for the current primary.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot read {what} {path}: {error}")]
    File { what: &'static str, path: String, error: std::io::Error },
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("no sentinel answered within {0} ms")]
    SentinelTimeout(u128),
}

/// Makes clients for the node to talk to now (see the module documentation).
pub struct RedisTarget {
    endpoint: RedisEndpoint,
    timeout: Duration,
    /// The node of the last client made, to notice a change (`host:port`).
    primary: Mutex<Option<String>>,
    failovers: AtomicU64,
    metrics: NodeMetrics,
    /// In a cluster, the seed node the next [`RedisTarget::client`] is for: a subscription
    /// whose node failed moves on to the next one.
    next_seed: AtomicU64,
}

/// Which Redis node a service talks to, and how often that changed:
/// `<prefix>_redis_primary{address}` (1 for the node in use; addresses are those of the few
/// nodes of one deployment) and `<prefix>_redis_failovers_total`.
#[derive(Clone)]
pub struct NodeMetrics {
    primary: IntGaugeVec,
    failovers: IntCounter,
}

impl NodeMetrics {
    pub fn new(registry: &MetricsRegistry, prefix: &str) -> Self {
        Self {
            primary: registry.gauge_vec(
                &format!("{prefix}_redis_primary"),
                "1 for the Redis node in use (the primary, under Sentinel)",
                &["address"],
            ),
            failovers: registry.counter(
                &format!("{prefix}_redis_failovers_total"),
                "Changes of the Redis node in use (failovers followed)",
            ),
        }
    }
}

/// The result of [`RedisTarget::client`].
pub struct Resolved {
    pub client: redis::Client,
    /// `host:port` of the node.
    pub address: String,
    /// True when the node differs from the one of the previous call (a failover, under
    /// Sentinel); false on the first call.
    pub changed: bool,
}

impl RedisTarget {
    /// `timeout` bounds the sentinel lookup. Logs, once, a verification opt-out.
    pub fn new(endpoint: RedisEndpoint, timeout: Duration, metrics: NodeMetrics) -> Self {
        if endpoint.tls.insecure_skip_verify {
            tracing::warn!(
                "redis.tls.insecure_skip_verify is set: Redis server certificates are NOT verified; \
                 anyone on the network path can read and change every event"
            );
        }
        Self {
            endpoint,
            timeout,
            primary: Mutex::new(None),
            failovers: AtomicU64::new(0),
            metrics,
            next_seed: AtomicU64::new(0),
        }
    }

    /// Where this target points, for logs: the URL without its password, the master name and
    /// its sentinels, or the cluster's seed nodes.
    pub fn describe(&self) -> String {
        let sentinel = &self.endpoint.sentinel;
        if sentinel.enabled() {
            format!("sentinel master {} via {}", sentinel.master_name, sentinel.addresses.join(","))
        } else if self.endpoint.cluster.enabled() {
            format!("cluster via {}", self.endpoint.cluster.nodes.join(","))
        } else {
            redacted_url(&self.endpoint.url)
        }
    }

    /// `host:port` of the node the last client was made for.
    pub fn current_primary(&self) -> Option<String> {
        self.primary.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// How many times the node in use changed since start.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// A client for the node to talk to now: the URL's, the primary the sentinels name, or in
    /// a cluster the next seed node (in turn: a classic subscription on any node of a cluster
    /// hears every node's `PUBLISH`).
    pub async fn client(&self) -> Result<Resolved, TargetError> {
        let client = if self.endpoint.sentinel.enabled() {
            tokio::time::timeout(self.timeout, self.sentinel_client())
                .await
                .map_err(|_| TargetError::SentinelTimeout(self.timeout.as_millis()))??
        } else if self.is_cluster() {
            let seeds = self.seed_nodes();
            let turn = self.next_seed.fetch_add(1, Ordering::Relaxed) as usize;
            match seeds.get(turn % seeds.len().max(1)) {
                Some(seed) => self.node_client(seed.clone().into_connection_info()?)?,
                None => self.standalone_client()?,
            }
        } else {
            self.standalone_client()?
        };
        let address = match client.get_connection_info().addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                format!("{host}:{port}")
            }
            ConnectionAddr::Unix(path) => path.display().to_string(),
            // A newer kind of address than this version knows: name the configuration instead.
            _ => self.describe(),
        };
        // A std Mutex: held for a comparison, never across an await.
        let mut primary = self.primary.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = primary.as_ref().is_some_and(|previous| *previous != address);
        if primary.as_deref() != Some(address.as_str()) {
            if changed {
                self.failovers.fetch_add(1, Ordering::Relaxed);
                self.metrics.failovers.inc();
                tracing::warn!(redis.previous = primary.as_deref().unwrap_or(""), redis.node = %address, "redis node changed (failover followed)");
            }
            self.metrics.primary.reset();
            self.metrics.primary.with_label_values(&[address.as_str()]).set(1);
            *primary = Some(address.clone());
        }
        Ok(Resolved { client, address, changed })
    }

    /// A connection for short commands, whatever the mode: to the node [`Self::client`] names
    /// (with its `host:port`), or to the cluster (named by its seed nodes). `response_timeout`
    /// bounds each reply.
    pub async fn connect(
        &self,
        response_timeout: Duration,
    ) -> Result<(RedisConnection, String), TargetError> {
        if self.is_cluster() {
            let client = self.cluster_client(response_timeout)?;
            return Ok((RedisConnection::Cluster(client.get_async_connection().await?), self.describe()));
        }
        let resolved = self.client().await?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(response_timeout));
        let connection = resolved.client.get_multiplexed_async_connection_with_config(&config).await?;
        Ok((RedisConnection::Node(connection), resolved.address))
    }

    /// Whether this target is a Redis Cluster (use [`Self::cluster_client`]).
    pub fn is_cluster(&self) -> bool {
        self.endpoint.cluster.enabled()
    }

    /// A client of the cluster: its seed nodes, credentials (read now, as for
    /// [`Self::client`]), TLS, address map and timeouts. It follows `MOVED`/`ASK`, failovers
    /// and resharding by itself.
    pub fn cluster_client(&self, response_timeout: Duration) -> Result<ClusterClient, TargetError> {
        Ok(self.cluster_client_builder(response_timeout)?.build()?)
    }

    /// [`Self::cluster_client`], before it is built (to add a protocol and a push sender, for
    /// sharded subscriptions).
    pub fn cluster_client_builder(
        &self,
        response_timeout: Duration,
    ) -> Result<ClusterClientBuilder, TargetError> {
        let cluster = &self.endpoint.cluster;
        let url = self.endpoint.url.as_str().into_connection_info()?;
        let nodes: Vec<ConnectionInfo> =
            self.seed_nodes().into_iter().filter_map(|addr| addr.into_connection_info().ok()).collect();
        let mut builder = ClusterClientBuilder::new(nodes)
            .connection_timeout(self.timeout)
            .response_timeout(response_timeout);
        let username = Some(self.endpoint.username.as_str())
            .filter(|name| !name.is_empty())
            .or(url.redis_settings().username());
        if let Some(username) = username {
            builder = builder.username(username);
        }
        if let Some(password) = self.password()? {
            builder = builder.password(password);
        }
        if cluster.tls {
            let mode =
                if self.endpoint.tls.insecure_skip_verify { TlsMode::Insecure } else { TlsMode::Secure };
            builder = builder.tls(mode).certs(self.certificates()?);
        }
        if !cluster.address_map.is_empty() {
            let address = |text: &str| {
                let (host, port) = text.rsplit_once(':')?;
                Some(NodeAddress::new(host.trim_matches(['[', ']']), port.parse().ok()?))
            };
            let map = cluster
                .address_map
                .iter()
                .filter_map(|(advertised, reachable)| Some((address(advertised)?, address(reachable)?)))
                .collect();
            builder = builder.node_address_map(map);
        }
        Ok(builder)
    }

    /// The addresses of the cluster's seed nodes, with TLS where configured.
    fn seed_nodes(&self) -> Vec<ConnectionAddr> {
        let cluster = &self.endpoint.cluster;
        cluster
            .nodes
            .iter()
            .filter_map(|node| {
                let (host, port) = node.rsplit_once(':')?;
                let (host, port) = (host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?);
                Some(if cluster.tls {
                    ConnectionAddr::TcpTls {
                        host,
                        port,
                        insecure: self.endpoint.tls.insecure_skip_verify,
                        tls_params: None,
                    }
                } else {
                    ConnectionAddr::Tcp(host, port)
                })
            })
            .collect()
    }

    fn standalone_client(&self) -> Result<redis::Client, TargetError> {
        self.node_client(self.endpoint.url.as_str().into_connection_info()?)
    }

    /// A client for the node at `info`, with the configured credentials and TLS.
    fn node_client(&self, mut info: ConnectionInfo) -> Result<redis::Client, TargetError> {
        if self.is_cluster() {
            // The URL is not a node's address in a cluster, but it may carry the credentials.
            let url = self.endpoint.url.as_str().into_connection_info()?;
            info = info.set_redis_settings(url.redis_settings().clone());
        }
        let mut redis = info.redis_settings().clone();
        if !self.endpoint.username.is_empty() {
            redis = redis.set_username(&self.endpoint.username);
        }
        if let Some(password) = self.password()? {
            redis = redis.set_password(password);
        }
        info = info.set_redis_settings(redis);
        match info.addr().clone() {
            ConnectionAddr::TcpTls { host, port, insecure, .. } => {
                let insecure = insecure || self.endpoint.tls.insecure_skip_verify;
                info = info.set_addr(ConnectionAddr::TcpTls { host, port, insecure, tls_params: None });
                Ok(redis::Client::build_with_tls(info, self.certificates()?)?)
            }
            _ => Ok(redis::Client::open(info)?),
        }
    }

    async fn sentinel_client(&self) -> Result<redis::Client, TargetError> {
        let sentinel = &self.endpoint.sentinel;
        let url = self.endpoint.url.as_str().into_connection_info()?;
        let tls_mode =
            if self.endpoint.tls.insecure_skip_verify { TlsMode::Insecure } else { TlsMode::Secure };
        let addresses = sentinel.addresses.iter().filter_map(|address| {
            let (host, port) = address.rsplit_once(':')?;
            let (host, port) = (host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?);
            Some(if sentinel.tls {
                ConnectionAddr::TcpTls { host, port, insecure: false, tls_params: None }
            } else {
                ConnectionAddr::Tcp(host, port)
            })
        });
        let mut builder =
            SentinelClientBuilder::new(addresses, &sentinel.master_name, SentinelServerType::Master)?
                .set_client_to_redis_db(url.redis_settings().db());
        let username = Some(self.endpoint.username.as_str())
            .filter(|name| !name.is_empty())
            .or(url.redis_settings().username());
        if let Some(username) = username {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = self.password()? {
            builder = builder.set_client_to_redis_password(password);
        }
        if !sentinel.username.is_empty() {
            builder = builder.set_client_to_sentinel_username(&sentinel.username);
        }
        if !sentinel.password_file.is_empty() {
            builder = builder.set_client_to_sentinel_password(
                read_file("password file", &sentinel.password_file)?.trim_end(),
            );
        }
        if sentinel.tls {
            let certificates = self.certificates()?;
            builder = builder
                .set_client_to_redis_tls_mode(tls_mode)
                .set_client_to_redis_certificates(certificates.clone())
                .set_client_to_sentinel_tls_mode(tls_mode)
                .set_client_to_sentinel_certificates(certificates);
        }
        Ok(builder.build()?.async_get_client().await?)
    }

    /// The password file's content (one trailing newline ignored), else the URL's password.
    fn password(&self) -> Result<Option<String>, TargetError> {
        if self.endpoint.password_file.is_empty() {
            let url = self.endpoint.url.as_str().into_connection_info()?;
            return Ok(url.redis_settings().password().map(str::to_owned));
        }
        Ok(Some(
            read_file("password file", &self.endpoint.password_file)?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ))
    }

    fn certificates(&self) -> Result<TlsCertificates, TargetError> {
        let tls = &self.endpoint.tls;
        let read = |what, path: &str| -> Result<Option<Vec<u8>>, TargetError> {
            if path.is_empty() {
                return Ok(None);
            }
            std::fs::read(path).map(Some).map_err(|error| TargetError::File {
                what,
                path: path.to_owned(),
                error,
            })
        };
        let client_tls =
            match (read("client certificate", &tls.cert_file)?, read("client key", &tls.key_file)?) {
                (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig { client_cert, client_key }),
                _ => None,
            };
        Ok(TlsCertificates { client_tls, root_cert: read("CA file", &tls.ca_file)? })
    }
}

/// A connection to the one node of a standalone or Sentinel Redis, or to a whole cluster
/// (which routes each command to the node that owns its keys).
#[derive(Clone)]
pub enum RedisConnection {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Runs `command` on the primary that owns `slot` (in a cluster: `WAIT` must reach the
    /// node that took the writes it waits for), or on the node.
    pub async fn query_on_slot<T: redis::FromRedisValue>(
        &mut self,
        slot: u16,
        command: redis::Cmd,
    ) -> redis::RedisResult<T> {
        match self {
            Self::Node(connection) => command.query_async(connection).await,
            Self::Cluster(connection) => {
                let route = Route::new(slot, SlotAddr::Master);
                let value = connection
                    .route_command(
                        command,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                Ok(T::from_redis_value(value)?)
            }
        }
    }
}

impl redis::aio::ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Node(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Node(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

fn read_file(what: &'static str, path: &str) -> Result<String, TargetError> {
    std::fs::read_to_string(path).map_err(|error| TargetError::File { what, path: path.to_owned(), error })
}

/// Parses a `redis://`, `rediss://` or `unix://` URL, naming `key` on failure.
pub fn validate_redis_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")) {
        return Err(ConfigError::new(key, format!("{url:?} is not a redis://, rediss:// or unix:// URL")));
    }
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|error| ConfigError::new(key, format!("{url:?} is not a valid Redis URL: {error}")))
}

/// Whether a failed command means the connection should be replaced (and the node looked up
/// again): the connection broke or timed out, or the node is no longer (or not yet) a usable
/// primary — a demoted primary answers writes with READONLY.
pub fn needs_new_connection(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(error.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
}

/// A secret file must be readable and not empty. Its content is never part of an error.
fn read_secret(key: &str, path: &str) -> Result<(), ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim_end_matches(['\r', '\n']).is_empty() => {
            Err(ConfigError::new(key, format!("{path} is empty")))
        }
        Ok(_) => Ok(()),
        Err(error) => Err(ConfigError::new(key, format!("cannot read {path}: {error}"))),
    }
}

/// A PEM file must be readable and hold at least one PEM block.
fn read_pem(key: &str, path: &str) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(Path::new(path))
        .map_err(|error| ConfigError::new(key, format!("cannot read {path}: {error}")))?;
    if !text.contains("-----BEGIN ") {
        return Err(ConfigError::new(key, format!("{path} holds no PEM block")));
    }
    Ok(())
}

fn parse_host_port(key: &str, address: &str) -> Result<(), ConfigError> {
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0));
    if valid { Ok(()) } else { Err(ConfigError::new(key, format!("{address:?} is not host:port"))) }
}

/// The URL without its password, for logs.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> RedisEndpoint {
        RedisEndpoint {
            url: url.into(),
            username: String::new(),
            password_file: String::new(),
            tls: TlsSettings::default(),
            sentinel: SentinelSettings::default(),
            cluster: ClusterSettings::default(),
        }
    }

    fn test_metrics() -> NodeMetrics {
        NodeMetrics::new(&MetricsRegistry::new(), "test")
    }

    fn errors_of(endpoint: &RedisEndpoint) -> String {
        let mut errors = ConfigErrors::default();
        endpoint.validate("redis", &mut errors);
        errors.to_string()
    }

    #[test]
    fn a_cluster_is_one_mode_among_three_and_its_addresses_are_checked() {
        let mut cluster = endpoint("redis://127.0.0.1:6379");
        cluster.cluster.nodes = vec!["127.0.0.1:7000".into(), "10.0.0.1".into()];
        cluster.cluster.address_map.insert("10.1.0.1:6379".into(), "nat".into());
        let errors = errors_of(&cluster);
        assert!(errors.contains("redis.cluster.nodes[1]: \"10.0.0.1\" is not host:port"), "{errors}");
        assert!(errors.contains("\"nat\" is not host:port"), "{errors}");
        cluster.cluster.nodes.pop();
        cluster.cluster.address_map.clear();
        assert_eq!(errors_of(&cluster), "");
        cluster.sentinel.master_name = "main".into();
        cluster.sentinel.addresses = vec!["127.0.0.1:26379".into()];
        assert!(errors_of(&cluster).contains("one Redis mode at a time"));
        let mut tls_without_cluster = endpoint("redis://127.0.0.1:6379");
        tls_without_cluster.cluster.tls = true;
        assert!(
            errors_of(&tls_without_cluster)
                .contains("redis.cluster.nodes: is empty but other cluster settings are set")
        );
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(redacted_url("redis://:secret@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(redacted_url("redis://user:pw@host"), "redis://***@host");
        assert_eq!(redacted_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn tls_settings_on_a_plain_connection_are_refused_rather_than_ignored() {
        let mut plain = endpoint("redis://127.0.0.1:6379");
        plain.tls.insecure_skip_verify = true;
        assert!(
            errors_of(&plain).starts_with("redis.tls: is set but the connection is not TLS"),
            "{}",
            errors_of(&plain)
        );
        let mut tls = endpoint("rediss://127.0.0.1:6379");
        tls.tls.insecure_skip_verify = true;
        assert_eq!(errors_of(&tls), "");
    }

    #[test]
    fn contradictory_or_incomplete_tls_settings_are_each_reported() {
        let mut tls = endpoint("rediss://127.0.0.1:6379");
        tls.tls = TlsSettings {
            ca_file: "/nonexistent/ca.pem".into(),
            cert_file: "/nonexistent/client.pem".into(),
            key_file: String::new(),
            insecure_skip_verify: true,
        };
        let errors = errors_of(&tls);
        let lines: Vec<&str> = errors.lines().collect();
        assert_eq!(lines.len(), 4, "{errors}");
        assert!(lines[0].starts_with("redis.tls.insecure_skip_verify: contradicts tls.ca_file"));
        assert!(lines[1].starts_with("redis.tls.key_file: mutual TLS needs both"));
        assert!(lines[2].starts_with("redis.tls.ca_file: cannot read /nonexistent/ca.pem"));
        assert!(lines[3].starts_with("redis.tls.cert_file: cannot read"));
    }

    #[test]
    fn sentinel_mode_needs_valid_sentinel_addresses() {
        let mut sentinel = endpoint("redis://127.0.0.1:6379");
        sentinel.sentinel.master_name = "mymaster".into();
        assert_eq!(
            errors_of(&sentinel),
            "redis.sentinel.addresses: must list at least one sentinel (host:port)"
        );
        sentinel.sentinel.addresses = vec!["127.0.0.1:26379".into(), "nohost".into(), "[::1]:26380".into()];
        assert_eq!(errors_of(&sentinel), "redis.sentinel.addresses[1]: \"nohost\" is not host:port");
        let mut orphan = endpoint("redis://127.0.0.1:6379");
        orphan.sentinel.addresses = vec!["127.0.0.1:26379".into()];
        assert_eq!(errors_of(&orphan), "redis.sentinel.master_name: is empty but sentinel.addresses are set");
    }

    #[test]
    fn an_empty_password_file_is_refused_without_showing_its_content() {
        let dir = std::env::temp_dir().join(format!("redis-target-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let mut with_file = endpoint("redis://127.0.0.1:6379");
        with_file.password_file = empty.display().to_string();
        assert_eq!(errors_of(&with_file), format!("redis.password_file: {} is empty", empty.display()));
        let secret = dir.join("secret");
        std::fs::write(&secret, "s3cr3t-value\n").unwrap();
        with_file.password_file = secret.display().to_string();
        assert_eq!(errors_of(&with_file), "");
        let target = RedisTarget::new(with_file, Duration::from_secs(1), test_metrics());
        assert_eq!(target.password().unwrap().as_deref(), Some("s3cr3t-value"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_password_file_overrides_the_url_password_and_the_username_the_url_user() {
        let mut endpoint = endpoint("redis://urluser:urlpass@127.0.0.1:6379/3");
        let target = RedisTarget::new(endpoint.clone(), Duration::from_secs(1), test_metrics());
        assert_eq!(target.password().unwrap().as_deref(), Some("urlpass"));
        endpoint.username = "relay".into();
        let client =
            RedisTarget::new(endpoint, Duration::from_secs(1), test_metrics()).standalone_client().unwrap();
        let settings = client.get_connection_info().redis_settings();
        assert_eq!(
            (settings.username(), settings.password(), settings.db()),
            (Some("relay"), Some("urlpass"), 3)
        );
    }
}

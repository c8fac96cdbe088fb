//! A Redis primary, its replicas and `redis-sentinel` processes watching them, on loopback: the
//! high availability most self-hosted deployments run. Everything is stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::redis_server::{RedisConfig, RedisServer, RedisTls, free_port};
use crate::require_program;

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "mymaster";

pub struct SentinelSet {
    /// The servers, the primary first; after a failover another one is the primary.
    pub servers: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
}

struct Sentinel {
    port: u16,
    child: Child,
    tls: Option<RedisTls>,
    _dir: TempDir,
}

impl SentinelSet {
    /// A primary with `replicas` replicas and `sentinels` sentinels (quorum: a majority),
    /// which notice a dead primary within a second; returns once every sentinel sees every
    /// replica and the other sentinels.
    pub fn start(replicas: usize, sentinels: usize) -> Self {
        Self::start_with(replicas, sentinels, None)
    }

    /// As [`SentinelSet::start`]; with `tls`, every server and sentinel speaks TLS only (and
    /// replicates and monitors over TLS).
    pub fn start_with(replicas: usize, sentinels: usize, tls: Option<RedisTls>) -> Self {
        let binary = require_program(
            "redis-sentinel",
            "run `scripts/ensure-deps.sh sentinel` (as root) or `apt-get install redis-sentinel`",
        );
        let primary =
            RedisServer::start_configured(RedisConfig { tls: tls.clone(), ..RedisConfig::default() });
        let mut servers = vec![];
        let primary_port = primary.port();
        servers.push(primary);
        for _ in 0..replicas {
            servers.push(RedisServer::start_configured(RedisConfig {
                replica_of: Some(primary_port),
                tls: tls.clone(),
                ..RedisConfig::default()
            }));
        }
        let quorum = sentinels / 2 + 1;
        let sentinels: Vec<Sentinel> =
            (0..sentinels).map(|_| Sentinel::start(&binary, primary_port, quorum, tls.clone())).collect();
        let set = Self { servers, sentinels };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !set.fully_discovered(replicas) {
            assert!(Instant::now() < deadline, "the sentinels did not discover every replica and each other");
            std::thread::sleep(Duration::from_millis(100));
        }
        set
    }

    fn fully_discovered(&self, replicas: usize) -> bool {
        self.sentinels.iter().all(|sentinel| {
            let Ok(mut connection) = sentinel.connection() else { return false };
            let mut known = |what: &str| {
                redis::cmd("SENTINEL")
                    .arg(what)
                    .arg(MASTER_NAME)
                    .query::<Vec<redis::Value>>(&mut connection)
                    .map_or(0, |list| list.len())
            };
            known("REPLICAS") == replicas && known("SENTINELS") == self.sentinels.len() - 1
        })
    }

    /// `host:port` of each sentinel.
    pub fn addresses(&self) -> Vec<String> {
        self.sentinels.iter().map(|sentinel| format!("127.0.0.1:{}", sentinel.port)).collect()
    }

    /// The port of the server the sentinels name as primary now (by a majority of them).
    pub fn primary_port(&self) -> Option<u16> {
        let mut votes: Vec<u16> = self
            .sentinels
            .iter()
            .filter_map(|sentinel| {
                let (_, port): (String, String) = redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(MASTER_NAME)
                    .query(&mut sentinel.connection().ok()?)
                    .ok()?;
                port.parse().ok()
            })
            .collect();
        votes.sort_unstable();
        let majority = self.sentinels.len() / 2 + 1;
        votes.chunk_by(|a, b| a == b).find(|same| same.len() >= majority).map(|same| same[0])
    }

    /// The server the sentinels name as primary now.
    pub fn primary(&mut self) -> &mut RedisServer {
        let port = self.primary_port().expect("the sentinels agree on a primary");
        self.servers
            .iter_mut()
            .find(|server| server.port() == port)
            .expect("the primary is one of the servers")
    }

    /// Waits until the sentinels name a primary other than `old` and it answers as one.
    pub fn wait_for_new_primary(&self, old: u16, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(port) = self.primary_port().filter(|port| *port != old)
                && let Some(server) = self.servers.iter().find(|server| server.port() == port)
                && redis::cmd("ROLE")
                    .query::<Vec<redis::Value>>(&mut server.connection())
                    .ok()
                    .and_then(|role| role.first().cloned())
                    == Some(redis::Value::BulkString(b"master".to_vec()))
            {
                return port;
            }
            assert!(Instant::now() < deadline, "no new primary within {timeout:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Sentinel {
    fn start(binary: &PathBuf, primary_port: u16, quorum: usize, tls: Option<RedisTls>) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir for a sentinel");
        let config = dir.path().join("sentinel.conf");
        let listen = match &tls {
            None => format!("port {port}\n"),
            Some(tls) => format!(
                "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients {}\ntls-replication yes\n",
                tls.server_cert.display(),
                tls.server_key.display(),
                tls.ca.display(),
                if tls.mutual { "yes" } else { "no" }
            ),
        };
        std::fs::write(
            &config,
            format!(
                "{listen}bind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {quorum}\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 5000\n\
                 sentinel parallel-syncs {MASTER_NAME} 2\n",
                dir = dir.path().display()
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new(binary)
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-sentinel");
        let sentinel = Self { port, child, tls, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while sentinel.connection().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c)).is_err() {
            assert!(Instant::now() < deadline, "redis-sentinel did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        sentinel
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = match &self.tls {
            None => redis::Client::open(format!("redis://127.0.0.1:{}", self.port))?,
            Some(tls) => tls.client(&format!("rediss://127.0.0.1:{}", self.port))?,
        };
        client.get_connection_with_timeout(Duration::from_millis(500))
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

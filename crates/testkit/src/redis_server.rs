//! A real redis-server on a free loopback port, killed on drop: plain, TLS-only (optionally
//! requiring client certificates), with ACL users, or as a replica of another.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::require_program;
use crate::tls::TestCerts;

/// The ACL user the harness itself signs in as when a server has [`RedisConfig::users`].
pub const HARNESS_USER: &str = "harness";
pub const HARNESS_PASSWORD: &str = "harness-secret";

/// How a test Redis is started beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct RedisConfig {
    /// Append-only file on, so data survives `restart`.
    pub persistent: bool,
    /// TLS only (no plain port), with these certificates.
    pub tls: Option<RedisTls>,
    /// ACL users as `--user` rules (`"relay on >pw ~sse:* +xread"`); the default user is then
    /// off, and the harness signs in as [`HARNESS_USER`].
    pub users: Vec<String>,
    /// Start as a replica of the server on this port.
    pub replica_of: Option<u16>,
    /// A Redis Cluster node (see [`crate::redis_cluster`]): its port is below 55,000, since
    /// the cluster bus listens 10,000 above it.
    pub cluster_node: bool,
    /// Commands renamed away (`--rename-command <name> ""`): a managed service's restrictions.
    pub disabled_commands: Vec<String>,
}

/// A TLS-only server's certificates, and whether clients must present one.
#[derive(Debug, Clone)]
pub struct RedisTls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Clients must present a certificate the CA signed (mutual TLS).
    pub mutual: bool,
}

impl RedisTls {
    /// A client of `url` (`rediss://…`) presenting the test client certificate.
    pub fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        let read = |path: &PathBuf| std::fs::read(path).expect("read test certificate");
        redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: Some(redis::ClientTlsConfig {
                    client_cert: read(&self.client_cert),
                    client_key: read(&self.client_key),
                }),
                root_cert: Some(read(&self.ca)),
            },
        )
    }

    pub fn new(certs: &TestCerts, mutual: bool) -> Self {
        Self {
            ca: certs.ca(),
            server_cert: certs.server_cert(),
            server_key: certs.server_key(),
            client_cert: certs.client_cert(),
            client_key: certs.client_key(),
            mutual,
        }
    }
}

pub struct RedisServer {
    port: u16,
    dir: TempDir,
    config: RedisConfig,
    child: Option<Child>,
    binary: PathBuf,
}

impl RedisServer {
    /// Starts a throwaway Redis (no persistence).
    pub fn start() -> Self {
        Self::start_configured(RedisConfig::default())
    }

    /// `persistent` turns the append-only file on, so data survives `restart`.
    pub fn start_with(persistent: bool) -> Self {
        Self::start_configured(RedisConfig { persistent, ..RedisConfig::default() })
    }

    pub fn start_configured(config: RedisConfig) -> Self {
        let binary = require_program(
            "redis-server",
            "run `scripts/ensure-deps.sh redis` (as root) or `apt-get install redis-server`",
        );
        let pick_port = if config.cluster_node { free_cluster_port } else { free_port };
        let mut server = Self {
            port: pick_port(),
            dir: tempfile::tempdir().expect("temp dir for redis"),
            config,
            child: None,
            binary,
        };
        // The port was free when chosen; another process may take it before this one binds it.
        for _ in 0..3 {
            if server.spawn() {
                return server;
            }
            server.port = pick_port();
        }
        panic!("redis-server could not bind a free port in three attempts");
    }

    /// Starts the server and waits until it answers (and, as a replica, has synced); false when
    /// it exited at once (its port taken).
    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut command = Command::new(&self.binary);
        // Replicas sync at once rather than after the default 5 s of waiting for more of them.
        command.args(["--bind", "127.0.0.1", "--save", "", "--repl-diskless-sync-delay", "0"]);
        match &self.config.tls {
            None => command.args(["--port", &port]),
            Some(tls) => command
                .args(["--port", "0", "--tls-port", &port])
                .arg("--tls-cert-file")
                .arg(&tls.server_cert)
                .arg("--tls-key-file")
                .arg(&tls.server_key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca)
                .args(["--tls-auth-clients", if tls.mutual { "yes" } else { "no" }])
                .args(["--tls-replication", "yes"]),
        };
        let persistent = self.config.persistent;
        command
            .args(["--appendonly", if persistent { "yes" } else { "no" }])
            // A persistent test server must not lose its last writes when killed.
            .args(["--appendfsync", if persistent { "always" } else { "everysec" }]);
        if !self.config.users.is_empty() {
            command.args(["--user", "default", "off"]);
            command.args([
                "--user",
                HARNESS_USER,
                "on",
                &format!(">{HARNESS_PASSWORD}"),
                "~*",
                "&*",
                "+@all",
            ]);
            for user in &self.config.users {
                command.arg("--user").args(user.split_whitespace());
            }
            if self.config.replica_of.is_some() {
                command.args(["--masteruser", HARNESS_USER, "--masterauth", HARNESS_PASSWORD]);
            }
        }
        if self.config.cluster_node {
            command
                .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                // A failed primary is replaced within seconds, not the default 15.
                .args(["--cluster-node-timeout", "2000"]);
        }
        for disabled in &self.config.disabled_commands {
            command.args(["--rename-command", disabled, ""]);
        }
        if let Some(primary) = self.config.replica_of {
            command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        let child = command
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        // The answer must come from this process, not from another that holds the port.
        while self.answering_process() != Some(pid) {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().ok().flatten().is_some()
            {
                self.child = None;
                return false;
            }
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.config.replica_of.is_some() {
            while !self.replication_link_up() {
                assert!(
                    Instant::now() < deadline,
                    "replica on port {} did not sync with its primary",
                    self.port
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        true
    }

    /// The `process_id` of the server answering on this port.
    fn answering_process(&self) -> Option<u32> {
        let mut connection = self.client().get_connection_with_timeout(Duration::from_millis(500)).ok()?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut connection).ok()?;
        info.lines().find_map(|line| line.trim().strip_prefix("process_id:")?.parse().ok())
    }

    fn replication_link_up(&self) -> bool {
        let info: Option<String> = self
            .client()
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()
            .and_then(|mut connection| redis::cmd("INFO").arg("replication").query(&mut connection).ok());
        info.is_some_and(|info| info.lines().any(|line| line.trim() == "master_link_status:up"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://` for a TLS server; no credentials.
    pub fn url(&self) -> String {
        let scheme = if self.config.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A client as the harness signs in: with its ACL user and, for TLS, the test CA and
    /// client certificate.
    pub fn client(&self) -> redis::Client {
        let scheme = if self.config.tls.is_some() { "rediss" } else { "redis" };
        let credentials = if self.config.users.is_empty() {
            String::new()
        } else {
            format!("{HARNESS_USER}:{HARNESS_PASSWORD}@")
        };
        let url = format!("{scheme}://{credentials}127.0.0.1:{}", self.port);
        match &self.config.tls {
            None => redis::Client::open(url),
            Some(tls) => tls.client(&url),
        }
        .expect("test redis client")
    }

    /// Sends `signal` (`STOP`, `CONT`…) to the server process.
    pub fn signal(&self, signal: &str) {
        let Some(child) = &self.child else { return };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Whether the server process is up (not killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server could not bind port {} again", self.port);
    }

    /// A fresh synchronous connection, for publishing and inspecting.
    pub fn connection(&self) -> redis::Connection {
        self.client().get_connection_with_timeout(Duration::from_secs(5)).expect("connect to test redis")
    }

    /// PUBLISH, returning how many subscribers received it.
    pub fn publish(&self, channel: impl redis::ToRedisArgs, payload: impl redis::ToRedisArgs) -> i64 {
        redis::cmd("PUBLISH").arg(channel).arg(payload).query(&mut self.connection()).expect("PUBLISH")
    }

    /// How many times `command` (lower case, e.g. `xrange`) was called, from `INFO commandstats`.
    pub fn command_calls(&self, command: &str) -> u64 {
        let info: String =
            redis::cmd("INFO").arg("commandstats").query(&mut self.connection()).expect("INFO commandstats");
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.parse().expect("a count of calls"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free port below 55,000 whose cluster bus port (10,000 above) is free too.
pub fn free_cluster_port() -> u16 {
    loop {
        let port = rand_port();
        let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

/// A port in 20,000–54,999, from the clock and a counter (no random source needed).
fn rand_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let mixed =
        (nanos as u64 ^ std::process::id() as u64).wrapping_add(NEXT.fetch_add(7_919, Ordering::Relaxed));
    20_000 + (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as u16 % 35_000
}

/// A port nobody listens on right now (bind to port 0, read it, release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

//! A real redis-server on a free loopback port, killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::require_program;

pub struct RedisServer {
    port: u16,
    dir: TempDir,
    persistent: bool,
    child: Option<Child>,
    binary: PathBuf,
}

impl RedisServer {
    /// Starts a throwaway Redis (no persistence).
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// `persistent` turns the append-only file on, so data survives `restart`.
    pub fn start_with(persistent: bool) -> Self {
        let binary = require_program(
            "redis-server",
            "run `scripts/ensure-deps.sh redis` (as root) or `apt-get install redis-server`",
        );
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir for redis"),
            persistent,
            child: None,
            binary,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", if self.persistent { "yes" } else { "no" }])
            // A persistent test server must not lose its last writes when killed.
            .args(["--appendfsync", if self.persistent { "always" } else { "everysec" }])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut connection).is_ok()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
        self.spawn();
    }

    /// A fresh synchronous connection, for publishing and inspecting.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("connect to test redis")
    }

    /// PUBLISH, returning how many subscribers received it.
    pub fn publish(&self, channel: impl redis::ToRedisArgs, payload: impl redis::ToRedisArgs) -> i64 {
        redis::cmd("PUBLISH").arg(channel).arg(payload).query(&mut self.connection()).expect("PUBLISH")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on right now (bind to port 0, read it, release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

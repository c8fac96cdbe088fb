//! A real HAProxy (Debian's) in front of one relay, adding `X-Forwarded-For` the way it does
//! (`option forwardfor`: a header line of its own after the client's). Stopped on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::redis_server::free_port;
use crate::require_program;

pub struct Haproxy {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Haproxy {
    pub async fn start(relay: SocketAddr) -> Self {
        let haproxy =
            require_program("haproxy", "run `scripts/ensure-deps.sh haproxy` or `apt-get install haproxy`");
        let dir = tempfile::tempdir().expect("temp dir for haproxy");
        let port = free_port();
        let config = format!(
            "global\n    maxconn 1024\n\
             defaults\n    mode http\n    option forwardfor\n    timeout connect 5s\n    timeout client 1h\n    \
             timeout server 1h\n    timeout tunnel 1h\n\
             frontend events\n    bind 127.0.0.1:{port}\n    default_backend relays\n\
             backend relays\n    server relay {relay}\n"
        );
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, config).expect("write haproxy.cfg");
        // -db: in the foreground, not as a daemon.
        let child = Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn haproxy");
        let mut balancer = Self { child, port, _dir: dir };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            let exited = balancer.child.try_wait().expect("try_wait haproxy").is_some();
            assert!(
                !exited && tokio::time::Instant::now() < deadline,
                "haproxy did not start listening on {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        balancer
    }

    /// `http://127.0.0.1:port{path_and_query}`, through HAProxy.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{path_and_query}", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

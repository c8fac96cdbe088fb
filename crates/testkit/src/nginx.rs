//! A real nginx (Debian's) in front of several relays and API replicas, configured with the
//! same proxy settings as the deployment's balancer (`deploy/nginx/*.conf`). Stopped on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::redis_server::free_port;
use crate::require_program;

/// The balancer adds this header to every stream: the relay address that serves it.
pub const UPSTREAM_HEADER: &str = "x-relay-upstream";

pub struct Nginx {
    child: Child,
    relay_port: u16,
    api_port: u16,
    dir: TempDir,
}

impl Nginx {
    pub async fn start(relays: &[SocketAddr], apis: &[SocketAddr]) -> Self {
        let nginx =
            require_program("nginx", "run `scripts/ensure-deps.sh nginx` or `apt-get install nginx-light`");
        let dir = tempfile::tempdir().expect("temp dir for nginx");
        let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/nginx");
        let (relay_port, api_port) = (free_port(), free_port());
        let servers = |addrs: &[SocketAddr]| {
            addrs
                .iter()
                .map(|addr| format!("        server {addr} max_fails=1 fail_timeout=5s;\n"))
                .collect::<String>()
        };
        let prefix = dir.path().display();
        let config = format!(
            "daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n    access_log off;\n\
             client_body_temp_path {prefix}/body;\n    proxy_temp_path {prefix}/proxy;\n\
             fastcgi_temp_path {prefix}/fastcgi;\n    uwsgi_temp_path {prefix}/uwsgi;\n    scgi_temp_path {prefix}/scgi;\n\
             upstream relays {{\n        least_conn;\n{relays}    }}\n\
             upstream forecast_api {{\n{apis}        keepalive 16;\n    }}\n\
             server {{\n        listen 127.0.0.1:{relay_port};\n        location = /events {{\n\
                         include {deploy}/sse-proxy.conf;\n\
                         add_header {UPSTREAM_HEADER} $upstream_addr always;\n\
                         proxy_pass http://relays;\n        }}\n    }}\n\
             server {{\n        listen 127.0.0.1:{api_port};\n        location / {{\n\
                         include {deploy}/api-proxy.conf;\n            proxy_pass http://forecast_api;\n        }}\n    }}\n}}\n",
            relays = servers(relays),
            apis = servers(apis),
        );
        let config_path = dir.path().join("nginx.conf");
        std::fs::write(&config_path, config).expect("write nginx.conf");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nginx");
        let mut balancer = Self { child, relay_port, api_port, dir };
        for port in [relay_port, api_port] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                let exited = balancer.child.try_wait().expect("try_wait nginx").is_some();
                if exited || tokio::time::Instant::now() > deadline {
                    panic!("nginx did not start listening on {port}:\n{}", balancer.error_log());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        balancer
    }

    /// Where clients open streams: `http://127.0.0.1:port/events…`.
    pub fn relay_url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{path_and_query}", self.relay_port)
    }

    /// The API replicas behind one address.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

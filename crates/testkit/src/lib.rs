//! # testkit
//!
//! The harness of every black-box suite in the workspace: real servers on free loopback ports,
//! the real binaries, and clients that speak the wire protocols. Everything started here is
//! stopped when its handle is dropped, and every wait is bounded.
//!
//! ## Layout
//! - [`relay_process`] — the `sse-relay` binary with a test configuration ([`relay_process::RelayBuilder`]).
//! - [`forecast_process`] — the `forecast-api` binary, its test databases and an API client.
//! - [`service_process`] — a service binary as a child process, its logs and endpoints.
//! - [`redis_server`], [`postgres`], [`nginx`], [`haproxy`], [`proxy`] — real servers and a cuttable TCP proxy.
//! - [`sentinel`] — a primary, replicas and `redis-sentinel` processes watching them.
//! - [`redis_cluster`] — primaries and replicas joined into a Redis Cluster.
//! - [`sse_client`], [`sse_parser`], [`event_source`] — clients of the event stream.
//! - [`prometheus`] — a real Prometheus scraping the services, and `promtool`'s checks.
//! - [`event_tap`] — what reaches Redis: a pattern subscription that records every message.
//! - [`log_publisher`] — publishing envelopes the way forecast-api does, and reading the log.
//! - [`tls`] — a throwaway CA and certificates for TLS tests.

pub mod event_source;
pub mod event_tap;
pub mod forecast_process;
pub mod haproxy;
pub mod log_publisher;
pub mod nginx;
pub mod postgres;
pub mod prometheus;
pub mod proxy;
pub mod redis_cluster;
pub mod redis_server;
pub mod relay_process;
pub mod sentinel;
pub mod service_process;
pub mod sse_client;
pub mod sse_parser;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// A binary of this workspace (`sse-relay`, `forecast-api`), found beside the running test
/// executable: `cargo test --workspace` (what `make test` runs) builds every package's binaries
/// before it runs a test.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let binary = profile_dir.join(name);
    assert!(
        binary.is_file(),
        "{} is not built: run the tests with `cargo test --workspace` (as make test does), or build it \
         first with `cargo build -p {name}`",
        binary.display()
    );
    binary
}

/// Polls `check` until it returns `Some`, or panics after `timeout` saying what was awaited.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Finds the value of one sample in a Prometheus text exposition, e.g.
/// `metric(&text, "sse_relay_events_dropped_total{reason=\"too_large\"}")`.
pub fn metric(exposition: &str, sample: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("metric {sample} not found in:\n{exposition}"))
}

/// A path to a system program, or a panic that says how to install it.
pub fn require_program(name: &str, install_hint: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain(["/usr/sbin".into(), "/usr/bin".into()]) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} is required by this test but was not found on PATH; {install_hint}");
}

/// Sends the start of a request head that never finishes; true when the server closes the
/// connection within `timeout` (slowloris protection).
pub async fn server_cuts_a_trickling_request(addr: std::net::SocketAddr, timeout: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.expect("send a partial head");
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(timeout, async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

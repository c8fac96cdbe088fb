//! # service
//!
//! The plumbing both services run, and nothing of either: it depends on no service crate.
//!
//! ## Layout
//! - [`config`] — layered configuration (defaults → TOML file → environment) and the errors
//!   that name the offending keys.
//! - [`telemetry`] — logging setup and the shutdown signal.
//! - [`metrics`] — Prometheus metrics declared as a table, closed label sets as types.
//! - [`redis_target`] — where Redis is and how to reach it: URL or Sentinel, TLS, credentials.
//! - [`backoff`] — exponential backoff with jitter for reconnect loops.
//! - [`client_ip`] — the client address of a request behind trusted proxies.
//! - [`log_eviction`] — whether Redis may evict the event log, said at start and in `/readyz`.
//! - [`server`] — the HTTP/1.1 accept loop: per-connection control, header read timeout,
//!   graceful close, and a hand-off hook that may serve a connection before hyper does.

pub mod backoff;
pub mod client_ip;
pub mod config;
pub mod log_eviction;
pub mod metrics;
pub mod redis_target;
pub mod server;
pub mod telemetry;

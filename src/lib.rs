//! # sse-relay
//!
//! A stateless relay that subscribes to Redis channel patterns and streams their messages to
//! browsers as Server-Sent Events. What it shares with publishers (envelopes, log ids, globs,
//! token claims, frame encoding) is the `protocol` crate; the plumbing it shares with
//! forecast-api (configuration, telemetry, backoff, the accept loop) is the `service` crate.
//!
//! ## Layout
//! - [`app`] — [`Relay`]: builds the parts, serves, drains on shutdown.
//! - [`settings`] — the configuration sections and their validation.
//! - [`channels`] — channel rules (format, access) and a client's channel selection.
//! - [`tail`] — envelope channels delivered from the log: the supervised `XREAD` tail, its
//!   delivery probe, and recovery after a failover.
//! - [`subscriber`] — raw channels: the supervised PSUBSCRIBE and its delivery probe.
//! - [`sharded`] — raw channels by exact name through a cluster's sharded pub/sub (SSUBSCRIBE).
//! - [`source`] — what they share: the parts they deliver with, and their supervisor
//!   (reconnect with backoff, readiness, one warning per outage).
//! - [`commands`] — the shared Redis command connection (log reads, probes, tickets).
//! - [`log`] — the Redis history log: paged reads after an id, resume points.
//! - [`replay`] — the backlog for streams resuming with Last-Event-ID.
//! - [`window`] — the latest log entries kept in memory, to serve resumes without Redis.
//! - [`hub`] — fan-out to streams, bounded queues, slow-client cuts, spread shutdown.
//! - [`stream`] — one client's response body (preamble, frames, keepalives).
//! - [`direct_stream`] — event streams written to their sockets without hyper (the accept
//!   loop's hand-off hook).
//! - [`http`] — routes and HTTP errors.
//! - [`auth`] — token verification, one-time tickets.
//! - [`client_ip`] — the client address behind trusted proxies, and the per-IP limit.
//! - [`health`] — readiness.
//! - [`metrics`] — Prometheus metrics.

pub mod app;
pub mod auth;
pub mod channels;
pub mod client_ip;
pub mod commands;
pub mod direct_stream;
pub mod health;
pub mod http;
pub mod hub;
pub mod log;
pub mod metrics;
pub mod replay;
pub mod settings;
pub mod sharded;
pub mod source;
pub mod stream;
pub mod subscriber;
pub mod tail;
pub mod window;

pub use app::Relay;

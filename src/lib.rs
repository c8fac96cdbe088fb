//! # sse-relay
//!
//! A stateless relay that subscribes to Redis channel patterns and streams their messages to
//! browsers as Server-Sent Events.
//!
//! ## Layout
//! - [`config`] — layered configuration loading (defaults → TOML file → environment) and the
//!   error type that names the offending key.
//! - [`telemetry`] — logging setup and the shutdown signal, shared by the binaries.
//! - [`backoff`] — exponential backoff with jitter for reconnect loops.
//! - [`server`] — the HTTP/1.1 accept loop both services run: per-connection control, header
//!   read timeout, graceful close.
//! - [`direct_stream`] — the relay's event streams written to their sockets without hyper.
//! - [`envelope`] — the event envelope and the Lua script that publishes it exactly once.
//! - [`relay`] — the relay itself:
//!   - [`relay::settings`] — its configuration sections and validation;
//!   - [`relay::glob`] — Redis glob patterns, matched exactly as Redis matches them;
//!   - [`relay::channels`] — channel rules (format, access) and a client's channel selection;
//!   - [`relay::subscriber`] — the supervised Redis subscription, its delivery probe and gap fill;
//!   - [`relay::log`] — the Redis history log: stream ids, paged reads, resume points;
//!   - [`relay::message`] — a Redis message (live or from the log) turned into a frame;
//!   - [`relay::replay`] — the backlog for streams resuming with Last-Event-ID;
//!   - [`relay::hub`] — fan-out to streams, bounded queues, slow-client cuts, spread shutdown;
//!   - [`relay::sse`] — SSE frame encoding, once per message;
//!   - [`relay::stream`] — one client's response body (preamble, frames, keepalives);
//!   - [`relay::http`] — routes and HTTP errors;
//!   - [`relay::health`] — readiness;
//!   - [`relay::metrics`] — Prometheus metrics.
//! - [`forecast`] — forecast-api, the publishing service:
//!   - [`forecast::settings`] — its configuration;
//!   - [`forecast::model`] — forecasts and their validation bounds;
//!   - [`forecast::store`] — SQLite/PostgreSQL persistence, writing changes and outbox rows together;
//!   - [`forecast::events`] — domain events and their channels;
//!   - [`forecast::publisher`] — the in-process EventPublisher and its handlers;
//!   - [`forecast::outbox`] — the dispatcher that publishes outbox rows to Redis;
//!   - [`forecast::auth`] — API keys and scopes;
//!   - [`forecast::relay_token`] — relay JWTs for admin dashboards;
//!   - [`forecast::http`] — routes, errors, OpenAPI;
//!   - [`forecast::dashboard`] — the embedded browser dashboard;
//!   - [`forecast::metrics`] — Prometheus metrics.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod config;
pub mod direct_stream;
pub mod envelope;
pub mod forecast;
pub mod relay;
pub mod server;
pub mod telemetry;

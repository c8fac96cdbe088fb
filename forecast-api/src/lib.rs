//! # forecast-api
//!
//! The weather-forecast REST service that publishes its changes as events for sse-relay: it
//! persists forecasts (SQLite or PostgreSQL), writes each change and its outbox rows in one
//! transaction, and the outbox dispatcher publishes them to Redis with the protocol's script.
//!
//! ## Layout
//! - [`app`] — [`ForecastApi`]: builds the parts, serves, drains on shutdown.
//! - [`settings`] — the configuration sections and their validation.
//! - [`model`] — forecasts and their validation bounds.
//! - [`store`] — SQLite/PostgreSQL persistence, changes and outbox rows written together.
//! - [`events`] — domain events and their channels.
//! - [`publisher`] — the in-process EventPublisher and its handlers.
//! - [`outbox`] — the dispatcher that publishes outbox rows to Redis.
//! - [`auth`] — API keys and scopes.
//! - [`users`] — user accounts, roles, password hashing, sessions, sign-in limits.
//! - [`relay_token`] — relay tokens and one-time tickets for browsers.
//! - [`state`] — what every request handler shares.
//! - [`http`] — routes by resource, errors, OpenAPI.
//! - [`dashboard`] — the embedded browser dashboard (with the relay's browser client).
//! - [`metrics`] — Prometheus metrics.

pub mod app;
pub mod auth;
pub mod dashboard;
pub mod events;
pub mod http;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod publisher;
pub mod relay_token;
pub mod settings;
pub mod state;
pub mod store;
pub mod users;

pub use app::ForecastApi;

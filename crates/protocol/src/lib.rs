//! # protocol
//!
//! What the relay and its publishers must agree on, and nothing else. Both services depend on
//! this crate; it depends on neither.
//!
//! ## Layout
//! - [`envelope`] — the event envelope, and the Lua script that logs and publishes it exactly
//!   once.
//! - [`log_id`] — ids of the history log (Redis stream ids), the resume points of clients.
//! - [`glob`] — Redis glob patterns, matched exactly as Redis matches them.
//! - [`claims`] — the claims of a relay token (one definition, for the minter and the verifier).
//! - [`sse`] — Server-Sent Events frame encoding.
//! - [`message`] — a message on a channel (raw or envelope) turned into one frame, or dropped
//!   with a [`message::DropReason`].
//! - [`partition`] — the log split into partitions for Redis Cluster: keys, hash slots, and
//!   which partition a channel's events go to.

pub mod claims;
pub mod envelope;
pub mod glob;
pub mod log_id;
pub mod message;
pub mod partition;
pub mod sse;

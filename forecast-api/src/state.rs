//! What every request handler shares: the store, the API keys, the event publisher, the
//! metrics, the relay-token settings and where Redis is.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use service::log_eviction::EvictionWatch;
use service::redis_target::RedisTarget;

use crate::auth::KeyVerifier;
use crate::metrics::ForecastMetrics;
use crate::publisher::EventPublisher;
use crate::store::Store;
use crate::users::{Passwords, SignInLimiter};

pub struct AppState {
    pub store: Store,
    pub keys: KeyVerifier,
    pub publisher: EventPublisher,
    pub metrics: ForecastMetrics,
    pub relay_jwt_secret: String,
    pub relay_token_ttl_secs: u64,
    pub relay_ticket_ttl_secs: u64,
    pub relay_public_url: String,
    pub relay_cookie_name: String,
    /// Set at shutdown: `/readyz` answers 503.
    pub draining: AtomicBool,
    /// The Redis node the outbox publishes to, for `/readyz`.
    pub redis: Arc<RedisTarget>,
    /// Whether Redis may evict the log, for `/readyz`.
    pub eviction: Arc<EvictionWatch>,
    pub session: SessionPolicy,
    pub passwords: Passwords,
    pub sign_in: SignInLimiter,
    /// Proxies whose `X-Forwarded-For` entries are believed (see `http.trusted_proxy_hops`).
    pub trusted_proxy_hops: usize,
}

/// How sessions are issued.
pub struct SessionPolicy {
    pub cookie_name: String,
    pub ttl: std::time::Duration,
    /// `Secure` on every session cookie, not only those set over HTTPS.
    pub always_secure: bool,
    pub open_registration: bool,
}

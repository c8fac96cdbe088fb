//! Readiness: whether this pod should receive new clients, and why not.
//!
//! Ready means: not draining, and Redis delivery proven on every path the relay runs — the log
//! tail (envelope channels) and, when raw channels are configured, the subscription — each by a
//! probe that came back through it; or lost for less than `redis.unready_after_secs`, so that a
//! short Redis blip does not send every client of every pod elsewhere at once; and not at the
//! connection limit ([`Capacity`]), so that a balancer sends new clients to other pods.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus::IntGauge;

/// The relay's two ways of receiving events from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryPath {
    /// `XREAD` of the log: envelope channels.
    Log,
    /// `PSUBSCRIBE`: raw channels.
    Subscription,
    /// `SSUBSCRIBE` on a cluster: sharded raw channels.
    Sharded,
}

impl DeliveryPath {
    pub const ALL: [Self; 3] = [Self::Log, Self::Subscription, Self::Sharded];

    fn index(self) -> usize {
        match self {
            Self::Log => 0,
            Self::Subscription => 1,
            Self::Sharded => 2,
        }
    }

    /// As logs and `/readyz` name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Log => "log tail",
            Self::Subscription => "subscription",
            Self::Sharded => "sharded subscription",
        }
    }
}

#[derive(Debug)]
pub struct Health {
    unready_after: Duration,
    /// `sse_relay_redis_connected`: 1 while every path is connected.
    connected_gauge: IntGauge,
    // A std Mutex: tiny critical sections, never held across an await.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    draining: bool,
    paths: [PathState; DeliveryPath::ALL.len()],
}

#[derive(Debug, Default)]
struct PathState {
    enabled: bool,
    connected: bool,
    /// Delivery proven on the current connection (a probe came back).
    verified: bool,
    ever_verified: bool,
    /// When delivery was last lost (connection ended or a probe went unanswered).
    lost_at: Option<Instant>,
    last_error: Option<String>,
}

/// What `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// "subscribed" (every path delivering), "reconnecting", "connecting" or "draining".
    pub redis: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Health {
    /// `paths`: the delivery paths this relay runs (the subscription only with raw channels).
    pub fn new(unready_after: Duration, paths: &[DeliveryPath], connected_gauge: IntGauge) -> Self {
        let mut state = State { draining: false, paths: Default::default() };
        for path in paths {
            state.paths[path.index()].enabled = true;
        }
        connected_gauge.set(0);
        Self { unready_after, connected_gauge, state: Mutex::new(state) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the plain-data state inconsistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update_gauge(&self, state: &State) {
        let all = state.paths.iter().filter(|path| path.enabled).all(|path| path.connected);
        self.connected_gauge.set(i64::from(all));
    }

    /// `path` is connected (not yet proven).
    pub fn connected(&self, path: DeliveryPath) {
        let mut state = self.state();
        state.paths[path.index()].connected = true;
        self.update_gauge(&state);
    }

    /// A probe came back through `path`.
    pub fn delivery_verified(&self, path: DeliveryPath) {
        let mut state = self.state();
        let path = &mut state.paths[path.index()];
        path.verified = true;
        path.ever_verified = true;
        path.lost_at = None;
    }

    /// `path` ended or stopped delivering; keep the first loss time.
    pub fn delivery_lost(&self, path: DeliveryPath, error: String) {
        let mut state = self.state();
        let path_state = &mut state.paths[path.index()];
        path_state.connected = false;
        path_state.verified = false;
        path_state.lost_at.get_or_insert_with(Instant::now);
        path_state.last_error = Some(format!("{}: {error}", path.name()));
        self.update_gauge(&state);
    }

    /// Shutdown began: fail readiness for good.
    pub fn start_draining(&self) {
        self.state().draining = true;
    }

    pub fn readiness(&self) -> Readiness {
        let state = self.state();
        let enabled = || DeliveryPath::ALL.into_iter().filter(|path| state.paths[path.index()].enabled);
        let last_error = enabled().find_map(|path| state.paths[path.index()].last_error.clone());
        let mut readiness = Readiness { ready: false, redis: "subscribed", reason: None, last_error };
        if state.draining {
            readiness.redis = "draining";
            readiness.reason = Some("shutting down".into());
            return readiness;
        }
        readiness.ready = true;
        for path in enabled() {
            let path_state = &state.paths[path.index()];
            if path_state.verified {
                continue;
            }
            if !path_state.ever_verified {
                readiness.ready = false;
                readiness.redis = "connecting";
                readiness.reason =
                    Some(format!("waiting for the first probe to come back through the {}", path.name()));
                return readiness;
            }
            let lost_for = path_state.lost_at.map_or(Duration::ZERO, |at| at.elapsed());
            readiness.redis = "reconnecting";
            if lost_for >= self.unready_after {
                readiness.ready = false;
                readiness.reason =
                    Some(format!("no working Redis {} for {} ms", path.name(), lost_for.as_millis()));
                return readiness;
            }
        }
        readiness
    }
}

/// Whether the pod is at its connection limit, for readiness: full at `max` open streams, and
/// again taking clients only below 90 % of it, so that readiness does not flap with every
/// stream that closes and opens at the limit.
pub struct Capacity {
    max: usize,
    resume_below: usize,
    full: AtomicBool,
}

impl Capacity {
    pub fn new(max: usize) -> Self {
        Self { max, resume_below: max - max / 10, full: AtomicBool::new(false) }
    }

    /// Whether the pod counts as full with `open` streams; `max` is the limit reported.
    pub fn full(&self, open: usize) -> bool {
        let full =
            if self.full.load(Ordering::Relaxed) { open >= self.resume_below } else { open >= self.max };
        self.full.store(full, Ordering::Relaxed);
        full
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(unready_after: Duration, paths: &[DeliveryPath]) -> Health {
        Health::new(unready_after, paths, IntGauge::new("connected", "test").unwrap())
    }

    #[test]
    fn a_full_pod_takes_clients_again_only_well_below_its_limit() {
        let capacity = Capacity::new(100);
        assert!(!capacity.full(99));
        assert!(capacity.full(100));
        assert!(capacity.full(95), "still full just below the limit");
        assert!(capacity.full(90));
        assert!(!capacity.full(89));
        assert!(!capacity.full(99));
        let tiny = Capacity::new(2);
        assert!(tiny.full(2));
        assert!(!tiny.full(1));
    }

    #[test]
    fn not_ready_until_a_probe_proves_delivery_on_every_path() {
        let health = health(Duration::from_secs(10), &DeliveryPath::ALL);
        assert!(!health.readiness().ready);
        for (verified, next) in DeliveryPath::ALL.iter().zip(&DeliveryPath::ALL[1..]) {
            health.delivery_verified(*verified);
            let readiness = health.readiness();
            assert!(!readiness.ready);
            assert_eq!(
                readiness.reason,
                Some(format!("waiting for the first probe to come back through the {}", next.name()))
            );
        }
        health.delivery_verified(DeliveryPath::Sharded);
        assert!(health.readiness().ready);
    }

    #[test]
    fn a_short_loss_keeps_the_pod_ready_a_long_one_does_not() {
        let health = health(Duration::from_secs(3600), &[DeliveryPath::Log]);
        health.delivery_verified(DeliveryPath::Log);
        health.delivery_lost(DeliveryPath::Log, "connection refused".into());
        let readiness = health.readiness();
        assert!(readiness.ready);
        assert_eq!(readiness.redis, "reconnecting");

        let health = self::health(Duration::ZERO, &[DeliveryPath::Log]);
        health.delivery_verified(DeliveryPath::Log);
        health.delivery_lost(DeliveryPath::Log, "probe not echoed".into());
        let readiness = health.readiness();
        assert!(!readiness.ready);
        assert_eq!(readiness.last_error.as_deref(), Some("log tail: probe not echoed"));
    }

    #[test]
    fn the_connected_gauge_needs_every_path() {
        let gauge = IntGauge::new("connected", "test").unwrap();
        let health = Health::new(
            Duration::from_secs(1),
            &[DeliveryPath::Log, DeliveryPath::Subscription],
            gauge.clone(),
        );
        health.connected(DeliveryPath::Log);
        assert_eq!(gauge.get(), 0);
        health.connected(DeliveryPath::Subscription);
        assert_eq!(gauge.get(), 1);
        health.delivery_lost(DeliveryPath::Subscription, "closed".into());
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn draining_is_never_ready() {
        let health = health(Duration::from_secs(10), &[DeliveryPath::Log]);
        health.delivery_verified(DeliveryPath::Log);
        health.start_draining();
        assert!(!health.readiness().ready);
    }
}

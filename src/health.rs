//! Readiness: whether this pod should receive new clients, and why not.
//!
//! Ready means: not draining, and Redis delivery proven (the subscription is established and
//! the last probe came back) — or lost for less than `redis.unready_after_secs`, so that a
//! short Redis blip does not send every client of every pod elsewhere at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Health {
    unready_after: Duration,
    // A std Mutex: tiny critical sections, never held across an await.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    draining: bool,
    /// Delivery proven on the current subscription (a probe came back).
    verified: bool,
    ever_verified: bool,
    /// When delivery was last lost (subscription ended or a probe went unanswered).
    lost_at: Option<Instant>,
    last_error: Option<String>,
}

/// What `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// "subscribed", "reconnecting", "connecting" or "draining".
    pub redis: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Health {
    pub fn new(unready_after: Duration) -> Self {
        Self {
            unready_after,
            state: Mutex::new(State {
                draining: false,
                verified: false,
                ever_verified: false,
                lost_at: None,
                last_error: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the plain-data state inconsistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A probe came back on the current subscription.
    pub fn delivery_verified(&self) {
        let mut state = self.state();
        state.verified = true;
        state.ever_verified = true;
        state.lost_at = None;
    }

    /// The subscription ended or stopped delivering; keep the first loss time.
    pub fn delivery_lost(&self, error: String) {
        let mut state = self.state();
        state.verified = false;
        state.lost_at.get_or_insert_with(Instant::now);
        state.last_error = Some(error);
    }

    /// Shutdown began: fail readiness for good.
    pub fn start_draining(&self) {
        self.state().draining = true;
    }

    pub fn readiness(&self) -> Readiness {
        let state = self.state();
        let last_error = state.last_error.clone();
        if state.draining {
            return Readiness {
                ready: false,
                redis: "draining",
                reason: Some("shutting down".into()),
                last_error,
            };
        }
        if state.verified {
            return Readiness { ready: true, redis: "subscribed", reason: None, last_error };
        }
        if !state.ever_verified {
            return Readiness {
                ready: false,
                redis: "connecting",
                reason: Some("waiting for the first Redis subscription to deliver a probe".into()),
                last_error,
            };
        }
        let lost_for = state.lost_at.map_or(Duration::ZERO, |at| at.elapsed());
        let ready = lost_for < self.unready_after;
        Readiness {
            ready,
            redis: "reconnecting",
            reason: (!ready)
                .then(|| format!("no working Redis subscription for {} ms", lost_for.as_millis())),
            last_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_until_a_probe_proves_delivery() {
        let health = Health::new(Duration::from_secs(10));
        assert!(!health.readiness().ready);
        health.delivery_verified();
        assert!(health.readiness().ready);
    }

    #[test]
    fn a_short_loss_keeps_the_pod_ready_a_long_one_does_not() {
        let health = Health::new(Duration::from_secs(3600));
        health.delivery_verified();
        health.delivery_lost("connection refused".into());
        let readiness = health.readiness();
        assert!(readiness.ready);
        assert_eq!(readiness.redis, "reconnecting");

        let health = Health::new(Duration::ZERO);
        health.delivery_verified();
        health.delivery_lost("probe not echoed".into());
        let readiness = health.readiness();
        assert!(!readiness.ready);
        assert_eq!(readiness.last_error.as_deref(), Some("probe not echoed"));
    }

    #[test]
    fn draining_is_never_ready() {
        let health = Health::new(Duration::from_secs(10));
        health.delivery_verified();
        health.start_draining();
        assert!(!health.readiness().ready);
    }
}

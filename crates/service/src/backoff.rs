//! Exponential backoff with jitter, for reconnect loops.
//!
//! Each delay is drawn from [base/2, base] ("equal jitter"), base doubling from `initial` up to
//! `max`: pods that lost Redis together do not all knock on its door in the same millisecond,
//! and none waits less than half of its step.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max: max.max(initial), attempt: 0 }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base();
        self.attempt = self.attempt.saturating_add(1);
        let half = base / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// The step the next delay is drawn from, without jitter.
    pub fn base(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// After a success, start again from `initial`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_within_jitter_bounds() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1_000));
        let mut bases = Vec::new();
        for _ in 0..8 {
            let base = backoff.base();
            let delay = backoff.next_delay();
            assert!(delay >= base / 2 && delay <= base, "{delay:?} outside [{:?}, {base:?}]", base / 2);
            bases.push(base.as_millis());
        }
        assert_eq!(bases, vec![100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.base(), Duration::from_millis(100));
    }
}

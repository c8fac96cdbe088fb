//! Whether Redis may evict the event log. Nothing a service does can stop a Redis whose memory
//! policy evicts any key (`allkeys-*`), or keys with a TTL (`volatile-*`) when the log has
//! one, from dropping the log under memory pressure: events then vanish for every client that
//! has not read them. Both services look (where Redis lets them run `INFO`) and say so at
//! start, in `/readyz` and in a gauge.

use std::sync::{Mutex, PoisonError};

use prometheus::IntGauge;

/// What a service found out about its log's eviction, and says.
pub struct EvictionWatch {
    warning: Mutex<Option<String>>,
    /// 1 when Redis may evict the log, 0 when it may not or cannot be asked.
    gauge: IntGauge,
}

impl EvictionWatch {
    pub fn new(gauge: IntGauge) -> Self {
        Self { warning: Mutex::new(None), gauge }
    }

    /// Records what `INFO memory` and `PTTL <log>` answered; logs a change.
    pub fn record(&self, log: &str, info_memory: &str, log_ttl_ms: i64) {
        let risk = eviction_risk(info_memory, log_ttl_ms);
        self.gauge.set(i64::from(risk.is_some()));
        let mut warning = self.warning.lock().unwrap_or_else(PoisonError::into_inner);
        if *warning == risk {
            return;
        }
        match &risk {
            Some(why) => tracing::warn!(log, detail = %why, "Redis may evict the event log"),
            None => tracing::info!(log, "Redis no longer evicts the log"),
        }
        *warning = risk;
    }

    /// The warning, while Redis may evict the log.
    pub fn warning(&self) -> Option<String> {
        self.warning.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Why Redis may evict the log, given `INFO memory` and the log's `PTTL` (-1: no TTL, -2: no
/// log yet); `None` when it may not.
pub fn eviction_risk(info_memory: &str, log_ttl_ms: i64) -> Option<String> {
    let field = |name: &str| {
        info_memory.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
    };
    let maxmemory: u64 = field("maxmemory")?.parse().ok()?;
    let policy = field("maxmemory_policy")?;
    // Without a memory limit Redis evicts nothing.
    if maxmemory == 0 {
        return None;
    }
    let evicts = policy.starts_with("allkeys-") || (policy.starts_with("volatile-") && log_ttl_ms >= 0);
    evicts.then(|| {
        format!(
            "Redis may evict the event log (maxmemory {maxmemory}, maxmemory-policy {policy}{}): events would \
             then be lost for clients that have not read them; use noeviction, or volatile-* with no TTL on the log",
            if log_ttl_ms >= 0 { ", the log has a TTL" } else { "" }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(maxmemory: u64, policy: &str) -> String {
        format!(
            "# Memory\r\nused_memory:1000\r\nmaxmemory:{maxmemory}\r\nmaxmemory_human:1M\r\nmaxmemory_policy:{policy}\r\n"
        )
    }

    #[test]
    fn only_a_policy_that_can_reach_the_log_under_a_memory_limit_is_a_risk() {
        assert!(eviction_risk(&info(1 << 20, "allkeys-lru"), -1).unwrap().contains("allkeys-lru"));
        assert!(eviction_risk(&info(1 << 20, "allkeys-random"), -2).is_some(), "before the log exists");
        assert_eq!(eviction_risk(&info(0, "allkeys-lru"), -1), None, "no memory limit");
        assert_eq!(eviction_risk(&info(1 << 20, "noeviction"), -1), None);
        assert_eq!(eviction_risk(&info(1 << 20, "volatile-lru"), -1), None, "the log has no TTL");
        assert!(eviction_risk(&info(1 << 20, "volatile-ttl"), 60_000).unwrap().contains("has a TTL"));
        assert_eq!(eviction_risk("# Memory\r\n", -1), None, "not told");
    }

    #[test]
    fn the_watch_says_it_once_and_sets_the_gauge() {
        let watch = EvictionWatch::new(IntGauge::new("evictable", "test").unwrap());
        watch.record("sse:log", &info(1 << 20, "allkeys-lru"), -1);
        assert!(watch.warning().is_some());
        assert_eq!(watch.gauge.get(), 1);
        watch.record("sse:log", &info(1 << 20, "noeviction"), -1);
        assert_eq!(watch.warning(), None);
        assert_eq!(watch.gauge.get(), 0);
    }
}

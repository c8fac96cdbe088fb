//! Per-client limits: how many streams each IP holds (the IP as
//! [`service::client_ip::client_ip`] finds it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Counts streams per IP.
pub struct PerIpLimiter {
    max: usize,
    // A std Mutex: a map update per stream open/close, never held across an await.
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds one of an IP's slots until dropped.
pub struct IpSlot {
    limiter: Arc<PerIpLimiter>,
    ip: IpAddr,
}

impl PerIpLimiter {
    /// `max` 0 means unlimited.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, counts: Mutex::new(HashMap::new()) })
    }

    /// A slot for `ip`, or `None` when it already holds `max` streams.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Option<IpSlot>> {
        if self.max == 0 {
            return Some(None);
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Some(IpSlot { limiter: Arc::clone(self), ip }))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.limiter.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_ip_and_returned() {
        let limiter = PerIpLimiter::new(2);
        let a: IpAddr = "1.1.1.1".parse().unwrap();
        let b: IpAddr = "2.2.2.2".parse().unwrap();
        let first = limiter.acquire(a).unwrap();
        let _second = limiter.acquire(a).unwrap();
        assert!(limiter.acquire(a).is_none());
        assert!(limiter.acquire(b).is_some());
        drop(first);
        assert!(limiter.acquire(a).is_some());
    }
}

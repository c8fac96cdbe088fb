//! Per-client limits: which IP a request comes from, and how many streams each IP holds.
//!
//! Behind proxies the peer address is the proxy's; `X-Forwarded-For` is believed only for the
//! configured number of trusted hops (each appends the address it received from), counted
//! from the right, because anything further left was written by the client itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The client address of a request.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted_hops: usize) -> IpAddr {
    if trusted_hops == 0 {
        return peer;
    }
    let Some(header) = forwarded_for else { return peer };
    let entries: Vec<&str> = header.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    // With n trusted hops, the n-th entry from the right was written by the outermost one.
    let index = entries.len().saturating_sub(trusted_hops);
    entries.get(index).and_then(|entry| entry.parse().ok()).unwrap_or(peer)
}

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
    fn forwarded_for_is_believed_only_for_trusted_hops() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let header = Some("1.1.1.1, 2.2.2.2, 3.3.3.3");
        assert_eq!(client_ip(peer, header, 0), peer);
        assert_eq!(client_ip(peer, header, 1), "3.3.3.3".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, header, 2), "2.2.2.2".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, header, 5), "1.1.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, Some("garbage"), 1), peer);
        assert_eq!(client_ip(peer, None, 1), peer);
    }

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

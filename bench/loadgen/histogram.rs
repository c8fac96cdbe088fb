//! A lock-free latency histogram: log-linear buckets (16 per power of two) of microseconds,
//! recorded with relaxed atomic adds from every connection task.

use std::sync::atomic::{AtomicU64, Ordering};

const SUB_BUCKETS: u64 = 16;
const BUCKETS: usize = 64 * SUB_BUCKETS as usize;

pub struct Histogram {
    counts: Vec<AtomicU64>,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(), max: AtomicU64::new(0) }
    }
}

fn bucket_of(value: u64) -> usize {
    if value < SUB_BUCKETS {
        return value as usize;
    }
    let power = 63 - value.leading_zeros() as u64; // value >= 2^power
    let shift = power - 4; // 16 sub-buckets: the 4 bits below the top one
    let sub = (value >> shift) & (SUB_BUCKETS - 1);
    ((power - 3) * SUB_BUCKETS + sub) as usize
}

/// The upper bound of a bucket's values (what a percentile reports).
fn bucket_ceiling(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < SUB_BUCKETS {
        return bucket;
    }
    let power = bucket / SUB_BUCKETS + 3;
    let sub = bucket % SUB_BUCKETS;
    let shift = power - 4;
    ((SUB_BUCKETS | sub) << shift) + (1 << shift) - 1
}

impl Histogram {
    pub fn record(&self, micros: u64) {
        self.counts[bucket_of(micros).min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(micros, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        for count in &self.counts {
            count.store(0, Ordering::Relaxed);
        }
        self.max.store(0, Ordering::Relaxed);
    }

    /// Bucket counts, for merging the histograms of several workers.
    pub fn snapshot(&self) -> Vec<u64> {
        self.counts.iter().map(|count| count.load(Ordering::Relaxed)).collect()
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

/// The value at quantile `q` (0..=1) of merged bucket counts.
pub fn quantile(counts: &[u64], q: f64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (bucket, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return bucket_ceiling(bucket);
        }
    }
    bucket_ceiling(counts.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_in_a_bucket_whose_ceiling_is_within_one_sixteenth() {
        for value in (0..100_000u64).chain([1 << 20, (1 << 30) + 12345, 10_000_000_000]) {
            let ceiling = bucket_ceiling(bucket_of(value));
            assert!(ceiling >= value, "{value} → {ceiling}");
            assert!(ceiling - value <= value / 16 + 1, "{value} → {ceiling}");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let histogram = Histogram::default();
        for value in 1..=1000 {
            histogram.record(value);
        }
        let counts = histogram.snapshot();
        let p50 = quantile(&counts, 0.5);
        assert!((500..=532).contains(&p50), "{p50}");
        assert!(quantile(&counts, 1.0) >= 1000);
        assert_eq!(histogram.max(), 1000);
    }
}

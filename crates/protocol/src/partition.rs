//! Log partitions. On one Redis (standalone or Sentinel) the log is one stream. On a Redis
//! Cluster one stream lives on one shard, so the log can be split into `count` streams, each
//! with its deduplication keys in one hash slot (a hash tag in every key), the partitions
//! spread over the slots so that a cluster spreads them over its primaries. An event's
//! partition is a stable function of its channel: the events of a channel stay in order.
//!
//! Outside a cluster the log is one partition and every key is what it always was (`sse:log`,
//! `sse:dedup:<event id>`). In a cluster every key carries its partition's tag, one partition
//! too: a stream and its deduplication keys must share a slot for the publishing script.

/// Hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// How the log is partitioned: `count` partitions, and the hash tag of each (none outside a
/// cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions {
    tags: Vec<String>,
}

impl Partitions {
    /// The one untagged partition of a standalone or Sentinel Redis.
    pub fn single() -> Self {
        Self { tags: Vec::new() }
    }

    /// One partition outside a cluster, else `count` tagged ones.
    pub fn new(count: u32, cluster: bool) -> Self {
        if cluster { Self::cluster(count) } else { Self::single() }
    }

    /// `count` tagged partitions of a cluster (at least one). Partition `i`'s tag is chosen so
    /// that its slot lies in the `i`-th of `count` equal slot ranges: a cluster whose primaries
    /// hold equal ranges (as `redis-cli --cluster create` assigns them) holds equal numbers of
    /// partitions.
    pub fn cluster(count: u32) -> Self {
        let count = count.max(1);
        let tags = (0..count)
            .map(|i| {
                let range = slot_range(i, count);
                (0u32..)
                    .map(|k| if k == 0 { format!("p{i}") } else { format!("p{i}.{k}") })
                    .find(|tag| range.contains(&slot_of_tag(tag)))
                    .expect("every slot range is reached by some tag")
            })
            .collect();
        Self { tags }
    }

    pub fn count(&self) -> u32 {
        self.tags.len().max(1) as u32
    }

    /// The partition of an event on `channel` (FNV-1a of the channel's bytes: the same in every
    /// service and every version).
    pub fn of_channel(&self, channel: &[u8]) -> u32 {
        if self.tags.len() <= 1 {
            return 0;
        }
        let hash = channel.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        (hash % self.tags.len() as u64) as u32
    }

    /// The key of partition `partition`'s stream: `log_stream` itself outside a cluster, else
    /// with the partition's hash tag after its first segment (`sse:log` → `sse:{p3}:log`).
    pub fn log_key(&self, log_stream: &str, partition: u32) -> String {
        self.tagged(log_stream, partition)
    }

    /// The prefix of partition `partition`'s deduplication keys (`sse:dedup:` →
    /// `sse:{p3}:dedup:`), in the slot of its stream.
    pub fn dedup_prefix(&self, dedup_prefix: &str, partition: u32) -> String {
        self.tagged(dedup_prefix, partition)
    }

    fn tagged(&self, key: &str, partition: u32) -> String {
        if self.tags.is_empty() {
            return key.to_owned();
        }
        let tag = &self.tags[partition as usize % self.tags.len()];
        match key.split_once(':') {
            Some((head, rest)) => format!("{head}:{{{tag}}}:{rest}"),
            None => format!("{{{tag}}}:{key}"),
        }
    }
}

/// The slots of the `i`-th of `count` equal ranges.
fn slot_range(i: u32, count: u32) -> std::ops::Range<u16> {
    let bound = |n: u32| (u64::from(n) * u64::from(SLOTS) / u64::from(count)) as u16;
    bound(i)..if i + 1 == count { SLOTS } else { bound(i + 1) }
}

fn slot_of_tag(tag: &str) -> u16 {
    crc16(tag.as_bytes()) % SLOTS
}

/// The hash slot of a key, as Redis Cluster computes it: of the text between the first `{`
/// and the next `}` when that is not empty, else of the whole key.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|&b| b == b'}').filter(|&close| close > 0).map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

/// CRC-16/XMODEM, Redis Cluster's key hash.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &byte| {
        (0..8).fold(crc ^ (u16::from(byte) << 8), |crc, _| {
            if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_computed_as_redis_cluster_does() {
        assert_eq!(crc16(b"123456789"), 0x31c3, "the CRC-16/XMODEM check value");
        // The examples of the cluster specification.
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS, "an empty tag hashes the key");
        assert_eq!(key_slot(b"foo{{bar}}zap"), crc16(b"{bar") % SLOTS);
        assert_eq!(key_slot(b"foo"), 12_182, "CLUSTER KEYSLOT foo");
    }

    #[test]
    fn outside_a_cluster_every_key_stays_as_it_was() {
        let single = Partitions::single();
        assert_eq!(single.count(), 1);
        assert_eq!(single.log_key("sse:log", 0), "sse:log");
        assert_eq!(single.dedup_prefix("sse:dedup:", 0), "sse:dedup:");
        assert_eq!(single.of_channel(b"weatherforecast.created"), 0);
        assert_eq!(Partitions::new(1, false), single);
    }

    #[test]
    fn one_partition_of_a_cluster_keeps_its_keys_in_one_slot() {
        let one = Partitions::cluster(1);
        assert_eq!(Partitions::cluster(0), one, "at least one partition");
        assert_eq!(one.count(), 1);
        let log = one.log_key("sse:log", 0);
        let dedup = format!("{}event-1", one.dedup_prefix("sse:dedup:", 0));
        assert_eq!(log, "sse:{p0}:log");
        assert_eq!(key_slot(log.as_bytes()), key_slot(dedup.as_bytes()));
        assert_eq!(one.of_channel(b"weatherforecast.created"), 0);
    }

    #[test]
    fn a_partitions_keys_share_its_slot_and_partitions_spread_over_the_slots() {
        for count in [2, 3, 8, 16] {
            let partitions = Partitions::cluster(count);
            for partition in 0..count {
                let log = partitions.log_key("sse:log", partition);
                let dedup = format!("{}{}", partitions.dedup_prefix("sse:dedup:", partition), "event-1");
                let probe = format!("{log}:probe:pod-1");
                assert_eq!(key_slot(log.as_bytes()), key_slot(dedup.as_bytes()), "{log} and {dedup}");
                assert_eq!(key_slot(log.as_bytes()), key_slot(probe.as_bytes()));
                assert!(slot_range(partition, count).contains(&key_slot(log.as_bytes())), "{log}, {count}");
            }
        }
        let eight = Partitions::cluster(8);
        assert_eq!(eight.log_key("sse:log", 3), "sse:{p3.1}:log");
        assert_eq!(eight.log_key("log", 3), "{p3.1}:log");
    }

    #[test]
    fn a_channels_partition_is_stable_and_channels_spread() {
        let eight = Partitions::cluster(8);
        // Fixed values: publishers and relays of every version must agree on them.
        assert_eq!(eight.of_channel(b"weatherforecast.created"), 4);
        assert_eq!(eight.of_channel(b"admin.user.loggedin"), 0);
        assert_eq!(eight.of_channel(b"user.42"), 6);
        assert_eq!(eight.log_key("sse:log", 0), "sse:{p0.1}:log");
        assert_eq!(eight.log_key("sse:log", 5), "sse:{p5}:log");
        let mut used = [0; 8];
        for user in 0..800 {
            used[eight.of_channel(format!("user.{user}").as_bytes()) as usize] += 1;
        }
        assert!(used.iter().all(|&n| (50..=150).contains(&n)), "{used:?}");
    }
}

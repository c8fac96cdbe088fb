//! Ids of the history log: Redis stream ids `<ms>-<seq>`, the `id:` of envelope events and so
//! the `Last-Event-ID` a client resumes from.
//!
//! A log of one partition (standalone or Sentinel Redis) gives each event its stream id. A log
//! of several partitions (Redis Cluster) gives each event a *position*: for every partition,
//! the id of the last entry delivered before and with it — what a client that has the event
//! has of each partition. It is written compactly ([`encode_position`]): the smallest
//! millisecond in base 36, then per partition `.` and the distance from it in base 36, with
//! `-<seq>` when the sequence is not 0, and nothing for a partition that has no entry yet:
//! `mf3k2r4q.0.5.1a-2.` is four partitions.

use std::fmt;
use std::str::FromStr;

/// A Redis stream id `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a log id like 1700000000000-0")]
pub struct BadStreamId(pub String);

impl StreamId {
    /// Lower than any id Redis generates.
    pub const ZERO: Self = Self { ms: 0, seq: 0 };
}

impl FromStr for StreamId {
    type Err = BadStreamId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadStreamId(text.chars().take(64).collect());
        let (ms, seq) = text.split_once('-').ok_or_else(bad)?;
        let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(Self { ms: ms.parse().map_err(|_| bad())?, seq: seq.parse().map_err(|_| bad())? })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Partitions a position may name (as many as a log may have).
pub const MAX_PARTITIONS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a log id like 1700000000000-0 or a log position like mf3k2r4q.0.5.1a-2")]
pub struct BadPosition(pub String);

/// The `id:` of an event at `position` (one id per partition): the stream id itself for one
/// partition, else the compact form described in the module documentation.
pub fn encode_position(position: &[StreamId]) -> String {
    use fmt::Write;
    if let [id] = position {
        return id.to_string();
    }
    let base = position.iter().filter(|id| **id != StreamId::ZERO).map(|id| id.ms).min().unwrap_or(0);
    let mut text = base36(base);
    for id in position {
        text.push('.');
        if *id == StreamId::ZERO {
            continue;
        }
        text.push_str(&base36(id.ms - base));
        if id.seq != 0 {
            let _ = write!(text, "-{}", base36(id.seq));
        }
    }
    text
}

/// Reads a `Last-Event-ID`: a stream id (one partition) or a position of several partitions.
pub fn parse_position(text: &str) -> Result<Vec<StreamId>, BadPosition> {
    let bad = || BadPosition(text.chars().take(64).collect());
    let Some((base, partitions)) = text.split_once('.') else {
        return text.parse::<StreamId>().map(|id| vec![id]).map_err(|_| bad());
    };
    let base = from_base36(base).ok_or_else(bad)?;
    let mut position = Vec::new();
    for part in partitions.split('.') {
        if position.len() == MAX_PARTITIONS {
            return Err(bad());
        }
        if part.is_empty() {
            position.push(StreamId::ZERO);
            continue;
        }
        let (delta, seq) = match part.split_once('-') {
            Some((delta, seq)) => (from_base36(delta), from_base36(seq)),
            None => (from_base36(part), Some(0)),
        };
        let ms = delta.and_then(|delta| base.checked_add(delta)).ok_or_else(bad)?;
        position.push(StreamId { ms, seq: seq.ok_or_else(bad)? });
    }
    if position.len() < 2 {
        return Err(bad());
    }
    Ok(position)
}

fn base36(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).expect("ASCII digits")
}

fn from_base36(text: &str) -> Option<u64> {
    // u64::MAX has 13 digits in base 36; lowercase only, so that one position has one spelling.
    if text.is_empty()
        || text.len() > 13
        || !text.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return None;
    }
    u64::from_str_radix(text, 36).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_of_one_partition_is_its_stream_id() {
        let id = StreamId { ms: 1_700_000_000_000, seq: 3 };
        assert_eq!(encode_position(&[id]), "1700000000000-3");
        assert_eq!(parse_position("1700000000000-3"), Ok(vec![id]));
    }

    #[test]
    fn positions_of_several_partitions_are_short_and_read_back() {
        let at = |ms, seq| StreamId { ms, seq };
        let position = vec![
            at(1_733_400_000_000, 0),
            at(1_733_400_000_005, 2),
            StreamId::ZERO,
            at(1_733_400_059_999, 0),
        ];
        let text = encode_position(&position);
        assert_eq!(text, "m4b9ls00.0.5-2..1aan");
        assert_eq!(parse_position(&text), Ok(position));
        assert_eq!(parse_position(&encode_position(&[StreamId::ZERO; 3])), Ok(vec![StreamId::ZERO; 3]));
        let extreme = vec![at(u64::MAX, u64::MAX), at(0, 1)];
        assert_eq!(parse_position(&encode_position(&extreme)), Ok(extreme));
        let eight: Vec<StreamId> = (0..8).map(|i| at(1_733_400_000_000 + i * 7_919, i)).collect();
        assert!(encode_position(&eight).len() <= 64, "{}", encode_position(&eight));
    }

    #[test]
    fn malformed_positions_are_refused() {
        let many = format!("0{}", ".1".repeat(MAX_PARTITIONS + 1));
        for bad in [
            "",
            "1",
            "m2z5q1uo",
            "m2z5q1uo.1",
            "M2.1.2",
            "m2.1.-1",
            "m2.1.x-",
            "m2.zzzzzzzzzzzzzz.1",
            "m2.1.2-3-4",
            "3w5e11264sgsf.3w5e11264sgsf.0",
            &many,
        ] {
            assert!(parse_position(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stream_ids_parse_print_and_order_like_redis() {
        let a: StreamId = "1700000000000-0".parse().unwrap();
        let b: StreamId = "1700000000000-10".parse().unwrap();
        let c: StreamId = "1700000000001-2".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-10");
        for bad in ["", "1", "1-", "-1", "a-1", "1-1-1", "1 -1", "99999999999999999999999-0"] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad:?}");
        }
    }
}

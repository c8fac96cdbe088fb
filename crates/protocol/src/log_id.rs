//! Ids of the history log: Redis stream ids `<ms>-<seq>`, the `id:` of envelope events and so
//! the `Last-Event-ID` a client resumes from.

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

#[cfg(test)]
mod tests {
    use super::*;

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

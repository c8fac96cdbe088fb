//! Redis glob patterns: validation, and a matcher that agrees with Redis's own.
//!
//! Clients choose channels with the same glob syntax the relay uses for PSUBSCRIBE, so the
//! relay must decide "does this channel match" exactly as Redis does, quirks included
//! (signed-char ranges, `[z-a]` read as `[a-z]`, a trailing `*` not matching the empty string
//! after the last character). [`redis_match`] is a line-by-line port of Redis 7.0's
//! `stringmatchlen`; a property test compares it with a real redis-server.

use std::fmt;

/// Longest pattern accepted from configuration or from a client.
pub const MAX_PATTERN_BYTES: usize = 256;

/// Redis gives up on patterns that nest `*` more deeply than this (CVE-2022-36021).
const MAX_NESTING: u32 = 1000;

/// A validated Redis glob pattern.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pattern(String);

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern is empty")]
    Empty,
    #[error("pattern is longer than {MAX_PATTERN_BYTES} bytes")]
    TooLong,
    #[error("pattern contains a control character")]
    ControlCharacter,
    #[error("pattern has an unterminated '[' character class")]
    UnterminatedClass,
    #[error("pattern ends with a lone '\\' escape")]
    TrailingEscape,
}

impl Pattern {
    /// Checks a pattern for the mistakes Redis would silently accept but that almost certainly
    /// do not mean what their author intended (an unclosed class, a dangling escape).
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.len() > MAX_PATTERN_BYTES {
            return Err(PatternError::TooLong);
        }
        if text.chars().any(char::is_control) {
            return Err(PatternError::ControlCharacter);
        }
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => {
                    if i + 1 == bytes.len() {
                        return Err(PatternError::TrailingEscape);
                    }
                    i += 2;
                }
                b'[' => {
                    let class = parse_class(bytes, i);
                    if !class.terminated {
                        return Err(PatternError::UnterminatedClass);
                    }
                    i = class.end + 1;
                }
                _ => i += 1,
            }
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `channel` matches this pattern, exactly as Redis decides for PSUBSCRIBE.
    pub fn matches(&self, channel: &[u8]) -> bool {
        redis_match(self.0.as_bytes(), channel)
    }

    /// What the pattern looks like to an index: one channel, every channel with a literal
    /// prefix, a literal prefix every match starts with, or anything else (matched one by one).
    pub fn shape(&self) -> Shape<'_> {
        let bytes = self.0.as_bytes();
        let special = |b: &u8| matches!(b, b'*' | b'?' | b'[' | b'\\');
        match bytes.iter().position(special) {
            None => Shape::Exact(bytes),
            Some(at) if at == bytes.len() - 1 && bytes[at] == b'*' => Shape::Prefix(&bytes[..at]),
            Some(0) => Shape::Other,
            Some(at) => Shape::Anchored(&bytes[..at]),
        }
    }
}

/// See [`Pattern::shape`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape<'a> {
    /// Matches exactly this channel.
    Exact(&'a [u8]),
    /// Matches every channel that starts with these bytes, except the empty channel (which
    /// Redis's matcher never matches with `*` alone).
    Prefix(&'a [u8]),
    /// Matches only channels that start with these (non-empty) bytes, not all of them.
    Anchored(&'a [u8]),
    Other,
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// One element of a pattern, as Redis reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// `*`: any run of bytes.
    Star,
    /// One byte from the set (`?` is the full set).
    One(ByteSet),
}

/// A set of bytes, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    const ALL: Self = Self([u64::MAX; 4]);

    fn of(accepts: &[bool; 256]) -> Self {
        let mut bits = [0u64; 4];
        for (byte, _) in accepts.iter().enumerate().filter(|(_, accepted)| **accepted) {
            bits[byte / 64] |= 1 << (byte % 64);
        }
        Self(bits)
    }

    fn single(byte: u8) -> Self {
        let mut bits = [0u64; 4];
        bits[usize::from(byte) / 64] = 1 << (byte % 64);
        Self(bits)
    }

    #[cfg(test)]
    fn contains(&self, byte: u8) -> bool {
        self.0[usize::from(byte) / 64] & (1 << (byte % 64)) != 0
    }

    fn meets(&self, other: &Self) -> bool {
        self.0.iter().zip(&other.0).any(|(a, b)| a & b != 0)
    }
}

/// A `[...]` class read exactly as Redis reads it (a `-` after the first byte makes a range even
/// when the range's end is `]`; ranges compare signed bytes and are swapped when reversed).
struct Class {
    accepts: [bool; 256],
    /// Index of the byte that ended the class (its `]`).
    end: usize,
    terminated: bool,
}

fn parse_class(pattern: &[u8], open: usize) -> Class {
    let mut accepts = [false; 256];
    let mut p = open + 1;
    let negate = at(pattern, p) == b'^';
    if negate {
        p += 1;
    }
    let terminated = loop {
        let remaining = pattern.len().saturating_sub(p);
        if at(pattern, p) == b'\\' && remaining >= 2 {
            p += 1;
            accepts[usize::from(pattern[p])] = true;
        } else if at(pattern, p) == b']' {
            break true;
        } else if remaining == 0 {
            break false;
        } else if remaining >= 3 && pattern[p + 1] == b'-' {
            let (mut start, mut end) = (pattern[p] as i8, pattern[p + 2] as i8);
            if start > end {
                std::mem::swap(&mut start, &mut end);
            }
            for byte in 0..=255u8 {
                if (start..=end).contains(&(byte as i8)) {
                    accepts[usize::from(byte)] = true;
                }
            }
            p += 2;
        } else {
            accepts[usize::from(pattern[p])] = true;
        }
        p += 1;
    };
    if negate {
        for accepted in accepts.iter_mut() {
            *accepted = !*accepted;
        }
    }
    Class { accepts, end: p, terminated }
}

/// The tokens of a validated pattern.
fn tokens(pattern: &[u8]) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' => {
                if tokens.last() != Some(&Token::Star) {
                    tokens.push(Token::Star);
                }
                i += 1;
            }
            b'?' => {
                tokens.push(Token::One(ByteSet::ALL));
                i += 1;
            }
            b'[' => {
                let class = parse_class(pattern, i);
                tokens.push(Token::One(ByteSet::of(&class.accepts)));
                i = class.end + 1;
            }
            byte => {
                let literal = if byte == b'\\' && i + 1 < pattern.len() {
                    i += 1;
                    pattern[i]
                } else {
                    byte
                };
                tokens.push(Token::One(ByteSet::single(literal)));
                i += 1;
            }
        }
    }
    tokens
}

/// Where a token list goes after consuming one byte, and which bytes it accepts.
fn step(tokens: &[Token], k: usize) -> Option<(usize, &ByteSet)> {
    match tokens.get(k) {
        Some(Token::Star) => Some((k, &ByteSet::ALL)),
        Some(Token::One(accepts)) => Some((k + 1, accepts)),
        None => None,
    }
}

/// Whether some non-empty channel matches both patterns (a client's request and a rule, say).
pub fn overlaps(a: &Pattern, b: &Pattern) -> bool {
    let mut unbounded = usize::MAX;
    overlaps_within(a, b, &mut unbounded).unwrap_or(true)
}

/// [`overlaps`], doing at most `budget` steps (each a pair of positions in the two patterns,
/// at most `(a.len() + 1) × (b.len() + 1) × 2` in all, plus one per 64 such pairs to set up)
/// and taking those it does from the budget; `None` once it is spent before an answer was
/// found.
pub fn overlaps_within(a: &Pattern, b: &Pattern, budget: &mut usize) -> Option<bool> {
    let (a, b) = (tokens(a.0.as_bytes()), tokens(b.0.as_bytes()));
    // A search over pairs of positions, plus whether a byte was consumed yet; each pair is
    // visited once.
    let index = |(i, j, consumed): (usize, usize, bool)| (i * (b.len() + 1) + j) * 2 + usize::from(consumed);
    let states = (a.len() + 1) * (b.len() + 1) * 2;
    // Clearing the set of visited pairs is work too: a step per 64 pairs.
    spend(budget, states.div_ceil(64))?;
    let mut seen = vec![0u64; states.div_ceil(64)];
    let mut pending = vec![(0usize, 0usize, false)];
    while let Some(state @ (i, j, consumed)) = pending.pop() {
        let (word, bit) = (index(state) / 64, 1 << (index(state) % 64));
        if seen[word] & bit != 0 {
            continue;
        }
        seen[word] |= bit;
        spend(budget, 1)?;
        if i == a.len() && j == b.len() && consumed {
            return Some(true);
        }
        if a.get(i) == Some(&Token::Star) {
            pending.push((i + 1, j, consumed));
        }
        if b.get(j) == Some(&Token::Star) {
            pending.push((i, j + 1, consumed));
        }
        // Consume one byte accepted by both sides.
        if let (Some((next_i, set_a)), Some((next_j, set_b))) = (step(&a, i), step(&b, j))
            && set_a.meets(set_b)
        {
            pending.push((next_i, next_j, true));
        }
    }
    Some(false)
}

/// Takes `steps` from `budget`; `None` (and nothing left) when it holds fewer.
fn spend(budget: &mut usize, steps: usize) -> Option<()> {
    match budget.checked_sub(steps) {
        Some(left) => {
            *budget = left;
            Some(())
        }
        None => {
            *budget = 0;
            None
        }
    }
}

/// Redis's `stringmatchlen(pattern, string, nocase = 0)` for arbitrary bytes.
pub fn redis_match(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer_matches = false;
    match_impl(pattern, string, &mut skip_longer_matches, 0)
}

/// The C code reads one byte past the end of the pattern (its NUL terminator) in a few
/// places; `at` returns 0 there so those comparisons behave the same.
fn at(bytes: &[u8], index: usize) -> u8 {
    bytes.get(index).copied().unwrap_or(0)
}

fn match_impl(pattern: &[u8], string: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    let mut p = 0; // index into pattern; pattern.len() - p is the C `patternLen`
    let mut s = 0; // index into string
    while p < pattern.len() && s < string.len() {
        match pattern[p] {
            b'*' => {
                while p + 1 < pattern.len() && pattern[p + 1] == b'*' {
                    p += 1;
                }
                if pattern.len() - p == 1 {
                    return true;
                }
                while s < string.len() {
                    if match_impl(&pattern[p + 1..], &string[s..], skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s += 1;
                }
                // No match for the rest of the pattern from anywhere in the rest of the string:
                // earlier stars cannot help by consuming more, so stop the whole search.
                *skip_longer = true;
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let negate = at(pattern, p) == b'^';
                if negate {
                    p += 1;
                }
                let mut matched = false;
                loop {
                    let remaining = pattern.len().saturating_sub(p);
                    if at(pattern, p) == b'\\' && remaining >= 2 {
                        p += 1;
                        if pattern[p] == string[s] {
                            matched = true;
                        }
                    } else if at(pattern, p) == b']' {
                        break;
                    } else if remaining == 0 {
                        // Unterminated class: step back so the outer advance lands on the end.
                        p -= 1;
                        break;
                    } else if remaining >= 3 && pattern[p + 1] == b'-' {
                        // C compares `char`s, which are signed on the platforms Redis ships on.
                        let mut start = pattern[p] as i8;
                        let mut end = pattern[p + 2] as i8;
                        let c = string[s] as i8;
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        p += 2;
                        if c >= start && c <= end {
                            matched = true;
                        }
                    } else if pattern[p] == string[s] {
                        matched = true;
                    }
                    p += 1;
                }
                if negate {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s += 1;
            }
            other => {
                let literal = if other == b'\\' && pattern.len() - p >= 2 {
                    p += 1;
                    pattern[p]
                } else {
                    other
                };
                if literal != string[s] {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == string.len() {
            while at(pattern, p) == b'*' {
                p += 1;
            }
            break;
        }
    }
    p >= pattern.len() && s == string.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, channel: &str) -> bool {
        redis_match(pattern.as_bytes(), channel.as_bytes())
    }

    #[test]
    fn stars_questions_and_literals_match_like_redis() {
        assert!(m("*", "a"));
        assert!(m("weatherforecast.*", "weatherforecast.created"));
        assert!(!m("weatherforecast.*", "admin.user"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy"));
        assert!(m("a**", "a"));
    }

    #[test]
    fn classes_ranges_negation_and_escapes_match_like_redis() {
        assert!(m("h[ae]llo", "hello"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"), "reversed ranges are swapped");
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("[\\]]", "]"));
    }

    /// Matching through tokens (what [`overlaps`] reasons about) must agree with the port of
    /// Redis's matcher on every validated pattern.
    fn tokens_match(tokens: &[Token], s: &[u8]) -> bool {
        match tokens.split_first() {
            None => s.is_empty(),
            Some((Token::Star, rest)) => (0..=s.len()).any(|k| tokens_match(rest, &s[k..])),
            Some((Token::One(accepts), rest)) => {
                s.first().is_some_and(|&c| accepts.contains(c)) && tokens_match(rest, &s[1..])
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn tokens_agree_with_the_redis_matcher(
            pattern in "[ab.\\-*?\\[\\]^\\\\é]{1,8}",
            channel in "[ab.\\-*\\[\\]\\\\zé]{1,7}",
        ) {
            if let Ok(pattern) = Pattern::parse(&pattern) {
                let by_tokens = tokens_match(&tokens(pattern.as_str().as_bytes()), channel.as_bytes());
                proptest::prop_assert_eq!(by_tokens, pattern.matches(channel.as_bytes()), "{:?} vs {:?}", pattern, channel);
            }
        }

        #[test]
        fn a_shape_matches_what_the_pattern_matches(
            pattern in "[ab.\\-*?\\[\\]^\\\\é]{1,8}",
            channel in "[ab.\\-*\\[\\]\\\\zé]{0,7}",
        ) {
            if let Ok(pattern) = Pattern::parse(&pattern) {
                let channel = channel.as_bytes();
                let by_shape = match pattern.shape() {
                    Shape::Exact(literal) => channel == literal,
                    Shape::Prefix(prefix) => !channel.is_empty() && channel.starts_with(prefix),
                    Shape::Anchored(prefix) => {
                        // A necessary condition only.
                        if pattern.matches(channel) {
                            proptest::prop_assert!(channel.starts_with(prefix), "{:?} vs {:?}", pattern, channel);
                        }
                        return Ok(());
                    }
                    Shape::Other => return Ok(()),
                };
                proptest::prop_assert_eq!(by_shape, pattern.matches(channel), "{:?} vs {:?}", pattern, channel);
            }
        }

        #[test]
        fn overlapping_patterns_share_a_channel(
            a in "[ab.*?\\[\\]^-]{1,6}",
            b in "[ab.*?\\[\\]^-]{1,6}",
            channels in proptest::collection::vec("[ab.\\-\\]\\[^]{1,6}", 1..40),
        ) {
            if let (Ok(a), Ok(b)) = (Pattern::parse(&a), Pattern::parse(&b)) {
                // A channel matched by both proves an overlap; no overlap means no such channel.
                let witness = channels.iter().any(|c| a.matches(c.as_bytes()) && b.matches(c.as_bytes()));
                if witness {
                    proptest::prop_assert!(overlaps(&a, &b), "{:?} and {:?} share a channel", a, b);
                }
                if !overlaps(&a, &b) {
                    proptest::prop_assert!(!witness);
                }
            }
        }
    }

    #[test]
    fn shapes_of_patterns() {
        let other = |s: &str| Pattern::parse(s).unwrap().shape() == Shape::Other;
        assert_eq!(Pattern::parse("user.42").unwrap().shape(), Shape::Exact(b"user.42"));
        assert_eq!(Pattern::parse("orders.eu.*").unwrap().shape(), Shape::Prefix(b"orders.eu."));
        assert_eq!(Pattern::parse("*").unwrap().shape(), Shape::Prefix(b""));
        assert_eq!(Pattern::parse("user.*.created").unwrap().shape(), Shape::Anchored(b"user."));
        assert_eq!(Pattern::parse("a\\*").unwrap().shape(), Shape::Anchored(b"a"));
        assert_eq!(Pattern::parse("a**").unwrap().shape(), Shape::Anchored(b"a"));
        for pattern in ["*a", "?.b", "[bc]", "\\*", "*.created"] {
            assert!(other(pattern), "{pattern}");
        }
    }

    #[test]
    fn overlap_examples() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        assert!(overlaps(&p("admin.*"), &p("*")));
        assert!(overlaps(&p("admin.*"), &p("*.created")));
        assert!(!overlaps(&p("admin.*"), &p("weatherforecast.*")));
        assert!(overlaps(&p("a?c"), &p("[a-b]bc")));
        assert!(!overlaps(&p("a[^b]"), &p("ab")));
        assert!(overlaps(&p("admin.apikey.created"), &p("admin.*")));
    }

    #[test]
    fn validation_refuses_patterns_that_cannot_mean_what_they_say() {
        assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
        assert_eq!(Pattern::parse("a["), Err(PatternError::UnterminatedClass));
        assert_eq!(Pattern::parse("a[b"), Err(PatternError::UnterminatedClass));
        assert_eq!(Pattern::parse("a\\"), Err(PatternError::TrailingEscape));
        assert_eq!(Pattern::parse("a\nb"), Err(PatternError::ControlCharacter));
        assert_eq!(Pattern::parse(&"a".repeat(MAX_PATTERN_BYTES + 1)), Err(PatternError::TooLong));
        assert!(Pattern::parse("a[\\]]*").is_ok());
        // Redis reads "[a-]" as a range from 'a' to ']' that is still open.
        assert_eq!(Pattern::parse("[a-]"), Err(PatternError::UnterminatedClass));
        assert!(Pattern::parse("admin.*").is_ok());
    }
}

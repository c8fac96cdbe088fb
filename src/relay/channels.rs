//! Channel rules (which Redis patterns the relay subscribes to and how their messages are read)
//! and a client's selection (which of those channels one stream wants).

use std::sync::Arc;

use serde::Deserialize;

use super::glob::Pattern;

/// Prefix of the relay's own probe channels; never delivered to clients.
pub const PROBE_CHANNEL_PREFIX: &str = "sse-relay.probe.";

/// How messages on a channel are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The message is the SSE data as is.
    Raw,
    /// The message is a JSON envelope carrying an id, an event name and the data.
    Envelope,
}

/// Who may read a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Public,
    Token,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRule {
    pub pattern: Pattern,
    pub format: Format,
    pub access: Access,
}

/// The configured rules, in order: for a given channel the first matching rule applies.
#[derive(Debug, Clone)]
pub struct ChannelRules {
    rules: Vec<ChannelRule>,
}

impl ChannelRules {
    pub fn new(rules: Vec<ChannelRule>) -> Self {
        Self { rules }
    }

    /// The patterns to PSUBSCRIBE, each once.
    pub fn patterns(&self) -> Vec<&str> {
        let mut patterns: Vec<&str> = Vec::new();
        for rule in &self.rules {
            if !patterns.contains(&rule.pattern.as_str()) {
                patterns.push(rule.pattern.as_str());
            }
        }
        patterns
    }

    /// The rule that governs `channel`, if any.
    pub fn rule_for(&self, channel: &[u8]) -> Option<&ChannelRule> {
        self.rules.iter().find(|rule| rule.pattern.matches(channel))
    }

    /// Redis sends one `pmessage` per matching pattern; only the one for the governing rule is
    /// delivered, so overlapping patterns never duplicate an event.
    pub fn accept(&self, subscribed_pattern: &[u8], channel: &[u8]) -> Option<&ChannelRule> {
        self.rule_for(channel).filter(|rule| rule.pattern.as_str().as_bytes() == subscribed_pattern)
    }
}

/// What one stream asked for. Streams with equal selections share a hub group, so a message is
/// matched once per distinct selection, not once per client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selection {
    /// No `channel` parameter: every configured channel.
    All,
    /// Sorted, deduplicated patterns from repeated `channel` parameters.
    Patterns(Arc<[Pattern]>),
}

impl Selection {
    pub fn from_patterns(mut patterns: Vec<Pattern>) -> Self {
        if patterns.is_empty() {
            return Self::All;
        }
        patterns.sort();
        patterns.dedup();
        Self::Patterns(patterns.into())
    }

    pub fn matches(&self, channel: &[u8]) -> bool {
        match self {
            Self::All => true,
            Self::Patterns(patterns) => patterns.iter().any(|pattern| pattern.matches(channel)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str) -> ChannelRule {
        ChannelRule { pattern: Pattern::parse(pattern).unwrap(), format: Format::Raw, access: Access::Public }
    }

    #[test]
    fn overlapping_patterns_deliver_once_through_the_first_rule() {
        let rules = ChannelRules::new(vec![rule("a.*"), rule("*.created"), rule("a.*")]);
        assert_eq!(rules.patterns(), vec!["a.*", "*.created"]);
        assert!(rules.accept(b"a.*", b"a.created").is_some());
        assert!(rules.accept(b"*.created", b"a.created").is_none());
        assert!(rules.accept(b"*.created", b"b.created").is_some());
    }

    #[test]
    fn selections_are_normalised() {
        let a = Selection::from_patterns(vec![Pattern::parse("b").unwrap(), Pattern::parse("a").unwrap()]);
        let b = Selection::from_patterns(vec![
            Pattern::parse("a").unwrap(),
            Pattern::parse("b").unwrap(),
            Pattern::parse("a").unwrap(),
        ]);
        assert_eq!(a, b);
        assert_eq!(Selection::from_patterns(vec![]), Selection::All);
        assert!(a.matches(b"a"));
        assert!(!a.matches(b"c"));
    }
}

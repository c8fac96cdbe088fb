//! Channel rules (which Redis patterns the relay subscribes to and how their messages are read)
//! and a client's selection (which of those channels one stream wants).

use std::sync::Arc;

use protocol::message::Format;
use serde::Deserialize;

use protocol::glob::{Pattern, overlaps_within};

/// Prefix of the relay's own probe channels; never delivered to clients.
pub const PROBE_CHANNEL_PREFIX: &str = "sse-relay.probe.";

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
    /// A raw channel by exact name through sharded pub/sub (`SSUBSCRIBE`, Redis Cluster).
    pub sharded: bool,
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

    /// The patterns to PSUBSCRIBE, each once: those of raw rules (but sharded ones), and of
    /// envelope rules too when there is no log to read them from.
    pub fn subscribed_patterns(&self, log_enabled: bool) -> Vec<String> {
        let mut patterns: Vec<String> = Vec::new();
        for rule in &self.rules {
            let subscribed = (rule.format == Format::Raw && !rule.sharded) || !log_enabled;
            if subscribed && !patterns.iter().any(|pattern| pattern == rule.pattern.as_str()) {
                patterns.push(rule.pattern.as_str().to_owned());
            }
        }
        patterns
    }

    /// The channels to SSUBSCRIBE, each once: the exact names of sharded raw rules.
    pub fn sharded_channels(&self) -> Vec<String> {
        let mut channels: Vec<String> = Vec::new();
        for rule in self.rules.iter().filter(|rule| rule.sharded && rule.format == Format::Raw) {
            if !channels.iter().any(|channel| channel == rule.pattern.as_str()) {
                channels.push(rule.pattern.as_str().to_owned());
            }
        }
        channels
    }

    /// Whether some rule reads its channels from the log.
    pub fn has_envelope_rules(&self) -> bool {
        self.rules.iter().any(|rule| rule.format == Format::Envelope)
    }

    /// The rule that governs `channel`, if any.
    pub fn rule_for(&self, channel: &[u8]) -> Option<&ChannelRule> {
        self.rules.iter().find(|rule| rule.pattern.matches(channel))
    }

    /// The rule of a logged event's channel, if it is an envelope rule: only envelope events
    /// carry the ids that replay and gap fill order and deduplicate by.
    pub fn logged_rule_for(&self, channel: &[u8]) -> Option<&ChannelRule> {
        self.rule_for(channel).filter(|rule| rule.format == Format::Envelope)
    }

    /// Whether a stream asking for `requested` can receive anything: some public rule overlaps
    /// it, or some token rule that a grant covers does. `None` when deciding it would take more
    /// than what is left of `budget` (see [`overlaps_within`]).
    pub fn readable(
        &self,
        requested: &Pattern,
        grants: Option<&[Pattern]>,
        budget: &mut usize,
    ) -> Option<bool> {
        for rule in &self.rules {
            if !overlaps_within(requested, &rule.pattern, budget)? {
                continue;
            }
            match rule.access {
                Access::Public => return Some(true),
                Access::Token => {
                    for grant in grants.unwrap_or_default() {
                        if overlaps_within(requested, grant, budget)?
                            && overlaps_within(grant, &rule.pattern, budget)?
                        {
                            return Some(true);
                        }
                    }
                }
            }
        }
        Some(false)
    }

    /// Whether a stream asking for every channel can receive anything; `None` as for
    /// [`Self::readable`].
    pub fn any_readable(&self, grants: Option<&[Pattern]>, budget: &mut usize) -> Option<bool> {
        for rule in &self.rules {
            match rule.access {
                Access::Public => return Some(true),
                Access::Token => {
                    for grant in grants.unwrap_or_default() {
                        if overlaps_within(grant, &rule.pattern, budget)? {
                            return Some(true);
                        }
                    }
                }
            }
        }
        Some(false)
    }

    /// Whether any rule needs a token (and so a verification key must be configured).
    pub fn has_token_rules(&self) -> bool {
        self.rules.iter().any(|rule| rule.access == Access::Token)
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

/// A hub group's key: what its streams asked for and what their token grants. Streams with
/// equal subscriptions share a group, so each message is checked once per distinct subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscription {
    pub selection: Selection,
    /// Patterns of the stream's token (`None`: anonymous, public channels only).
    pub grants: Option<Arc<[Pattern]>>,
}

impl Subscription {
    pub fn anonymous(selection: Selection) -> Self {
        Self { selection, grants: None }
    }

    /// Whether a message on `channel` goes to this subscription; `token_only` when the channel's
    /// rule needs a token.
    pub fn wants(&self, channel: &[u8], token_only: bool) -> bool {
        self.selection.matches(channel)
            && (!token_only
                || self.grants.as_ref().is_some_and(|grants| grants.iter().any(|g| g.matches(channel))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str) -> ChannelRule {
        ChannelRule {
            pattern: Pattern::parse(pattern).unwrap(),
            format: Format::Raw,
            access: Access::Public,
            sharded: false,
        }
    }

    #[test]
    fn overlapping_patterns_deliver_once_through_the_first_rule() {
        let rules = ChannelRules::new(vec![rule("a.*"), rule("*.created"), rule("a.*")]);
        assert_eq!(rules.subscribed_patterns(true), vec!["a.*", "*.created"]);
        assert!(rules.accept(b"a.*", b"a.created").is_some());
        assert!(rules.accept(b"*.created", b"a.created").is_none());
        assert!(rules.accept(b"*.created", b"b.created").is_some());
    }

    #[test]
    fn envelope_channels_are_subscribed_only_without_a_log() {
        let envelope = ChannelRule { format: Format::Envelope, ..rule("weatherforecast.*") };
        let rules = ChannelRules::new(vec![envelope, rule("*")]);
        assert_eq!(rules.subscribed_patterns(true), vec!["*"]);
        assert_eq!(rules.subscribed_patterns(false), vec!["weatherforecast.*", "*"]);
        // A raw pattern that also matches an envelope channel does not deliver it.
        assert!(rules.accept(b"*", b"weatherforecast.created").is_none());
        assert!(rules.accept(b"*", b"user.42").is_some());
    }

    #[test]
    fn token_channels_need_a_grant_and_public_ones_do_not() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        let rules = ChannelRules::new(vec![
            rule("weatherforecast.*"),
            ChannelRule { format: Format::Envelope, access: Access::Token, ..rule("admin.*") },
        ]);
        let readable = |requested: &str, grants: Option<&[Pattern]>| {
            rules.readable(&p(requested), grants, &mut { usize::MAX }).unwrap()
        };
        assert!(readable("*", None));
        assert!(!readable("admin.*", None));
        assert!(!readable("admin.*", Some(&[p("weatherforecast.*")])));
        assert!(readable("admin.user.*", Some(&[p("admin.*")])));
        assert!(!readable("admin.user.*", Some(&[p("admin.apikey.*")])));
        let anonymous = Subscription::anonymous(Selection::All);
        assert!(anonymous.wants(b"weatherforecast.created", false));
        assert!(!anonymous.wants(b"admin.apikey.created", true));
        let admin = Subscription { selection: Selection::All, grants: Some(vec![p("admin.*")].into()) };
        assert!(admin.wants(b"admin.apikey.created", true));
    }

    #[test]
    fn deciding_what_is_readable_costs_at_most_the_budget() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        let rules = ChannelRules::new(vec![ChannelRule {
            pattern: p("admin.*"),
            format: Format::Envelope,
            access: Access::Token,
            sharded: false,
        }]);
        // No channel matches two of these that end differently, which only a search of every
        // pair of positions can tell.
        let hostile = |letter: char, end: char| format!("admin.*{}*{end}", format!("{letter}*").repeat(120));
        let grants: Vec<Pattern> = (0..16).map(|_| p(&hostile('a', 'b'))).collect();
        let requested = p(&hostile('c', 'd'));
        let mut budget = 100_000;
        assert_eq!(rules.readable(&requested, Some(&grants), &mut budget), None);
        assert_eq!(budget, 0);
        let mut plenty = usize::MAX;
        assert_eq!(rules.readable(&p("admin.user.*"), Some(&grants), &mut plenty), Some(true));
        assert!(usize::MAX - plenty < 1_000, "a plain request costs little: {}", usize::MAX - plenty);
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

//! The event envelope shared by publishers and the relay, and the Lua script that publishes it.
//!
//! An envelope is a JSON object
//! `{"id":"<log id>","event_id":"<uuid>","event":"<optional name>","data":<any JSON>,
//!   "correlation_id":"…","exclude":"<relay connection id>","ts":<unix µs>}`.
//! Publishers build it without `id`; [`PUBLISH_SCRIPT`] appends it to the history stream (whose
//! entry id is the event's id), exactly once per `event_id`, and may also publish it on its
//! channel with that id for other subscribers.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Runs once per event, atomically:
/// 1. `SET <dedup key> 1 NX EX <ttl>`; if the key existed, the event was published already: stop;
/// 2. `XADD <log> MAXLEN ~ <retention> * ch <channel> m <envelope>` → the id (skipped when the
///    log key is empty: no history);
/// 3. `PUBLISH <channel> <envelope with "id">` when asked to, or when there is no log (then the
///    channel is the only way the event travels).
///
/// The relay reads envelope channels from the log, so step 3 is for other subscribers only.
/// The dedup key and the log must be in one hash slot on a Redis Cluster.
///
/// KEYS: dedup key, log stream (or ""). ARGV: ttl secs, retention, channel, envelope JSON
/// without `id` (an object with at least one field), "1" to publish on the channel. Returns
/// the log id, "" without a log, or nil for a duplicate.
pub const PUBLISH_SCRIPT: &str = r#"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return false
end
local id = ''
local envelope = ARGV[4]
if KEYS[2] ~= '' then
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'ch', ARGV[3], 'm', envelope)
  envelope = '{"id":"' .. id .. '",' .. string.sub(envelope, 2)
end
if ARGV[5] == '1' or KEYS[2] == '' then
  redis.call('PUBLISH', ARGV[3], envelope)
end
return id
"#;

/// An envelope as a publisher writes it (the `id` is added by [`PUBLISH_SCRIPT`]).
#[derive(Debug, Serialize)]
pub struct OutgoingEnvelope<'a> {
    pub event_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a str>,
    pub data: &'a RawValue,
    pub correlation_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude: Option<&'a str>,
    /// Publish time, microseconds since the Unix epoch.
    pub ts: i64,
}

impl OutgoingEnvelope<'_> {
    pub fn to_json(&self) -> String {
        // Serializing plain strings, integers and already-valid raw JSON cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An envelope as the relay reads it: borrowed from the message, `data` kept as raw JSON text so
/// that it is forwarded byte for byte. Unknown fields are ignored (newer publishers).
#[derive(Debug, Deserialize)]
pub struct IncomingEnvelope<'a> {
    /// Ignored by the relay (ids come from the log); read so that a non-string is refused.
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub event_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub data: &'a RawValue,
    #[serde(borrow, default)]
    pub exclude: Option<Cow<'a, str>>,
    #[serde(default)]
    pub ts: Option<i64>,
    /// What the publisher traces the change by (its request's `X-Correlation-Id`).
    #[serde(borrow, default)]
    pub correlation_id: Option<Cow<'a, str>>,
}

impl<'a> IncomingEnvelope<'a> {
    /// A JSON object with `data` (serde would also take the fields from an array, in order),
    /// whose `data` holds no unpaired UTF-16 surrogate escape: `RawValue` does not check them,
    /// and JSON parsers differ on them (RFC 8259: "unpredictable"), so such data is refused
    /// rather than forwarded for each client to read its own way.
    pub fn parse(message: &'a [u8]) -> Result<Self, serde_json::Error> {
        use serde::de::Error;
        if message.trim_ascii_start().first() != Some(&b'{') {
            return Err(serde_json::Error::custom("an envelope is a JSON object"));
        }
        let envelope: Self = serde_json::from_slice(message)?;
        let data = envelope.data.get();
        // Only escapes of surrogates need the full parse: other data is valid as RawValue read it.
        if data.contains("\\ud") || data.contains("\\uD") {
            serde_json::from_str::<serde_json::Value>(data)?;
        }
        Ok(envelope)
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_is_an_object_whose_data_has_no_unpaired_surrogate() {
        assert!(
            IncomingEnvelope::parse(br#" {"data":{"t":"\ud83d\ude00"}}"#).is_ok(),
            "a pair is a character"
        );
        assert!(IncomingEnvelope::parse(br#"[null,"e","ev",{"t":1}]"#).is_err(), "fields in an array");
        assert!(IncomingEnvelope::parse(br#"{"data":"\uda91\uda91"}"#).is_err(), "two high surrogates");
        assert!(IncomingEnvelope::parse(br#"{"data":["\uDC00"]}"#).is_err(), "a lone low surrogate");
        assert!(IncomingEnvelope::parse(br#"{"event":"\uda91","data":1}"#).is_err(), "nor in a name");
    }

    #[test]
    fn incoming_envelopes_borrow_their_data_as_raw_json() {
        let message =
            br#"{"id":"1-0","event_id":"e","data":{ "a" : [1, 2] },"exclude":"c","ts":5,"future":true}"#;
        let envelope = IncomingEnvelope::parse(message).unwrap();
        assert_eq!(envelope.id.as_deref(), Some("1-0"));
        assert_eq!(envelope.data.get(), r#"{ "a" : [1, 2] }"#, "forwarded byte for byte");
        assert_eq!(envelope.exclude.as_deref(), Some("c"));
        assert_eq!(envelope.ts, Some(5));
        assert!(IncomingEnvelope::parse(br#"{"id":"1-0"}"#).is_err(), "data is required");
        assert!(IncomingEnvelope::parse(b"not json").is_err());
    }

    #[test]
    fn the_envelope_starts_with_an_object_field_so_the_script_can_prepend_the_id() {
        let data = RawValue::from_string(r#"{"id":"x","temperatureC":25}"#.into()).unwrap();
        let json = OutgoingEnvelope {
            event_id: "e1",
            event: None,
            data: &data,
            correlation_id: "c1",
            exclude: Some("conn"),
            ts: 42,
        }
        .to_json();
        assert_eq!(
            json,
            r#"{"event_id":"e1","data":{"id":"x","temperatureC":25},"correlation_id":"c1","exclude":"conn","ts":42}"#
        );
    }
}

//! A message on a channel — live from a subscription, or an entry read back from the log —
//! turned into one SSE frame, according to its channel's format.
//!
//! Everything that could break a stream is refused here with a [`DropReason`]: oversized
//! messages, malformed envelopes, names or ids with line breaks, invalid UTF-8.

use bytes::Bytes;
use serde::Deserialize;
use uuid::Uuid;

use crate::envelope::IncomingEnvelope;
use crate::log_id::StreamId;
use crate::sse::{EncodeError, encode_event};

/// How messages on a channel are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The message is the SSE data as is.
    Raw,
    /// The message is a JSON envelope carrying an id, an event name and the data.
    Envelope,
}

/// Why a message was dropped rather than sent. A closed set: each is one label value of the
/// relay's `sse_relay_events_dropped_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Larger than the relay's `limits.max_message_bytes`.
    TooLarge,
    /// The payload is not UTF-8.
    InvalidUtf8,
    /// The channel name is not UTF-8.
    InvalidChannel,
    /// An event name or id contains CR or LF.
    LineBreakInField,
    /// Not a JSON object with `data`, or an `id` that is not a log id.
    BadEnvelope,
}

impl DropReason {
    pub const ALL: [Self; 5] =
        [Self::TooLarge, Self::InvalidUtf8, Self::InvalidChannel, Self::LineBreakInField, Self::BadEnvelope];
}

/// The metric label value.
impl From<DropReason> for &'static str {
    fn from(reason: DropReason) -> Self {
        match reason {
            DropReason::TooLarge => "too_large",
            DropReason::InvalidUtf8 => "invalid_utf8",
            DropReason::InvalidChannel => "invalid_channel",
            DropReason::LineBreakInField => "line_break_in_field",
            DropReason::BadEnvelope => "bad_envelope",
        }
    }
}

impl From<EncodeError> for DropReason {
    fn from(error: EncodeError) -> Self {
        match error {
            EncodeError::EventNameLineBreak | EncodeError::IdLineBreak => Self::LineBreakInField,
            EncodeError::EventNameNotUtf8 => Self::InvalidChannel,
            EncodeError::PayloadNotUtf8 => Self::InvalidUtf8,
        }
    }
}

/// A frame ready for the hub.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub frame: Bytes,
    /// The log id (envelope events read from the log only).
    pub id: Option<StreamId>,
    /// The envelope's `event_id`: the same event published again carries the same one.
    pub event_id: Option<Box<str>>,
    /// The relay connection that must not receive this event.
    pub exclude: Option<Uuid>,
    /// Publish time, unix µs, for the delivery latency histogram.
    pub published_micros: Option<i64>,
    /// The envelope's `correlation_id`, for the relay's per-event log line.
    pub correlation_id: Option<Box<str>>,
}

/// `log_id` is the entry id when the message comes from the log. Ids come only from there: an
/// `id` inside a published envelope is ignored, so that a client that can merely PUBLISH
/// cannot make the relay or its clients skip or reorder logged events.
pub fn decode(
    format: Format,
    channel: &[u8],
    payload: &[u8],
    log_id: Option<StreamId>,
    max_bytes: usize,
) -> Result<Decoded, DropReason> {
    if payload.len() > max_bytes {
        return Err(DropReason::TooLarge);
    }
    match format {
        Format::Raw => {
            let frame = encode_event(None, channel, payload)?;
            Ok(Decoded {
                frame,
                id: None,
                event_id: None,
                exclude: None,
                published_micros: None,
                correlation_id: None,
            })
        }
        Format::Envelope => {
            decode_envelope(channel, payload, log_id, log_id.map(|id| id.to_string()).as_deref())
        }
    }
}

/// As [`decode`] for an envelope read from the log whose `id:` states `id_line` rather than
/// its entry's id `log_id`: with several log partitions, the position across them.
pub fn decode_logged(
    channel: &[u8],
    payload: &[u8],
    log_id: StreamId,
    id_line: &str,
    max_bytes: usize,
) -> Result<Decoded, DropReason> {
    if payload.len() > max_bytes {
        return Err(DropReason::TooLarge);
    }
    decode_envelope(channel, payload, Some(log_id), Some(id_line))
}

fn decode_envelope(
    channel: &[u8],
    payload: &[u8],
    id: Option<StreamId>,
    id_line: Option<&str>,
) -> Result<Decoded, DropReason> {
    let envelope = IncomingEnvelope::parse(payload).map_err(|_| DropReason::BadEnvelope)?;
    let event = envelope.event.as_deref().map_or(channel, str::as_bytes);
    let frame = encode_event(id_line.map(str::as_bytes), event, envelope.data.get().as_bytes())?;
    Ok(Decoded {
        frame,
        id,
        event_id: envelope.event_id.as_deref().map(Box::from),
        exclude: envelope.exclude.as_deref().and_then(|text| Uuid::parse_str(text).ok()),
        published_micros: envelope.ts,
        correlation_id: envelope.correlation_id.as_deref().map(Box::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(decoded: &Decoded) -> &str {
        std::str::from_utf8(&decoded.frame).unwrap()
    }

    #[test]
    fn an_envelope_from_the_log_may_state_a_position_as_its_id() {
        let log_id = StreamId { ms: 5, seq: 1 };
        let decoded = decode_logged(b"ch", br#"{"data":1}"#, log_id, "a.0.5-1", 1000).unwrap();
        assert_eq!(text(&decoded), "id: a.0.5-1\nevent: ch\ndata: 1\n\n");
        assert_eq!(decoded.id, Some(log_id));
        assert_eq!(
            decode_logged(b"ch", br#"{"data":1}"#, log_id, "a", 5).map(|_| ()),
            Err(DropReason::TooLarge)
        );
    }

    #[test]
    fn envelopes_become_events_with_their_log_id_name_and_raw_data() {
        let payload = br#"{"event_id":"e","data":{"t":25},"ts":7}"#;
        let log_id = Some(StreamId { ms: 5, seq: 1 });
        let decoded = decode(Format::Envelope, b"weatherforecast.created", payload, log_id, 1000).unwrap();
        assert_eq!(text(&decoded), "id: 5-1\nevent: weatherforecast.created\ndata: {\"t\":25}\n\n");
        assert_eq!(decoded.id, log_id);
        assert_eq!(decoded.event_id.as_deref(), Some("e"));
        assert_eq!(decoded.published_micros, Some(7));
        assert_eq!(decoded.correlation_id, None);
        let traced = br#"{"data":1,"correlation_id":"req-42"}"#;
        let decoded = decode(Format::Envelope, b"ch", traced, None, 1000).unwrap();
        assert_eq!(decoded.correlation_id.as_deref(), Some("req-42"));

        let named =
            br#"{"event":"custom","data":"multi\nline","exclude":"5f7d5ee5-cc0b-41aa-89f2-ac62592fcba3"}"#;
        let decoded = decode(Format::Envelope, b"ch", named, Some(StreamId { ms: 9, seq: 0 }), 1000).unwrap();
        assert_eq!(text(&decoded), "id: 9-0\nevent: custom\ndata: \"multi\\nline\"\n\n");
        assert!(decoded.exclude.is_some());
    }

    #[test]
    fn an_id_inside_a_published_envelope_is_ignored() {
        let forged = br#"{"id":"99999999999999-0","data":{}}"#;
        let decoded = decode(Format::Envelope, b"weatherforecast.x", forged, None, 1000).unwrap();
        assert_eq!(decoded.id, None);
        assert_eq!(text(&decoded), "event: weatherforecast.x\ndata: {}\n\n");
        let decoded = decode(Format::Envelope, b"ch", br#"{"id":"not an id","data":1}"#, None, 1000).unwrap();
        assert_eq!(decoded.id, None);
    }

    #[test]
    fn malformed_or_hostile_envelopes_are_refused_with_a_reason() {
        let decode = |payload: &[u8]| decode(Format::Envelope, b"ch", payload, None, 100).map(|_| ());
        assert_eq!(decode(b"not json"), Err(DropReason::BadEnvelope));
        assert_eq!(decode(br#"{"id":"1-0"}"#), Err(DropReason::BadEnvelope));
        assert_eq!(decode(br#"{"data":1,"event":7}"#), Err(DropReason::BadEnvelope));
        assert_eq!(decode(br#"{"event":"a\nb","data":1}"#), Err(DropReason::LineBreakInField));
        assert_eq!(decode(&[b'x'; 101]), Err(DropReason::TooLarge));
    }
}

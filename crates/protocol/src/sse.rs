//! Server-Sent Events wire encoding: every frame the relay writes is built here, once.
//!
//! Frames are encoded a single time per Redis message and shared (as [`Bytes`]) by every
//! receiver. Anything that would let a publisher inject a field or a second event (CR or LF in
//! an event name or id) is refused here, before a frame exists.

use bytes::{BufMut, Bytes, BytesMut};

/// The keepalive comment sent when a stream has been quiet for `keepalive_secs`.
pub const PING: &[u8] = b": ping\n\n";

/// Why a message could not become a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("event name contains CR or LF")]
    EventNameLineBreak,
    #[error("event name is not valid UTF-8")]
    EventNameNotUtf8,
    #[error("event id contains CR or LF")]
    IdLineBreak,
    #[error("payload is not valid UTF-8")]
    PayloadNotUtf8,
}

fn has_line_break(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b == b'\r' || b == b'\n')
}

/// Encodes one event: optional `id:`, `event:`, one `data:` line per payload line, blank line.
///
/// The payload is split on CR, LF and CRLF, as an EventSource parser reads them, so the
/// browser sees the same lines (joined with LF) that the publisher sent.
pub fn encode_event(id: Option<&[u8]>, event: &[u8], payload: &[u8]) -> Result<Bytes, EncodeError> {
    if has_line_break(event) {
        return Err(EncodeError::EventNameLineBreak);
    }
    if std::str::from_utf8(event).is_err() {
        return Err(EncodeError::EventNameNotUtf8);
    }
    if let Some(id) = id
        && (has_line_break(id) || std::str::from_utf8(id).is_err())
    {
        return Err(EncodeError::IdLineBreak);
    }
    if std::str::from_utf8(payload).is_err() {
        return Err(EncodeError::PayloadNotUtf8);
    }

    let line_count = payload.iter().filter(|&&b| b == b'\n' || b == b'\r').count() + 1;
    let mut frame = BytesMut::with_capacity(
        id.map_or(0, |id| id.len() + 5) + event.len() + 8 + payload.len() + line_count * 7 + 1,
    );
    if let Some(id) = id {
        frame.put_slice(b"id: ");
        frame.put_slice(id);
        frame.put_u8(b'\n');
    }
    frame.put_slice(b"event: ");
    frame.put_slice(event);
    frame.put_u8(b'\n');

    let mut rest = payload;
    loop {
        let end = rest.iter().position(|&b| b == b'\r' || b == b'\n');
        let line = &rest[..end.unwrap_or(rest.len())];
        if line.is_empty() {
            frame.put_slice(b"data:\n");
        } else {
            frame.put_slice(b"data: ");
            frame.put_slice(line);
            frame.put_u8(b'\n');
        }
        match end {
            None => break,
            Some(i) => {
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
        }
    }
    frame.put_u8(b'\n');
    Ok(frame.freeze())
}

/// The first bytes of every stream: the reconnection delay, then `relay.connected` whose data
/// carries the connection id (a client hands it to an API so that its own change is not
/// echoed back to it).
pub fn preamble(retry_ms: u64, connection_id: &str) -> Bytes {
    let data = serde_json::json!({ "connection_id": connection_id }).to_string();
    let mut frame = BytesMut::with_capacity(64 + data.len());
    frame.put_slice(format!("retry: {retry_ms}\n").as_bytes());
    frame.put_slice(b"event: relay.connected\ndata: ");
    frame.put_slice(data.as_bytes());
    frame.put_slice(b"\n\n");
    frame.freeze()
}

/// `relay.expired`: the stream's token expired; the client should reconnect with a fresh one.
pub fn expired_frame() -> Bytes {
    Bytes::from_static(b"event: relay.expired\ndata: {\"reason\":\"token expired\"}\n\n")
}

/// `frame` (which starts with its `id:` line, as [`encode_event`] writes it) with `id` instead.
pub fn with_id(frame: &[u8], id: &str) -> Bytes {
    let rest = match frame.strip_prefix(b"id: ") {
        Some(rest) => &rest[rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |end| end + 1)..],
        None => frame,
    };
    let mut out = BytesMut::with_capacity(id.len() + 5 + rest.len());
    out.put_slice(b"id: ");
    out.put_slice(id.as_bytes());
    out.put_u8(b'\n');
    out.put_slice(rest);
    out.freeze()
}

/// `relay.reset`: the client missed events that can no longer be replayed and should refetch
/// its state.
pub fn reset_frame(reason: &str) -> Bytes {
    let data = serde_json::json!({ "reason": reason }).to_string();
    Bytes::from(format!("event: relay.reset\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(frame: Bytes) -> String {
        String::from_utf8(frame.to_vec()).unwrap()
    }

    #[test]
    fn single_line_payload_becomes_one_data_line() {
        let frame = encode_event(None, b"weatherforecast.created", b"{\"a\":1}").unwrap();
        assert_eq!(text(frame), "event: weatherforecast.created\ndata: {\"a\":1}\n\n");
    }

    #[test]
    fn cr_lf_and_crlf_all_split_lines() {
        let frame = encode_event(None, b"ch", b"a\nb\r\nc\rd").unwrap();
        assert_eq!(text(frame), "event: ch\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
    }

    #[test]
    fn empty_lines_and_trailing_newline_are_kept() {
        let frame = encode_event(None, b"ch", b"a\n\nb\n").unwrap();
        assert_eq!(text(frame), "event: ch\ndata: a\ndata:\ndata: b\ndata:\n\n");
        let frame = encode_event(None, b"ch", b"").unwrap();
        assert_eq!(text(frame), "event: ch\ndata:\n\n");
    }

    #[test]
    fn a_frames_id_can_be_replaced() {
        let frame = encode_event(Some(b"1-0"), b"ch", b"x").unwrap();
        assert_eq!(text(with_id(&frame, "a.1.2")), "id: a.1.2\nevent: ch\ndata: x\n\n");
        let frame = encode_event(None, b"ch", b"x").unwrap();
        assert_eq!(text(with_id(&frame, "1-0")), "id: 1-0\nevent: ch\ndata: x\n\n");
    }

    #[test]
    fn id_is_written_first() {
        let frame = encode_event(Some(b"1-0"), b"ch", b"x").unwrap();
        assert_eq!(text(frame), "id: 1-0\nevent: ch\ndata: x\n\n");
    }

    #[test]
    fn line_breaks_in_names_or_ids_are_refused() {
        assert_eq!(encode_event(None, b"a\nevent: b", b"x"), Err(EncodeError::EventNameLineBreak));
        assert_eq!(encode_event(None, b"a\rb", b"x"), Err(EncodeError::EventNameLineBreak));
        assert_eq!(encode_event(Some(b"1\n2"), b"a", b"x"), Err(EncodeError::IdLineBreak));
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert_eq!(encode_event(None, b"a", b"\xff"), Err(EncodeError::PayloadNotUtf8));
        assert_eq!(encode_event(None, b"\xff", b"x"), Err(EncodeError::EventNameNotUtf8));
    }

    #[test]
    fn preamble_sets_retry_and_announces_the_connection() {
        let text = text(preamble(3000, "abc"));
        assert_eq!(text, "retry: 3000\nevent: relay.connected\ndata: {\"connection_id\":\"abc\"}\n\n");
    }
}

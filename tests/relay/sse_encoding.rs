//! Whatever a publisher sends, a conforming SSE parser on the client reconstructs exactly one
//! event with the original data (CR and CRLF read as LF), and nothing else. The parser is the
//! test harness's own, written from the specification, not the relay's encoder run backwards.

use proptest::prelude::*;
use protocol::log_id::StreamId;
use protocol::message::Format;
use protocol::message::decode;
use protocol::sse::encode_event;

use testkit::sse_client::{SseEvent, SseParser};

fn normalized(payload: &str) -> String {
    payload.replace("\r\n", "\n").replace('\r', "\n")
}

/// Blocks that would make an EventSource dispatch or change state.
fn meaningful(events: Vec<SseEvent>) -> Vec<SseEvent> {
    events
        .into_iter()
        .filter(|e| e.data.is_some() || e.event.is_some() || e.id.is_some() || e.retry.is_some())
        .collect()
}

/// Text rich in what could break framing: line breaks of every kind, colons, field names.
fn hostile_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => any::<String>(),
        2 => prop::sample::select(vec![
            "\n", "\r", "\r\n", "\n\n", ":", ": ", "data:", "event:", "id:", "retry:", " ", "\u{0}", "é", "🌦",
        ])
        .prop_map(str::to_owned),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_payload_arrives_as_exactly_one_event_with_its_data(
        payload in hostile_text(),
        event in "[^\r\n]{1,30}",
        id in proptest::option::of("[0-9]{1,13}-[0-9]{1,4}"),
        split in any::<prop::sample::Index>(),
    ) {
        let frame = encode_event(id.as_deref().map(str::as_bytes), event.as_bytes(), payload.as_bytes()).unwrap();
        // Delivered in two chunks, cut anywhere, as a network may.
        let cut = split.index(frame.len() + 1);
        let mut parser = SseParser::default();
        let mut events = parser.feed(&frame[..cut]);
        events.extend(parser.feed(&frame[cut..]));
        let events = meaningful(events);
        prop_assert_eq!(events.len(), 1, "{:?}", events);
        let expected = normalized(&payload);
        prop_assert_eq!(events[0].data.as_deref(), Some(expected.as_str()));
        prop_assert_eq!(events[0].event.as_deref(), Some(event.as_str()));
        prop_assert_eq!(events[0].id.clone(), id);
        prop_assert!(parser.pending().is_empty(), "the frame ends the block");
    }

    #[test]
    fn names_and_ids_with_line_breaks_are_never_encoded(
        before in "[a-z.]{0,10}", after in "[a-z.]{0,10}", brk in prop::sample::select(vec!["\n", "\r", "\r\n"]),
    ) {
        let name = format!("{before}{brk}{after}");
        prop_assert!(encode_event(None, name.as_bytes(), b"x").is_err());
        prop_assert!(encode_event(Some(name.as_bytes()), b"ch", b"x").is_err());
    }

    #[test]
    fn envelopes_of_any_bytes_decode_or_are_refused_and_what_decodes_round_trips(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        data in hostile_text(),
    ) {
        // Arbitrary bytes: a result either way, never a panic.
        let _ = decode(Format::Envelope, b"weatherforecast.created", &bytes, None, 65536);
        // A well-formed envelope whose data is a JSON string with hostile text.
        let envelope = serde_json::json!({ "event_id": "e", "data": data, "ts": 1 }).to_string();
        let log_id = Some(StreamId { ms: 17, seq: 3 });
        let decoded = decode(Format::Envelope, b"weatherforecast.created", envelope.as_bytes(), log_id, 1 << 20).unwrap();
        let events = meaningful(SseParser::default().feed(&decoded.frame));
        prop_assert_eq!(events.len(), 1);
        let received: String = serde_json::from_str(events[0].data.as_deref().unwrap()).unwrap();
        prop_assert_eq!(received, data, "the JSON data arrives intact");
        prop_assert_eq!(events[0].id.as_deref(), Some("17-3"));
    }
}

//! Whatever bytes a publisher sends as a channel name and payload, the encoder either refuses
//! them or writes exactly one event that an independent parser reads back with the same data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::sse::encode_event;

#[path = "../../crates/testkit/src/sse_parser.rs"]
#[allow(dead_code)]
mod sse_parser;

fuzz_target!(|input: &[u8]| {
    let Some((&name_len, rest)) = input.split_first() else { return };
    let (name, payload) = rest.split_at(usize::from(name_len).min(rest.len()));
    let Ok(frame) = encode_event(None, name, payload) else {
        // Refused: only for a name with a line break or bytes that are not UTF-8.
        let bad_name = name.iter().any(|&b| b == b'\r' || b == b'\n') || std::str::from_utf8(name).is_err();
        assert!(bad_name || std::str::from_utf8(payload).is_err(), "refused a valid message");
        return;
    };
    let mut parser = sse_parser::SseParser::default();
    let events: Vec<_> = parser
        .feed(&frame)
        .into_iter()
        .filter(|e| e.data.is_some() || e.event.is_some() || e.id.is_some() || e.retry.is_some())
        .collect();
    assert_eq!(events.len(), 1, "exactly one event");
    let expected = std::str::from_utf8(payload).unwrap().replace("\r\n", "\n").replace('\r', "\n");
    assert_eq!(events[0].data.as_deref(), Some(expected.as_str()));
    assert_eq!(events[0].event.as_deref().map(str::as_bytes), Some(name));
    assert!(parser.pending().is_empty());
});

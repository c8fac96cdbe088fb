//! Any bytes on an envelope channel are either dropped with a reason or become exactly one
//! event whose data is valid JSON; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::message::{Format, decode};

#[path = "../../crates/testkit/src/sse_parser.rs"]
#[allow(dead_code)]
mod sse_parser;

fuzz_target!(|input: &[u8]| {
    let Ok(decoded) = decode(Format::Envelope, b"weatherforecast.created", input, None, 1 << 16) else { return };
    let events: Vec<_> = sse_parser::SseParser::default()
        .feed(&decoded.frame)
        .into_iter()
        .filter(|e| e.data.is_some() || e.event.is_some() || e.id.is_some())
        .collect();
    assert_eq!(events.len(), 1, "exactly one event");
    let data = events[0].data.as_deref().unwrap_or_default();
    assert!(serde_json::from_str::<serde_json::Value>(data).is_ok(), "data stays JSON: {data:?}");
});

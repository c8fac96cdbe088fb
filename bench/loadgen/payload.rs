//! The benchmark event: `{"seq":N,"ts":<publish time, unix µs>,"pad":"…"}`, padded to a size.

pub struct Payload {
    pub seq: u64,
    pub ts: i64,
}

pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl Payload {
    /// The JSON text of event `seq`, `size` bytes long (at least its fields).
    pub fn encode(seq: u64, size: usize) -> String {
        let head = format!("{{\"seq\":{seq},\"ts\":{},\"pad\":\"", now_micros());
        let pad = size.saturating_sub(head.len() + 2);
        format!("{head}{}\"}}", "x".repeat(pad))
    }

    /// Reads `seq` and `ts` from a data line; `None` for anything else (pings, preambles).
    pub fn parse(data: &[u8]) -> Option<Self> {
        let seq = number_after(data, b"\"seq\":")?;
        let ts = number_after(data, b"\"ts\":")?;
        Some(Self { seq, ts: ts as i64 })
    }
}

fn number_after(data: &[u8], key: &[u8]) -> Option<u64> {
    let at = data.windows(key.len()).position(|window| window == key)? + key.len();
    let digits = data[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&data[at..at + digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_event_has_its_size_and_reads_back() {
        let text = Payload::encode(42, 100);
        assert_eq!(text.len(), 100);
        let payload = Payload::parse(text.as_bytes()).unwrap();
        assert_eq!(payload.seq, 42);
        assert!(payload.ts > 0);
        serde_json::from_str::<serde_json::Value>(&text).unwrap();
    }
}

//! An EventSource-style parser, written from the specification and independent of the relay's
//! encoder. Dependency-free, so that the fuzz targets use it too.

/// One dispatched block of the stream, parsed as the EventSource specification reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    /// `data` lines joined with LF; `None` when the block had no data line.
    pub data: Option<String>,
    pub retry: Option<u64>,
    pub comments: Vec<String>,
}

/// An EventSource-style parser, written from the specification and independent of the relay's
/// encoder: feed it bytes, take the dispatched blocks.
#[derive(Default)]
pub struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        // A CR left at the end may be a whole line break once the next byte is known.
        let pending_cr = self.buffer.last() == Some(&b'\r');
        self.buffer.extend_from_slice(bytes);
        // Blocks end at a line break: bytes without one complete nothing.
        if !pending_cr && !bytes.iter().any(|&b| b == b'\n' || b == b'\r') {
            return Vec::new();
        }
        self.events()
    }

    /// Bytes received but not yet part of a complete block.
    pub fn pending(&self) -> &[u8] {
        &self.buffer
    }

    /// Splits complete blocks off the buffer. Lines end with CR, LF or CRLF.
    fn events(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        loop {
            let text = &self.buffer;
            let mut lines = Vec::new();
            let mut start = 0;
            let mut i = 0;
            let mut block_end = None;
            while i < text.len() {
                let b = text[i];
                if b == b'\n' || b == b'\r' {
                    let mut next = i + 1;
                    if b == b'\r' {
                        if next >= text.len() {
                            break; // a CR at the end may be half of a CRLF: wait for more
                        }
                        if text[next] == b'\n' {
                            next += 1;
                        }
                    }
                    let line = String::from_utf8_lossy(&text[start..i]).into_owned();
                    start = next;
                    i = next;
                    if line.is_empty() {
                        block_end = Some(start);
                        break;
                    }
                    lines.push(line);
                    continue;
                }
                i += 1;
            }
            let Some(end) = block_end else { return out };
            self.buffer.drain(..end);
            let mut event = SseEvent::default();
            let mut data_lines: Vec<String> = Vec::new();
            for line in lines {
                if let Some(comment) = line.strip_prefix(':') {
                    event.comments.push(comment.trim_start().to_owned());
                    continue;
                }
                let (field, value) = match line.split_once(':') {
                    Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                    None => (line.as_str(), ""),
                };
                match field {
                    "id" => event.id = Some(value.to_owned()),
                    "event" => event.event = Some(value.to_owned()),
                    "retry" => event.retry = value.parse().ok(),
                    "data" => data_lines.push(value.to_owned()),
                    _ => {}
                }
            }
            event.data = (!data_lines.is_empty()).then(|| data_lines.join("\n"));
            out.push(event);
        }
    }
}

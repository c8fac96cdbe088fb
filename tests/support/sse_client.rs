//! An EventSource-like reader over a real HTTP response, and a client that never reads.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

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

pub struct SseClient {
    pub response: reqwest::Response,
    buffer: Vec<u8>,
    events: VecDeque<SseEvent>,
}

impl SseClient {
    /// Opens `url` and checks that it is an event stream.
    pub async fn connect(url: &str) -> Self {
        Self::connect_with_last_event_id(url, None).await
    }

    /// Opens `url` sending `Last-Event-ID` (as an EventSource does when it reconnects).
    pub async fn connect_with_last_event_id(url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        Self::send(request).await
    }

    /// Sends a prepared request (extra headers, cookies…) and checks that it is a stream.
    pub async fn send(request: reqwest::RequestBuilder) -> Self {
        let response = request.send().await.expect("GET /events");
        assert_eq!(response.status(), 200, "stream refused: {:?}", response.text().await);
        Self { response, buffer: Vec::new(), events: VecDeque::new() }
    }

    /// The next block, comments included; panics after `timeout`.
    pub async fn next_block(&mut self, timeout: Duration) -> SseEvent {
        match self.try_next_block(timeout).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("stream ended while waiting for an event"),
            Err(()) => panic!("no event within {timeout:?}"),
        }
    }

    /// The next block; `Ok(None)` when the stream ended, `Err` on timeout.
    pub async fn try_next_block(&mut self, timeout: Duration) -> Result<Option<SseEvent>, ()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await.map_err(|_| ())?;
            match chunk {
                Ok(Some(bytes)) => {
                    self.buffer.extend_from_slice(&bytes);
                    // Blocks end at a line break: a chunk without one completes nothing.
                    if bytes.iter().any(|&b| b == b'\n' || b == b'\r') {
                        self.parse();
                    }
                }
                Ok(None) | Err(_) => return Ok(None),
            }
        }
    }

    /// The next event with data (skipping keepalive comments).
    pub async fn next_event(&mut self, timeout: Duration) -> SseEvent {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next_block(left).await;
            if event.data.is_some() {
                return event;
            }
        }
    }

    /// Reads until the server ends the stream; panics if it does not within `timeout`.
    /// Returns the events received meanwhile.
    pub async fn expect_end(&mut self, timeout: Duration) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_next_block(left).await {
                Ok(Some(event)) => seen.push(event),
                Ok(None) => return seen,
                Err(()) => panic!("stream did not end within {timeout:?}"),
            }
        }
    }

    fn parse(&mut self) {
        let mut parser = SseParser { buffer: std::mem::take(&mut self.buffer) };
        self.events.extend(parser.events());
        self.buffer = parser.buffer;
    }
}

/// An EventSource-style parser, written from the specification and independent of the relay's
/// encoder: feed it bytes, take the dispatched blocks.
#[derive(Default)]
pub struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
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

/// Opens a stream with a tiny receive buffer and never reads from it.
pub async fn connect_without_reading(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket.connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send request");
    stream
}

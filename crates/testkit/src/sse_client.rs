//! An EventSource-like reader over a real HTTP response, and a client that never reads.

use std::collections::VecDeque;
use std::time::Duration;

pub use crate::sse_parser::{SseEvent, SseParser};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

pub struct SseClient {
    pub response: reqwest::Response,
    parser: SseParser,
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
        Self { response, parser: SseParser::default(), events: VecDeque::new() }
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
                Ok(Some(bytes)) => self.events.extend(self.parser.feed(&bytes)),
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

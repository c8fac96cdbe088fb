//! Event streams served on the socket itself, without a hyper connection per stream.
//!
//! A stream lives for hours and mostly waits; under hyper each one keeps its connection's
//! read and write buffers (≈ 12 KiB) and goes through the dispatcher for every event. For a
//! `GET` of the stream path over HTTP/1.1 the accept loop reads the request head itself; the
//! router answers it as for any request (same handlers, same CORS and limits), and when the
//! answer is an event stream its head and body are written here: each write takes every frame
//! that is ready (coalescing), as one chunk, with one `send`. Any other answer is written
//! whole, then the connection closes. Every other request goes to hyper, the bytes read so far
//! replayed first.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode, header};
use http_body::Body as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::http::ApiError;
use service::server::{ConnectionContext, Handed, Handoff, MAX_HEAD_BYTES};

const MAX_HEADERS: usize = 64;
/// Non-stream answers of the stream path are refusals with a short problem body; one larger
/// than this (none is) would be sent empty rather than held in memory.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// How long a refused client may go on sending before its connection is closed: long enough
/// for it to read the refusal (closing with unread bytes would reset the connection first).
const LINGER_AFTER_REFUSAL: Duration = Duration::from_millis(500);

/// How reading a request head ended.
pub enum HeadRead {
    /// The whole head (and whatever followed it in the same reads).
    Complete(Bytes),
    /// Not a head this server reads: the answer's status and why.
    Refused(StatusCode, &'static str),
}

/// Reads until the end of the request head; refuses at once what cannot become one (not
/// HTTP, bare LF line ends) and a head larger than [`MAX_HEAD_BYTES`].
pub async fn read_head(stream: &mut TcpStream) -> io::Result<HeadRead> {
    use tokio::io::AsyncReadExt;
    let mut head = BytesMut::with_capacity(1024);
    let mut scanner = HeadScanner::default();
    loop {
        if stream.read_buf(&mut head).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match scanner.scan(&head) {
            Some(Ok(())) => return Ok(HeadRead::Complete(head.freeze())),
            Some(Err(why)) => return Ok(HeadRead::Refused(StatusCode::BAD_REQUEST, why)),
            None if head.len() >= MAX_HEAD_BYTES => {
                return Ok(HeadRead::Refused(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "the request head is larger than 64 KiB",
                ));
            }
            None => {}
        }
    }
}

/// Finds the end of a request head as it arrives, looking at each byte once however finely
/// the head is split.
#[derive(Default)]
struct HeadScanner {
    scanned: usize,
}

impl HeadScanner {
    /// Scans the bytes not seen yet: `Ok` at the end of the head, `Err` when these bytes cannot
    /// be an HTTP/1.1 request head, `None` while it may go on.
    fn scan(&mut self, head: &[u8]) -> Option<Result<(), &'static str>> {
        if self.scanned <= LONGEST_METHOD && !starts_like_a_request(head) {
            return Some(Err("not an HTTP/1.1 request"));
        }
        let from = self.scanned;
        self.scanned = head.len();
        for at in from..head.len() {
            if head[at] != b'\n' {
                continue;
            }
            if at == 0 || head[at - 1] != b'\r' {
                return Some(Err("request lines must end with CRLF"));
            }
            if at >= 3 && &head[at - 3..at - 1] == b"\r\n" {
                return Some(Ok(()));
            }
        }
        None
    }
}

/// Longer than any method a server of ours answers.
const LONGEST_METHOD: usize = 20;

/// Whether the first bytes read can begin a request line: a method (a token) and a space,
/// after at most one empty line (RFC 9112, 2.2).
fn starts_like_a_request(head: &[u8]) -> bool {
    if head == b"\r" {
        return true;
    }
    let head = head.strip_prefix(b"\r\n").unwrap_or(head);
    let is_token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    match head.iter().position(|b| !is_token(b)) {
        Some(at) => at > 0 && head[at] == b' ',
        None => head.len() <= LONGEST_METHOD,
    }
}

/// The request, when `head` is a complete `GET <path>` over HTTP/1.1.
pub fn stream_request(head: &[u8], path: &str) -> Option<Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(parsed.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let target = parsed.path?;
    let on_path = target.split_once('?').map_or(target, |(p, _)| p) == path;
    if parsed.method != Some("GET") || parsed.version != Some(1) || !on_path {
        return None;
    }
    let mut request =
        Request::builder().method(http::Method::GET).uri(target).version(http::Version::HTTP_11);
    for h in parsed.headers.iter() {
        request = request.header(h.name, h.value);
    }
    request.body(Body::empty()).ok()
}

/// The accept loop's hook: `GET`s of `path` are answered here, every other request goes on to
/// hyper.
#[derive(Clone)]
pub struct DirectStreams {
    pub path: &'static str,
    pub router: Router,
    pub header_read_timeout: Duration,
}

impl Handoff for DirectStreams {
    async fn take(&self, stream: TcpStream, context: ConnectionContext) -> Handed {
        let cut = context.cut.clone();
        let opened = open(stream, self.path, &self.router, context, self.header_read_timeout);
        match Box::pin(opened).await {
            Opened::Stream(events) => {
                events.run(cut).await;
                Handed::Served
            }
            Opened::Done => Handed::Served,
            Opened::Other(stream, prefix) => Handed::Http(stream, prefix),
        }
    }
}

/// How [`open`] left the connection.
pub enum Opened {
    /// An event stream, its head not written yet: [`EventStream::run`] writes it.
    Stream(EventStream),
    /// Answered (a refusal), or the connection ended.
    Done,
    /// Not a stream request: hyper serves the connection, after the bytes read so far.
    Other(TcpStream, Bytes),
}

/// Reads the request head (within `header_read_timeout`, as hyper would insist: slowloris) and,
/// for a stream request, answers it with `router`. Awaited boxed: what reading and routing need
/// is let go of before a stream starts, so that a stream's task holds only what it streams with.
pub async fn open(
    mut socket: TcpStream,
    path: &str,
    router: &Router,
    context: ConnectionContext,
    header_read_timeout: Duration,
) -> Opened {
    let head = match tokio::time::timeout(header_read_timeout, read_head(&mut socket)).await {
        Ok(Ok(HeadRead::Complete(head))) => head,
        Ok(Ok(HeadRead::Refused(status, why))) => {
            let (parts, body) = ApiError::new(status, why).into_response().into_parts();
            answer_whole(socket, response_head(&parts), body, &context.cut).await;
            return Opened::Done;
        }
        Ok(Err(_)) | Err(_) => return Opened::Done,
    };
    let Some(mut request) = stream_request(&head, path) else {
        return Opened::Other(socket, head);
    };
    drop(head);
    let cut = context.cut.clone();
    request.extensions_mut().insert(context);
    let Ok(response) = router.clone().oneshot(request).await;
    let (parts, body) = response.into_parts();
    let streaming = parts.status == StatusCode::OK
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let mut head = response_head(&parts);
    if !streaming {
        answer_whole(socket, head, body, &cut).await;
        return Opened::Done;
    }
    head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    Opened::Stream(EventStream { socket, unsent: head, body, carry: None })
}

fn response_head(parts: &http::response::Parts) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(format!("HTTP/1.1 {}\r\n", parts.status).as_bytes());
    for (name, value) in &parts.headers {
        // Framing is this writer's: chunked for a stream, a length of its own for the rest.
        if matches!(name, &header::CONTENT_LENGTH | &header::TRANSFER_ENCODING | &header::CONNECTION) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"date: ");
    head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    head.extend_from_slice(b"\r\n");
    head
}

async fn answer_whole(mut socket: TcpStream, mut head: Vec<u8>, body: Body, cut: &CancellationToken) {
    let answer = axum::body::to_bytes(body, MAX_ANSWER_BYTES).await.unwrap_or_default();
    head.extend_from_slice(
        format!("content-length: {}\r\nconnection: close\r\n\r\n", answer.len()).as_bytes(),
    );
    let mut slices = [IoSlice::new(&head), IoSlice::new(&answer)];
    let _ = write_all(&mut socket, &mut slices, cut).await;
    let _ = socket.shutdown().await;
    // Whatever the client still sends is read and dropped for a moment, so that it gets the
    // answer rather than a reset.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER_AFTER_REFUSAL, async {
        use tokio::io::AsyncReadExt;
        let mut left = MAX_HEAD_BYTES;
        while left > 0 {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// An event stream being written to its socket in chunked encoding. Frames are gathered and
/// written from a buffer of the thread's, so a waiting stream holds no buffer: only bytes the
/// socket had no room for are kept (`unsent`), until they are written.
pub struct EventStream {
    socket: TcpStream,
    unsent: Vec<u8>,
    body: Body,
    /// A frame taken from the body that did not fit in the chunk being gathered.
    carry: Option<Bytes>,
}

/// What [`EventStream::pump`] stopped for.
enum Pumped {
    /// The socket is full: `unsent` holds the rest.
    Full,
    /// The body ended; the last chunk is written or in `unsent`.
    Ended,
    /// The client closed its side, or the connection failed.
    Gone,
}

impl EventStream {
    /// Writes the stream until it ends, the client goes away, or `cut` fires while the socket
    /// is full (a slow client being disconnected, or the end of the grace period).
    pub async fn run(mut self, cut: CancellationToken) {
        self.write_until_done(&cut).await;
        if cut.is_cancelled() {
            // Cut: close abortively, so that the kernel drops what the client did not read at
            // once rather than keeping it (up to the socket's send buffer, ~1 MB) for as long as
            // the client keeps its end open.
            let _ = self.socket.set_zero_linger();
        }
    }

    async fn write_until_done(&mut self, cut: &CancellationToken) {
        loop {
            if !self.unsent.is_empty() {
                // Boxed: rare (the head, or a full socket), and the task stays small.
                if Box::pin(write_all(&mut self.socket, &mut [IoSlice::new(&self.unsent)], cut))
                    .await
                    .is_err()
                {
                    return;
                }
                self.unsent = Vec::new();
            }
            match std::future::poll_fn(|cx| self.pump(cx)).await {
                Pumped::Full => {}
                Pumped::Ended => {
                    let _ =
                        Box::pin(write_all(&mut self.socket, &mut [IoSlice::new(&self.unsent)], cut)).await;
                    return;
                }
                Pumped::Gone => return,
            }
        }
    }
}

/// Bytes of frames gathered into one chunk (one `send`) at most.
const CHUNK_BYTES: usize = 16 * 1024;
/// Room before a chunk's data for its size line: hex digits and CRLF.
const SIZE_LINE_ROOM: usize = 8;
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

thread_local! {
    // The chunk being gathered, reused by every stream of the thread: filled and written within
    // one poll, so it is never held while a stream waits.
    static CHUNK: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(SIZE_LINE_ROOM + CHUNK_BYTES + 2 + LAST_CHUNK.len()));
}

impl EventStream {
    /// Takes every frame the body has ready into one chunk and writes it, until the body has
    /// nothing more; then waits for frames, or for the client to close its side.
    fn pump(&mut self, cx: &mut Context<'_>) -> Poll<Pumped> {
        CHUNK.with_borrow_mut(|chunk| self.pump_through(cx, chunk))
    }

    fn pump_through(&mut self, cx: &mut Context<'_>, chunk: &mut Vec<u8>) -> Poll<Pumped> {
        loop {
            chunk.clear();
            chunk.extend_from_slice(&[0; SIZE_LINE_ROOM]);
            let mut ended = false;
            loop {
                let frame = match self.next_data(cx) {
                    Poll::Ready(Some(frame)) => frame,
                    Poll::Ready(None) => {
                        ended = true;
                        break;
                    }
                    Poll::Pending => break,
                };
                let len = chunk.len() - SIZE_LINE_ROOM;
                if frame.len() > CHUNK_BYTES - len {
                    if len == 0 {
                        // Larger than a whole chunk: sent on its own, from the heap.
                        self.unsent.extend_from_slice(format!("{:x}\r\n", frame.len()).as_bytes());
                        self.unsent.extend_from_slice(&frame);
                        self.unsent.extend_from_slice(b"\r\n");
                        return Poll::Ready(Pumped::Full);
                    }
                    self.carry = Some(frame);
                    break;
                }
                chunk.extend_from_slice(&frame);
            }
            let len = chunk.len() - SIZE_LINE_ROOM;
            let start = if len == 0 {
                SIZE_LINE_ROOM
            } else {
                chunk.extend_from_slice(b"\r\n");
                size_line(&mut chunk[..SIZE_LINE_ROOM], len)
            };
            if ended {
                chunk.extend_from_slice(LAST_CHUNK);
            }
            if start < chunk.len() {
                let written = match self.socket.try_write(&chunk[start..]) {
                    Ok(written) => written,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(_) => return Poll::Ready(Pumped::Gone),
                };
                if ended || start + written < chunk.len() {
                    self.unsent.extend_from_slice(&chunk[start + written..]);
                    return Poll::Ready(if ended { Pumped::Ended } else { Pumped::Full });
                }
                // Written: more frames may be ready (or the body registers for the next ones).
                continue;
            }
            // Nothing to write: the waker is registered with the body; watch the client too.
            if self.client_gone(cx).is_ready() {
                return Poll::Ready(Pumped::Gone);
            }
            return Poll::Pending;
        }
    }

    /// The next data frame: the one carried over first, then the body's; `None` once the body
    /// ended.
    fn next_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(frame) = self.carry.take() {
            return Poll::Ready(Some(frame));
        }
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(data));
                    }
                }
                // The body's error type is infallible in practice; end the stream either way.
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Ready once the client closed its side (or the connection failed). A client sends nothing
    /// after its request; bytes it does send are read and ignored.
    fn client_gone(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut sink = [0u8; 64];
        loop {
            match self.socket.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => match self.socket.try_read(&mut sink) {
                    Ok(0) => return Poll::Ready(()),
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Poll::Ready(()),
                },
            }
        }
    }
}

/// Writes `len` in hex and CRLF at the end of `room`; where the line starts.
fn size_line(room: &mut [u8], len: usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = room.len() - 2;
    room[at..].copy_from_slice(b"\r\n");
    let mut rest = len;
    loop {
        at -= 1;
        room[at] = HEX[rest & 15];
        rest >>= 4;
        if rest == 0 {
            return at;
        }
    }
}

/// Writes every slice; waits for room only when the socket is full, and gives up if `cut`
/// fires meanwhile (a slow client being disconnected, or the end of the grace period).
async fn write_all(
    socket: &mut TcpStream,
    mut slices: &mut [IoSlice<'_>],
    cut: &CancellationToken,
) -> io::Result<()> {
    while !slices.is_empty() {
        match socket.try_write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                tokio::select! {
                    ready = socket.writable() => ready?,
                    () = cut.cancelled() => return Err(io::ErrorKind::ConnectionAborted.into()),
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Decodes a chunked body: the concatenated data, and how many chunks carried it.
    fn dechunk(mut raw: &[u8]) -> (Vec<u8>, usize) {
        let mut data = Vec::new();
        let mut chunks = 0;
        loop {
            let line_end = raw.windows(2).position(|w| w == b"\r\n").expect("a size line");
            let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap(), 16).unwrap();
            raw = &raw[line_end + 2..];
            if size == 0 {
                assert_eq!(raw, b"\r\n", "nothing after the last chunk");
                return (data, chunks);
            }
            data.extend_from_slice(&raw[..size]);
            assert_eq!(&raw[size..size + 2], b"\r\n");
            raw = &raw[size + 2..];
            chunks += 1;
        }
    }

    #[tokio::test]
    async fn frames_ready_together_leave_in_one_chunk_and_oversized_ones_alone() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let big = Bytes::from(vec![b'x'; CHUNK_BYTES + 100]);
        let frames: Vec<Bytes> = (0..500)
            .map(|i| Bytes::from(format!("data: {i}\n\n")))
            .chain([big.clone(), Bytes::from_static(b"data: end\n\n")])
            .collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        let body = Body::from_stream(futures_util::stream::iter(
            frames.into_iter().map(Ok::<_, std::convert::Infallible>),
        ));
        let stream = EventStream { socket, unsent: b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), body, carry: None };
        stream.run(CancellationToken::new()).await;
        let mut raw = Vec::new();
        client.read_to_end(&mut raw).await.unwrap();
        let body = raw.strip_prefix(b"HTTP/1.1 200 OK\r\n\r\n").expect("the head first");
        let (data, chunks) = dechunk(body);
        assert_eq!(data, expected);
        // 500 small frames (≈ 5 KiB) fill one chunk, the oversized one its own, the last one a third.
        assert_eq!(chunks, 3);
    }

    #[test]
    fn a_head_ends_at_its_blank_line_and_each_byte_is_looked_at_once() {
        let head = format!("GET /events HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "p".repeat(60_000));
        let mut scanner = HeadScanner::default();
        for end in 1..head.len() {
            assert_eq!(scanner.scan(&head.as_bytes()[..end]), None, "not complete at {end}");
            assert_eq!(scanner.scanned, end, "only new bytes are scanned");
        }
        assert_eq!(scanner.scan(head.as_bytes()), Some(Ok(())));
        assert_eq!(HeadScanner::default().scan(b"\r\nGET / HTTP/1.1\r\n\r\n"), Some(Ok(())));
    }

    #[test]
    fn what_cannot_become_an_http_head_is_refused_at_once() {
        for bytes in [
            &b"GET /events HTTP/1.1\nHost: x\n\n"[..],
            b"GET /events HTTP/1.1\r\nHost: x\n",
            // A TLS ClientHello.
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b" GET / HTTP/1.1\r\n",
            b"GETTTTTTTTTTTTTTTTTTTTTTTTTTTTTTT",
        ] {
            assert!(
                matches!(HeadScanner::default().scan(bytes), Some(Err(_))),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        for partial in [&b"G"[..], b"\r", b"\r\n", b"OPTIONS", b"GET /ev"] {
            assert_eq!(HeadScanner::default().scan(partial), None, "{:?}", String::from_utf8_lossy(partial));
        }
    }

    #[test]
    fn size_lines_are_hex_at_the_end_of_their_room() {
        for (len, line) in [(1, "1\r\n"), (0x2a, "2a\r\n"), (CHUNK_BYTES, "4000\r\n")] {
            let mut room = [0u8; SIZE_LINE_ROOM];
            let start = size_line(&mut room, len);
            assert_eq!(&room[start..], line.as_bytes());
        }
    }

    #[test]
    fn only_complete_http_1_1_gets_of_the_stream_path_are_served_directly() {
        let request = stream_request(
            b"GET /events?channel=a.*&lastEventId=1-0 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 2-0\r\n\r\n",
            "/events",
        )
        .expect("a stream request");
        assert_eq!(request.uri(), "/events?channel=a.*&lastEventId=1-0");
        assert_eq!(request.headers()["last-event-id"], "2-0");
        assert!(stream_request(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n", "/events").is_some());
        for other in [
            &b"GET /events HTTP/1.1\r\nHost: x\r\n"[..],
            b"POST /events HTTP/1.1\r\nHost: x\r\n\r\n",
            b"OPTIONS /events HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /events HTTP/1.0\r\n\r\n",
            b"GET /eventsx HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\x16\x03\x01 not http\r\n\r\n",
        ] {
            assert!(stream_request(other, "/events").is_none(), "{:?}", String::from_utf8_lossy(other));
        }
    }
}

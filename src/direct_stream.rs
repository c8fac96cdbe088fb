//! Event streams served on the socket itself, without a hyper connection per stream.
//!
//! A stream lives for hours and mostly waits; under hyper each one keeps its connection's
//! read and write buffers (≈ 12 KiB) and goes through the dispatcher for every event. For a
//! `GET` of the stream path over HTTP/1.1 the accept loop reads the request head itself; the
//! router answers it as for any request (same handlers, same CORS and limits), and when the
//! answer is an event stream its head and body are written here: each write takes every frame
//! that is ready (coalescing), as one chunk, with one `writev`. Any other answer is written
//! whole, then the connection closes. Every other request goes to hyper, the bytes read so far
//! replayed first ([`Rewind`]).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode, header};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// A request head larger than this goes to hyper, which refuses it properly.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
/// Frames gathered into one write at most (one `writev`).
const MAX_FRAMES_PER_WRITE: usize = 64;
/// Non-stream answers of the stream path are refusals with a short problem body; one larger
/// than this (none is) would be sent empty rather than held in memory.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Reads until the end of the request head, or `MAX_HEAD_BYTES`, or the end of the connection.
pub async fn read_head(stream: &mut TcpStream) -> io::Result<Bytes> {
    use tokio::io::AsyncReadExt;
    let mut head = BytesMut::with_capacity(1024);
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() >= MAX_HEAD_BYTES {
            return Ok(head.freeze());
        }
        if stream.read_buf(&mut head).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
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

/// Answers `request` with `router` and writes the answer to `socket`; returns when the stream
/// ends, the client goes away, or `cut` fires.
pub async fn serve(mut socket: TcpStream, request: Request<Body>, router: Router, cut: CancellationToken) {
    let Ok(response) = router.oneshot(request).await;
    let (parts, mut body) = response.into_parts();
    let streaming = parts.status == StatusCode::OK
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(format!("HTTP/1.1 {}\r\n", parts.status).as_bytes());
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(
        format!("date: {}\r\n", chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT")).as_bytes(),
    );
    drop(parts);
    if !streaming {
        let answer = axum::body::to_bytes(body, MAX_ANSWER_BYTES).await.unwrap_or_default();
        head.extend_from_slice(
            format!("content-length: {}\r\nconnection: close\r\n\r\n", answer.len()).as_bytes(),
        );
        let mut slices = [IoSlice::new(&head), IoSlice::new(&answer)];
        let _ = write_all(&mut socket, &mut slices, &cut).await;
        let _ = socket.shutdown().await;
        return;
    }
    head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    if write_all(&mut socket, &mut [IoSlice::new(&head)], &cut).await.is_err() {
        return;
    }
    drop(head);
    let mut frames: Vec<Bytes> = Vec::new();
    loop {
        let ended = tokio::select! {
            biased;
            ended = next_frames(&mut body, &mut frames) => ended,
            () = client_gone(&socket) => return,
        };
        if !frames.is_empty() {
            let size = frames.iter().map(Bytes::len).sum::<usize>();
            let chunk_head = format!("{size:x}\r\n");
            let mut slices = Vec::with_capacity(frames.len() + 2);
            slices.push(IoSlice::new(chunk_head.as_bytes()));
            slices.extend(frames.iter().map(|frame| IoSlice::new(frame)));
            slices.push(IoSlice::new(b"\r\n"));
            if write_all(&mut socket, &mut slices, &cut).await.is_err() {
                return;
            }
            frames.clear();
        }
        if ended {
            let _ = write_all(&mut socket, &mut [IoSlice::new(b"0\r\n\r\n")], &cut).await;
            return;
        }
    }
}

/// Waits for at least one frame, then takes every frame ready now; true once the body ended.
async fn next_frames(body: &mut Body, frames: &mut Vec<Bytes>) -> bool {
    std::future::poll_fn(|cx| {
        loop {
            if frames.len() >= MAX_FRAMES_PER_WRITE {
                return Poll::Ready(false);
            }
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        frames.push(data);
                    }
                }
                // The body's error type is infallible in practice; end the stream either way.
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => return Poll::Ready(true),
                Poll::Pending if frames.is_empty() => return Poll::Pending,
                Poll::Pending => return Poll::Ready(false),
            }
        }
    })
    .await
}

/// Resolves when the client closes its side (or the connection fails). A client sends nothing
/// after its request; bytes it does send are read and ignored.
async fn client_gone(socket: &TcpStream) {
    let mut sink = [0u8; 64];
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        match socket.try_read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
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

/// A socket whose first bytes, already read, are given back before the rest.
pub struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl Rewind {
    pub fn new(inner: TcpStream, prefix: Bytes) -> Self {
        Self { prefix, inner }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let taken = self.prefix.split_to(n);
            buf.put_slice(&taken);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! The accept loop of both services: one task per TCP connection, serving HTTP/1.1 with hyper.
//! A [`Handoff`] sees each connection first and may serve it itself (the relay writes its event
//! streams to their sockets without hyper).
//!
//! We own the loop (rather than `axum::serve`) for three reasons: a slow SSE client must be cut
//! at the socket, which needs a per-connection handle ([`ConnectionContext::cut`]); shutdown
//! must stop accepting before it ends streams, and end idle keep-alive connections; and a
//! request head that trickles in (slowloris) must time out.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

/// The largest request head either service reads, on every path: larger is refused with 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Pending connections the kernel queues before `accept`. `TcpListener::bind` asks for 128,
/// which a reconnect storm overflows: dropped SYNs are retried by clients only after a second.
/// The kernel caps it at `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket with a backlog sized for reconnect storms.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Per-connection facts handed to handlers through request extensions.
#[derive(Clone)]
pub struct ConnectionContext {
    pub peer: SocketAddr,
    /// Cancelling it closes the TCP connection at once.
    pub cut: CancellationToken,
}

/// Signals the accept loop and its connections obey.
#[derive(Clone, Default)]
pub struct ServerControl {
    /// Stop accepting new connections.
    pub stop_accepting: CancellationToken,
    /// Finish in-flight responses, then close connections (no new requests on keep-alive).
    pub close_gracefully: CancellationToken,
    /// Close every connection now (end of the grace period).
    pub cut_all: CancellationToken,
}

/// What became of a connection a [`Handoff`] was given.
pub enum Handed {
    /// The hook served it to its end.
    Served,
    /// Serve it with hyper, the bytes the hook read from it first.
    Http(TcpStream, Bytes),
}

/// A hook that takes each connection before hyper does.
pub trait Handoff: Clone + Send + Sync + 'static {
    fn take(&self, stream: TcpStream, context: ConnectionContext) -> impl Future<Output = Handed> + Send;
}

/// Every connection is served by hyper.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHandoff;

impl Handoff for NoHandoff {
    async fn take(&self, stream: TcpStream, _context: ConnectionContext) -> Handed {
        Handed::Http(stream, Bytes::new())
    }
}

/// What every connection task shares: one `Arc` per task, so that a connection that stays open
/// for hours (an event stream) holds a pointer, not copies.
struct Shared<H> {
    router: Router,
    control: ServerControl,
    header_read_timeout: Duration,
    handoff: H,
}

/// Serves `router` on every accepted connection (after `handoff` had its look) until
/// `control.stop_accepting`; each connection is a task of `tracker`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    control: ServerControl,
    tracker: TaskTracker,
    header_read_timeout: Duration,
    handoff: impl Handoff,
) {
    let shared = Arc::new(Shared { router, control, header_read_timeout, handoff });
    loop {
        let accepted = tokio::select! {
            _ = shared.control.stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually out of file descriptors: wait for some to be released rather than
                // spinning, and keep serving the connections we have.
                tracing::warn!(error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Events are small and latency-sensitive: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tracker.spawn(async move {
            let context = ConnectionContext { peer, cut: shared.control.cut_all.child_token() };
            let (stream, prefix) = match shared.handoff.take(stream, context.clone()).await {
                Handed::Served => return,
                Handed::Http(stream, prefix) => (stream, prefix),
            };
            // Boxed, so that a connection the hook serves has a task not sized for hyper's.
            let Shared { router, control, header_read_timeout, .. } = &*shared;
            Box::pin(serve_with_hyper(
                stream,
                prefix,
                router.clone(),
                context,
                control.clone(),
                *header_read_timeout,
            ))
            .await;
        });
    }
    tracing::info!("stopped accepting connections");
}

async fn serve_with_hyper(
    stream: TcpStream,
    prefix: Bytes,
    router: Router,
    context: ConnectionContext,
    control: ServerControl,
    header_read_timeout: Duration,
) {
    let cut = context.cut.clone();
    let stream = Rewind::new(stream, prefix);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(context.clone());
        router.clone().call(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = cut.cancelled() => return,
        _ = control.close_gracefully.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = cut.cancelled() => {}
    }
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

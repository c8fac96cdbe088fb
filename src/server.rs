//! The accept loop of both services: one task per TCP connection, serving HTTP/1.1 with hyper,
//! except the relay's event streams, which [`direct_stream`] writes to their sockets itself.
//!
//! We own the loop (rather than `axum::serve`) for three reasons: a slow SSE client must be cut
//! at the socket, which needs a per-connection handle ([`ConnectionContext::cut`]); shutdown
//! must stop accepting before it ends streams, and end idle keep-alive connections; and a
//! request head that trickles in (slowloris) must time out.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::direct_stream;

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

pub async fn serve(
    listener: TcpListener,
    router: Router,
    control: ServerControl,
    tracker: TaskTracker,
    header_read_timeout: Duration,
    direct_stream_path: Option<&'static str>,
) {
    loop {
        let accepted = tokio::select! {
            _ = control.stop_accepting.cancelled() => break,
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
        let router = router.clone();
        let control = control.clone();
        tracker.spawn(async move {
            let cut = control.cut_all.child_token();
            let context = ConnectionContext { peer, cut: cut.clone() };
            let (stream, prefix) = match direct_stream_path {
                None => (stream, bytes::Bytes::new()),
                Some(path) => {
                    let opened =
                        direct_stream::open(stream, path, &router, context.clone(), header_read_timeout);
                    match Box::pin(opened).await {
                        direct_stream::Opened::Stream(events) => return events.run(cut).await,
                        direct_stream::Opened::Done => return,
                        direct_stream::Opened::Other(stream, prefix) => (stream, prefix),
                    }
                }
            };
            // Boxed, so that a direct stream's task is not sized for a hyper connection.
            Box::pin(serve_with_hyper(stream, prefix, router, context, control, header_read_timeout)).await;
        });
    }
    tracing::info!("stopped accepting connections");
}

async fn serve_with_hyper(
    stream: tokio::net::TcpStream,
    prefix: bytes::Bytes,
    router: Router,
    context: ConnectionContext,
    control: ServerControl,
    header_read_timeout: Duration,
) {
    let cut = context.cut.clone();
    let stream = direct_stream::Rewind::new(stream, prefix);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(context.clone());
        router.clone().call(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
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

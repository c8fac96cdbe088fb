//! sse-floor: the least an SSE fan-out server can do on this machine, as the benchmark's floor.
//! One PSUBSCRIBE connection; each message is encoded once as `data: …\n\n` (`Bytes`) and
//! written to every client's raw socket; no HTTP framework, no replay, no limits. A client that
//! falls behind the broadcast buffer silently misses messages (what the relay must never do).
//!
//! Usage: sse-floor --listen 127.0.0.1:9090 --redis redis://127.0.0.1:6379 --pattern 'bench.*'

use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    listen: String,
    #[arg(long)]
    redis: String,
    #[arg(long, default_value = "bench.*")]
    pattern: String,
}

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
Connection: close\r\n\r\n";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (frames, _) = broadcast::channel::<Bytes>(1024);
    let mut pubsub = redis::Client::open(args.redis.as_str())?.get_async_pubsub().await?;
    pubsub.psubscribe(&args.pattern).await?;
    let sender = frames.clone();
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let payload = message.get_payload_bytes();
            let mut frame = BytesMut::with_capacity(payload.len() + 8);
            frame.put_slice(b"data: ");
            frame.put_slice(payload);
            frame.put_slice(b"\n\n");
            let _ = sender.send(frame.freeze());
        }
    });
    // The same accept backlog as the relay's (and nchan's), so that accept rates compare.
    let addr: std::net::SocketAddr = args.listen.parse()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    eprintln!("sse-floor listening on {}", listener.local_addr()?);
    loop {
        let (mut socket, _) = listener.accept().await?;
        // As the relay does: an event leaves when it is written, not when Nagle's algorithm
        // has waited for the client's acknowledgement of the previous one.
        socket.set_nodelay(true)?;
        let mut receiver = frames.subscribe();
        tokio::spawn(async move {
            let mut head = [0u8; 2048];
            let mut filled = 0;
            while !head[..filled].windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut head[filled..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => filled += n,
                }
                if filled == head.len() {
                    return;
                }
            }
            if socket.write_all(HEAD).await.is_err() {
                return;
            }
            loop {
                match receiver.recv().await {
                    Ok(frame) => {
                        if socket.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

//! The publisher: benchmark events at a steady rate, each carrying its sequence number and its
//! publish time, to Redis (raw PUBLISH, or the envelope script that also logs it) or to an HTTP
//! publisher endpoint (nchan). A publisher that cannot keep the rate falls behind and says so.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::payload::Payload;

#[derive(clap::Args, Clone)]
pub struct PublishArgs {
    /// redis://host:port (with --channel) or http://host:port/path (nchan's publisher location,
    /// where `{channel}` is replaced by each event's channel).
    #[arg(long)]
    pub to: String,
    #[arg(long, default_value = "bench.fanout")]
    pub channel: String,
    /// Spread the events at random over this many channels, `<channel>0` to `<channel><N-1>`;
    /// 0: every event on `channel`.
    #[arg(long, default_value_t = 0)]
    pub spread: u64,
    /// Through the envelope script (log + PUBLISH), as forecast-api publishes.
    #[arg(long)]
    pub envelope: bool,
    /// Messages per second.
    #[arg(long)]
    pub rate: u64,
    #[arg(long)]
    pub count: u64,
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// First sequence number.
    #[arg(long, default_value_t = 0)]
    pub first_seq: u64,
}

pub struct Published {
    pub count: u64,
    pub elapsed: Duration,
}

pub async fn run(args: &PublishArgs) -> anyhow::Result<Published> {
    let mut sink = Sink::connect(args).await?;
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    for i in 0..args.count {
        tokio::time::sleep_until((started + interval.mul_f64(i as f64)).into()).await;
        let channel = match args.spread {
            0 => args.channel.clone(),
            spread => format!("{}{}", args.channel, rand::random_range(0..spread)),
        };
        sink.send(&channel, &Payload::encode(args.first_seq + i, args.size)).await?;
    }
    Ok(Published { count: args.count, elapsed: started.elapsed() })
}

enum Sink {
    Raw {
        connection: redis::aio::MultiplexedConnection,
    },
    Envelope {
        connection: redis::aio::MultiplexedConnection,
        script: redis::Script,
    },
    /// `path` holds `{channel}`.
    Http {
        tcp: tokio::net::TcpStream,
        host: String,
        path: String,
        buffer: Vec<u8>,
    },
}

impl Sink {
    async fn connect(args: &PublishArgs) -> anyhow::Result<Self> {
        if let Some(rest) = args.to.strip_prefix("http://") {
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            let tcp = tokio::net::TcpStream::connect(host).await?;
            tcp.set_nodelay(true)?;
            return Ok(Sink::Http {
                tcp,
                host: host.to_owned(),
                path: format!("/{path}"),
                buffer: vec![0; 4096],
            });
        }
        let connection = redis::Client::open(args.to.as_str())?.get_multiplexed_async_connection().await?;
        Ok(if args.envelope {
            Sink::Envelope { connection, script: redis::Script::new(protocol::envelope::PUBLISH_SCRIPT) }
        } else {
            Sink::Raw { connection }
        })
    }

    async fn send(&mut self, channel: &str, payload: &str) -> anyhow::Result<()> {
        match self {
            Sink::Raw { connection } => {
                let _: i64 = connection.publish(channel, payload).await?;
            }
            Sink::Envelope { connection, script } => {
                let event_id = uuid::Uuid::new_v4().to_string();
                let data = RawValue::from_string(payload.to_owned())?;
                let envelope = protocol::envelope::OutgoingEnvelope {
                    event_id: &event_id,
                    event: None,
                    data: &data,
                    correlation_id: "bench",
                    exclude: None,
                    ts: protocol::envelope::now_micros(),
                }
                .to_json();
                let _: Option<String> = script
                    .key(format!("sse:dedup:{event_id}"))
                    .key("sse:log")
                    .arg(60)
                    .arg(100_000)
                    .arg(channel)
                    .arg(envelope)
                    .arg("0")
                    .invoke_async(connection)
                    .await?;
            }
            Sink::Http { tcp, host, path, buffer } => {
                if !connection_usable(tcp) {
                    // The server closed the keep-alive connection: open another, as a client would.
                    *tcp = tokio::net::TcpStream::connect(host.as_str()).await?;
                    tcp.set_nodelay(true)?;
                }
                let path = path.replace("{channel}", channel);
                let request = format!(
                    "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{payload}",
                    payload.len()
                );
                tcp.write_all(request.as_bytes()).await?;
                // One response per request (keep-alive): read until its body is complete.
                let mut filled = 0;
                loop {
                    let n = tcp.read(&mut buffer[filled..]).await?;
                    anyhow::ensure!(n > 0, "publisher connection closed");
                    filled += n;
                    if response_complete(&buffer[..filled]) {
                        break;
                    }
                    anyhow::ensure!(filled < buffer.len(), "publisher response too large");
                }
                anyhow::ensure!(
                    buffer.starts_with(b"HTTP/1.1 20"),
                    "publisher refused: {}",
                    String::from_utf8_lossy(&buffer[..filled.min(200)])
                );
            }
        }
        Ok(())
    }
}

/// False once the peer has closed the connection (a read would return end of file).
fn connection_usable(tcp: &tokio::net::TcpStream) -> bool {
    let mut probe = [0u8; 1];
    !matches!(tcp.try_read(&mut probe), Ok(0))
}

/// A response head plus as many body bytes as its Content-Length says.
fn response_complete(bytes: &[u8]) -> bool {
    let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    bytes.len() >= head_end + 4 + length
}

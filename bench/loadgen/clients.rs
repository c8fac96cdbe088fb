//! The client side of the load: many SSE streams over raw HTTP/1.1, each from one of the
//! 127.0.x.y source addresses, counting the benchmark events they receive and how late.
//!
//! A worker process is driven by lines on standard input and answers with one JSON line on
//! standard output: `status`, `reset`, `report <expected events>`, `drop` (close every stream),
//! `storm` (reopen them all at once, with `Last-Event-ID`), `quit`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::sync::{Notify, Semaphore};

use crate::histogram::{Histogram, quantile};
use crate::payload::{Payload, now_micros};

#[derive(clap::Args, Clone)]
pub struct ClientArgs {
    /// Server address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    pub target: SocketAddr,
    /// Request path and query, e.g. /events?channel=bench.*; `{i}` is replaced by the stream's
    /// number (`first` + its index), to give each stream a channel of its own.
    #[arg(long)]
    pub path: String,
    #[arg(long)]
    pub count: usize,
    /// First source address index: stream i binds to 127.0.(1 + (first+i)/250).(1 + (first+i)%250).
    #[arg(long, default_value_t = 0)]
    pub first: usize,
    /// Streams being opened at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Clients that stop reading after the response head (with a small receive buffer): the
    /// slow clients a server has to cut.
    #[arg(long)]
    pub stall: bool,
}

#[derive(Default)]
struct Stream {
    received: AtomicU64,
    /// Comment lines (`: ping`): keepalives, which cost the server a write as an event does.
    comments: AtomicU64,
    /// One more than the highest sequence number seen (0: none yet).
    next_seq: AtomicU64,
    /// Events whose sequence number was not above every earlier one: repeats or reordering.
    out_of_order: AtomicU64,
    open: AtomicBool,
    /// Closed by the server (or failed) after it was open.
    closed: AtomicBool,
    failed: AtomicBool,
    last_id: std::sync::Mutex<Option<String>>,
}

#[derive(Default)]
struct Shared {
    streams: Vec<Stream>,
    latency: Histogram,
    /// When the current (re)connection round began, and how long until its last stream opened.
    round_started: std::sync::Mutex<Option<Instant>>,
    all_open_after_ms: AtomicU64,
    opened: AtomicU64,
    /// Set by `drop`: streams close and wait for `storm`.
    dropping: AtomicBool,
    storm: Notify,
}

fn source_address(index: usize) -> SocketAddr {
    let n = index % (250 * 250);
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, 1 + (n % 250) as u8), 0))
}

pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        streams: (0..args.count).map(|_| Stream::default()).collect(),
        ..Shared::default()
    });
    *shared.round_started.lock().unwrap() = Some(Instant::now());
    let gate = Arc::new(Semaphore::new(args.concurrency));
    for index in 0..args.count {
        tokio::spawn(stream_task(args.clone(), index, Arc::clone(&shared), Arc::clone(&gate)));
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        let answer = match words.next().unwrap_or("") {
            "status" => status(&shared),
            "reset" => {
                shared.latency.reset();
                for stream in &shared.streams {
                    stream.received.store(0, Ordering::Relaxed);
                    stream.comments.store(0, Ordering::Relaxed);
                    stream.out_of_order.store(0, Ordering::Relaxed);
                }
                json!({ "reset": true })
            }
            "report" => {
                let expected: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                report(&shared, expected)
            }
            "drop" => {
                shared.dropping.store(true, Ordering::SeqCst);
                shared.opened.store(0, Ordering::SeqCst);
                json!({ "dropping": true })
            }
            "storm" => {
                *shared.round_started.lock().unwrap() = Some(Instant::now());
                shared.all_open_after_ms.store(0, Ordering::SeqCst);
                shared.dropping.store(false, Ordering::SeqCst);
                shared.storm.notify_waiters();
                json!({ "storm": true })
            }
            "quit" => break,
            other => json!({ "error": format!("unknown command {other:?}") }),
        };
        let mut stdout = tokio::io::stdout();
        stdout.write_all(format!("{answer}\n").as_bytes()).await?;
        stdout.flush().await?;
    }
    Ok(())
}

fn status(shared: &Shared) -> serde_json::Value {
    let count = |f: fn(&Stream) -> bool| shared.streams.iter().filter(|s| f(s)).count();
    json!({
        "open": count(|s| s.open.load(Ordering::Relaxed)),
        "closed": count(|s| s.closed.load(Ordering::Relaxed)),
        "failed": count(|s| s.failed.load(Ordering::Relaxed)),
        "events": shared.streams.iter().map(|s| s.received.load(Ordering::Relaxed)).sum::<u64>(),
        "comments": shared.streams.iter().map(|s| s.comments.load(Ordering::Relaxed)).sum::<u64>(),
        "all_open_after_ms": shared.all_open_after_ms.load(Ordering::Relaxed),
    })
}

fn report(shared: &Shared, expected: u64) -> serde_json::Value {
    let mut complete = 0;
    let mut disconnected = 0;
    let mut disconnected_missing = 0u64;
    let mut silently_missing = 0u64;
    let mut short_open = 0;
    let mut excess = 0u64;
    for stream in &shared.streams {
        let received = stream.received.load(Ordering::Relaxed);
        excess += received.saturating_sub(expected);
        if stream.closed.load(Ordering::Relaxed) || stream.failed.load(Ordering::Relaxed) {
            disconnected += 1;
            disconnected_missing += expected.saturating_sub(received);
        } else if received >= expected {
            complete += 1;
        } else {
            short_open += 1;
            silently_missing += expected - received;
        }
    }
    let mut status = status(shared);
    status["complete"] = json!(complete);
    status["disconnected"] = json!(disconnected);
    status["disconnected_missing"] = json!(disconnected_missing);
    status["open_but_short"] = json!(short_open);
    status["silently_missing"] = json!(silently_missing);
    status["excess"] = json!(excess);
    status["out_of_order"] =
        json!(shared.streams.iter().map(|s| s.out_of_order.load(Ordering::Relaxed)).sum::<u64>());
    status["latency_buckets"] = json!(shared.latency.snapshot());
    status["latency_max_us"] = json!(shared.latency.max());
    let counts = shared.latency.snapshot();
    status["latency_p50_us"] = json!(quantile(&counts, 0.5));
    status["latency_p99_us"] = json!(quantile(&counts, 0.99));
    status
}

async fn stream_task(args: ClientArgs, index: usize, shared: Arc<Shared>, gate: Arc<Semaphore>) {
    loop {
        let result = {
            // The permit bounds the connections being opened, not those open.
            let permit = gate.acquire().await;
            let connected = open(&args, index, &shared).await;
            drop(permit);
            match connected {
                Ok(socket) => {
                    let stream = &shared.streams[index];
                    read(socket, stream, &shared, args.count, args.stall).await;
                    stream.open.store(false, Ordering::SeqCst);
                    Ok(())
                }
                Err(error) => Err(error),
            }
        };
        let stream = &shared.streams[index];
        if shared.dropping.load(Ordering::SeqCst) {
            // Wait for the storm, then reconnect with Last-Event-ID.
            let storm = shared.storm.notified();
            if shared.dropping.load(Ordering::SeqCst) {
                storm.await;
            }
            continue;
        }
        match result {
            Ok(()) => stream.closed.store(true, Ordering::SeqCst),
            Err(_) => stream.failed.store(true, Ordering::SeqCst),
        }
        return;
    }
}

async fn open(args: &ClientArgs, index: usize, shared: &Shared) -> anyhow::Result<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if args.stall {
        socket.set_recv_buffer_size(4096)?;
    }
    socket.bind(source_address(args.first + index))?;
    let mut tcp = tokio::time::timeout(Duration::from_secs(10), socket.connect(args.target)).await??;
    let last_id = shared.streams[index].last_id.lock().unwrap().clone();
    let resume = last_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    let path = args.path.replace("{i}", &(args.first + index).to_string());
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{resume}\r\n", args.target);
    tcp.write_all(request.as_bytes()).await?;
    Ok(tcp)
}

/// Reads the response until the server closes it (or `drop` asks to), counting events. The
/// stream counts as open from its `200` response head on; a stalled one reads nothing more.
async fn read(mut tcp: tokio::net::TcpStream, stream: &Stream, shared: &Shared, streams: usize, stall: bool) {
    let mut buffer = vec![0u8; 8192];
    let mut filled = 0;
    let mut head_done = false;
    // One timer for the stream's life (not one per read): it only makes `drop` noticed.
    let mut check_drop = tokio::time::interval(Duration::from_millis(200));
    loop {
        if shared.dropping.load(Ordering::Relaxed) {
            return;
        }
        if filled == buffer.len() {
            // A line longer than the buffer: keep the last half (never the case for our payloads).
            let half = buffer.len() / 2;
            buffer.copy_within(half.., 0);
            filled = half;
        }
        let read = tokio::select! {
            biased;
            read = tcp.read(&mut buffer[filled..]) => read,
            _ = check_drop.tick() => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        let mut start = 0;
        if !head_done {
            let Some(end) = find(&buffer[..filled], b"\r\n\r\n") else { continue };
            if !buffer.starts_with(b"HTTP/1.1 200") && !buffer.starts_with(b"HTTP/1.0 200") {
                return;
            }
            head_done = true;
            start = end + 4;
            stream.open.store(true, Ordering::SeqCst);
            if shared.opened.fetch_add(1, Ordering::SeqCst) + 1 == streams as u64 {
                let started = shared.round_started.lock().unwrap().unwrap_or_else(Instant::now);
                shared.all_open_after_ms.store(started.elapsed().as_millis().max(1) as u64, Ordering::SeqCst);
            }
            if stall {
                // Holds the socket, unread, until told to drop it.
                while !shared.dropping.load(Ordering::Relaxed) {
                    check_drop.tick().await;
                }
                return;
            }
        }
        let now = now_micros();
        // Complete lines only; the rest waits for the next read.
        let Some(last_newline) = buffer[start..filled].iter().rposition(|&b| b == b'\n') else {
            buffer.copy_within(start..filled, 0);
            filled -= start;
            continue;
        };
        let complete = start + last_newline + 1;
        for line in buffer[start..complete].split(|&b| b == b'\n') {
            if let Some(data) = line.strip_prefix(b"data: ") {
                if let Some(payload) = Payload::parse(data) {
                    stream.received.fetch_add(1, Ordering::Relaxed);
                    if stream.next_seq.fetch_max(payload.seq + 1, Ordering::Relaxed) > payload.seq {
                        stream.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    shared.latency.record(now.saturating_sub(payload.ts).max(0) as u64);
                }
            } else if line.starts_with(b":") {
                stream.comments.fetch_add(1, Ordering::Relaxed);
            } else if let Some(id) = line.strip_prefix(b"id: ") {
                let id = String::from_utf8_lossy(id).trim_end().to_owned();
                *stream.last_id.lock().unwrap() = Some(id);
            }
        }
        buffer.copy_within(complete..filled, 0);
        filled -= complete;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

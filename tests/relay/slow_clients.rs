use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use testkit::relay_process::TestRelay;
use testkit::sse_client::connect_without_reading;

const WAIT: Duration = Duration::from_secs(15);

/// Held by each test here: each pins hundreds of MB of kernel TCP memory at its peak, and one
/// of them measures that memory, which is the whole machine's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_while_a_reading_client_gets_everything() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let TestRelay { redis, relay } =
        TestRelay::with(|relay| relay.env("LIMITS__CLIENT_QUEUE", 8).env("LIMITS__MAX_MESSAGE_BYTES", 65536))
            .await;

    let mut reader = relay.open_stream("").await;
    let mut stalled = connect_without_reading(relay.addr(), "/events").await;
    relay.wait_metric("sse_relay_connections", |open| open == 2.0).await;

    // Publish large events until the stalled client's socket buffers and queue overflow. The
    // publisher never runs more than a few events ahead of the reader, which therefore always
    // keeps up. Bounded: the kernel buffers hold a few MiB at most.
    let payload = "x".repeat(60_000);
    let consumed = Arc::new(AtomicUsize::new(0));
    let reading = tokio::spawn({
        let consumed = Arc::clone(&consumed);
        async move {
            let mut received = Vec::new();
            loop {
                let event = reader.next_event(WAIT).await;
                let data = event.data.unwrap();
                if data == "end" {
                    return (received, reader);
                }
                received.push(data[..data.find(':').unwrap()].parse::<usize>().unwrap());
                consumed.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let mut connection = redis.connection();
    let mut sent = 0;
    while sent < 2_000 {
        testkit::eventually(WAIT, "the reader to catch up", || async {
            (sent - consumed.load(Ordering::SeqCst) < 4).then_some(())
        })
        .await;
        let _: i64 = redis::cmd("PUBLISH")
            .arg("weatherforecast.updated")
            .arg(format!("{sent}:{payload}"))
            .query(&mut connection)
            .unwrap();
        sent += 1;
        if sent % 50 == 0 && relay.metric("sse_relay_slow_client_disconnects_total").await >= 1.0 {
            break;
        }
    }
    assert_eq!(relay.metric("sse_relay_slow_client_disconnects_total").await, 1.0, "after {sent} events");
    let _: i64 =
        redis::cmd("PUBLISH").arg("weatherforecast.updated").arg("end").query(&mut connection).unwrap();

    // The reader is kept: its stream stays open, and the gauge counts it.
    let (received, _reader) = reading.await.unwrap();
    assert_eq!(received, (0..sent).collect::<Vec<_>>(), "the reading client got every event, in order");
    relay.wait_metric("sse_relay_connections", |open| open == 1.0).await;

    // The stalled client's connection was closed by the relay: after what was in flight, EOF.
    let mut sink = vec![0u8; 1 << 16];
    let eof = tokio::time::timeout(WAIT, async {
        loop {
            match stalled.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(eof.is_ok(), "the stalled connection was closed");
    assert!(relay.log_events("slow client disconnected: its queue was full").len() == 1, "the cut is logged");
}

/// Bytes the kernel still holds to send on the relay's side of its client connections
/// (`tx_queue` in `/proc/net/tcp` of the sockets on the relay's port), and how many of those
/// sockets are closing with data still unsent (FIN-WAIT-1: the relay closed, the client did
/// not read).
fn relay_side_unsent(port: u16) -> (u64, usize) {
    const FIN_WAIT_1: &str = "04";
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let mut unsent = 0;
    let mut closing = 0;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields[1].rsplit_once(':').map(|(_, p)| u16::from_str_radix(p, 16).unwrap());
        if local_port == Some(port) {
            let tx_queue = u64::from_str_radix(fields[4].split_once(':').unwrap().0, 16).unwrap();
            unsent += tx_queue;
            closing += usize::from(fields[3] == FIN_WAIT_1 && tx_queue > 0);
        }
    }
    (unsent, closing)
}

/// The kernel's TCP memory in bytes (`/proc/net/sockstat`, in pages).
fn tcp_memory() -> u64 {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").expect("/proc/net/sockstat");
    let pages: u64 = sockstat
        .lines()
        .find_map(|line| line.strip_prefix("TCP: "))
        .and_then(|tcp| tcp.split_whitespace().skip_while(|f| *f != "mem").nth(1))
        .and_then(|pages| pages.parse().ok())
        .expect("TCP mem in /proc/net/sockstat");
    pages * 4096
}

/// A cut client's unread data is dropped by the kernel at once (an abortive close), not kept
/// in a closing socket for as long as the client holds its end open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_clients_that_never_read_frees_the_kernel_memory_their_data_held() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const STALLED: usize = 40;
    let TestRelay { redis, relay } =
        TestRelay::with(|relay| relay.env("LIMITS__CLIENT_QUEUE", 8).env("LIMITS__MAX_MESSAGE_BYTES", 65536))
            .await;
    let port = relay.addr().port();
    let baseline = tcp_memory();
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(connect_without_reading(relay.addr(), "/events").await);
    }
    relay.wait_metric("sse_relay_connections", |open| open == STALLED as f64).await;

    // Large events until every stalled client is cut (bounded: each holds a few MiB at most).
    let payload = "x".repeat(60_000);
    let mut connection = redis.connection();
    let mut peak = (0, 0);
    for sent in 0..2_000 {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("weatherforecast.updated")
            .arg(&payload)
            .query(&mut connection)
            .unwrap();
        // Sampled after every event: a cut frees its socket's data at once.
        peak = peak.max((tcp_memory(), relay_side_unsent(port).0));
        if sent % 20 == 19 && relay.metric("sse_relay_slow_client_disconnects_total").await == STALLED as f64
        {
            break;
        }
    }
    assert_eq!(relay.metric("sse_relay_slow_client_disconnects_total").await, STALLED as f64);
    let (peak_memory, peak_unsent) = peak;
    assert!(
        peak_unsent > STALLED as u64 * 25_000,
        "the stalled clients' data filled the relay's sockets: {peak_unsent} bytes"
    );

    // The clients keep their sockets open: nothing of theirs stays on the relay's side, and
    // the kernel's TCP memory comes back down.
    testkit::eventually(WAIT, "the relay's side of the cut connections to hold nothing", || async {
        (relay_side_unsent(port) == (0, 0)).then_some(())
    })
    .await;
    let after = tcp_memory();
    eprintln!("TCP memory: baseline {baseline}, peak {peak_memory}, after the cuts {after} bytes");
    // Other tests share the kernel: allow them a quarter of what the stalled clients pinned.
    assert!(
        after.saturating_sub(baseline) < peak_memory.saturating_sub(baseline) / 4,
        "TCP memory back near its baseline: baseline {baseline}, peak {peak_memory}, after {after}"
    );
    drop(stalled);
}

/// The relay's resident memory (`VmRSS`), in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// What a burst of slow clients made the relay hold (the events queued for them) is given back
/// to the system once they are cut, not kept by the allocator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_taken_by_slow_clients_is_given_back_after_they_are_cut() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const STALLED: usize = 100;
    let TestRelay { redis, relay } = TestRelay::with(|relay| {
        relay.env("LIMITS__CLIENT_QUEUE", 1024).env("LIMITS__MAX_MESSAGE_BYTES", 65536)
    })
    .await;
    let before = rss_bytes(relay.pid());
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(connect_without_reading(relay.addr(), "/events").await);
    }
    relay.wait_metric("sse_relay_connections", |open| open == STALLED as f64).await;
    // Distinct 30 KB events until every stalled client's queue (1,024 events) overflowed: the
    // relay holds each queued event once, for all of them. A hundred at a time, each hundred
    // taken by the relay before the next (Redis cuts a subscriber that falls 32 MB behind).
    let mut connection = redis.connection();
    let mut peak = before;
    for hundred in 0..30 {
        for n in 0..100 {
            let payload = format!("{hundred}.{n}:{}", "x".repeat(30_000));
            let _: i64 = redis::cmd("PUBLISH")
                .arg("weatherforecast.updated")
                .arg(payload)
                .query(&mut connection)
                .unwrap();
        }
        let received = f64::from((hundred + 1) * 100);
        relay.wait_metric("sse_relay_events_received_total", |n| n >= received).await;
        peak = peak.max(rss_bytes(relay.pid()));
        if relay.metric("sse_relay_slow_client_disconnects_total").await == STALLED as f64 {
            break;
        }
    }
    assert_eq!(relay.metric("sse_relay_slow_client_disconnects_total").await, STALLED as f64);
    assert!(peak > before + (16 << 20), "the burst took memory: {before} before, {peak} at the peak");
    // Given back within the allocator's decay (10 s), while the clients keep their sockets.
    let after =
        testkit::eventually(Duration::from_secs(30), "the relay's memory to come back down", || async {
            let now = rss_bytes(relay.pid());
            (now < before + (peak - before) / 4).then_some(now)
        })
        .await;
    eprintln!("relay RSS: {before} before, {peak} at the peak, {after} after");
    drop(stalled);
}

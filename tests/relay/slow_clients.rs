use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use testkit::relay_process::TestRelay;
use testkit::sse_client::connect_without_reading;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_while_a_reading_client_gets_everything() {
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

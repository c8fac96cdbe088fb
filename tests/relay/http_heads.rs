//! What reaches the relay as raw bytes: refusals framed once, one head limit for every path,
//! and what cannot be HTTP/1.1 refused at once rather than held until the header timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use testkit::relay_process::TestRelay;

const WAIT: Duration = Duration::from_secs(10);

/// Sends `bytes` and reads until the relay closes the connection; the answer and how long the
/// relay took to close.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (String, Duration) {
    let started = Instant::now();
    let mut socket = TcpStream::connect(addr).await.unwrap();
    // The relay may answer (and close) before it has read everything: a write error then is
    // part of the exchange.
    let _ = socket.write_all(bytes).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buffer = [0u8; 4096];
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the relay closed the connection");
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

fn head_lines(answer: &str) -> Vec<String> {
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().map(|line| line.to_ascii_lowercase()).collect()
}

#[tokio::test]
async fn every_refusal_of_the_stream_path_is_framed_by_one_content_length() {
    let TestRelay { redis: _redis, relay } = TestRelay::with(|relay| {
        relay.accepting_forecast_api_tokens().env("LIMITS__MAX_CONNECTIONS_PER_IP", 1)
    })
    .await;
    let _held = relay.open_stream("?channel=weatherforecast.*").await;
    let long = "a".repeat(9000);
    for (target, status) in [
        ("/events?lastEventId=garbage".to_owned(), "400"),
        ("/events?channel=admin.*".to_owned(), "401"),
        ("/events?channel=weatherforecast.*&access_token=not.a.token".to_owned(), "401"),
        (format!("/events?channel={long}"), "414"),
        ("/events?channel=weatherforecast.*".to_owned(), "429"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: relay\r\n\r\n");
        let (answer, _) = exchange(relay.addr(), request.as_bytes()).await;
        let lines = head_lines(&answer);
        assert!(lines[0].starts_with(&format!("http/1.1 {status}")), "{target}: {answer}");
        let lengths: Vec<&String> = lines.iter().filter(|l| l.starts_with("content-length:")).collect();
        assert_eq!(lengths.len(), 1, "{status}: one Content-Length in {lines:?}");
        let body = answer.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(lengths[0]["content-length:".len()..].trim(), body.len().to_string(), "{status}");
        assert!(lines.iter().all(|l| !l.starts_with("transfer-encoding")), "{status}: {lines:?}");
    }
}

#[tokio::test]
async fn a_head_over_the_limit_is_refused_on_every_path_and_what_is_not_http_at_once() {
    let TestRelay { redis: _redis, relay } =
        TestRelay::with(|relay| relay.env("LIMITS__HEADER_READ_TIMEOUT_SECS", 10)).await;
    // Between the relay's 64 KiB and hyper's own limit (~400 KiB), on the stream path and off it.
    let pad = "p".repeat(100 * 1024);
    for path in ["/events", "/healthz", "/metrics"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: relay\r\nX-Pad: {pad}\r\n\r\n");
        let (answer, _) = exchange(relay.addr(), request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{path}: {answer}");
        assert!(answer.contains("larger than 64 KiB"), "{path}: {answer}");
    }
    // Well below the header timeout: bare LF line ends, a TLS ClientHello, a request line of
    // something else.
    let client_hello = [0x16, 0x03, 0x01, 0x00, 0xf4, 0x01, 0x00, 0x00, 0xf0, 0x03, 0x03, 0x5a];
    for bytes in [
        &b"GET /events HTTP/1.1\nHost: relay\n\n"[..],
        &b"GET /healthz HTTP/1.1\nHost: relay\n\n"[..],
        &client_hello[..],
        &b"SSH-2.0-OpenSSH_9.2\r\n"[..],
    ] {
        let (answer, took) = exchange(relay.addr(), bytes).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{:?}: {answer}", String::from_utf8_lossy(bytes));
        assert!(took < Duration::from_secs(5), "{:?} refused after {took:?}", String::from_utf8_lossy(bytes));
        assert!(
            head_lines(&answer).contains(&"content-type: application/problem+json".to_owned()),
            "{answer}"
        );
    }
    // A head below the limit still works, however finely it trickles in.
    let mut socket = TcpStream::connect(relay.addr()).await.unwrap();
    for byte in b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n" {
        socket.write_all(&[*byte]).await.unwrap();
    }
    let mut answer = String::new();
    tokio::time::timeout(WAIT, socket.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

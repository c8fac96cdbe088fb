//! The client address behind the balancers users run: a client cannot pick its own address by
//! sending `X-Forwarded-For`, whichever way the balancer adds its entry (nginx extends the
//! client's line, HAProxy adds a line of its own).

use testkit::haproxy::Haproxy;
use testkit::nginx::Nginx;
use testkit::relay_process::TestRelay;

#[tokio::test]
async fn a_forged_forwarded_for_does_not_escape_the_per_ip_limit_behind_nginx_or_haproxy() {
    let TestRelay { redis: _redis, relay } = TestRelay::with(|relay| {
        // Keepalives every second: a balancer notices a client gone when it next writes.
        relay
            .env("LIMITS__MAX_CONNECTIONS_PER_IP", 1)
            .env("LIMITS__TRUSTED_PROXY_HOPS", 1)
            .env("SSE__KEEPALIVE_SECS", 1)
    })
    .await;
    let nginx = Nginx::start(&[relay.addr()], &[relay.addr()]).await;
    let haproxy = Haproxy::start(relay.addr()).await;
    let client = reqwest::Client::new();
    for (balancer, url) in [("nginx", nginx.relay_url("/events")), ("haproxy", haproxy.url("/events"))] {
        let first = client.get(&url).header("x-forwarded-for", "6.6.6.6").send().await.unwrap();
        assert_eq!(first.status(), 200, "{balancer}: the first stream");
        // Another forged address, and the same one on two lines: the client is still 127.0.0.1.
        for forged in [["7.7.7.7", "8.8.8.8"], ["6.6.6.6", "6.6.6.6"]] {
            let second = client
                .get(&url)
                .header("x-forwarded-for", forged[0])
                .header("x-forwarded-for", forged[1])
                .send()
                .await
                .unwrap();
            assert_eq!(second.status(), 429, "{balancer}: a second stream from 127.0.0.1 forging {forged:?}");
            let body = second.text().await.unwrap();
            assert!(body.contains("127.0.0.1 holds the maximum number of streams"), "{balancer}: {body}");
        }
        drop(first);
        // The slot comes back once the relay sees the stream closed.
        relay.wait_metric("sse_relay_connections", |open| open == 0.0).await;
    }
}

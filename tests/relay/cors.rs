use testkit::relay_process::TestRelay;

#[tokio::test]
async fn only_configured_origins_may_open_streams_cross_origin_with_credentials() {
    let TestRelay { redis: _redis, relay } =
        TestRelay::with(|relay| relay.env("CORS__ALLOWED_ORIGINS", "https://app.example.com")).await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, relay.url("/events"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "last-event-id")
            .send()
    };

    let allowed = preflight("https://app.example.com").await.unwrap();
    assert!(allowed.status().is_success());
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(allowed.headers()["access-control-allow-credentials"], "true");
    let allowed_headers = allowed.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    assert!(allowed_headers.contains("last-event-id"));

    let refused = preflight("https://evil.example.net").await.unwrap();
    assert!(!refused.headers().contains_key("access-control-allow-origin"), "no grant for other origins");

    let stream =
        http.get(relay.url("/events")).header("origin", "https://app.example.com").send().await.unwrap();
    assert_eq!(stream.headers()["access-control-allow-origin"], "https://app.example.com");
    let other =
        http.get(relay.url("/events")).header("origin", "https://evil.example.net").send().await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    assert_ne!(
        stream.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap()),
        Some("*"),
        "never a wildcard with credentials"
    );
}

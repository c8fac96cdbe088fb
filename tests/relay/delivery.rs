use std::time::Duration;

use testkit::relay_process::TestRelay;
use testkit::sse_client::SseClient;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_published_message_arrives_as_one_event_named_after_its_channel() {
    let TestRelay { redis, relay } = TestRelay::start().await;

    let mut client = SseClient::connect(&relay.url("/events")).await;
    let headers = client.response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");

    let first = client.next_block(WAIT).await;
    let retry = first.retry.expect("first frame sets retry");
    assert!((3000..=4500).contains(&retry), "retry {retry} is 3000 ms plus up to 50% jitter");
    assert_eq!(first.event.as_deref(), Some("relay.connected"));
    let connected: serde_json::Value = serde_json::from_str(first.data.as_deref().unwrap()).unwrap();
    let connection_id = connected["connection_id"].as_str().expect("connection id");
    assert_eq!(connection_id.len(), 36, "a UUID: {connection_id}");

    assert_eq!(redis.publish("weatherforecast.created", r#"{"temperatureC":25}"#), 1);
    let event = client.next_event(WAIT).await;
    assert_eq!(event.event.as_deref(), Some("weatherforecast.created"));
    assert_eq!(event.data.as_deref(), Some(r#"{"temperatureC":25}"#));
    assert_eq!(event.id, None, "raw channels carry no id");
}

#[tokio::test]
async fn a_multi_line_payload_arrives_as_the_same_text() {
    let TestRelay { redis, relay } = TestRelay::start().await;
    let mut client = relay.open_stream("").await;

    let payloads = ["line one\nline two\n\nline four", "trailing newline\n", "  indented\n\tand tabbed"];
    for payload in payloads {
        redis.publish("weatherforecast.updated", payload);
    }
    // CR and CRLF end lines too, as an EventSource reads them: they arrive as LF.
    redis.publish("weatherforecast.updated", "crlf\r\nand\rcr");
    for payload in payloads {
        assert_eq!(client.next_event(WAIT).await.data.as_deref(), Some(payload));
    }
    assert_eq!(client.next_event(WAIT).await.data.as_deref(), Some("crlf\nand\ncr"));
}

#[tokio::test]
async fn a_client_receives_only_the_channels_it_selected() {
    let TestRelay { redis, relay } = TestRelay::start().await;

    let mut everything = relay.open_stream("").await;
    let mut created = relay.open_stream("?channel=weatherforecast.created").await;
    let mut mixed = relay
        .open_stream(
            "?channel=admin.user.*&channel=weatherforecast.del%3Fted&channel=weatherforecast.%5Bu%5Dpdated",
        )
        .await;

    let published = [
        "weatherforecast.created",
        "weatherforecast.updated",
        "weatherforecast.deleted",
        "admin.user.registered",
        "admin.apikey.created",
        "unconfigured.channel",
    ];
    for channel in published {
        redis.publish(channel, channel);
    }
    // A final event every client selected marks the end of the sequence.
    redis.publish("weatherforecast.created", "end");

    async fn received(client: &mut SseClient) -> Vec<String> {
        let mut channels = Vec::new();
        loop {
            let event = client.next_event(WAIT).await;
            if event.data.as_deref() == Some("end") {
                return channels;
            }
            channels.push(event.event.unwrap());
        }
    }
    assert_eq!(
        received(&mut everything).await,
        [
            "weatherforecast.created",
            "weatherforecast.updated",
            "weatherforecast.deleted",
            "admin.user.registered",
            "admin.apikey.created"
        ]
    );
    assert_eq!(received(&mut created).await, ["weatherforecast.created"]);
    // `mixed` did not select weatherforecast.created, so the marker never reaches it: use a
    // marker on one of its own channels.
    redis.publish("admin.user.loggedout", "end-mixed");
    let mut mixed_channels = Vec::new();
    loop {
        let event = mixed.next_event(WAIT).await;
        if event.data.as_deref() == Some("end-mixed") {
            break;
        }
        mixed_channels.push(event.event.unwrap());
    }
    assert_eq!(
        mixed_channels,
        ["weatherforecast.updated", "weatherforecast.deleted", "admin.user.registered"]
    );
}

#[tokio::test]
async fn a_quiet_stream_receives_keepalive_comments() {
    let TestRelay { redis: _redis, relay } =
        TestRelay::with(|relay| relay.env("SSE__KEEPALIVE_SECS", 1)).await;
    let mut client = relay.open_stream("").await;
    for _ in 0..2 {
        let block = client.next_block(WAIT).await;
        assert_eq!(block.comments, ["ping"], "a keepalive is a comment only: {block:?}");
        assert_eq!(block.data, None);
    }
}

#[tokio::test]
async fn bad_channel_selections_are_refused_with_a_reason() {
    let TestRelay { redis: _redis, relay } =
        TestRelay::with(|relay| relay.env("LIMITS__MAX_CHANNELS_PER_REQUEST", 2)).await;

    let response = relay.get("/events?channel=weatherforecast.%5Bcreated").await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = response.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("unterminated '['"), "{detail}");

    let response = relay.get("/events?channel=a&channel=b&channel=c").await;
    assert_eq!(response.status(), 400);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("at most 2"), "{problem}");

    let response = relay.get("/nowhere").await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let response = reqwest::Client::new().post(relay.url("/events")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert!(response.text().await.unwrap().contains("use GET"));
}

//! Private channels: only token holders read `admin.*`, live or replayed; bad tokens are refused.

use std::time::Duration;

use serde_json::{Value, json};

use testkit::log_publisher::LogPublisher;
use testkit::relay_process::{RelayProcess, TestRelay};
use testkit::sse_client::SseClient;

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "relay-test-secret-0123456789abcdef-xyz";

const CHANNELS: &str = r#"
[[channels]]
pattern = "weatherforecast.*"
format = "envelope"
access = "public"

[[channels]]
pattern = "admin.*"
format = "envelope"
access = "token"
"#;

/// Public forecast events, admin events for holders of tokens signed with `SECRET`.
async fn start() -> TestRelay {
    TestRelay::with(|relay| {
        relay
            .channels(CHANNELS)
            .env("AUTH__JWT_SECRET", SECRET)
            .env("AUTH__AUDIENCE", "sse-relay")
            .env("AUTH__ISSUER", "forecast-api")
            .env("AUTH__LEEWAY_SECS", 0)
    })
    .await
}

fn now() -> i64 {
    sse_relay::auth::unix_now_secs()
}

fn sign(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn admin_token(ttl: i64) -> String {
    sign(
        json!({ "sub": "t", "subscribe": ["admin.*"], "aud": "sse-relay", "iss": "forecast-api", "exp": now() + ttl }),
        SECRET,
    )
}

async fn open(relay: &RelayProcess, query: &str, token: Option<&str>) -> SseClient {
    let mut request = reqwest::Client::new().get(relay.url(&format!("/events{query}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let mut stream = SseClient::send(request).await;
    assert_eq!(stream.next_event(WAIT).await.event.as_deref(), Some("relay.connected"));
    stream
}

/// Channels of the events a stream receives until the `end` marker.
async fn channels_until_end(stream: &mut SseClient) -> Vec<String> {
    let mut channels = Vec::new();
    loop {
        let event = stream.next_event(WAIT).await;
        if event.data.as_deref() == Some("\"end\"") {
            return channels;
        }
        channels.push(event.event.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_never_receive_admin_events_live_or_replayed_while_a_token_holder_does() {
    let TestRelay { redis, relay } = start().await;
    let token = admin_token(600);

    let mut anonymous_all = open(&relay, "", None).await;
    let mut anonymous_star = open(&relay, "?channel=*", None).await;
    let mut holder = open(&relay, "?channel=*", Some(&token)).await;
    let refused = relay.get("/events?channel=admin.*").await;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));

    let mut publisher = LogPublisher::connect(&redis.url()).await;
    let before = publisher.publish("weatherforecast.created", "0", None).await.unwrap();
    publisher.publish("admin.apikey.created", r#"{"id":"k1"}"#, None).await.unwrap();
    publisher.publish("weatherforecast.updated", "1", None).await.unwrap();
    publisher.publish("admin.user.registered", r#"{"id":"u1"}"#, None).await.unwrap();
    publisher.publish("weatherforecast.deleted", r#""end""#, None).await.unwrap();

    let public = ["weatherforecast.created", "weatherforecast.updated"];
    assert_eq!(channels_until_end(&mut anonymous_all).await, public);
    assert_eq!(channels_until_end(&mut anonymous_star).await, public);
    assert_eq!(
        channels_until_end(&mut holder).await,
        [
            "weatherforecast.created",
            "admin.apikey.created",
            "weatherforecast.updated",
            "admin.user.registered"
        ]
    );

    // Replayed from the log: the same rule.
    let (mut anonymous_resume, _) = relay.resume_stream("?channel=*", Some(&before)).await;
    assert_eq!(channels_until_end(&mut anonymous_resume).await, ["weatherforecast.updated"]);
    let mut request = reqwest::Client::new().get(relay.url("/events")).bearer_auth(&token);
    request = request.header("last-event-id", &before);
    let mut holder_resume = SseClient::send(request).await;
    holder_resume.next_event(WAIT).await;
    assert_eq!(
        channels_until_end(&mut holder_resume).await,
        ["admin.apikey.created", "weatherforecast.updated", "admin.user.registered"]
    );
}

#[tokio::test]
async fn expired_forged_misaddressed_and_unsigned_tokens_are_refused_with_401() {
    let TestRelay { redis: _redis, relay } = start().await;
    let base =
        json!({ "subscribe": ["admin.*"], "aud": "sse-relay", "iss": "forecast-api", "exp": now() + 600 });
    let with = |key: &str, value: Value| {
        let mut claims = base.clone();
        claims[key] = value;
        claims
    };
    let without = |key: &str| {
        let mut claims = base.clone();
        claims.as_object_mut().unwrap().remove(key);
        claims
    };
    let unsigned = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.", engine.encode(br#"{"alg":"none","typ":"JWT"}"#), engine.encode(base.to_string()))
    };
    // Each case and what the refusal says (in the relay's words, not the JWT library's).
    let cases = [
        ("expired", sign(with("exp", json!(now() - 60)), SECRET), "has expired"),
        ("not yet valid", sign(with("nbf", json!(now() + 600)), SECRET), "not valid yet"),
        ("forged", sign(base.clone(), "another-secret-0123456789abcdef-xyz"), "signature does not verify"),
        ("wrong audience", sign(with("aud", json!("someone-else")), SECRET), "another audience"),
        ("wrong issuer", sign(with("iss", json!("mallory")), SECRET), "another issuer"),
        ("no expiry", sign(without("exp"), SECRET), "has no exp claim"),
        ("no audience", sign(without("aud"), SECRET), "has no aud claim"),
        ("no issuer", sign(without("iss"), SECRET), "has no iss claim"),
        ("lives two days", sign(with("exp", json!(now() + 2 * 86_400)), SECRET), "at most 86400 s"),
        (
            "grants not a list",
            sign(with("subscribe", json!("admin.*")), SECRET),
            "claims are not a relay token's",
        ),
        ("alg none", unsigned, "algorithm"),
        ("garbage", "not.a.token".to_owned(), "not a well-formed JWT"),
        ("bad grant", sign(with("subscribe", json!(["admin.["])), SECRET), "subscribe pattern"),
    ];
    for (name, token, detail) in cases {
        let response = reqwest::Client::new()
            .get(relay.url("/events?channel=admin.*"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{name}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.contains("invalid_token"), "{name}: {challenge}");
        let body = response.text().await.unwrap();
        assert!(!body.contains(&token), "the token is never echoed");
        assert!(body.contains(detail), "{name}: {body}");
        for internal in ["JSON error", "missing field", "line 1", "Base64", "InvalidToken", "Error("] {
            assert!(!body.contains(internal), "{name}: {body}");
        }
    }
    // A valid token whose grants do not cover what is asked: 403.
    let weather_only = sign(with("subscribe", json!(["weatherforecast.*"])), SECRET);
    let response = reqwest::Client::new()
        .get(relay.url("/events?channel=admin.*"))
        .bearer_auth(&weather_only)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let logs = relay.logs().join("\n");
    assert!(!logs.contains(&weather_only), "tokens never reach the logs");
}

#[tokio::test]
async fn a_token_in_a_cookie_or_in_the_query_works_and_a_ticket_works_once() {
    let TestRelay { redis, relay } = start().await;
    let token = admin_token(600);
    let mut by_cookie = SseClient::send(
        reqwest::Client::new()
            .get(relay.url("/events?channel=admin.*"))
            .header("cookie", format!("theme=dark; sse_relay_token={token}")),
    )
    .await;
    let mut by_query =
        SseClient::connect(&relay.url(&format!("/events?channel=admin.*&access_token={token}"))).await;
    let mut publisher = LogPublisher::connect(&redis.url()).await;
    publisher.publish("admin.apikey.revoked", r#"{"id":"k1"}"#, None).await.unwrap();
    for stream in [&mut by_cookie, &mut by_query] {
        stream.next_event(WAIT).await;
        assert_eq!(stream.next_event(WAIT).await.event.as_deref(), Some("admin.apikey.revoked"));
    }

    let ticket = sign(
        json!({ "subscribe": ["admin.*"], "aud": "sse-relay", "iss": "forecast-api", "exp": now() + 30, "jti": "ticket-1" }),
        SECRET,
    );
    let url = relay.url(&format!("/events?channel=admin.*&access_token={ticket}"));
    let first = reqwest::get(&url).await.unwrap();
    assert_eq!(first.status(), 200);
    let second = reqwest::get(&url).await.unwrap();
    assert_eq!(second.status(), 401);
    assert!(second.text().await.unwrap().contains("already used"));
}

/// A ticket is used up by the stream it opens, not by a request that opens none.
#[tokio::test]
async fn a_ticket_survives_a_head_and_requests_refused_for_other_reasons() {
    let TestRelay { redis: _redis, relay } = TestRelay::with(|relay| {
        relay
            .channels(CHANNELS)
            .env("AUTH__JWT_SECRET", SECRET)
            .env("AUTH__AUDIENCE", "sse-relay")
            .env("AUTH__ISSUER", "forecast-api")
            .env("LIMITS__MAX_CONNECTIONS_PER_IP", 1)
    })
    .await;
    let ticket = sign(
        json!({ "subscribe": ["weatherforecast.*"], "aud": "sse-relay", "iss": "forecast-api", "exp": now() + 60, "jti": "ticket-2" }),
        SECRET,
    );
    let url = |channel: &str| relay.url(&format!("/events?channel={channel}&access_token={ticket}"));
    let client = reqwest::Client::new();

    let head = client.head(url("weatherforecast.*")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    // It grants nothing of admin.*: 403.
    assert_eq!(client.get(url("admin.*")).send().await.unwrap().status(), 403);
    // The client's address already holds its one stream: 429.
    let held = relay.open_stream("").await;
    assert_eq!(client.get(url("weatherforecast.*")).send().await.unwrap().status(), 429);
    drop(held);
    relay.wait_metric("sse_relay_connections", |open| open == 0.0).await;

    let first = client.get(url("weatherforecast.*")).send().await.unwrap();
    assert_eq!(first.status(), 200, "the ticket was still unused");
    drop(first);
    relay.wait_metric("sse_relay_connections", |open| open == 0.0).await;
    let second = client.get(url("weatherforecast.*")).send().await.unwrap();
    assert_eq!(second.status(), 401);
    assert!(second.text().await.unwrap().contains("already used"));
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let TestRelay { redis: _redis, relay } = start().await;
    let mut stream = open(&relay, "?channel=admin.*", Some(&admin_token(2))).await;
    let events = stream.expect_end(WAIT).await;
    let last = events.last().expect("a notice before the end");
    assert_eq!(last.event.as_deref(), Some("relay.expired"));
}

#[tokio::test]
async fn a_payload_that_looks_like_sse_fields_arrives_as_one_event_with_that_text() {
    let TestRelay { redis, relay } = TestRelay::start().await;
    let mut stream = relay.open_stream("").await;
    let hostile = "\n\nevent: admin.apikey.created\ndata: x\r\nid: 99-0\r\r: comment";
    redis.publish("weatherforecast.created", hostile);
    redis.publish("weatherforecast.created", "next");
    let event = stream.next_event(WAIT).await;
    assert_eq!(event.event.as_deref(), Some("weatherforecast.created"));
    assert_eq!(event.id, None);
    assert_eq!(
        event.data.as_deref(),
        Some("\n\nevent: admin.apikey.created\ndata: x\nid: 99-0\n\n: comment")
    );
    assert_eq!(
        stream.next_event(WAIT).await.data.as_deref(),
        Some("next"),
        "nothing else arrived in between"
    );
}

#[tokio::test]
async fn connections_beyond_the_per_ip_limit_get_429_and_forwarded_for_is_trusted_only_when_configured() {
    let TestRelay { redis: _redis, relay } = TestRelay::with(|relay| {
        relay.env("LIMITS__MAX_CONNECTIONS_PER_IP", 2).env("LIMITS__TRUSTED_PROXY_HOPS", 1)
    })
    .await;
    let from = |ip: &str| {
        reqwest::Client::new().get(relay.url("/events")).header("x-forwarded-for", format!("6.6.6.6, {ip}"))
    };
    let _a1 = SseClient::send(from("1.1.1.1")).await;
    let _a2 = SseClient::send(from("1.1.1.1")).await;
    let refused = from("1.1.1.1").send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let _b = SseClient::send(from("2.2.2.2")).await;
    assert_eq!(relay.metric("sse_relay_connections_refused_total{reason=\"per_ip_limit\"}").await, 1.0);

    let long = format!("/events?channel={}", "a".repeat(9000));
    let response = relay.get(&long).await;
    assert_eq!(response.status(), 414);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn a_request_head_that_trickles_in_is_cut_after_the_header_timeout() {
    let TestRelay { redis: _redis, relay } =
        TestRelay::with(|relay| relay.env("LIMITS__HEADER_READ_TIMEOUT_SECS", 1)).await;
    assert!(testkit::server_cuts_a_trickling_request(relay.addr(), WAIT).await);
}

/// Generates an EC P-256 key pair with openssl; returns (private PEM, public key file).
fn ec_key_pair(dir: &std::path::Path) -> (Vec<u8>, std::path::PathBuf) {
    let openssl = testkit::require_program("openssl", "install it with `apt-get install openssl`");
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let run = |args: &[&str]| {
        let status = std::process::Command::new(&openssl).args(args).status().expect("run openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        private.to_str().unwrap(),
    ]);
    run(&["pkey", "-in", private.to_str().unwrap(), "-pubout", "-out", public.to_str().unwrap()]);
    (std::fs::read(&private).unwrap(), public)
}

#[tokio::test]
async fn es256_tokens_verify_with_the_public_key_and_algorithm_confusion_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let (private_pem, public_file) = ec_key_pair(keys.path());
    let TestRelay { redis, relay } = TestRelay::with(|relay| {
        relay.channels(CHANNELS).env("AUTH__JWT_PUBLIC_KEY_FILE", public_file.display())
    })
    .await;
    let claims = json!({ "subscribe": ["admin.*"], "exp": now() + 600 });

    let es256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&private_pem).unwrap(),
    )
    .unwrap();
    let mut stream = open(&relay, "?channel=admin.*", Some(&es256)).await;
    LogPublisher::connect(&redis.url()).await.publish("admin.user.loggedin", "1", None).await.unwrap();
    assert_eq!(stream.next_event(WAIT).await.event.as_deref(), Some("admin.user.loggedin"));

    // An HS256 token "signed" with the public key as the secret must not pass for it.
    let public_pem = std::fs::read(&public_file).unwrap();
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    let response = reqwest::Client::new()
        .get(relay.url("/events?channel=admin.*"))
        .bearer_auth(&confused)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// Checking hostile patterns against a token's hostile grants (as many as a token may hold) is
/// bounded: the request is refused with a reason instead of taking seconds of CPU.
#[tokio::test]
async fn hostile_grants_against_hostile_channels_are_refused_not_computed_for_seconds() {
    let TestRelay { redis: _redis, relay } = start().await;
    // No channel matches two of these that end differently, which only a search of every
    // pair of positions can tell.
    let hostile = |letter: char, end: char| format!("admin.*{}*{end}", format!("{letter}*").repeat(120));
    let grants: Vec<String> = (0..64).map(|_| hostile('a', 'b')).collect();
    let token = sign(
        json!({ "subscribe": grants, "aud": "sse-relay", "iss": "forecast-api", "exp": now() + 600 }),
        SECRET,
    );
    let channels: String = (0..16).map(|_| format!("channel={}&", hostile('c', 'd'))).collect();
    let response = reqwest::Client::new()
        .get(relay.url(&format!("/events?{channels}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(body.contains("too complex to check"), "{body}");
    // The same token with a plain request is fine (`open` checks the stream's first event).
    open(&relay, "?channel=admin.user.*", Some(&token)).await;
}

//! Both services under exactly the ACL users the README documents (read from it): every path
//! that talks to Redis — the log tail and its probe, the raw subscription and its probe,
//! replay on resume, one-time tickets, the outbox and its `WAIT` for a replica — works with
//! those permissions and no more,
//! so a command, key or channel the documentation forgot fails here.

use std::time::Duration;

use serde_json::Value;

use testkit::forecast_process::{ADMIN_KEY, Api, DbKind, ForecastBuilder, TestDb};
use testkit::redis_server::{RedisConfig, RedisServer};
use testkit::relay_process::RelayBuilder;
use testkit::sse_client::SseClient;

const WAIT: Duration = Duration::from_secs(10);
const RELAY_PASSWORD: &str = "relay-test-password";
const API_PASSWORD: &str = "api-test-password";

/// The channels of the test: envelope (public and token) and raw.
const CHANNELS: &str = "[[channels]]\npattern = \"weatherforecast.*\"\nformat = \"envelope\"\n\n\
    [[channels]]\npattern = \"admin.*\"\nformat = \"envelope\"\naccess = \"token\"\n\n\
    [[channels]]\npattern = \"raw.*\"\nformat = \"raw\"\n";

/// The README's ACL lines for this test: its passwords, its raw channel pattern, and in the
/// form `redis-server --user` takes (without the leading `user`).
fn documented_acl_users() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let block = readme
        .split("<!-- acl:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- acl:end -->").next())
        .expect("the README's ACL block between <!-- acl:begin --> and <!-- acl:end -->");
    let users: Vec<String> = block
        .lines()
        .filter_map(|line| line.strip_prefix("user "))
        .map(|rule| {
            rule.replace(">relay-password", &format!(">{RELAY_PASSWORD}"))
                .replace(">api-password", &format!(">{API_PASSWORD}"))
                .replace("&<raw-pattern>", "&raw.*")
        })
        .collect();
    assert_eq!(users.len(), 2, "one line per service: {block}");
    users
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_work_under_the_documented_minimal_acl_users() {
    let users = documented_acl_users();
    let redis = RedisServer::start_configured(RedisConfig { users: users.clone(), ..RedisConfig::default() });
    // A replica, so that the outbox's WAIT (redis.min_replicas) runs under the ACL too.
    let _replica = RedisServer::start_configured(RedisConfig {
        users,
        replica_of: Some(redis.port()),
        ..RedisConfig::default()
    });
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("relay-password");
    std::fs::write(&password_file, format!("{RELAY_PASSWORD}\n")).unwrap();

    // The relay signs in with `username` and a password file, forecast-api with the URL's.
    let relay = RelayBuilder::new(redis.url())
        .channels(CHANNELS)
        .env("REDIS__USERNAME", "sse-relay")
        .env("REDIS__PASSWORD_FILE", password_file.display())
        .env("AUTH__JWT_SECRET", testkit::forecast_process::RELAY_JWT_SECRET)
        .env("AUTH__AUDIENCE", "sse-relay")
        .env("AUTH__ISSUER", "forecast-api")
        .start();
    relay.wait_ready().await;
    let db = TestDb::new(DbKind::Sqlite).await;
    let api_url = format!("redis://forecast-api:{API_PASSWORD}@127.0.0.1:{}", redis.port());
    let api_process = ForecastBuilder::new(&db, api_url).env("REDIS__MIN_REPLICAS", 1).start();
    let api = Api::new(&api_process);

    // Live: the log tail, the subscription.
    let mut stream = relay.open_stream("?channel=weatherforecast.*&channel=raw.*").await;
    api.create("2026-12-04", 5, "Grey").await;
    let created = stream.next_event(WAIT).await;
    assert_eq!(created.event.as_deref(), Some("weatherforecast.created"));
    assert_eq!(redis.publish("raw.alert", "plain"), 1);
    assert_eq!(stream.next_event(WAIT).await.data.as_deref(), Some("plain"));

    // Replay on resume.
    drop(stream);
    api.create("2026-12-05", 6, "Wet").await;
    api_process.wait_metric("forecast_api_outbox_pending", |pending| pending == 0.0).await;
    let (mut resumed, _) = relay.resume_stream("?channel=weatherforecast.*", created.id.as_deref()).await;
    let replayed: Value =
        serde_json::from_str(resumed.next_event(WAIT).await.data.as_deref().unwrap()).unwrap();
    assert_eq!(replayed["summary"], "Wet");

    // A one-time ticket, claimed in Redis.
    let ticket: Value = api.post("/api/relay-ticket", ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    let ticket_url =
        relay.url(&format!("/events?channel=admin.*&access_token={}", ticket["token"].as_str().unwrap()));
    let mut admin = SseClient::connect(&ticket_url).await;
    assert_eq!(admin.next_event(WAIT).await.event.as_deref(), Some("relay.connected"));
    assert_eq!(reqwest::get(&ticket_url).await.unwrap().status(), 401, "the ticket was claimed once");

    // Probes keep proving delivery on both paths under these permissions.
    let probes = relay.metric("sse_relay_probe_rtt_seconds_count").await;
    relay.wait_metric("sse_relay_probe_rtt_seconds_count", |count| count >= probes + 2.0).await;
    assert_eq!(relay.metric("sse_relay_probe_failures_total").await, 0.0);
    assert_eq!(relay.get("/readyz").await.status(), 200);
    let logs: Vec<String> = relay.logs().into_iter().chain(api_process.logs()).collect();
    assert_eq!(logs.iter().find(|line| line.contains("NOPERM")), None, "no command was refused");
    assert_eq!(
        logs.iter().find(|line| line.contains(RELAY_PASSWORD) || line.contains(API_PASSWORD)),
        None,
        "passwords are never logged"
    );
}

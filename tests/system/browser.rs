//! The dashboard in a real headless Chromium (Debian's, driven by playwright-core from
//! tests/browser/dashboard.mjs), against the real relay and forecast-api.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use testkit::forecast_process::{ADMIN_KEY, Api, DbKind, ForecastBuilder, TestDb};
use testkit::redis_server::{RedisServer, free_port};
use testkit::relay_process::{RelayBuilder, RelayProcess};
use testkit::service_process::ServiceProcess;

/// `node tests/browser/dashboard.mjs` for `scenario`, after checking that its tools are there.
fn scenario_command(scenario: &str, api_url: &str, relay_url: &str) -> Command {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let node = testkit::require_program("node", "install Node.js (`apt-get install nodejs npm`)");
    testkit::require_program("chromium", "run `scripts/ensure-deps.sh browser` (apt-get install chromium)");
    assert!(
        root.join("tests/browser/node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `scripts/ensure-deps.sh browser` (npm ci in tests/browser)"
    );
    let shots = screenshots();
    std::fs::create_dir_all(&shots).unwrap();
    let mut command = Command::new(node);
    command
        .arg(root.join("tests/browser/dashboard.mjs"))
        .env("SCENARIO", scenario)
        .env("API_URL", api_url)
        .env("RELAY_URL", relay_url)
        .env("ADMIN_KEY", ADMIN_KEY)
        .env("PASSWORD", PASSWORD)
        .env("SHOT_DIR", &shots);
    command
}

/// The password of the users [`register_users`] creates.
const PASSWORD: &str = "a long test passphrase";

/// Registers the scenarios' users: ada (admin), eddie (editor) and vera (viewer).
async fn register_users(api: &Api) {
    for (username, role) in [("ada", "admin"), ("eddie", "editor"), ("vera", "viewer")] {
        let response = api
            .post("/api/users", ADMIN_KEY)
            .json(&serde_json::json!({ "username": username, "password": PASSWORD, "role": role }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
    }
}

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser")
}

fn run_scenario(scenario: &str, api_url: &str, relay_url: &str) {
    let output = scenario_command(scenario, api_url, relay_url).output().expect("run node");
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "browser scenario {scenario} failed (screenshots in {}):\n{report}",
        screenshots().display()
    );
    println!("{report}");
}

/// Redis, the relay and forecast-api as the dashboard uses them (the relay reads the API's
/// tokens and lets its origin in), with the scenarios' users registered.
struct Dashboard {
    redis: RedisServer,
    relay: RelayProcess,
    api: ServiceProcess,
    _db: TestDb,
}

impl Dashboard {
    async fn start(
        redis: RedisServer,
        configure_api: impl FnOnce(ForecastBuilder) -> ForecastBuilder,
    ) -> Self {
        let api_port = free_port();
        let relay = RelayBuilder::new(redis.url())
            .accepting_forecast_api_tokens()
            .env("CORS__ALLOWED_ORIGINS", format!("http://127.0.0.1:{api_port}"))
            .start();
        let db = TestDb::new(DbKind::Sqlite).await;
        let api = configure_api(
            ForecastBuilder::new(&db, redis.url())
                .env("LISTEN", format!("127.0.0.1:{api_port}"))
                .env("RELAY__PUBLIC_URL", relay.url("")),
        )
        .start();
        relay.wait_ready().await;
        api.wait_ready().await;
        register_users(&Api::new(&api)).await;
        Self { redis, relay, api, _db: db }
    }

    /// Runs `scenario` against it.
    async fn run(&self, scenario: &'static str) {
        let (api_url, relay_url) = (self.api.url(""), self.relay.url(""));
        tokio::task::spawn_blocking(move || run_scenario(scenario, &api_url, &relay_url)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_stays_live_across_pages_shares_one_connection_and_shows_hostile_text_literally() {
    Dashboard::start(RedisServer::start(), |api| api).await.run("live").await;
}

/// A viewer, an editor and an admin each get what their role allows; the admin sees another
/// user's sign-in live and misses no admin event across ticket renewals; sign-out ends the
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_gets_what_it_may_do_and_the_admin_feed_misses_nothing_across_tickets() {
    // Tickets expire every 2 s: the feed renews them again and again.
    let dashboard =
        Dashboard::start(RedisServer::start(), |api| api.env("AUTH__RELAY_TICKET_TTL_SECS", 2)).await;
    dashboard.run("roles").await;
}

/// Redis goes down while two pages are open: the page that writes shows its change at once,
/// the other gets it once Redis is back, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_the_writer_sees_its_change_and_the_others_get_it_once_after() {
    let mut dashboard = Dashboard::start(RedisServer::start_with(true), |api| api).await;
    let Dashboard { api, relay, .. } = &dashboard;
    let mut child = scenario_command("outage", &api.url(""), &relay.url(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut transcript = String::new();
    let mut asked = |expected: &str, transcript: &mut String| {
        tokio::task::block_in_place(|| {
            let mut line = String::new();
            while stdout.read_line(&mut line).unwrap_or(0) > 0 {
                transcript.push_str(&line);
                if line.trim() == expected {
                    return true;
                }
                line.clear();
            }
            false
        })
    };
    assert!(asked("stop-redis", &mut transcript), "the scenario did not get ready:\n{transcript}");
    dashboard.redis.kill();
    stdin.write_all(b"redis-stopped\n").unwrap();
    assert!(
        asked("start-redis", &mut transcript),
        "the scenario did not write during the outage:\n{transcript}"
    );
    dashboard.redis.restart();
    stdin.write_all(b"redis-started\n").unwrap();
    drop(stdin);
    let output =
        tokio::task::spawn_blocking(move || child.wait_with_output().expect("node exits")).await.unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
    assert!(
        output.status.success(),
        "browser scenario outage failed:\n{transcript}{rest}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dashboard.api.wait_metric("forecast_api_outbox_pending", |pending| pending == 0.0).await;
}

/// Swagger UI at `/docs`, served by forecast-api alone (no outside request), creates a
/// forecast with an API key given under "Authorize", and one with the dashboard's session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_at_docs_tries_requests_with_a_key_or_the_session_without_any_outside_request() {
    Dashboard::start(RedisServer::start(), |api| api).await.run("docs").await;
}

/// The relay is killed and started again on the same port while a page is open; forecasts
/// created meanwhile reach the page once it reconnects, each once (replayed from the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_catches_up_after_the_relay_restarts() {
    relay_restart_scenario(false).await;
}

/// As above, but the log no longer reaches back to the page's last event: the page gets
/// `relay.reset`, refetches the list and says "resynced".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_resynchronises_when_the_log_no_longer_reaches_back() {
    relay_restart_scenario(true).await;
}

async fn relay_restart_scenario(trim_log: bool) {
    let redis = RedisServer::start();
    let api_port = free_port();
    let relay_port = free_port();
    let start_relay = || {
        RelayBuilder::new(redis.url())
            .channels("[[channels]]\npattern = \"weatherforecast.*\"\nformat = \"envelope\"\n")
            .env("LISTEN", format!("127.0.0.1:{relay_port}"))
            .env("CORS__ALLOWED_ORIGINS", format!("http://127.0.0.1:{api_port}"))
            .env("SSE__RETRY_MS", 500)
            .start()
    };
    let relay = start_relay();
    let db = TestDb::new(DbKind::Sqlite).await;
    let api = ForecastBuilder::new(&db, redis.url())
        .env("LISTEN", format!("127.0.0.1:{api_port}"))
        .env("RELAY__PUBLIC_URL", relay.url(""))
        .start();
    relay.wait_ready().await;
    api.wait_ready().await;
    let api_client = testkit::forecast_process::Api::new(&api);

    let mut child = scenario_command("resume", &api.url(""), &relay.url(""))
        .env("EXPECT_RESET", if trim_log { "1" } else { "0" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let asked = tokio::task::block_in_place(|| {
        while stdout.read_line(&mut line).unwrap_or(0) > 0 {
            if line.trim() == "restart-relay" {
                return true;
            }
            line.clear();
        }
        false
    });
    assert!(asked, "the page did not get ready: {line}");

    drop(relay);
    let mut ids = Vec::new();
    for (i, summary) in
        ["Created while the relay was away", "Second meanwhile", "Third meanwhile"].iter().enumerate()
    {
        ids.push(
            api_client.create(&format!("2026-12-0{}", i + 2), 10 + i as i64, summary).await["id"].clone(),
        );
    }
    api.wait_metric("forecast_api_events_published_total{channel=\"weatherforecast.created\"}", |n| n == 4.0)
        .await;
    if trim_log {
        let _: i64 =
            redis::cmd("XTRIM").arg("sse:log").arg("MAXLEN").arg(1).query(&mut redis.connection()).unwrap();
    }
    let relay = start_relay();
    relay.wait_ready().await;
    let mut stdin = child.stdin.take().unwrap();
    // One write, so that the script reads the whole list at once.
    stdin.write_all(format!("{}\n", serde_json::Value::from(ids)).as_bytes()).unwrap();
    drop(stdin);

    let output =
        tokio::task::spawn_blocking(move || child.wait_with_output().expect("node exits")).await.unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
    assert!(
        output.status.success(),
        "browser scenario resume failed:\n{rest}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    if trim_log {
        assert_eq!(relay.metric("sse_relay_resets_total").await, 1.0, "the page was told to reset");
    } else {
        assert!(
            relay.metric("sse_relay_replayed_events_total").await >= 3.0,
            "the page resumed from the log"
        );
    }
}

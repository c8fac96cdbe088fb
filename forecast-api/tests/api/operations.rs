use serde_json::{Value, json};

use testkit::forecast_process::{ADMIN_KEY, Api, DbKind, ForecastBuilder, RELAY_JWT_SECRET, TestApi, TestDb};
use testkit::metric;
use testkit::proxy::WedgingProxy;
use testkit::redis_server::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_the_openapi_document_are_served() {
    let TestApi { redis: _redis, db: _db, process, api } = TestApi::start(DbKind::Sqlite).await;

    assert_eq!(process.get("/healthz").await.status(), 200);
    assert_eq!(process.get("/readyz").await.status(), 200);
    api.create("2026-11-23", 1, "Cold").await;
    let _ = api.get("/api/weatherforecast/nope").send().await.unwrap();

    let text = process.metrics().await;
    assert_eq!(
        metric(
            &text,
            "forecast_api_http_requests_total{method=\"POST\",route=\"/api/weatherforecast\",status=\"201\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "forecast_api_http_requests_total{method=\"GET\",route=\"/api/weatherforecast/{id}\",status=\"404\"}"
        ),
        1.0,
        "routes are labelled by template, never by raw path"
    );
    assert!(
        metric(
            &text,
            "forecast_api_http_request_duration_seconds_count{method=\"POST\",route=\"/api/weatherforecast\"}"
        ) >= 1.0
    );
    assert!(text.contains("forecast_api_outbox_pending"));

    let document: Value = process.get("/openapi.json").await.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with('3'));
    for path in
        ["/api/weatherforecast", "/api/weatherforecast/{id}", "/api/admin/apikeys", "/api/relay-token"]
    {
        assert!(document["paths"][path].is_object(), "{path} documented");
    }
    assert!(document["components"]["schemas"]["Forecast"].is_object());

    // Swagger UI over it, from this origin only; its assets cached for good (their URLs carry
    // the version).
    let page = process.get("/docs").await;
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.contains("script-src 'self';") && policy.contains("connect-src 'self';"), "{policy}");
    let html = page.text().await.unwrap();
    let bundle = html.split("src=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap().to_owned();
    let asset = process.get(&format!("/{bundle}")).await;
    assert_eq!(asset.status(), 200, "{bundle}");
    assert!(asset.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    assert!(asset.text().await.unwrap().contains("SwaggerUIBundle"));

    let response = api.get("/api/weatherforecast").header("x-request-id", "req-42").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-42");
    assert!(response.headers().contains_key("x-correlation-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_can_mint_a_short_lived_relay_token() {
    let TestApi { redis: _redis, db: _db, process: _process, api } = TestApi::start(DbKind::Sqlite).await;

    let token: Value = api.post("/api/relay-token", ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["sse-relay"]);
    let claims = jsonwebtoken::decode::<Value>(
        token["token"].as_str().unwrap(),
        &jsonwebtoken::DecodingKey::from_secret(RELAY_JWT_SECRET.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["subscribe"], json!(["admin.*", "weatherforecast.*"]));
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 300);

    let response = api
        .post("/api/relay-token", ADMIN_KEY)
        .json(&json!({ "subscribe": ["admin.apikey.*"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["subscribe"], json!(["admin.apikey.*"]));
    let bad = api
        .post("/api/relay-token", ADMIN_KEY)
        .json(&json!({ "subscribe": ["admin.["] }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_configured_origins_may_call_the_api_from_a_browser() {
    let TestApi { redis: _redis, db: _db, process, .. } =
        TestApi::with(DbKind::Sqlite, |api| api.env("CORS__ALLOWED_ORIGINS", "https://app.example.com"))
            .await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, process.url("/api/weatherforecast"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, x-api-key, x-relay-connection-id")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert!(allowed.status().is_success());
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(allowed.headers()["access-control-allow-credentials"], "true");
    let refused = preflight("https://evil.example.net").await.unwrap();
    assert!(!refused.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_ticket_is_one_time_and_can_be_set_as_an_http_only_cookie() {
    let TestApi { redis: _redis, db: _db, process: _process, api } = TestApi::start(DbKind::Sqlite).await;

    let ticket: Value = api.post("/api/relay-ticket", ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["sse-relay"]);
    let claims = jsonwebtoken::decode::<Value>(
        ticket["token"].as_str().unwrap(),
        &jsonwebtoken::DecodingKey::from_secret(RELAY_JWT_SECRET.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims;
    assert!(claims["jti"].is_string(), "a ticket carries a jti");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 30);

    let response = api.post("/api/relay-ticket?cookie=true", ADMIN_KEY).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("sse_relay_token=ey"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Max-Age=30"),
        "{cookie}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token"], "", "the ticket is only in the HttpOnly cookie");
}

#[tokio::test]
async fn a_request_head_that_trickles_in_is_cut_after_the_header_timeout() {
    let TestApi { redis: _redis, db: _db, process, .. } =
        TestApi::with(DbKind::Sqlite, |api| api.env("HTTP__HEADER_READ_TIMEOUT_SECS", 1)).await;
    assert!(
        testkit::server_cuts_a_trickling_request(process.addr(), std::time::Duration::from_secs(10)).await
    );
}

#[tokio::test]
async fn sigterm_finishes_and_exits_0() {
    let TestApi { redis: _redis, db: _db, mut process, .. } = TestApi::start(DbKind::Sqlite).await;
    Api::new(&process).create("2026-11-23", 1, "Before shutdown").await;
    process.signal("TERM");
    let status = tokio::task::spawn_blocking(move || process.wait_exit(std::time::Duration::from_secs(15)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_outbox_drain_that_times_out_at_shutdown_is_logged() {
    let redis = RedisServer::start();
    let proxy = WedgingProxy::start(([127, 0, 0, 1], redis.port()).into()).await;
    let db = TestDb::new(DbKind::Sqlite).await;
    // Timeouts longer than the final drain's: a Redis that stops answering holds it to the end.
    let mut process = ForecastBuilder::new(&db, proxy.url())
        .env("REDIS__CONNECT_TIMEOUT_MS", 30_000)
        .env("REDIS__RESPONSE_TIMEOUT_MS", 30_000)
        .start();
    let api = Api::new(&process);
    api.create("2026-11-23", 1, "Published").await;
    process
        .wait_metric("forecast_api_events_published_total{channel=\"weatherforecast.created\"}", |n| n == 1.0)
        .await;

    proxy.wedge_all();
    api.create("2026-11-24", 2, "Waits in the outbox").await;
    process.signal("TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = process.wait_exit(std::time::Duration::from_secs(15));
        (status, process)
    })
    .await
    .unwrap();
    let (status, process) = status;
    assert_eq!(status.code(), Some(0));
    let warnings =
        process.log_events("outbox not emptied in time at shutdown; the next start publishes the rest");
    assert_eq!(warnings.len(), 1, "logs:\n{}", process.logs().join("\n"));
    assert_eq!(warnings[0]["timeout_ms"], 2000);
}

/// A Redis that may evict the event log is pointed out at start, in `/readyz` (still ready)
/// and in a gauge; one that may not is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_may_evict_the_log_is_warned_about() {
    let redis = RedisServer::start();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .arg("maxmemory")
        .arg(256 << 20)
        .query(&mut redis.connection())
        .unwrap();
    let db = TestDb::new(DbKind::Sqlite).await;
    let process = ForecastBuilder::new(&db, redis.url()).start();
    process.wait_ready().await;
    process.wait_metric("forecast_api_redis_log_evictable", |evictable| evictable == 1.0).await;
    let ready: Value = process.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    let warning = ready["warnings"][0].as_str().unwrap();
    assert!(warning.contains("maxmemory-policy allkeys-lru"), "{warning}");
    assert_eq!(process.log_events("Redis may evict the event log").len(), 1, "said once, at start");

    let TestApi { process: safe, .. } = TestApi::start(DbKind::Sqlite).await;
    safe.wait_ready().await;
    let ready: Value = safe.get("/readyz").await.json().await.unwrap();
    assert!(ready.get("warnings").is_none(), "{ready}");
    assert_eq!(safe.metric("forecast_api_redis_log_evictable").await, 0.0);
}

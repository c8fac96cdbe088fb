//! Both services against a TLS-only Redis (certificates made by the test): TLS, mutual TLS
//! required by the server, and a server certificate from another CA refused — with the
//! refusal in the logs and in `/readyz`, and the process still running (exit 2 is for
//! configuration errors only).

use std::path::Path;
use std::time::Duration;

use testkit::forecast_process::{DbKind, ForecastBuilder, TestDb};
use testkit::redis_server::{RedisConfig, RedisServer, RedisTls};
use testkit::relay_process::{ENVELOPE_CHANNELS, RelayBuilder};
use testkit::service_process::{ServiceProcess, run_to_exit};
use testkit::tls::TestCerts;

const WAIT: Duration = Duration::from_secs(10);

fn tls_redis(certs: &TestCerts, mutual: bool) -> RedisServer {
    RedisServer::start_configured(RedisConfig {
        tls: Some(RedisTls::new(certs, mutual)),
        ..RedisConfig::default()
    })
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

/// `/readyz` once it answers 503 with the last connection error.
async fn unready_with_error(process: &ServiceProcess) -> serde_json::Value {
    testkit::eventually(WAIT, "/readyz to answer 503 with last_error", || async {
        let response = process.get("/readyz").await;
        let status = response.status();
        let body: serde_json::Value = response.json().await.ok()?;
        (status == 503 && body["last_error"].is_string()).then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_work_through_a_redis_that_requires_client_certificates() {
    let certs = TestCerts::generate();
    let redis = tls_redis(&certs, true);
    let relay = RelayBuilder::new(redis.url())
        .channels(ENVELOPE_CHANNELS)
        .env("REDIS__TLS__CA_FILE", path(&certs.ca()))
        .env("REDIS__TLS__CERT_FILE", path(&certs.client_cert()))
        .env("REDIS__TLS__KEY_FILE", path(&certs.client_key()))
        .start();
    relay.wait_ready().await;
    let db = TestDb::new(DbKind::Sqlite).await;
    let api_process = ForecastBuilder::new(&db, redis.url())
        .env("REDIS__TLS__CA_FILE", path(&certs.ca()))
        .env("REDIS__TLS__CERT_FILE", path(&certs.client_cert()))
        .env("REDIS__TLS__KEY_FILE", path(&certs.client_key()))
        .start();
    let api = testkit::forecast_process::Api::new(&api_process);

    let mut stream = relay.open_stream("?channel=weatherforecast.*&channel=raw.*").await;
    let created = api.create("2026-12-04", 3, "Frost").await;
    let event = stream.next_event(WAIT).await;
    assert_eq!(event.event.as_deref(), Some("weatherforecast.created"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(event.data.as_deref().unwrap()).unwrap(),
        testkit::forecast_process::event_data(&created, testkit::forecast_process::ADMIN_ACTOR)
    );
    assert!(event.id.is_some(), "envelope events carry their log id");

    // Raw channels travel on the subscription, over TLS too.
    assert_eq!(redis.publish("raw.note", "over tls"), 1);
    let raw = stream.next_event(WAIT).await;
    assert_eq!((raw.event.as_deref(), raw.data.as_deref()), (Some("raw.note"), Some("over tls")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_certificate_from_another_ca_is_refused_and_readyz_says_why() {
    let certs = TestCerts::generate();
    let other = TestCerts::generate();
    let redis = tls_redis(&certs, false);
    let relay = RelayBuilder::new(redis.url())
        .channels(ENVELOPE_CHANNELS)
        .env("REDIS__TLS__CA_FILE", path(&other.ca()))
        .env("REDIS__UNREADY_AFTER_SECS", 1)
        .start();
    let body = unready_with_error(&relay).await;
    let error = body["last_error"].as_str().unwrap_or_default().to_owned();
    // Whichever connection (log tail or subscription) failed first is named.
    assert!(error.contains("invalid peer certificate"), "{body}");
    assert!(body["reason"].as_str().unwrap_or_default().contains("probe"), "{body}");
    let logged = relay.log_events("redis log tail down");
    assert!(
        logged
            .iter()
            .any(|line| line["error"].as_str().is_some_and(|e| e.to_lowercase().contains("certificate"))),
        "the refusal is logged: {logged:?}"
    );
    // Still running and still trying: a refused certificate is not a configuration error.
    assert_eq!(relay.get("/healthz").await.status(), 200);

    let db = TestDb::new(DbKind::Sqlite).await;
    let api_process =
        ForecastBuilder::new(&db, redis.url()).env("REDIS__TLS__CA_FILE", path(&other.ca())).start();
    let api = testkit::forecast_process::Api::new(&api_process);
    api.create("2026-12-04", 1, "Cold").await;
    testkit::eventually(WAIT, "the outbox to report the refused certificate", || async {
        api_process
            .log_events("outbox publishing failing; events wait in the outbox")
            .iter()
            .any(|line| line["error"].as_str().is_some_and(|e| e.to_lowercase().contains("certificate")))
            .then_some(())
    })
    .await;
    assert_eq!(api_process.metric("forecast_api_outbox_pending").await, 1.0, "the event waits in the outbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_by_a_mutual_tls_redis() {
    let certs = TestCerts::generate();
    let redis = tls_redis(&certs, true);
    let relay = RelayBuilder::new(redis.url())
        .channels(ENVELOPE_CHANNELS)
        .env("REDIS__TLS__CA_FILE", path(&certs.ca()))
        .env("REDIS__UNREADY_AFTER_SECS", 1)
        .start();
    let body = unready_with_error(&relay).await;
    assert!(body["last_error"].as_str().is_some_and(|error| error.contains("cannot")), "{body}");
    assert_eq!(relay.get("/healthz").await.status(), 200);
}

/// Without `tls.ca_file` the server is verified against the system's roots (which
/// `SSL_CERT_FILE` replaces here with the test CA, as an operator's trust store would hold it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ca_file_the_system_roots_verify_the_server() {
    let certs = TestCerts::generate();
    let redis = tls_redis(&certs, false);
    let trusted = RelayBuilder::new(redis.url())
        .channels(ENVELOPE_CHANNELS)
        .process_env("SSL_CERT_FILE", path(&certs.ca()))
        .start();
    trusted.wait_ready().await;
    let other = TestCerts::generate();
    let untrusted = RelayBuilder::new(redis.url())
        .channels(ENVELOPE_CHANNELS)
        .process_env("SSL_CERT_FILE", path(&other.ca()))
        .env("REDIS__UNREADY_AFTER_SECS", 1)
        .start();
    let body = unready_with_error(&untrusted).await;
    assert!(body["last_error"].as_str().unwrap_or_default().contains("invalid peer certificate"), "{body}");
}

/// Turning verification off works, and says so at every start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_verification_is_explicit_and_logged_loudly() {
    let certs = TestCerts::generate();
    let redis = tls_redis(&certs, false);
    // The system roots do not know the server's CA: only skipping verification connects.
    let other = TestCerts::generate();
    let relay = RelayBuilder::new(redis.url())
        .channels(ENVELOPE_CHANNELS)
        .process_env("SSL_CERT_FILE", path(&other.ca()))
        .env("REDIS__TLS__INSECURE_SKIP_VERIFY", true)
        .start();
    relay.wait_ready().await;
    let warned = relay.logs().iter().any(|line| {
        line.contains("\"WARN\"") && line.contains("insecure_skip_verify") && line.contains("NOT verified")
    });
    assert!(warned, "{:#?}", relay.logs());
}

#[test]
fn tls_settings_that_cannot_work_stop_both_services_with_status_2() {
    let missing = "/nonexistent/ca.pem";
    for (binary, prefix) in [("sse-relay", "SSE_RELAY"), ("forecast-api", "FORECAST_API")] {
        let url = format!("{prefix}__REDIS__URL");
        let ca = format!("{prefix}__REDIS__TLS__CA_FILE");
        let skip = format!("{prefix}__REDIS__TLS__INSECURE_SKIP_VERIFY");
        let (code, output) = run_to_exit(
            &testkit::workspace_binary(binary),
            &[],
            &[(url.as_str(), "rediss://127.0.0.1:6380"), (ca.as_str(), missing), (skip.as_str(), "true")],
        );
        assert_eq!(code, 2, "{binary}: {output}");
        assert!(
            output.contains("redis.tls.insecure_skip_verify: contradicts tls.ca_file"),
            "{binary}: {output}"
        );
        assert!(output.contains(&format!("redis.tls.ca_file: cannot read {missing}")), "{binary}: {output}");

        let (code, output) = run_to_exit(
            &testkit::workspace_binary(binary),
            &[],
            &[(url.as_str(), "redis://127.0.0.1:6380"), (ca.as_str(), missing)],
        );
        assert_eq!(code, 2, "{binary}: {output}");
        assert!(output.contains("redis.tls: is set but the connection is not TLS"), "{binary}: {output}");
    }
}

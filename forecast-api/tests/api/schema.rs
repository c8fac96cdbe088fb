//! The API survives schema-driven hostile testing: schemathesis, driven by `/openapi.json` with
//! a valid admin key, finds no 5xx and no response that contradicts the document.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use testkit::forecast_process::{ADMIN_KEY, DbKind, TestApi};

fn schemathesis() -> PathBuf {
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/schemathesis");
    if local.is_file() {
        return local;
    }
    testkit::require_program(
        "schemathesis",
        "run `scripts/ensure-deps.sh schemathesis` (installs it from PyPI)",
    )
}

on_both_databases!(schemathesis_finds_no_server_error_and_no_response_contradicting_the_schema);

async fn schemathesis_finds_no_server_error_and_no_response_contradicting_the_schema(db: DbKind) {
    // Its stateful runs sign in again and again: the limits on that have their own test.
    let TestApi { redis: _redis, db: _db, process, .. } = TestApi::with(db, |api| {
        api.env("AUTH__SIGN_IN_ATTEMPTS_PER_ACCOUNT", 1_000_000)
            .env("AUTH__SIGN_IN_ATTEMPTS_PER_ADDRESS", 1_000_000)
    })
    .await;
    let work_dir = tempfile::tempdir().unwrap();
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api/schemathesis.toml");
    let url = process.url("/openapi.json");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis())
            .arg("--config-file")
            .arg(&config)
            .args(["run", &url, "--checks", "all", "--max-examples", "40", "--seed", "7", "--no-color"])
            .args(["-H", &format!("Authorization: Bearer {ADMIN_KEY}")])
            .current_dir(work_dir.path())
            .output()
            .expect("run schemathesis")
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !process.logs().iter().any(|line| line.contains("\"level\":\"ERROR\"")),
        "no server error was logged"
    );
}

on_both_databases!(hostile_strings_are_stored_literally_or_refused);

async fn hostile_strings_are_stored_literally_or_refused(db: DbKind) {
    let TestApi { redis: _redis, db: _db, process: _process, api } = TestApi::start(db).await;
    let literal = [
        "'); DROP TABLE forecasts; --",
        "\" OR 1=1 --",
        "Robert'); DELETE FROM api_keys WHERE ('1'='1",
        "🌦️ Warm, 25 °C — ça va",
        "<script>alert(1)</script>",
        &"x".repeat(200),
        &"€".repeat(200),
    ];
    for summary in literal {
        let created = api.create("2026-11-23", 1, summary).await;
        let path = format!("/api/weatherforecast/{}", created["id"].as_str().unwrap());
        let stored: Value = api.get(&path).send().await.unwrap().json().await.unwrap();
        assert_eq!(stored["summary"], summary, "stored literally");
    }
    let page: Value =
        api.get("/api/weatherforecast?pageSize=100").send().await.unwrap().json().await.unwrap();
    assert_eq!(page["totalCount"], literal.len(), "nothing else happened to the table");
    for (summary, temperature) in
        [(json!("x".repeat(201)), json!(1)), (json!("a\u{0}b"), json!(1)), (json!(1), json!("1'; --"))]
    {
        let response = api
            .post("/api/weatherforecast", ADMIN_KEY)
            .json(&json!({ "date": "2026-11-23", "temperatureC": temperature, "summary": summary }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }
}

use serde_json::{Value, json};

use testkit::forecast_process::{ADMIN_KEY, Api, DbKind, ForecastBuilder, TestApi, TestDb};
use testkit::redis_server::RedisServer;

on_both_databases!(mutations_need_a_key_with_the_right_scope_and_revoked_keys_stop_working);

async fn mutations_need_a_key_with_the_right_scope_and_revoked_keys_stop_working(db: DbKind) {
    let TestApi { redis: _redis, db: _db, process: _process, api } = TestApi::start(db).await;
    let forecast = json!({ "date": "2026-11-23", "temperatureC": 5 });

    let anonymous = api.http.post(api.url("/api/weatherforecast")).json(&forecast).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    assert_eq!(anonymous.headers()["content-type"], "application/problem+json");
    for bad in ["nope", "fk_0123456789ab_00", &format!("{ADMIN_KEY}x")] {
        let response = api.post("/api/weatherforecast", bad).json(&forecast).send().await.unwrap();
        assert_eq!(response.status(), 401, "key {bad:?}");
    }
    // Reading needs no key.
    assert_eq!(api.get("/api/weatherforecast").send().await.unwrap().status(), 200);

    // The admin creates a writer key; its secret is returned once.
    let response = api
        .post("/api/admin/apikeys", ADMIN_KEY)
        .json(&json!({ "name": "ci", "scopes": ["forecasts:write"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let writer = created["key"].as_str().unwrap().to_owned();
    let writer_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["scopes"], json!(["forecasts:write"]));

    // The writer can write (through either header), but not administer.
    let response = api.post("/api/weatherforecast", &writer).json(&forecast).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let response = api
        .http
        .post(api.url("/api/weatherforecast"))
        .header("x-api-key", &writer)
        .json(&forecast)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = api
        .post("/api/admin/apikeys", &writer)
        .json(&json!({ "name": "escalation", "scopes": ["admin"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("admin"));
    assert_eq!(api.post("/api/relay-token", &writer).send().await.unwrap().status(), 403);

    // Bad key requests are refused with reasons.
    let response = api
        .post("/api/admin/apikeys", ADMIN_KEY)
        .json(&json!({ "name": "ci", "scopes": ["root"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("root"), "{problem}");
    let response = api
        .post("/api/admin/apikeys", ADMIN_KEY)
        .json(&json!({ "name": "  ", "scopes": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["errors"]["name"].is_array() && problem["errors"]["scopes"].is_array(), "{problem}");

    // Revocation takes effect at once; revoking twice is 404.
    let path = format!("/api/admin/apikeys/{writer_id}");
    assert_eq!(api.delete(&path, ADMIN_KEY).send().await.unwrap().status(), 204);
    let response = api.post("/api/weatherforecast", &writer).json(&forecast).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.delete(&path, ADMIN_KEY).send().await.unwrap().status(), 404);
}

on_both_databases!(without_a_configured_key_one_admin_key_is_generated_once);

async fn without_a_configured_key_one_admin_key_is_generated_once(db: DbKind) {
    let redis = RedisServer::start();
    let db = TestDb::new(db).await;
    let first = ForecastBuilder::new(&db, redis.url()).env("AUTH__ADMIN_KEY", "").start();
    let printed: Vec<String> = first.stdout_lines();
    let line = testkit::eventually(std::time::Duration::from_secs(5), "the generated key on stdout", || {
        let lines = first.stdout_lines();
        async move { lines.into_iter().find(|line| line.contains("fk_")) }
    })
    .await;
    let key = line.split_whitespace().last().unwrap().to_owned();
    assert!(
        !first.logs().iter().any(|log| log.contains(&key)),
        "the key never reaches the logs: {printed:?}"
    );
    let api = Api::new(&first);
    let response = api
        .post("/api/weatherforecast", &key)
        .json(&json!({ "date": "2026-11-23", "temperatureC": 5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    drop(first);

    let second = ForecastBuilder::new(&db, redis.url()).env("AUTH__ADMIN_KEY", "").start();
    testkit::eventually(std::time::Duration::from_secs(5), "the second instance to be ready", || async {
        (reqwest::get(second.url("/readyz")).await.ok()?.status() == 200).then_some(())
    })
    .await;
    assert!(second.stdout_lines().iter().all(|line| !line.contains("fk_")), "no second key is generated");
    let response = Api::new(&second)
        .post("/api/weatherforecast", &key)
        .json(&json!({ "date": "2026-11-24", "temperatureC": 6 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "the generated key still works after a restart");
}

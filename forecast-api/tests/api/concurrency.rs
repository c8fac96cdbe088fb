use serde_json::{Value, json};

use testkit::forecast_process::{ADMIN_KEY, DbKind, TestApi};

on_both_databases!(concurrent_updates_with_the_same_if_match_let_exactly_one_win);

async fn concurrent_updates_with_the_same_if_match_let_exactly_one_win(db: DbKind) {
    let TestApi { redis: _redis, db: _db, process: _process, api } = TestApi::start(db).await;
    let forecast = api.create("2026-11-23", 0, "Start").await;
    let path = format!("/api/weatherforecast/{}", forecast["id"].as_str().unwrap());

    let attempts = (1..=8).map(|i| {
        let api = api.clone();
        let path = path.clone();
        tokio::spawn(async move {
            api.put(&path, ADMIN_KEY)
                .header("if-match", "\"1\"")
                .json(&json!({ "date": "2026-11-23", "temperatureC": i }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    });
    let mut statuses = Vec::new();
    for attempt in attempts.collect::<Vec<_>>() {
        statuses.push(attempt.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 412, 412, 412, 412, 412, 412, 412]);

    // Without If-Match every update applies, each bumping the version once.
    let blind = (0..6).map(|i| {
        let api = api.clone();
        let path = path.clone();
        tokio::spawn(async move {
            api.put(&path, ADMIN_KEY)
                .json(&json!({ "date": "2026-11-23", "temperatureC": i }))
                .send()
                .await
                .unwrap()
                .status()
        })
    });
    for update in blind.collect::<Vec<_>>() {
        assert_eq!(update.await.unwrap(), 200);
    }
    let response = api.get(&path).send().await.unwrap();
    assert_eq!(response.headers()["etag"], "\"8\"");
    let _: Value = response.json().await.unwrap();
}

use serde_json::{Value, json};

use testkit::forecast_process::{ADMIN_KEY, Api, DbKind, ForecastBuilder, TestApi, TestDb};
use testkit::redis_server::RedisServer;

on_both_databases!(forecasts_can_be_created_read_listed_updated_and_deleted);

async fn forecasts_can_be_created_read_listed_updated_and_deleted(db: DbKind) {
    let TestApi { redis: _redis, db: _db, process: _process, api } = TestApi::start(db).await;

    let response = api
        .post("/api/weatherforecast", ADMIN_KEY)
        .json(&json!({ "date": "2026-11-23", "temperatureC": 25, "summary": "Warm" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/weatherforecast/{id}"));
    assert_eq!(created["date"], "2026-11-23");
    assert_eq!(created["temperatureC"], 25);
    assert_eq!(created["temperatureF"], 76);
    assert_eq!(created["summary"], "Warm");
    assert_eq!(created["createdAt"], created["updatedAt"]);

    let response = api.get(&location).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"1\"");
    assert_eq!(response.json::<Value>().await.unwrap(), created);

    // Listing is ordered by date and paginated.
    api.create("2026-11-21", -5, "Freezing").await;
    api.create("2026-11-22", 10, "Cool").await;
    let page: Value =
        api.get("/api/weatherforecast?page=1&pageSize=2").send().await.unwrap().json().await.unwrap();
    assert_eq!(page["totalCount"], 3);
    assert_eq!(page["totalPages"], 2);
    let dates: Vec<_> = page["items"].as_array().unwrap().iter().map(|f| f["date"].clone()).collect();
    assert_eq!(dates, [json!("2026-11-21"), json!("2026-11-22")]);
    let page: Value =
        api.get("/api/weatherforecast?page=2&pageSize=2").send().await.unwrap().json().await.unwrap();
    assert_eq!(page["items"][0]["id"], id);

    // Update with the current ETag, then a stale one.
    let response = api
        .put(&location, ADMIN_KEY)
        .header("if-match", "\"1\"")
        .json(&json!({ "date": "2026-11-23", "temperatureC": 30, "summary": null }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["temperatureC"], 30);
    assert_eq!(updated["temperatureF"], 85);
    assert_eq!(updated["summary"], Value::Null);
    assert_eq!(updated["createdAt"], created["createdAt"]);

    let stale = api
        .put(&location, ADMIN_KEY)
        .header("if-match", "\"1\"")
        .json(&json!({ "date": "2026-11-23", "temperatureC": 31 }))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    assert_eq!(stale.headers()["content-type"], "application/problem+json");
    assert!(stale.text().await.unwrap().contains("\\\"2\\\""), "the problem names the current ETag");

    // RFC 9110: a weak tag never matches, nor does an opaque one; any well-formed tag that
    // does not match is 412; a list matches when one of its tags does.
    for if_match in ["\"1\"", "W/\"2\"", "\"a\"", "\"1\", W/\"2\""] {
        let stale_delete =
            api.delete(&location, ADMIN_KEY).header("if-match", if_match).send().await.unwrap();
        assert_eq!(stale_delete.status(), 412, "{if_match}");
    }
    let deleted = api
        .delete(&location, ADMIN_KEY)
        .header("if-match", "\"7\"")
        .header("if-match", "W/\"1\", \"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(api.get(&location).send().await.unwrap().status(), 404);
    assert_eq!(api.delete(&location, ADMIN_KEY).send().await.unwrap().status(), 404);
    let missing_update = api
        .put(&location, ADMIN_KEY)
        .json(&json!({ "date": "2026-11-23", "temperatureC": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(missing_update.status(), 404);
}

on_both_databases!(data_survives_a_restart);

async fn data_survives_a_restart(db: DbKind) {
    let redis = RedisServer::start();
    let db = TestDb::new(db).await;
    let id = {
        let process = ForecastBuilder::new(&db, redis.url()).start();
        Api::new(&process).create("2026-01-01", 3, "Chilly").await["id"].as_str().unwrap().to_owned()
    };
    let process = ForecastBuilder::new(&db, redis.url()).start();
    let api = Api::new(&process);
    let forecast: Value =
        api.get(&format!("/api/weatherforecast/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(forecast["summary"], "Chilly");
}

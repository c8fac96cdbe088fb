use serde_json::{Value, json};

use testkit::event_tap::EventTap;
use testkit::forecast_process::{ADMIN_KEY, DbKind, TestApi};

on_both_databases!(each_mutation_appends_exactly_one_envelope_to_the_log);

async fn each_mutation_appends_exactly_one_envelope_to_the_log(db: DbKind) {
    let TestApi { redis, db: _db, process, api } = TestApi::start(db).await;
    let tap = EventTap::log(&redis).await;
    let channels_tap = EventTap::channels(&redis, &["weatherforecast.*", "admin.*"]).await;

    let response = api
        .post("/api/weatherforecast", ADMIN_KEY)
        .header("x-correlation-id", "corr-create")
        .header("x-relay-connection-id", "5f7d5ee5-cc0b-41aa-89f2-ac62592fcba3")
        .json(&json!({ "date": "2026-11-23", "temperatureC": 25, "summary": "Warm" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-correlation-id"], "corr-create");
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/api/weatherforecast/{id}");
    let updated: Value = api
        .put(&path, ADMIN_KEY)
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .json(&json!({ "date": "2026-11-23", "temperatureC": 26, "summary": "Warm" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api.delete(&path, ADMIN_KEY).send().await.unwrap().status(), 204);
    let key: Value = api
        .post("/api/admin/apikeys", ADMIN_KEY)
        .json(&json!({ "name": "dashboard", "scopes": ["forecasts:write"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key_id = key["id"].as_str().unwrap();
    let secret = key["key"].as_str().unwrap();
    assert_eq!(
        api.delete(&format!("/api/admin/apikeys/{key_id}"), ADMIN_KEY).send().await.unwrap().status(),
        204
    );
    // A last event marks the end: everything before it has been published by then.
    api.create("2026-12-01", 1, "Marker").await;

    let messages = tap.wait_for(6).await;
    let channels: Vec<&str> = messages.iter().map(|m| m.channel.as_str()).collect();
    assert_eq!(
        channels,
        [
            "weatherforecast.created",
            "weatherforecast.updated",
            "weatherforecast.deleted",
            "admin.apikey.created",
            "admin.apikey.revoked",
            "weatherforecast.created"
        ]
    );
    let envelopes: Vec<Value> = messages.iter().map(|m| m.json()).collect();

    // One log entry per event; the tap reads each as the relay does, the entry's id inside.
    let log: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg("sse:log").arg("-").arg("+").query(&mut redis.connection()).unwrap();
    assert_eq!(log.len(), 6);
    for ((log_id, fields), (envelope, message)) in log.iter().zip(envelopes.iter().zip(&messages)) {
        assert_eq!(envelope["id"].as_str(), Some(log_id.as_str()));
        let logged: Value = serde_json::from_str(&fields.iter().find(|(k, _)| k == "m").unwrap().1).unwrap();
        assert_eq!(fields.iter().find(|(k, _)| k == "ch").unwrap().1, message.channel);
        let mut published = envelope.clone();
        published.as_object_mut().unwrap().remove("id");
        assert_eq!(logged, published, "the log holds the envelope without its id");
        assert!(envelope["id"].as_str().is_some_and(|id| id.contains('-')));
        assert!(uuid::Uuid::parse_str(envelope["event_id"].as_str().unwrap()).is_ok());
        assert!(envelope["ts"].as_i64().unwrap() > 1_700_000_000_000_000, "ts is in microseconds");
    }

    // Each event's data says who caused it.
    let without_actor = |envelope: &Value| {
        let mut data = envelope["data"].clone();
        assert_eq!(data.as_object_mut().unwrap().remove("actor"), Some(json!("key:bootstrap")));
        data
    };
    assert_eq!(without_actor(&envelopes[0]), created);
    assert_eq!(envelopes[0]["correlation_id"], "corr-create");
    assert_eq!(envelopes[0]["exclude"], "5f7d5ee5-cc0b-41aa-89f2-ac62592fcba3");
    assert_eq!(without_actor(&envelopes[1]), updated);
    assert_eq!(envelopes[1]["correlation_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(envelopes[1].get("exclude").is_none());
    assert_eq!(without_actor(&envelopes[2]), json!({ "id": id }));
    assert_eq!(
        without_actor(&envelopes[3]),
        json!({ "id": key_id, "name": "dashboard", "scopes": ["forecasts:write"] })
    );
    assert_eq!(envelopes[4]["data"]["id"], key_id);
    assert!(!messages.iter().any(|m| m.payload.contains(secret)), "the key's secret is never published");

    // The outbox is empty and nothing was published twice; nothing went to the channels, which
    // only other subscribers than the relay would read (redis.publish_channels).
    process.wait_metric("forecast_api_outbox_pending", |pending| pending == 0.0).await;
    assert_eq!(tap.messages().len(), 6);
    assert!(channels_tap.messages().is_empty(), "{:?}", channels_tap.messages());
    assert_eq!(
        process.metric("forecast_api_events_published_total{channel=\"weatherforecast.created\"}").await,
        2.0
    );
    let audit: Vec<_> =
        process.logs().into_iter().filter(|line| line.contains("\"target\":\"audit\"")).collect();
    assert_eq!(audit.len(), 6, "one audit line per event");
    assert!(
        audit[0].contains("corr-create") && audit[0].contains(&id) && audit[0].contains("bootstrap"),
        "{}",
        audit[0]
    );
}

/// For subscribers other than the relay, events can also be published on their channels, with
/// the log id inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_publish_channels_each_event_is_also_published_on_its_channel_with_its_log_id() {
    let TestApi { redis, db: _db, process: _process, api } =
        TestApi::with(DbKind::Sqlite, |api| api.env("REDIS__PUBLISH_CHANNELS", true)).await;
    let log = EventTap::log(&redis).await;
    let channels = EventTap::channels(&redis, &["weatherforecast.*"]).await;
    let created = api.create("2026-12-04", 4, "Clear").await;
    let published = channels.wait_for(1).await;
    let logged = log.wait_for(1).await;
    assert_eq!(published[0].channel, "weatherforecast.created");
    assert_eq!(published[0].json(), logged[0].json(), "the same envelope, the log's id inside");
    assert_eq!(published[0].json()["data"]["summary"], created["summary"]);
}

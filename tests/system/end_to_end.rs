use std::time::Duration;

use serde_json::{Value, json};

use testkit::forecast_process::{ADMIN_ACTOR, ADMIN_KEY, Api, DbKind, ForecastBuilder, TestDb, event_data};
use testkit::relay_process::{ENVELOPE_CHANNELS, TestRelay};

const WAIT: Duration = Duration::from_secs(10);

/// The full path: forecast-api writes, its outbox publishes through the log, the relay streams;
/// a browser that was away while three changes happened gets all three, in order, on resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_was_away_gets_the_api_changes_in_order_on_resume() {
    let TestRelay { redis, relay } = TestRelay::with(|relay| relay.channels(ENVELOPE_CHANNELS)).await;
    let db = TestDb::new(DbKind::Sqlite).await;
    let api_process = ForecastBuilder::new(&db, redis.url()).start();
    let api = Api::new(&api_process);

    let mut stream = relay.open_stream("?channel=weatherforecast.*").await;
    let first = api.create("2026-11-23", 20, "Mild").await;
    let seen = stream.next_event(WAIT).await;
    assert_eq!(seen.event.as_deref(), Some("weatherforecast.created"));
    let data: Value = serde_json::from_str(seen.data.as_deref().unwrap()).unwrap();
    assert_eq!(data, event_data(&first, ADMIN_ACTOR), "the event's data is the forecast the API returned");
    let last_id = seen.id.unwrap();
    drop(stream);

    let created = api.create("2026-11-24", 25, "Warm").await;
    let path = format!("/api/weatherforecast/{}", created["id"].as_str().unwrap());
    let updated: Value = api
        .put(&path, ADMIN_KEY)
        .json(&json!({ "date": "2026-11-24", "temperatureC": 27, "summary": "Warmer" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api.delete(&path, ADMIN_KEY).send().await.unwrap().status(), 204);
    api_process
        .wait_metric("forecast_api_events_published_total{channel=\"weatherforecast.deleted\"}", |n| n == 1.0)
        .await;

    let (mut resumed, _) = relay.resume_stream("?channel=weatherforecast.*", Some(&last_id)).await;
    let mut events = Vec::new();
    for _ in 0..3 {
        let event = resumed.next_event(WAIT).await;
        events.push((event.event.unwrap(), serde_json::from_str::<Value>(&event.data.unwrap()).unwrap()));
    }
    assert_eq!(
        events,
        [
            ("weatherforecast.created".to_owned(), event_data(&created, ADMIN_ACTOR)),
            ("weatherforecast.updated".to_owned(), event_data(&updated, ADMIN_ACTOR)),
            ("weatherforecast.deleted".to_owned(), event_data(&json!({ "id": created["id"] }), ADMIN_ACTOR)),
        ]
    );
    assert!(relay.metric("sse_relay_replayed_events_total").await >= 3.0);
}

/// forecast-api's relay tokens and tickets open the relay's token channels (same secret).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_tickets_from_forecast_api_open_admin_channels_on_the_relay() {
    use testkit::sse_client::SseClient;

    let TestRelay { redis, relay } = TestRelay::with(|relay| relay.accepting_forecast_api_tokens()).await;
    let db = TestDb::new(DbKind::Sqlite).await;
    let api_process = ForecastBuilder::new(&db, redis.url()).start();
    let api = Api::new(&api_process);

    let token: Value = api.post("/api/relay-token", ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let mut by_token =
        SseClient::send(reqwest::Client::new().get(relay.url("/events?channel=admin.*")).bearer_auth(&token))
            .await;
    let ticket: Value = api.post("/api/relay-ticket", ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    let ticket_url =
        relay.url(&format!("/events?channel=admin.*&access_token={}", ticket["token"].as_str().unwrap()));
    let mut by_ticket = SseClient::connect(&ticket_url).await;
    assert_eq!(reqwest::get(&ticket_url).await.unwrap().status(), 401, "a ticket opens one stream only");
    assert_eq!(relay.get("/events?channel=admin.*").await.status(), 401, "no token, no admin events");

    let key: Value = api
        .post("/api/admin/apikeys", ADMIN_KEY)
        .json(&json!({ "name": "watched", "scopes": ["forecasts:write"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for stream in [&mut by_token, &mut by_ticket] {
        stream.next_event(WAIT).await;
        let event = stream.next_event(WAIT).await;
        assert_eq!(event.event.as_deref(), Some("admin.apikey.created"));
        let data: Value = serde_json::from_str(event.data.as_deref().unwrap()).unwrap();
        assert_eq!(data["id"], key["id"]);
    }
}

/// Both services started while Redis cannot be reached: they come up, the relay says it is not
/// ready and forecast-api keeps the events in its outbox; once Redis is reachable, every event
/// reaches the stream opened meanwhile, once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_started_before_redis_deliver_everything_once_it_is_reachable() {
    use testkit::proxy::WedgingProxy;
    use testkit::redis_server::RedisServer;
    use testkit::relay_process::RelayBuilder;

    let redis = RedisServer::start();
    let proxy = WedgingProxy::start(format!("127.0.0.1:{}", redis.port()).parse().unwrap()).await;
    proxy.go_down();
    let relay = RelayBuilder::new(proxy.url()).channels(ENVELOPE_CHANNELS).start();
    let db = TestDb::new(DbKind::Sqlite).await;
    let api_process = ForecastBuilder::new(&db, proxy.url()).start();
    let api = Api::new(&api_process);
    let body = relay.wait_unready().await;
    assert_eq!(body["redis"], "connecting", "{body}");
    assert_eq!(
        api_process.get("/readyz").await.status(),
        200,
        "forecast-api does not need Redis to take writes"
    );

    let mut stream = relay.open_stream("?channel=weatherforecast.*").await;
    let mut created = Vec::new();
    for day in 1..=3 {
        created.push(api.create(&format!("2026-12-0{day}"), 20 + day, "Mild").await);
    }
    api_process.wait_metric("forecast_api_outbox_pending", |pending| pending == 3.0).await;

    proxy.come_back();
    relay.wait_ready().await;
    for forecast in &created {
        let event = stream.next_event(WAIT).await;
        assert_eq!(event.event.as_deref(), Some("weatherforecast.created"));
        assert_eq!(
            serde_json::from_str::<Value>(event.data.as_deref().unwrap()).unwrap(),
            event_data(forecast, ADMIN_ACTOR)
        );
    }
    api_process.wait_metric("forecast_api_outbox_pending", |pending| pending == 0.0).await;
    // Nothing twice: the next event is the next change.
    let next = api.create("2026-12-04", 24, "Mild").await;
    let event = stream.next_event(WAIT).await;
    assert_eq!(
        serde_json::from_str::<Value>(event.data.as_deref().unwrap()).unwrap(),
        event_data(&next, ADMIN_ACTOR)
    );
}

/// One change followed through every hop by its `X-Correlation-Id`: forecast-api's answer,
/// its "event handled" and "event published" lines (with the log id and who made it), and the
/// relay's "event" line (same log id, the streams it went to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_is_traceable_from_the_api_to_the_relay_by_its_correlation_id() {
    let TestRelay { redis, relay } = TestRelay::with(|relay| relay.channels(ENVELOPE_CHANNELS)).await;
    let db = TestDb::new(DbKind::Sqlite).await;
    let api_process = ForecastBuilder::new(&db, redis.url()).start();
    let api = Api::new(&api_process);
    let mut streams = vec![
        relay.open_stream("?channel=weatherforecast.*").await,
        relay.open_stream("?channel=weatherforecast.created").await,
    ];
    let response = api
        .post("/api/weatherforecast", ADMIN_KEY)
        .header("X-Correlation-Id", "trace-me-42")
        .json(&json!({ "date": "2026-12-05", "temperatureC": 21, "summary": "Mild" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-correlation-id"], "trace-me-42");
    let mut ids = Vec::new();
    for stream in &mut streams {
        ids.push(stream.next_event(WAIT).await.id.unwrap());
    }

    let handled = traced(&api_process, "event handled").await;
    assert_eq!(handled.len(), 1, "{handled:?}");
    assert_eq!(handled[0]["channel"], "weatherforecast.created");
    assert!(handled[0]["handlers_ms"].as_f64().is_some(), "{handled:?}");
    let published = traced(&api_process, "event published").await;
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0]["log_id"], ids[0].as_str());
    assert_eq!(published[0]["event_id"], handled[0]["event_id"]);
    assert!(published[0]["actor"].as_str().is_some_and(|actor| !actor.is_empty()), "{published:?}");
    let delivered = traced(&relay, "event").await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["id"], ids[0].as_str());
    assert_eq!(delivered[0]["streams"], 2);
    assert_eq!(delivered[0]["channel"], "weatherforecast.created");
}

/// The lines `process` logged with `message` for correlation id `trace-me-42`, once there are
/// any: each hop writes its line as it finishes, which may be a moment after the event arrived.
async fn traced(process: &testkit::service_process::ServiceProcess, message: &str) -> Vec<Value> {
    testkit::eventually(WAIT, message, || async {
        let lines: Vec<Value> = process
            .log_events(message)
            .into_iter()
            .filter(|line| line["correlation_id"] == "trace-me-42")
            .collect();
        (!lines.is_empty()).then_some(lines)
    })
    .await
}

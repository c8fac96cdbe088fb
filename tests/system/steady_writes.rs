//! Steady writes through forecast-api while Redis changes under both services, and what every
//! client must have received by the end: each write once, in order, a `relay.reset` only where
//! allowed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use testkit::event_source::EventSource;
use testkit::eventually;
use testkit::forecast_process::{ADMIN_KEY, Api};
use testkit::relay_process::RelayProcess;
use testkit::service_process::ServiceProcess;
use testkit::sse_parser::SseEvent;

pub(crate) const STREAM: &str = "/events?channel=weatherforecast.*";

/// An event as clients see it: channel, forecast id and the write's summary (unique per write).
pub(crate) type EventKey = (String, String, String);

pub(crate) fn key_of_forecast(channel: &str, forecast: &Value) -> EventKey {
    let field = |name: &str| forecast[name].as_str().unwrap_or_default().to_owned();
    (channel.to_owned(), field("id"), field("summary"))
}

/// Writes made so far, as the events clients must receive, in order.
#[derive(Clone, Default)]
pub(crate) struct Writes(Arc<Mutex<Vec<EventKey>>>);

impl Writes {
    pub(crate) fn snapshot(&self) -> Vec<EventKey> {
        self.0.lock().unwrap().clone()
    }

    /// `count` writes, one every `pace`: creates, and updates of the forecast created last.
    pub(crate) async fn make(&self, api: &Api, count: usize, pace: Duration) {
        let mut interval = tokio::time::interval(pace);
        let mut last: Option<Value> = None;
        for i in 0..count {
            interval.tick().await;
            let (channel, forecast) = match (&last, i % 3) {
                (Some(previous), 1 | 2) => {
                    let path = format!("/api/weatherforecast/{}", previous["id"].as_str().unwrap());
                    let summary = format!("{} update {i}", self.0.lock().unwrap().len());
                    let body =
                        json!({ "date": "2026-12-04", "temperatureC": (i % 50) as i64, "summary": summary });
                    let response = api.put(&path, ADMIN_KEY).json(&body).send().await.unwrap();
                    assert_eq!(response.status(), 200, "writes succeed through the failover");
                    ("weatherforecast.updated", response.json::<Value>().await.unwrap())
                }
                _ => {
                    let summary = format!("{} create {i}", self.0.lock().unwrap().len());
                    ("weatherforecast.created", api.create("2026-12-04", (i % 50) as i64, &summary).await)
                }
            };
            self.0.lock().unwrap().push(key_of_forecast(channel, &forecast));
            last = Some(forecast);
        }
    }
}

pub(crate) fn key_of(event: &SseEvent) -> EventKey {
    let data: Value = serde_json::from_str(event.data.as_deref().unwrap_or("")).expect("event data is JSON");
    key_of_forecast(event.event.as_deref().unwrap_or(""), &data)
}

/// What a client received: runs of events between `relay.reset`s.
fn runs(events: &[SseEvent]) -> Vec<Vec<EventKey>> {
    let mut runs = vec![Vec::new()];
    for event in events {
        if event.event.as_deref() == Some("relay.reset") {
            runs.push(Vec::new());
        } else {
            runs.last_mut().unwrap().push(key_of(event));
        }
    }
    runs
}

/// The order events must arrive in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// As written.
    Total,
    /// As written within each channel (a log of several partitions orders each on its own).
    PerChannel,
}

/// Every event exactly once and in order; a `relay.reset` (allowed only when `resets_allowed`)
/// may skip events, as it tells the client to refetch its state, but never repeat or reorder
/// them, and the run after it is gap-free to the end.
pub(crate) fn assert_complete(
    client: &str,
    events: &[SseEvent],
    expected: &[EventKey],
    resets_allowed: bool,
    order: Order,
) {
    if order == Order::PerChannel {
        let channels: std::collections::BTreeSet<&String> =
            expected.iter().map(|(channel, ..)| channel).collect();
        for channel in channels {
            let of_channel: Vec<SseEvent> = events
                .iter()
                .filter(|event| matches!(event.event.as_deref(), Some(name) if name == channel || name == "relay.reset"))
                .cloned()
                .collect();
            let expected: Vec<EventKey> = expected.iter().filter(|key| &key.0 == channel).cloned().collect();
            assert_complete(
                &format!("{client}, {channel}"),
                &of_channel,
                &expected,
                resets_allowed,
                Order::Total,
            );
        }
        return;
    }
    let runs = runs(events);
    if !resets_allowed {
        assert_eq!(runs.len(), 1, "{client}: no relay.reset");
    }
    let all: Vec<&EventKey> = runs.iter().flatten().collect();
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "{client}: no event twice");
    let mut next = 0;
    for (i, run) in runs.iter().enumerate() {
        let Some(first) = run.first() else { continue };
        let start = expected
            .iter()
            .position(|key| key == first)
            .unwrap_or_else(|| panic!("{client}: unknown {first:?}"));
        assert!(start >= next, "{client}: run {i} goes back in time");
        if i == 0 {
            assert_eq!(start, 0, "{client}: the first event is the first write");
        }
        assert_eq!(
            run[..],
            expected[start..start + run.len()],
            "{client}: run {i} has no gap and keeps the order"
        );
        next = start + run.len();
    }
    assert_eq!(next, expected.len(), "{client}: everything up to the last write");
}

/// Brings every client to the last write. A client whose last id vanished with a lost write is
/// told to reset whenever it resumes, and is live again only once a later write reaches it: so
/// write, give every client a moment to end with that write, and write again until all do.
pub(crate) async fn settle(
    clients: &[EventSource],
    writes: &Writes,
    api: &Api,
    api_process: &ServiceProcess,
) -> Vec<EventKey> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        writes.make(api, 1, Duration::from_millis(1)).await;
        api_process.wait_metric("forecast_api_outbox_pending", |pending| pending == 0.0).await;
        let expected = writes.snapshot();
        let last = expected.last().cloned();
        let round = Instant::now() + Duration::from_secs(3);
        while Instant::now() < round {
            if clients.iter().all(|client| client.events().last().map(key_of_any) == Some(last.clone())) {
                return expected;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(Instant::now() < deadline, "clients did not all end with the last write within 40 s");
    }
}

/// [`key_of`], and `None` for a `relay.reset`.
fn key_of_any(event: &SseEvent) -> Option<EventKey> {
    (event.event.as_deref() != Some("relay.reset")).then(|| key_of(event))
}

pub(crate) async fn wait_for_clients(clients: &[EventSource], count: usize) {
    eventually(Duration::from_secs(40), "every client to receive every event", || async {
        clients.iter().all(|client| client.event_count() >= count).then_some(())
    })
    .await;
}

/// 50 clients connected to `relay` throughout and 50 that drop and resume every 250–740 ms,
/// once all are attached.
pub(crate) async fn attach_clients(relay: &RelayProcess) -> (Vec<EventSource>, Vec<EventSource>) {
    let http = reqwest::Client::new();
    let connected: Vec<EventSource> =
        (0..50).map(|_| EventSource::open(http.clone(), relay.url(STREAM))).collect();
    let resuming: Vec<EventSource> = (0..50)
        .map(|i| {
            EventSource::open_dropping(http.clone(), relay.url(STREAM), Duration::from_millis(250 + 10 * i))
        })
        .collect();
    eventually(Duration::from_secs(20), "every client attached", || async {
        connected.iter().chain(&resuming).all(|client| client.current().is_some()).then_some(())
    })
    .await;
    (connected, resuming)
}

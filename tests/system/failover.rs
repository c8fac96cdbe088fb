//! The topology test: several instances behind load balancers behave as one system, through
//! kills, drains and a dispatcher lost mid-batch.

use std::time::Duration;

use serde_json::json;

use super::topology::{
    EventKey, Options, Topology, assert_every_client_received, key_of_forecast, publish_forecasts,
};
use testkit::eventually;
use testkit::forecast_process::ADMIN_KEY;

/// Streams spread over both relays by the balancer; forecasts created through one API replica,
/// the other, and the API's balancer reach every client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_either_relay_receive_events_created_through_either_api_replica() {
    let topology = Topology::start(Options::default()).await;
    let clients = topology.clients(6).await;
    assert_eq!(topology.relays_in_use(&clients).len(), 2, "the balancer spreads streams over both relays");

    let mut expected = Vec::new();
    for i in 0..12 {
        let api = match i % 3 {
            0 => topology.api_replica(0),
            1 => topology.api_replica(1),
            _ => topology.api(),
        };
        let forecast =
            api.create("2026-12-01", i, &format!("through {}", ["a", "b", "balancer"][i as usize % 3])).await;
        expected.push(key_of_forecast("weatherforecast.created", &forecast));
    }
    assert_every_client_received(&clients, &expected).await;
}

/// SIGKILL of the relay a client is attached to, while forecasts keep coming: the client
/// reconnects through the balancer with Last-Event-ID, lands on the other relay and ends up
/// with every event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_relay_is_killed_resumes_on_the_other_relay_with_every_event_once() {
    let mut topology = Topology::start(Options::default()).await;
    let clients = topology.clients(10).await;
    let victim = topology.relay_index(&clients[0].current().unwrap().upstream);
    let survivor = 1 - victim;
    let on_victim: Vec<usize> = (0..clients.len())
        .filter(|&i| topology.relay_index(&clients[i].current().unwrap().upstream) == victim)
        .collect();

    let publisher = publish_forecasts(topology.api(), 80, Duration::from_millis(10));
    eventually(Duration::from_secs(20), "the first client to receive some events", || async {
        (clients[0].event_count() >= 15).then_some(())
    })
    .await;
    topology.relays[victim].signal("KILL");
    let seen_before_the_kill = clients[0].event_count();
    let expected = publisher.await.expect("publisher");
    assert!(seen_before_the_kill < expected.len(), "the relay died while events were still coming");

    assert_every_client_received(&clients, &expected).await;
    for &i in &on_victim {
        let attachments = clients[i].attachments();
        assert!(attachments.len() >= 2, "client {i} reconnected: {attachments:?}");
        let now_on = topology.relay_index(&attachments.last().unwrap().upstream);
        assert_eq!(now_on, survivor, "client {i} resumed on the surviving relay");
    }
    let status = tokio::task::block_in_place(|| topology.relays[victim].wait_exit(Duration::from_secs(5)));
    assert!(!status.success(), "the victim was killed, not stopped");
}

/// SIGTERM of a relay holding a few hundred streams: readiness off, then its streams end
/// spread over the drain window, and each client moves to the other relay (its listener is
/// closed, the balancer skips it) without losing an event of those published meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_relay_moves_its_clients_to_the_other_relay_spread_over_the_window_losing_nothing() {
    const WINDOW_MS: u64 = 3_000;
    let mut topology =
        Topology::start(Options { drain_delay_ms: 300, drain_window_ms: WINDOW_MS, ..Options::default() })
            .await;
    let clients = topology.clients(300).await;
    let victim = 0;
    let on_victim: Vec<usize> = (0..clients.len())
        .filter(|&i| topology.relay_index(&clients[i].current().unwrap().upstream) == victim)
        .collect();
    assert!(on_victim.len() >= 100, "least_conn gave the victim {} of 300 streams", on_victim.len());

    let publisher = publish_forecasts(topology.api(), 120, Duration::from_millis(40));
    eventually(Duration::from_secs(20), "events flowing", || async {
        (clients.iter().all(|c| c.event_count() >= 3)).then_some(())
    })
    .await;
    let signalled = tokio::time::Instant::now();
    topology.relays[victim].signal("TERM");
    let status = tokio::task::block_in_place(|| topology.relays[victim].wait_exit(Duration::from_secs(20)));
    assert!(status.success(), "the draining relay exits 0: {status}");
    let expected = publisher.await.expect("publisher");

    assert_every_client_received(&clients, &expected).await;
    let mut moved_after_ms = Vec::new();
    for &i in &on_victim {
        let attachments = clients[i].attachments();
        let ended = attachments[0].ended.expect("the drained stream ended");
        moved_after_ms.push(ended.duration_since(signalled).as_millis() as u64);
        let now_on = topology.relay_index(&attachments.last().unwrap().upstream);
        assert_eq!(now_on, 1, "client {i} moved to the other relay: {attachments:?}");
    }
    moved_after_ms.sort_unstable();
    let (first, last) = (moved_after_ms[0], *moved_after_ms.last().unwrap());
    let mut per_second = [0usize; 8];
    for ms in &moved_after_ms {
        per_second[(*ms / 1000).min(7) as usize] += 1;
    }
    println!(
        "{} streams moved between {first} ms and {last} ms after SIGTERM; per second: {per_second:?}",
        moved_after_ms.len()
    );
    assert!(last - first >= WINDOW_MS / 2, "moves spread over the window, not at once: {first}..{last} ms");
    let busiest = *per_second.iter().max().unwrap();
    assert!(busiest * 10 <= on_victim.len() * 6, "no second takes most of the moves: {per_second:?}");
}

/// SIGKILL of the API replica holding the outbox dispatcher while events wait in its batch:
/// the other replica takes the lock and publishes them, none lost, each once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_replica_publishing_the_outbox_is_killed_the_other_publishes_every_pending_event_in_order() {
    let mut topology = Topology::start(Options { wedgeable_first_api: true, ..Options::default() }).await;
    let clients = topology.clients(4).await;
    let db = sqlx::PgPool::connect(&topology.db_url).await.expect("connect to the test database");

    // Replica a's path to Redis goes silent; its dispatcher is stuck mid-batch, holding the lock.
    topology.first_api_redis.as_ref().unwrap().wedge_all();
    let mut expected: Vec<EventKey> = Vec::new();
    let replica_a = topology.api_replica(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for attempt in 0.. {
        // Its own write wakes replica a's dispatcher.
        let forecast = replica_a.create("2026-12-01", 1, &format!("wake {attempt}")).await;
        expected.push(key_of_forecast("weatherforecast.created", &forecast));
        if topology.outbox_lock_holder(&db, 500).await.as_deref() == Some("forecast-a") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "replica a never took the outbox lock");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One forecast changed many times, through both replicas: its events pile up.
    let api = topology.api();
    let forecast = api.create("2026-12-02", 0, "pending").await;
    expected.push(key_of_forecast("weatherforecast.created", &forecast));
    let path = format!("/api/weatherforecast/{}", forecast["id"].as_str().unwrap());
    for temperature in 1..=10 {
        let response = api
            .put(&path, ADMIN_KEY)
            .json(&json!({ "date": "2026-12-02", "temperatureC": temperature }))
            .send()
            .await
            .expect("PUT");
        assert_eq!(response.status(), 200);
        let updated: serde_json::Value = response.json().await.unwrap();
        expected.push(key_of_forecast("weatherforecast.updated", &updated));
    }
    let pending = topology.outbox_pending(&db).await;
    assert!(pending >= 11, "events wait in the outbox: {pending}");
    assert_eq!(topology.outbox_lock_holder(&db, 0).await.as_deref(), Some("forecast-a"), "still stuck");

    topology.apis[0].signal("KILL");
    eventually(Duration::from_secs(20), "replica b to empty the outbox", || async {
        (topology.outbox_pending(&db).await == 0).then_some(())
    })
    .await;
    assert_every_client_received(&clients, &expected).await;
    let status = tokio::task::block_in_place(|| topology.apis[0].wait_exit(Duration::from_secs(5)));
    assert!(!status.success());
}

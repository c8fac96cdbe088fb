//! Both services on a Redis Cluster (3 primaries with their replicas, on loopback) with one log
//! partition and with eight: envelope events delivered and resumed from the log, raw channels
//! heard from every node through one classic subscription that moves on when its node dies, and
//! a primary killed or a log partition's slot resharded under steady writes with 50 connected
//! and 50 resuming clients: nothing lost, nothing doubled.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::steady_writes::{Order, Writes, assert_complete, attach_clients, key_of, key_of_forecast, settle};
use protocol::partition::{Partitions, key_slot};
use testkit::event_source::EventSource;
use testkit::eventually;
use testkit::forecast_process::{Api, DbKind, ForecastBuilder, TestDb};
use testkit::redis_cluster::RedisCluster;
use testkit::relay_process::{ENVELOPE_CHANNELS, RelayBuilder, RelayProcess};
use testkit::service_process::ServiceProcess;
use testkit::sse_parser::SseEvent;

const WAIT: Duration = Duration::from_secs(15);

fn relay(cluster: &RedisCluster, channels: &str) -> RelayProcess {
    relay_with(cluster, channels, 1, |relay| relay)
}

fn relay_with(
    cluster: &RedisCluster,
    channels: &str,
    partitions: u32,
    configure: impl FnOnce(RelayBuilder) -> RelayBuilder,
) -> RelayProcess {
    // In cluster mode the URL's address is not used.
    let builder = RelayBuilder::new("redis://127.0.0.1:1")
        .channels(channels)
        .env("REDIS__CLUSTER__NODES", cluster.seed_nodes().join(","))
        .env("REDIS__LOG_PARTITIONS", partitions);
    configure(builder).start()
}

fn api(cluster: &RedisCluster, db: &TestDb, partitions: u32) -> ServiceProcess {
    ForecastBuilder::new(db, "redis://127.0.0.1:1")
        .env("REDIS__CLUSTER__NODES", cluster.seed_nodes().join(","))
        .env("REDIS__LOG_PARTITIONS", partitions)
        .env("REDIS__MIN_REPLICAS", 1)
        .env("REDIS__WAIT_TIMEOUT_MS", 200)
        .start()
}

/// The node index of `host:port`.
fn node_index(cluster: &RedisCluster, address: &str) -> usize {
    cluster
        .nodes()
        .iter()
        .position(|node| format!("127.0.0.1:{}", node.port()) == address)
        .unwrap_or_else(|| panic!("{address} is not a node of this cluster"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_deliver_and_resume_through_a_cluster_and_raw_channels_hear_every_node() {
    let mut cluster = RedisCluster::start(3, 1);
    let channels = format!("{ENVELOPE_CHANNELS}\n[[channels]]\npattern = \"alerts.*\"\nformat = \"raw\"\n");
    let relay = relay(&cluster, &channels);
    relay.wait_ready().await;
    let db = TestDb::new(DbKind::Sqlite).await;
    let api_process = api(&cluster, &db, 1);
    let api = Api::new(&api_process);

    let mut stream = relay.open_stream("?channel=weatherforecast.*&channel=alerts.*").await;
    let created = api.create("2026-12-05", 4, "in a cluster").await;
    let event = stream.next_event(WAIT).await;
    assert_eq!(key_of(&event), key_of_forecast("weatherforecast.created", &created));
    let first_id = event.id.expect("an envelope event carries its log id");

    // The log is one stream, its key tagged so that its deduplication keys share its slot.
    let log = Partitions::cluster(1).log_key("sse:log", 0);
    let length: usize =
        redis::cmd("XLEN").arg(&log).query(&mut cluster.client().get_connection().unwrap()).unwrap();
    assert_eq!(length, 1, "{log} holds the event");

    // Resume from the log.
    let updated = api.create("2026-12-05", 5, "after the first").await;
    let (mut resumed, _) = relay.resume_stream("?channel=weatherforecast.*", Some(&first_id)).await;
    assert_eq!(key_of(&resumed.next_event(WAIT).await), key_of_forecast("weatherforecast.created", &updated));
    assert_eq!(key_of(&stream.next_event(WAIT).await), key_of_forecast("weatherforecast.created", &updated));

    // A classic PUBLISH on any node, primary or replica, reaches the relay's one subscription.
    for (index, node) in cluster.nodes().iter().enumerate() {
        let payload = format!("from node {index}");
        let _: i64 =
            redis::cmd("PUBLISH").arg("alerts.fire").arg(&payload).query(&mut node.connection()).unwrap();
        let raw = stream.next_event(WAIT).await;
        assert_eq!(
            (raw.event.as_deref(), raw.data.as_deref()),
            (Some("alerts.fire"), Some(payload.as_str()))
        );
    }

    // The subscription's node dies: the relay subscribes on another node, and raw messages
    // flow again (a message published while it moves may be lost: raw channels have no log).
    let ready: Value = relay.get("/readyz").await.json().await.unwrap();
    let subscribed_on = node_index(&cluster, ready["node"].as_str().expect("the subscription's node"));
    cluster.kill(subscribed_on);
    let survivor = (subscribed_on + 1) % cluster.nodes().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let payload = format!("after the kill {attempt}");
        let _: i64 = redis::cmd("PUBLISH")
            .arg("alerts.fire")
            .arg(&payload)
            .query(&mut cluster.nodes()[survivor].connection())
            .unwrap();
        if let Ok(Some(raw)) = stream.try_next_block(Duration::from_millis(500)).await
            && raw.data.as_deref() == Some(payload.as_str())
        {
            break;
        }
        assert!(Instant::now() < deadline, "raw delivery did not resume on another node within 30 s");
    }
    eventually(Duration::from_secs(30), "the relay to name its new node", || async {
        let ready: Value = relay.get("/readyz").await.json().await.ok()?;
        let node = ready["node"].as_str()?.to_owned();
        (node != format!("127.0.0.1:{}", cluster.nodes()[subscribed_on].port())).then_some(())
    })
    .await;
    // Envelope delivery went on throughout.
    let later = api.create("2026-12-05", 6, "after the subscription moved").await;
    // Raw messages sent while the subscription moved may still come first.
    let event = loop {
        let event = stream.next_event(WAIT).await;
        if event.event.as_deref() == Some("weatherforecast.created") {
            break event;
        }
    };
    assert_eq!(key_of(&event), key_of_forecast("weatherforecast.created", &later));
}

/// A relay and forecast-api on `cluster`; 50 clients connected and 50 that drop and resume
/// every 250–740 ms, all attached.
struct Scenario {
    partitions: u32,
    relay: RelayProcess,
    _db: TestDb,
    api_process: ServiceProcess,
    api: Api,
    connected: Vec<EventSource>,
    resuming: Vec<EventSource>,
}

impl Scenario {
    async fn start(cluster: &RedisCluster, partitions: u32) -> Self {
        let relay = relay_with(cluster, ENVELOPE_CHANNELS, partitions, |relay| relay);
        relay.wait_ready().await;
        let db = TestDb::new(DbKind::Sqlite).await;
        let api_process = api(cluster, &db, partitions);
        let api = Api::new(&api_process);
        let (connected, resuming) = attach_clients(&relay).await;
        Self { partitions, relay, _db: db, api_process, api, connected, resuming }
    }

    /// 150 writes, one every 30 ms, with `change` made once 20 of them reached a client; then
    /// every client must end with every write once and in order.
    async fn write_through(self, change: impl FnOnce()) {
        let Self { partitions, relay, _db, api_process, api, connected, resuming } = self;
        // Order holds per channel; across partitions, events of different channels may pass
        // each other.
        let order = if partitions > 1 { Order::PerChannel } else { Order::Total };
        let writes = Writes::default();
        let writer = {
            let (writes, api) = (writes.clone(), api.clone());
            tokio::spawn(async move { writes.make(&api, 150, Duration::from_millis(30)).await })
        };
        eventually(Duration::from_secs(20), "some writes delivered", || async {
            (connected[0].event_count() >= 20).then_some(())
        })
        .await;
        let changed = Instant::now();
        // A kill or a reshard blocks this thread; the clients and the writer go on around it.
        tokio::task::block_in_place(change);
        let written_before = writes.snapshot().len();
        let first_after = eventually(Duration::from_secs(30), "a write after the change", || async {
            writes.snapshot().get(written_before).cloned()
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !connected[0].events().iter().any(|event| key_of(event) == first_after) {
            assert!(
                Instant::now() < deadline,
                "delivery did not go on within 30 s; the relay logged:\n{}\nforecast-api logged:\n{}",
                relay.logs().join("\n"),
                api_process.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("cluster change: delivery went on {} ms after it began", changed.elapsed().as_millis());

        writer.await.unwrap();
        let all: Vec<EventSource> = connected.into_iter().chain(resuming).collect();
        let expected = settle(&all, &writes, &api, &api_process).await;
        let (connected, resuming) = all.split_at(50);
        // As under Sentinel: a reset is allowed only where the relay saw the new primary's log
        // lack entries it had read (WAIT makes that rare).
        let diverged = relay.metric("sse_relay_log_divergences_total").await > 0.0;
        if relay.metric("sse_relay_resets_total").await > 0.0 {
            eprintln!("the relay logged:\n{}", relay.logs().join("\n"));
        }
        for (i, client) in connected.iter().enumerate() {
            assert_complete(&format!("connected client {i}"), &client.events(), &expected, false, order);
        }
        for (i, client) in resuming.iter().enumerate() {
            assert!(client.connections() > 2, "resuming client {i} dropped and resumed");
            assert_complete(&format!("resuming client {i}"), &client.events(), &expected, diverged, order);
        }
        assert_eq!(api_process.metric("forecast_api_outbox_pending").await, 0.0);
    }
}

/// The slot of the log partition that `weatherforecast.created` events go to.
fn log_slot(partitions: u32) -> u16 {
    let layout = Partitions::cluster(partitions);
    let partition = layout.of_channel(b"weatherforecast.created");
    key_slot(layout.log_key("sse:log", partition).as_bytes())
}

async fn kill_a_primary_of_the_log(partitions: u32) {
    // Two replicas each: after the failover the new primary still has one for WAIT.
    let mut cluster = RedisCluster::start(3, 2);
    let scenario = Scenario::start(&cluster, partitions).await;
    let old = cluster.primary_for_slot(log_slot(partitions));
    scenario
        .write_through(|| {
            eprintln!("before the kill:\n{}", cluster.describe());
            cluster.kill(old);
        })
        .await;
    let new = cluster.primary_for_slot(log_slot(partitions));
    assert_ne!(new, old, "a replica took the log's slot over");
}

async fn reshard_a_log_partitions_slot(partitions: u32) {
    let cluster = RedisCluster::start(3, 1);
    let slot = log_slot(partitions);
    let from = cluster.primary_for_slot(slot);
    let to = cluster.primary_for_slot((slot + 8_192) % 16_384);
    // Make the log's slot the lowest of its primary: a reshard of one slot then moves it.
    let below = slot - cluster.first_slot_of(from);
    if below > 0 {
        cluster.reshard(from, to, below);
    }
    assert_eq!(cluster.primary_for_slot(slot), from);
    let scenario = Scenario::start(&cluster, partitions).await;
    scenario.write_through(|| cluster.reshard(from, to, 1)).await;
    assert_eq!(cluster.primary_for_slot(slot), to, "the log's slot moved, keys and all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_of_the_log_killed_mid_stream_loses_no_event_and_doubles_none() {
    kill_a_primary_of_the_log(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logs_slot_resharded_mid_stream_loses_no_event_and_doubles_none() {
    reshard_a_log_partitions_slot(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_eight_partitions_a_primary_killed_mid_stream_loses_no_event_and_doubles_none() {
    kill_a_primary_of_the_log(8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_eight_partitions_a_live_partitions_slot_resharded_loses_no_event_and_doubles_none() {
    reshard_a_log_partitions_slot(8).await;
}

/// Events in all eight partitions: a stream gets each once and every channel in order, its
/// ids are positions across the partitions, and a client resuming from one of them — on the
/// relay that gave it, served from memory, or on another that reads the log — gets exactly
/// what followed it. A position of another layout is told to resynchronise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_eight_partitions_every_partition_is_delivered_and_resumed_exactly() {
    const PARTITIONS: u32 = 8;
    let cluster = RedisCluster::start(3, 1);
    let channels = "[[channels]]\npattern = \"part.*\"\nformat = \"envelope\"\n";
    let relay = relay_with(&cluster, channels, PARTITIONS, |relay| relay);
    // Without a resume window: every resume reads the log.
    let reading =
        relay_with(&cluster, channels, PARTITIONS, |relay| relay.env("REDIS__RESUME_WINDOW_ENTRIES", 0));
    relay.wait_ready().await;
    reading.wait_ready().await;
    // Two channels per partition.
    let layout = Partitions::cluster(PARTITIONS);
    let mut names: Vec<String> = Vec::new();
    for partition in 0..PARTITIONS {
        let found =
            (0..).map(|i| format!("part.{i}")).filter(|name| layout.of_channel(name.as_bytes()) == partition);
        names.extend(found.take(2));
    }
    let mut publisher = testkit::log_publisher::LogPublisher::connect_cluster(&cluster.client())
        .await
        .partitioned(PARTITIONS);
    let mut stream = relay.open_stream("?channel=part.*").await;
    let mut published = Vec::new();
    let mut publish = async |round: usize, published: &mut Vec<(String, String)>| {
        for name in &names {
            let data = format!("\"{round}\"");
            publisher.publish(name, &data, None).await.unwrap();
            published.push((name.clone(), data));
        }
    };
    for round in 0..5 {
        publish(round, &mut published).await;
    }
    let first: Vec<SseEvent> = collect(&mut stream, published.len()).await;
    assert_each_once_in_channel_order(&first, &published);
    let cut = &first[first.len() / 2];
    let position = cut.id.clone().expect("an envelope event has an id");
    assert_eq!(position.split('.').count(), PARTITIONS as usize + 1, "{position} names every partition");
    let after_cut: Vec<(String, String)> = first[first.len() / 2 + 1..].iter().map(key).collect();

    for round in 5..8 {
        publish(round, &mut published).await;
    }
    let rest = collect(&mut stream, published.len() - first.len()).await;
    let mut expected = after_cut;
    expected.extend(rest.iter().map(key));
    for (name, on) in [("the same relay, from memory", &relay), ("a relay reading the log", &reading)] {
        let (mut resumed, _) = on.resume_stream("?channel=part.*", Some(&position)).await;
        let got = collect(&mut resumed, expected.len()).await;
        assert_each_once_in_channel_order(&got, &expected);
        assert!(
            resumed.try_next_block(Duration::from_millis(300)).await.ok().flatten().is_none(),
            "{name}: nothing more"
        );
        // A client resuming from a frame of this resume misses nothing and gets nothing twice.
        let middle = got[got.len() / 2].id.clone().unwrap();
        let (mut again, _) = on.resume_stream("?channel=part.*", Some(&middle)).await;
        let tail: Vec<(String, String)> = got[got.len() / 2 + 1..].iter().map(key).collect();
        let got_again = collect(&mut again, tail.len()).await;
        assert_each_once_in_channel_order(&got_again, &tail);
    }
    assert!(relay.metric("sse_relay_resumes_total{from=\"window\"}").await >= 1.0);
    assert!(reading.metric("sse_relay_resumes_total{from=\"log\"}").await >= 2.0);

    let (mut other_layout, _) = relay.resume_stream("?channel=part.*", Some("1700000000000-0")).await;
    let reset = other_layout.next_event(WAIT).await;
    assert_eq!(reset.event.as_deref(), Some("relay.reset"), "{reset:?}");
    assert!(reset.data.unwrap().contains("a log of one partition; this relay's log has 8 partitions"));
}

fn key(event: &SseEvent) -> (String, String) {
    (event.event.clone().unwrap_or_default(), event.data.clone().unwrap_or_default())
}

async fn collect(stream: &mut testkit::sse_client::SseClient, count: usize) -> Vec<SseEvent> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        events.push(stream.next_event(WAIT).await);
    }
    events
}

/// `events` are `expected` (channel, data), each once, in `expected`'s order within each channel.
fn assert_each_once_in_channel_order(events: &[SseEvent], expected: &[(String, String)]) {
    let got: Vec<(String, String)> = events.iter().map(key).collect();
    let mut sorted_got = got.clone();
    sorted_got.sort();
    let mut sorted_expected = expected.to_vec();
    sorted_expected.sort();
    assert_eq!(sorted_got, sorted_expected, "each event once");
    let channels: std::collections::BTreeSet<&String> = expected.iter().map(|(channel, _)| channel).collect();
    for channel in channels {
        let of = |list: &[(String, String)]| -> Vec<String> {
            list.iter().filter(|(c, _)| c == channel).map(|(_, data)| data.clone()).collect()
        };
        assert_eq!(of(&got), of(expected), "{channel} in order");
    }
}

/// A raw channel opted into sharded pub/sub: `SPUBLISH` reaches the relay through the primary
/// of the channel's slot alone, and when `redis-cli --cluster reshard` moves that slot, the
/// relay subscribes on the new primary and delivery goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_raw_channel_follows_its_slot_to_another_primary() {
    const CHANNEL: &str = "orders.eu.1337";
    let cluster = RedisCluster::start(3, 1);
    let slot = key_slot(CHANNEL.as_bytes());
    let from = cluster.primary_for_slot(slot);
    let to = cluster.primary_for_slot((slot + 8_192) % 16_384);
    let below = slot - cluster.first_slot_of(from);
    if below > 0 {
        cluster.reshard(from, to, below);
    }
    let relay = relay(
        &cluster,
        &format!("[[channels]]\npattern = \"{CHANNEL}\"\nformat = \"raw\"\nsharded = true\n"),
    );
    relay.wait_ready().await;
    let mut stream = relay.open_stream(&format!("?channel={CHANNEL}")).await;
    let mut publisher = cluster.client().get_connection().unwrap();
    let mut spublish = |payload: &str| -> i64 {
        redis::cmd("SPUBLISH").arg(CHANNEL).arg(payload).query(&mut publisher).expect("SPUBLISH")
    };
    assert_eq!(
        spublish("before the move"),
        1,
        "the relay subscribed on the slot's primary; it logged:\n{}",
        relay.logs().join("\n")
    );
    let event = stream.next_event(WAIT).await;
    assert_eq!((event.event.as_deref(), event.data.as_deref()), (Some(CHANNEL), Some("before the move")));

    tokio::task::block_in_place(|| cluster.reshard(from, to, 1));
    assert_eq!(cluster.primary_for_slot(slot), to);
    // A message published while the relay moves its subscription may be lost (raw channels
    // have no log): publish until one arrives.
    let deadline = Instant::now() + Duration::from_secs(30);
    for attempt in 0.. {
        let payload = format!("after the move {attempt}");
        let receivers = spublish(&payload);
        if receivers == 1
            && let Ok(Some(event)) = stream.try_next_block(Duration::from_secs(1)).await
        {
            assert_eq!(event.data.as_deref(), Some(payload.as_str()));
            break;
        }
        assert!(Instant::now() < deadline, "the relay did not subscribe on the new primary within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(relay.logs().iter().any(|line| line.contains("sharded channel moved")), "the move is logged");
    // Delivery went on from the new primary, once per message.
    assert_eq!(spublish("settled"), 1);
    let event = stream.next_event(WAIT).await;
    assert_eq!(event.data.as_deref(), Some("settled"));
}

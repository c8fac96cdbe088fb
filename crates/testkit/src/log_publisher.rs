//! Publishes envelope events the way every publisher of this project does: through the Lua
//! script that appends them to the log.

use protocol::envelope::{OutgoingEnvelope, PUBLISH_SCRIPT, now_micros};
use protocol::partition::Partitions;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use serde_json::value::RawValue;

pub struct LogPublisher {
    connection: Connection,
    script: redis::Script,
    /// The log's keys: as they are on one Redis, tagged in a cluster.
    partitions: Partitions,
}

enum Connection {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl LogPublisher {
    pub async fn connect(redis_url: &str) -> Self {
        let client = redis::Client::open(redis_url).expect("redis url");
        let connection = client.get_multiplexed_async_connection().await.expect("connect publisher");
        Self {
            connection: Connection::Node(connection),
            script: redis::Script::new(PUBLISH_SCRIPT),
            partitions: Partitions::single(),
        }
    }

    /// A publisher into the one log partition of a cluster, through `client`.
    pub async fn connect_cluster(client: &redis::cluster::ClusterClient) -> Self {
        let connection = client.get_async_connection().await.expect("connect publisher");
        Self {
            connection: Connection::Cluster(connection),
            script: redis::Script::new(PUBLISH_SCRIPT),
            partitions: Partitions::cluster(1),
        }
    }

    /// Publishes into `count` partitions of a cluster, each event into its channel's.
    pub fn partitioned(mut self, count: u32) -> Self {
        self.partitions = Partitions::cluster(count);
        self
    }

    /// Publishes `data` (JSON text) on `channel`; returns the log id.
    pub async fn publish(
        &mut self,
        channel: &str,
        data: &str,
        exclude: Option<&str>,
    ) -> redis::RedisResult<String> {
        let event_id = uuid::Uuid::new_v4().to_string();
        self.publish_with_event_id(&event_id, channel, data, exclude)
            .await
            .map(|id| id.expect("not a duplicate"))
    }

    /// As `publish`, with a given event id; `None` when that event was already published.
    pub async fn publish_with_event_id(
        &mut self,
        event_id: &str,
        channel: &str,
        data: &str,
        exclude: Option<&str>,
    ) -> redis::RedisResult<Option<String>> {
        let data = RawValue::from_string(data.to_owned()).expect("data is JSON");
        let envelope = OutgoingEnvelope {
            event_id,
            event: None,
            data: &data,
            correlation_id: "test",
            exclude,
            ts: now_micros(),
        }
        .to_json();
        let partition = self.partitions.of_channel(channel.as_bytes());
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("{}{event_id}", self.partitions.dedup_prefix("sse:dedup:", partition)))
            .key(self.partitions.log_key("sse:log", partition))
            .arg(3600)
            .arg(100_000)
            .arg(channel)
            .arg(envelope)
            // The relay reads the log; nothing needs the channel.
            .arg("0");
        match &mut self.connection {
            Connection::Node(connection) => invocation.invoke_async(connection).await,
            Connection::Cluster(connection) => invocation.invoke_async(connection).await,
        }
    }
}

/// The log's ids for entries whose channel satisfies `wanted`, oldest first.
pub fn log_ids(redis: &crate::redis_server::RedisServer, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg("sse:log").arg("-").arg("+").query(&mut redis.connection()).expect("XRANGE");
    entries
        .into_iter()
        .filter(|(_, fields)| fields.iter().any(|(k, v)| k == "ch" && wanted(v)))
        .map(|(id, _)| id)
        .collect()
}

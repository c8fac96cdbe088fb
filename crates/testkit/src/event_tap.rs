//! What reached Redis, for assertions on what a publisher sent: the entries of the log (what
//! the relay delivers), or the messages published on channel patterns.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;

use crate::eventually;
use crate::redis_server::RedisServer;

#[derive(Debug, Clone)]
pub struct Published {
    pub channel: String,
    /// The envelope with its log id, as the relay reads it.
    pub payload: String,
}

impl Published {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload).expect("envelope is JSON")
    }
}

pub struct EventTap {
    messages: Arc<Mutex<Vec<Published>>>,
    task: tokio::task::JoinHandle<()>,
}

type Entry = (String, Vec<(String, String)>);
/// An `XREAD` reply: per stream, its entries; nil when the block time passed with none.
type ReadReply = Option<Vec<(String, Vec<Entry>)>>;

impl EventTap {
    /// Every entry of `sse:log`, from its start, as the envelope with its id.
    pub async fn log(redis: &RedisServer) -> Self {
        let mut connection =
            redis.client().get_multiplexed_async_connection().await.expect("connect to redis");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let messages = Arc::clone(&messages);
            tokio::spawn(async move {
                let mut cursor = "0-0".to_owned();
                loop {
                    let reply: redis::RedisResult<ReadReply> = redis::cmd("XREAD")
                        .arg("BLOCK")
                        .arg(200)
                        .arg("STREAMS")
                        .arg("sse:log")
                        .arg(&cursor)
                        .query_async(&mut connection)
                        .await;
                    let Ok(reply) = reply else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    for (id, fields) in reply.into_iter().flatten().flat_map(|(_, entries)| entries) {
                        let field =
                            |name: &str| fields.iter().find(|(key, _)| key == name).map(|(_, v)| v.clone());
                        let (Some(channel), Some(envelope)) = (field("ch"), field("m")) else { continue };
                        let payload = format!("{{\"id\":\"{id}\",{}", &envelope[1..]);
                        messages.lock().unwrap().push(Published { channel, payload });
                        cursor = id;
                    }
                }
            })
        };
        Self { messages, task }
    }

    /// Every message published on `patterns` from now on.
    pub async fn channels(redis: &RedisServer, patterns: &[&str]) -> Self {
        let mut pubsub = redis.client().get_async_pubsub().await.expect("connect pubsub");
        for pattern in patterns {
            pubsub.psubscribe(*pattern).await.expect("psubscribe");
        }
        let messages = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let messages = Arc::clone(&messages);
            tokio::spawn(async move {
                let mut stream = pubsub.into_on_message();
                while let Some(message) = stream.next().await {
                    messages.lock().unwrap().push(Published {
                        channel: message.get_channel_name().to_owned(),
                        payload: String::from_utf8_lossy(message.get_payload_bytes()).into_owned(),
                    });
                }
            })
        };
        Self { messages, task }
    }

    pub fn messages(&self) -> Vec<Published> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until at least `count` messages arrived; returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<Published> {
        eventually(Duration::from_secs(20), &format!("{count} published messages"), || async {
            let messages = self.messages();
            (messages.len() >= count).then_some(messages)
        })
        .await
    }
}

impl Drop for EventTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

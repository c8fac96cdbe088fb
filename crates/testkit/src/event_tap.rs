//! Listens on Redis channel patterns and keeps every message, for assertions on what a
//! publisher sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;

use crate::eventually;

#[derive(Debug, Clone)]
pub struct Published {
    pub channel: String,
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

impl EventTap {
    pub async fn start(redis_url: &str, patterns: &[&str]) -> Self {
        let client = redis::Client::open(redis_url).expect("redis url");
        let mut pubsub = client.get_async_pubsub().await.expect("connect pubsub");
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

//! A client that behaves like a browser's EventSource: it reconnects whenever its stream ends
//! or fails, sending `Last-Event-ID`, and keeps every event it received and every stream it
//! was attached to (the relay behind the balancer, when and for how long).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::nginx::UPSTREAM_HEADER;
use crate::sse_parser::{SseEvent, SseParser};

#[derive(Debug, Clone)]
pub struct Attachment {
    /// The relay that served this stream (as the balancer reported it).
    pub upstream: String,
    pub opened: Instant,
    pub ended: Option<Instant>,
}

#[derive(Default)]
struct Received {
    events: Vec<SseEvent>,
    attachments: Vec<Attachment>,
}

pub struct EventSource {
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventSource {
    /// Starts reading `url` (an `/events` URL) and reconnecting until dropped.
    pub fn open(http: reqwest::Client, url: String) -> Self {
        Self::start(http, url, None)
    }

    /// As [`EventSource::open`], and also drops its stream every `every` and reconnects at once
    /// with `Last-Event-ID`, as a page navigating or a flaky network would.
    pub fn open_dropping(http: reqwest::Client, url: String, every: Duration) -> Self {
        Self::start(http, url, Some(every))
    }

    fn start(http: reqwest::Client, url: String, drop_every: Option<Duration>) -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let task = tokio::spawn(read_forever(http, url, drop_every, Arc::clone(&received)));
        Self { received, task }
    }

    /// Streams opened so far.
    pub fn connections(&self) -> usize {
        self.received.lock().unwrap().attachments.len()
    }

    /// Events with data, `relay.connected` left out, in arrival order.
    pub fn events(&self) -> Vec<SseEvent> {
        self.received.lock().unwrap().events.clone()
    }

    pub fn event_count(&self) -> usize {
        self.received.lock().unwrap().events.len()
    }

    pub fn attachments(&self) -> Vec<Attachment> {
        self.received.lock().unwrap().attachments.clone()
    }

    /// The stream currently open, once `relay.connected` arrived on it.
    pub fn current(&self) -> Option<Attachment> {
        self.received.lock().unwrap().attachments.last().filter(|a| a.ended.is_none()).cloned()
    }
}

impl Drop for EventSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_forever(
    http: reqwest::Client,
    url: String,
    drop_every: Option<Duration>,
    received: Arc<Mutex<Received>>,
) {
    let mut last_event_id: Option<String> = None;
    loop {
        let mut request = http.get(&url).header("accept", "text/event-stream");
        if let Some(id) = &last_event_id {
            request = request.header("last-event-id", id);
        }
        let mut response = match request.send().await {
            Ok(response) if response.status() == 200 => response,
            // Refused (no relay left, or all full): try again soon, as EventSource would.
            _ => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // With retries nginx lists every upstream it tried: the last one answered.
        let upstream = response
            .headers()
            .get(UPSTREAM_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(", ").next())
            .unwrap_or("unknown")
            .to_owned();
        let mut parser = SseParser::default();
        let mut attached = false;
        let drop_at = drop_every.map(|every| Instant::now() + every);
        loop {
            let chunk = match drop_at {
                Some(at) => match tokio::time::timeout_at(at, response.chunk()).await {
                    Ok(chunk) => chunk,
                    Err(_) => break,
                },
                None => response.chunk().await,
            };
            let Ok(Some(chunk)) = chunk else { break };
            let mut received = received.lock().unwrap();
            for event in parser.feed(&chunk) {
                if event.event.as_deref() == Some("relay.connected") {
                    received.attachments.push(Attachment {
                        upstream: upstream.clone(),
                        opened: Instant::now(),
                        ended: None,
                    });
                    attached = true;
                    continue;
                }
                if event.data.is_none() {
                    continue;
                }
                if let Some(id) = &event.id {
                    last_event_id = Some(id.clone());
                }
                received.events.push(event);
            }
        }
        if attached && let Some(last) = received.lock().unwrap().attachments.last_mut() {
            last.ended = Some(Instant::now());
        }
    }
}

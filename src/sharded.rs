//! Sharded raw channels on a Redis Cluster: `SSUBSCRIBE` to the exact channel names of the
//! rules marked `sharded`, each on the primary that owns its slot (sharded pub/sub is not
//! broadcast over the cluster bus, so it scales with the primaries).
//!
//! One cluster connection (RESP3, messages pushed) per pod. When a channel's slot moves to
//! another primary, the old one ends the subscription (`sunsubscribe`); the session subscribes
//! that channel again, which the cluster routes to the slot's new owner. A node connection
//! lost ends the session and the supervisor ([`crate::source`]) starts a fresh one. Delivery is
//! proved as for classic subscriptions: a nonce `SPUBLISH`ed on this pod's sharded probe
//! channel must come back within `probe_timeout_ms`. Raw messages have no log: one published
//! while its channel moves can be lost.

use std::future::Future;
use std::sync::Arc;

use redis::{PushKind, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::channels::PROBE_CHANNEL_PREFIX;
use crate::health::DeliveryPath;
use crate::hub::ScanCache;
use crate::source::{Established, Probe, Source, SourceContext};
use crate::subscriber::SessionError;

pub struct ShardedSubscriber {
    ctx: Arc<SourceContext>,
    channels: Vec<String>,
    probe_channel: String,
}

impl ShardedSubscriber {
    /// A sharded subscription to `channels` and to the sharded probe channel of pod `pod_id`.
    pub fn new(ctx: Arc<SourceContext>, channels: Vec<String>, pod_id: &str) -> Self {
        Self { ctx, channels, probe_channel: format!("{PROBE_CHANNEL_PREFIX}{pod_id}.sharded") }
    }
}

impl Source for ShardedSubscriber {
    const PATH: DeliveryPath = DeliveryPath::Sharded;
    type Error = SessionError;

    fn context(&self) -> &Arc<SourceContext> {
        &self.ctx
    }

    fn session<'a>(
        &'a mut self,
        cancel: &'a CancellationToken,
        established: Established<'a>,
    ) -> impl Future<Output = Result<(), SessionError>> + Send + 'a {
        self.deliver(cancel, established)
    }
}

impl ShardedSubscriber {
    async fn deliver(
        &self,
        cancel: &CancellationToken,
        established: Established<'_>,
    ) -> Result<(), SessionError> {
        let timeout = self.ctx.settings.connect_timeout();
        let (pushes, mut messages) = mpsc::unbounded_channel();
        let connect = async {
            let client = self
                .ctx
                .target
                .cluster_client_builder(timeout)
                .map_err(|error| error.to_string())?
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(pushes)
                .build()
                .map_err(|error| error.to_string())?;
            client.get_async_connection().await.map_err(|error| error.to_string())
        };
        let mut connection = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| SessionError::Connect(format!("timed out after {} ms", timeout.as_millis())))?
            .map_err(SessionError::Connect)?;
        let subscribe = async {
            // One channel at a time: each is routed to the primary of its own slot.
            for channel in self.channels.iter().chain([&self.probe_channel]) {
                connection.ssubscribe(channel).await?;
            }
            Ok::<_, redis::RedisError>(())
        };
        tokio::time::timeout(timeout, subscribe)
            .await
            .map_err(|_| SessionError::Subscribe(format!("timed out after {} ms", timeout.as_millis())))?
            .map_err(|error| SessionError::Subscribe(error.to_string()))?;

        established.now();
        tracing::info!(
            channels = ?self.channels,
            probe_channel = %self.probe_channel,
            "redis sharded channels subscribed"
        );

        let mut scans = ScanCache::new();
        let mut probe = Probe::new(self.ctx.settings.probe_timeout());
        let mut probe_tick = tokio::time::interval(self.ctx.settings.probe_interval());
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let probe_deadline = tokio::time::sleep(std::time::Duration::ZERO);
        tokio::pin!(probe_deadline);

        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                push = messages.recv() => {
                    let Some(push) = push else { return Err(SessionError::Closed) };
                    let started = Instant::now();
                    match push.kind {
                        PushKind::SMessage => self.handle(&push.data, &mut probe, &mut scans),
                        PushKind::SUnsubscribe => {
                            // The slot moved: subscribe again, on its new owner.
                            let Some(channel) = push.data.first().and_then(bytes) else { continue };
                            let channel = String::from_utf8_lossy(channel).into_owned();
                            tracing::info!(channel = %channel, "sharded channel moved; subscribing on its new primary");
                            tokio::time::timeout(timeout, connection.ssubscribe(&channel))
                                .await
                                .map_err(|_| SessionError::Subscribe(format!("timed out after {} ms", timeout.as_millis())))?
                                .map_err(|error| SessionError::Subscribe(error.to_string()))?;
                        }
                        PushKind::Disconnection => return Err(SessionError::Closed),
                        _ => {}
                    }
                    probe.busy(started.elapsed());
                }
                _ = probe_tick.tick(), if !probe.is_pending() => {
                    let nonce = probe.start();
                    probe_deadline.as_mut().reset(probe.deadline().expect("a probe was started"));
                    let mut connection = connection.clone();
                    let mut publish = redis::cmd("SPUBLISH");
                    publish.arg(&self.probe_channel).arg(nonce.to_string());
                    tokio::spawn(async move {
                        if let Err(error) = publish.query_async::<i64>(&mut connection).await {
                            tracing::debug!(error = %error, "sharded probe publish failed");
                        }
                    });
                }
                _ = &mut probe_deadline, if probe.is_pending() => {
                    match probe.deadline() {
                        Some(deadline) if deadline > Instant::now() => probe_deadline.as_mut().reset(deadline),
                        _ => {
                            self.ctx.metrics.probe_failures.inc();
                            return Err(SessionError::Wedged(probe.timeout().as_millis()));
                        }
                    }
                }
            }
        }
    }

    /// An `smessage` push: `[channel, payload]`.
    fn handle(&self, data: &[Value], probe: &mut Probe, scans: &mut ScanCache) {
        let (Some(channel), Some(payload)) = (data.first().and_then(bytes), data.get(1).and_then(bytes))
        else {
            return;
        };
        if channel == self.probe_channel.as_bytes() {
            self.ctx.probe_echoed(DeliveryPath::Sharded, payload, probe);
            return;
        }
        // Subscribed by exact name: the name is the rule's pattern.
        let Some(rule) = self.ctx.rules.accept(channel, channel) else { return };
        self.ctx.deliver_subscribed(rule, channel, payload, scans);
    }
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

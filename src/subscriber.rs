//! Raw channels: one PSUBSCRIBE connection per pod, supervised.
//!
//! Raw messages (any publisher's plain `PUBLISH`) are not logged: they are delivered as they
//! arrive and cannot be replayed. Envelope channels are read from the log instead
//! ([`crate::tail`]); only a relay without a log (`redis.log_stream = ""`) subscribes to them,
//! and delivers them without ids.
//!
//! The supervisor connects (to the node [`RedisTarget`] names now), subscribes the patterns
//! plus this pod's probe channel, forwards messages to the hub, and proves delivery by
//! publishing a nonce on the probe channel (through the command connection) that must come
//! back on the subscription. When the connection ends, fails, or goes silent (a probe not
//! echoed in time: a wedged connection keeps its socket open but delivers nothing), it marks
//! delivery lost, backs off with jitter and starts again, until cancelled. Clients stay
//! connected throughout: only new events pause.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::channels::{Access, ChannelRules, PROBE_CHANNEL_PREFIX};
use crate::commands::SharedConnection;
use crate::health::{DeliveryPath, Health};
use crate::hub::{Hub, QueuedFrame};
use crate::metrics::RelayMetrics;
use crate::settings::RedisSettings;
use protocol::message::{DropReason, decode};
use service::backoff::Backoff;
use service::redis_target::RedisTarget;

pub struct Subscriber {
    target: Arc<RedisTarget>,
    commands: Arc<SharedConnection>,
    settings: RedisSettings,
    rules: Arc<ChannelRules>,
    patterns: Vec<String>,
    probe_channel: String,
    max_message_bytes: usize,
    hub: Arc<Hub>,
    health: Arc<Health>,
    metrics: RelayMetrics,
}

/// Why a subscription session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect to Redis: {0}")]
    Connect(String),
    #[error("cannot subscribe: {0}")]
    Subscribe(String),
    #[error("the Redis connection closed")]
    Closed,
    #[error("probe not echoed within {0} ms: the subscription is silent")]
    Wedged(u128),
}

impl Subscriber {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: Arc<RedisTarget>,
        commands: Arc<SharedConnection>,
        settings: RedisSettings,
        rules: Arc<ChannelRules>,
        patterns: Vec<String>,
        pod_id: &str,
        max_message_bytes: usize,
        hub: Arc<Hub>,
        health: Arc<Health>,
        metrics: RelayMetrics,
    ) -> Self {
        Self {
            target,
            commands,
            settings,
            rules,
            patterns,
            probe_channel: format!("{PROBE_CHANNEL_PREFIX}{pod_id}"),
            max_message_bytes,
            hub,
            health,
            metrics,
        }
    }

    /// Keeps a subscription alive until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(self.settings.backoff_initial(), self.settings.backoff_max());
        let mut sessions = 0u64;
        let mut failed_attempts = 0u64;
        loop {
            let sessions_before = sessions;
            let result = tokio::select! {
                _ = cancel.cancelled() => break,
                result = self.session(&cancel, &mut backoff, &mut sessions) => result,
            };
            let Err(error) = result else { break };
            self.health.delivery_lost(DeliveryPath::Subscription, error.to_string());
            let delay = backoff.next_delay();
            // One warning per state change (a working subscription lost, or the first attempt
            // failing); further failed attempts of the same outage are logged at debug level.
            if sessions != sessions_before || failed_attempts == 0 {
                failed_attempts = 0;
                tracing::warn!(
                    redis = %self.target.describe(),
                    error = %error,
                    retry_in_ms = delay.as_millis() as u64,
                    "redis subscription down"
                );
            } else {
                tracing::debug!(
                    error = %error,
                    attempt = failed_attempts,
                    retry_in_ms = delay.as_millis() as u64,
                    "redis reconnect failed"
                );
            }
            failed_attempts += 1;
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        tracing::info!("redis subscriber stopped");
    }

    async fn session(
        &self,
        cancel: &CancellationToken,
        backoff: &mut Backoff,
        sessions: &mut u64,
    ) -> Result<(), SessionError> {
        let timeout = self.settings.connect_timeout();
        let connect = async {
            let resolved = self.target.client().await.map_err(|error| error.to_string())?;
            let pubsub = resolved.client.get_async_pubsub().await.map_err(|error| error.to_string())?;
            Ok::<_, String>((pubsub, resolved.address))
        };
        let (mut pubsub, address) = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| SessionError::Connect(format!("timed out after {} ms", timeout.as_millis())))?
            .map_err(SessionError::Connect)?;
        let subscribe = async {
            pubsub.psubscribe(&self.patterns).await?;
            pubsub.subscribe(&self.probe_channel).await
        };
        tokio::time::timeout(timeout, subscribe)
            .await
            .map_err(|_| SessionError::Subscribe(format!("timed out after {} ms", timeout.as_millis())))?
            .map_err(|error| SessionError::Subscribe(error.to_string()))?;
        // The sink must outlive the stream: it owns the connection's write half.
        let (_sink, mut messages) = pubsub.split();

        *sessions += 1;
        if *sessions > 1 {
            self.metrics.redis_reconnects.inc();
        }
        self.health.connected(DeliveryPath::Subscription);
        backoff.reset();
        tracing::info!(
            redis.node = %address,
            patterns = ?self.patterns,
            probe_channel = %self.probe_channel,
            "redis subscribed"
        );

        let probe_timeout = self.settings.probe_timeout();
        let mut probe_tick = tokio::time::interval(self.settings.probe_interval());
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let probe_deadline = tokio::time::sleep(std::time::Duration::ZERO);
        tokio::pin!(probe_deadline);
        let mut pending: Option<(u64, Instant)> = None;

        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                message = messages.next() => {
                    let Some(message) = message else { return Err(SessionError::Closed) };
                    self.handle(message, &mut pending);
                }
                _ = probe_tick.tick(), if pending.is_none() => {
                    let nonce = rand::random::<u64>();
                    let sent_at = Instant::now();
                    pending = Some((nonce, sent_at));
                    probe_deadline.as_mut().reset(sent_at + probe_timeout);
                    let commands = Arc::clone(&self.commands);
                    let mut publish = redis::cmd("PUBLISH");
                    publish.arg(&self.probe_channel).arg(nonce.to_string());
                    tokio::spawn(async move {
                        if let Err(error) = commands.query::<i64>(publish).await {
                            tracing::debug!(error = %error, "probe publish failed");
                        }
                    });
                }
                _ = &mut probe_deadline, if pending.is_some() => {
                    self.metrics.probe_failures.inc();
                    return Err(SessionError::Wedged(probe_timeout.as_millis()));
                }
            }
        }
    }

    fn handle(&self, message: redis::Msg, pending: &mut Option<(u64, Instant)>) {
        let Ok(channel) = message.get_channel::<Vec<u8>>() else { return };
        let pattern = message.get_pattern::<Option<Vec<u8>>>().ok().flatten();
        let Some(pattern) = pattern else {
            // Plain SUBSCRIBE is used only for this pod's probe channel.
            if channel == self.probe_channel.as_bytes() {
                self.probe_echoed(message.get_payload_bytes(), pending);
            }
            return;
        };
        if channel.starts_with(PROBE_CHANNEL_PREFIX.as_bytes()) {
            return;
        }
        // Only the governing rule's own pattern delivers: a channel that an envelope rule
        // governs is read from the log, whatever raw pattern also matches it.
        let Some(rule) = self.rules.accept(&pattern, &channel) else { return };
        self.metrics.events_received.inc();
        match decode(rule.format, &channel, message.get_payload_bytes(), None, self.max_message_bytes) {
            Ok(decoded) => {
                self.metrics.observe_latency(decoded.published_micros);
                let frame = QueuedFrame::new(None, decoded.frame);
                self.hub.publish(&channel, rule.access == Access::Token, &frame, decoded.exclude);
            }
            Err(reason) => self.drop_message(&channel, reason),
        }
    }

    fn drop_message(&self, channel: &[u8], reason: DropReason) {
        self.metrics.dropped(reason);
        // Debug level: a misbehaving publisher must not flood the logs; the metric counts it.
        let reason: &str = reason.into();
        tracing::debug!(channel = %String::from_utf8_lossy(channel).escape_debug(), reason, "message dropped");
    }

    fn probe_echoed(&self, payload: &[u8], pending: &mut Option<(u64, Instant)>) {
        let Some((nonce, sent_at)) = *pending else {
            return;
        };
        let echoed = std::str::from_utf8(payload).ok().and_then(|text| text.parse::<u64>().ok());
        if echoed == Some(nonce) {
            *pending = None;
            self.metrics.probe_rtt.observe(sent_at.elapsed().as_secs_f64());
            self.health.delivery_verified(DeliveryPath::Subscription);
        }
    }
}

//! The Redis side: one PSUBSCRIBE connection per pod, supervised.
//!
//! The supervisor connects, subscribes every configured pattern plus this pod's probe channel,
//! fills the gap since the last event it saw from the log (when a subscription comes back after
//! a loss, the events published meanwhile are delivered first, in order, without duplicates),
//! forwards messages to the hub, and proves delivery by publishing a nonce on the probe channel
//! (through a second connection) that must come back on the subscription. When the connection
//! ends, fails, or goes silent (a probe not echoed in time: a wedged connection keeps its socket
//! open but delivers nothing), it marks delivery lost, backs off with jitter and starts again,
//! until cancelled. Clients stay connected throughout: only new events pause.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::channels::{Access, ChannelRules, PROBE_CHANNEL_PREFIX};
use crate::health::Health;
use crate::hub::{Hub, QueuedFrame};
use crate::log::{LogError, LogReader, PAGE_SIZE, ResumePoint};
use crate::metrics::RelayMetrics;
use crate::settings::RedisSettings;
use protocol::log_id::StreamId;
use protocol::message::{DropReason, decode};
use protocol::sse::reset_frame;
use service::backoff::Backoff;

pub struct Subscriber {
    client: redis::Client,
    settings: RedisSettings,
    rules: Arc<ChannelRules>,
    probe_channel: String,
    max_message_bytes: usize,
    hub: Arc<Hub>,
    health: Arc<Health>,
    metrics: RelayMetrics,
    log: Arc<LogReader>,
    /// The connection probes are published on; replaced whenever it fails.
    publisher: Arc<AsyncMutex<Option<MultiplexedConnection>>>,
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
    #[error("cannot read the log to fill the gap: {0}")]
    GapFill(LogError),
}

impl Subscriber {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: redis::Client,
        settings: RedisSettings,
        rules: Arc<ChannelRules>,
        pod_id: &str,
        max_message_bytes: usize,
        hub: Arc<Hub>,
        health: Arc<Health>,
        metrics: RelayMetrics,
        log: Arc<LogReader>,
    ) -> Self {
        Self {
            client,
            settings,
            rules,
            probe_channel: format!("{PROBE_CHANNEL_PREFIX}{pod_id}"),
            max_message_bytes,
            hub,
            health,
            metrics,
            log,
            publisher: Arc::new(AsyncMutex::new(None)),
        }
    }

    /// Keeps a subscription alive until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(self.settings.backoff_initial(), self.settings.backoff_max());
        let mut sessions = 0u64;
        let mut failed_attempts = 0u64;
        // The id of the newest envelope event delivered, across sessions: where gap fill starts.
        let mut last_seen: Option<StreamId> = None;
        loop {
            let sessions_before = sessions;
            let result = tokio::select! {
                _ = cancel.cancelled() => break,
                result = self.session(&cancel, &mut backoff, &mut sessions, &mut last_seen) => result,
            };
            self.metrics.redis_connected.set(0);
            let Err(error) = result else { break };
            self.health.delivery_lost(error.to_string());
            let delay = backoff.next_delay();
            // One warning per state change (a working subscription lost, or the first attempt
            // failing); further failed attempts of the same outage are logged at debug level.
            if sessions != sessions_before || failed_attempts == 0 {
                failed_attempts = 0;
                tracing::warn!(
                    redis.url = %redacted_url(&self.settings.url),
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
        self.metrics.redis_connected.set(0);
        tracing::info!("redis subscriber stopped");
    }

    async fn session(
        &self,
        cancel: &CancellationToken,
        backoff: &mut Backoff,
        sessions: &mut u64,
        last_seen: &mut Option<StreamId>,
    ) -> Result<(), SessionError> {
        let timeout = self.settings.connect_timeout();
        // Before the very first subscription, note where the log ends: events published between
        // that moment and the subscription taking effect are then filled from the log too.
        let first_start = match *last_seen {
            None if self.log.enabled() => {
                self.log.last_id().await.ok().map(|end| end.unwrap_or(StreamId::ZERO))
            }
            _ => None,
        };
        let mut pubsub = tokio::time::timeout(timeout, self.client.get_async_pubsub())
            .await
            .map_err(|_| SessionError::Connect(format!("timed out after {} ms", timeout.as_millis())))?
            .map_err(|error| SessionError::Connect(error.to_string()))?;
        let patterns = self.rules.patterns();
        let subscribe = async {
            pubsub.psubscribe(&patterns).await?;
            pubsub.subscribe(&self.probe_channel).await
        };
        tokio::time::timeout(timeout, subscribe)
            .await
            .map_err(|_| SessionError::Subscribe(format!("timed out after {} ms", timeout.as_millis())))?
            .map_err(|error| SessionError::Subscribe(error.to_string()))?;
        // The sink must outlive the stream: it owns the connection's write half.
        let (_sink, mut messages) = pubsub.split();
        // Subscribed: new events now wait in `messages` while the log fills what was missed.
        match (*last_seen, first_start) {
            (Some(cursor), _) => self.fill_gap(cursor, true, last_seen).await?,
            (None, Some(start)) => self.fill_gap(start, false, last_seen).await?,
            // The log could not be read before subscribing: start from its end now, best effort.
            (None, None) => {
                if self.log.enabled()
                    && let Ok(end) = self.log.last_id().await
                {
                    *last_seen = end;
                }
            }
        }

        *sessions += 1;
        if *sessions > 1 {
            self.metrics.redis_reconnects.inc();
        }
        self.metrics.redis_connected.set(1);
        backoff.reset();
        tracing::info!(
            redis.url = %redacted_url(&self.settings.url),
            patterns = ?patterns,
            probe_channel = %self.probe_channel,
            "redis subscribed"
        );

        let probe_timeout = self.settings.probe_timeout();
        let mut probe_tick = tokio::time::interval(self.settings.probe_interval());
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let probe_deadline = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(probe_deadline);
        let mut pending: Option<(u64, Instant)> = None;

        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                message = messages.next() => {
                    let Some(message) = message else { return Err(SessionError::Closed) };
                    self.handle(message, &mut pending, last_seen);
                }
                _ = probe_tick.tick(), if pending.is_none() => {
                    let nonce = rand::random::<u64>();
                    let sent_at = Instant::now();
                    pending = Some((nonce, sent_at));
                    probe_deadline.as_mut().reset(sent_at + probe_timeout);
                    tokio::spawn(publish_probe(
                        self.client.clone(),
                        Arc::clone(&self.publisher),
                        self.probe_channel.clone(),
                        nonce,
                        timeout,
                        probe_timeout,
                    ));
                }
                _ = &mut probe_deadline, if pending.is_some() => {
                    self.metrics.probe_failures.inc();
                    return Err(SessionError::Wedged(probe_timeout.as_millis()));
                }
            }
        }
    }

    fn handle(
        &self,
        message: redis::Msg,
        pending: &mut Option<(u64, Instant)>,
        last_seen: &mut Option<StreamId>,
    ) {
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
        let Some(rule) = self.rules.accept(&pattern, &channel) else { return };
        self.metrics.events_received.inc();
        match decode(rule.format, &channel, message.get_payload_bytes(), None, self.max_message_bytes) {
            Ok(decoded) => {
                if let Some(id) = decoded.id {
                    // Already delivered by the gap fill from the log.
                    if Some(id) <= *last_seen {
                        return;
                    }
                    *last_seen = Some(id);
                }
                self.metrics.observe_latency(decoded.published_micros);
                let frame = QueuedFrame::new(decoded.id, decoded.frame);
                self.hub.publish(&channel, rule.access == Access::Token, &frame, decoded.exclude);
            }
            Err(reason) => self.drop_message(&channel, reason),
        }
    }

    /// Delivers, in order, the logged events newer than `cursor` (those published while the
    /// subscription was down), advancing `last_seen`. With `check_retention`, if the log no
    /// longer reaches back to `cursor`, every stream is told to resynchronise with `relay.reset`.
    async fn fill_gap(
        &self,
        mut cursor: StreamId,
        check_retention: bool,
        last_seen: &mut Option<StreamId>,
    ) -> Result<(), SessionError> {
        // From now on, a later gap starts here at the latest.
        *last_seen = (*last_seen).max(Some(cursor));
        if check_retention
            && self.log.resume_point(cursor).await.map_err(SessionError::GapFill)? == ResumePoint::Lost
        {
            let reached = self.hub.broadcast(&QueuedFrame::new(
                None,
                reset_frame("the relay missed events that are no longer in the log"),
            ));
            self.metrics.resets.inc_by(reached as u64);
            tracing::warn!(last_seen = %cursor, "gap too old for the log: streams told to reset");
            *last_seen = self.log.last_id().await.map_err(SessionError::GapFill)?;
            return Ok(());
        }
        let mut filled = 0u64;
        loop {
            let page = self.log.read_after(cursor).await.map_err(SessionError::GapFill)?;
            let complete = page.len() < PAGE_SIZE;
            for entry in page {
                cursor = entry.id;
                *last_seen = Some(entry.id);
                let Some(rule) = self.rules.logged_rule_for(&entry.channel) else { continue };
                match entry.decode(self.max_message_bytes) {
                    Ok(decoded) => {
                        self.hub.publish(
                            &entry.channel,
                            rule.access == Access::Token,
                            &QueuedFrame::new(decoded.id, decoded.frame),
                            decoded.exclude,
                        );
                        filled += 1;
                        self.metrics.gap_filled_events.inc();
                    }
                    Err(reason) => self.drop_message(&entry.channel, reason),
                }
            }
            if complete {
                break;
            }
        }
        if filled > 0 {
            tracing::info!(events = filled, through = %cursor, "gap filled from the log");
        }
        Ok(())
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
            self.health.delivery_verified();
        }
    }
}

/// Publishes one probe, reusing the probe connection and dropping it on any failure so the
/// next probe starts from a fresh one.
async fn publish_probe(
    client: redis::Client,
    slot: Arc<AsyncMutex<Option<MultiplexedConnection>>>,
    channel: String,
    nonce: u64,
    connect_timeout: Duration,
    response_timeout: Duration,
) {
    let mut slot = slot.lock().await;
    if slot.is_none() {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout));
        match client.get_multiplexed_async_connection_with_config(&config).await {
            Ok(connection) => *slot = Some(connection),
            Err(error) => {
                tracing::debug!(error = %error, "probe connection failed");
                return;
            }
        }
    }
    let Some(connection) = slot.as_mut() else {
        return;
    };
    let published: redis::RedisResult<i64> =
        redis::cmd("PUBLISH").arg(&channel).arg(nonce.to_string()).query_async(connection).await;
    if let Err(error) = published {
        tracing::debug!(error = %error, "probe publish failed");
        *slot = None;
    }
}

/// The URL without its password, for logs.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(redacted_url("redis://:secret@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(redacted_url("redis://user:pw@host"), "redis://***@host");
        assert_eq!(redacted_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}

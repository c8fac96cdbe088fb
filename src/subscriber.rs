//! Raw channels: one PSUBSCRIBE connection per pod, supervised.
//!
//! Raw messages (any publisher's plain `PUBLISH`) are not logged: they are delivered as they
//! arrive and cannot be replayed. Envelope channels are read from the log instead
//! ([`crate::tail`]); only a relay without a log (`redis.log_stream = ""`) subscribes to them,
//! and delivers them without ids.
//!
//! A session connects (to the node the Redis target names now), subscribes the patterns plus
//! this pod's probe channel, forwards messages to the hub, and proves delivery by publishing a
//! nonce on the probe channel (through the command connection) that must come back on the
//! subscription. It ends when the connection ends, fails, or goes silent (a probe not echoed
//! in time: a wedged connection keeps its socket open but delivers nothing); the supervisor
//! ([`crate::source`]) starts the next one.

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::channels::PROBE_CHANNEL_PREFIX;
use crate::health::DeliveryPath;
use crate::hub::ScanCache;
use crate::source::{Established, Probe, Source, SourceContext};

pub struct Subscriber {
    ctx: Arc<SourceContext>,
    patterns: Vec<String>,
    probe_channel: String,
}

/// Why a subscription session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
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
    /// A subscription to `patterns` and to the probe channel of pod `pod_id`.
    pub fn new(ctx: Arc<SourceContext>, patterns: Vec<String>, pod_id: &str) -> Self {
        Self { ctx, patterns, probe_channel: format!("{PROBE_CHANNEL_PREFIX}{pod_id}") }
    }
}

impl Source for Subscriber {
    const PATH: DeliveryPath = DeliveryPath::Subscription;
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

impl Subscriber {
    async fn deliver(
        &self,
        cancel: &CancellationToken,
        established: Established<'_>,
    ) -> Result<(), SessionError> {
        let timeout = self.ctx.settings.connect_timeout();
        let connect = async {
            let resolved = self.ctx.target.client().await.map_err(|error| error.to_string())?;
            let pubsub = resolved.client.get_async_pubsub().await.map_err(|error| error.to_string())?;
            Ok::<_, String>((pubsub, resolved.address))
        };
        let (mut pubsub, address) = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| SessionError::Connect(format!("timed out after {} ms", timeout.as_millis())))?
            .map_err(SessionError::Connect)?;
        let subscribe = async {
            // A restricted Redis has no PSUBSCRIBE: its raw channels are exact names.
            if self.ctx.settings.restricted {
                pubsub.subscribe(&self.patterns).await?;
            } else {
                pubsub.psubscribe(&self.patterns).await?;
            }
            pubsub.subscribe(&self.probe_channel).await
        };
        tokio::time::timeout(timeout, subscribe)
            .await
            .map_err(|_| SessionError::Subscribe(format!("timed out after {} ms", timeout.as_millis())))?
            .map_err(|error| SessionError::Subscribe(error.to_string()))?;
        // The sink must outlive the stream: it owns the connection's write half.
        let (_sink, mut messages) = pubsub.split();

        established.now();
        tracing::info!(
            redis.node = %address,
            patterns = ?self.patterns,
            probe_channel = %self.probe_channel,
            "redis subscribed"
        );

        let mut scans = ScanCache::new();
        let mut probe = Probe::new(self.ctx.settings.probe_timeout());
        let mut probe_tick = tokio::time::interval(self.ctx.settings.probe_interval());
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let probe_deadline = tokio::time::sleep(std::time::Duration::ZERO);
        tokio::pin!(probe_deadline);

        loop {
            // Biased: messages already read come before the probe's deadline, so an echo queued
            // behind them is seen before the probe is given up.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                message = messages.next() => {
                    let Some(message) = message else { return Err(SessionError::Closed) };
                    let started = Instant::now();
                    self.handle(message, &mut probe, &mut scans);
                    probe.busy(started.elapsed());
                }
                _ = probe_tick.tick(), if !probe.is_pending() => {
                    let nonce = probe.start();
                    probe_deadline.as_mut().reset(probe.deadline().expect("a probe was started"));
                    let commands = Arc::clone(&self.ctx.commands);
                    let mut publish = redis::cmd("PUBLISH");
                    publish.arg(&self.probe_channel).arg(nonce.to_string());
                    tokio::spawn(async move {
                        if let Err(error) = commands.query::<i64>(publish).await {
                            tracing::debug!(error = %error, "probe publish failed");
                        }
                    });
                }
                _ = &mut probe_deadline, if probe.is_pending() => {
                    // Delivery time since the probe was sent moved its deadline on.
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

    fn handle(&self, message: redis::Msg, probe: &mut Probe, scans: &mut ScanCache) {
        let Ok(channel) = message.get_channel::<Vec<u8>>() else { return };
        let pattern = message.get_pattern::<Option<Vec<u8>>>().ok().flatten();
        let pattern = match pattern {
            Some(pattern) => pattern,
            None if channel == self.probe_channel.as_bytes() => {
                self.ctx.probe_echoed(DeliveryPath::Subscription, message.get_payload_bytes(), probe);
                return;
            }
            // Subscribed by name (a restricted Redis): the name is the rule's pattern.
            None if self.ctx.settings.restricted => channel.clone(),
            None => return,
        };
        if channel.starts_with(PROBE_CHANNEL_PREFIX.as_bytes()) {
            return;
        }
        // Only the governing rule's own pattern delivers: a channel that an envelope rule
        // governs is read from the log, whatever raw pattern also matches it.
        let Some(rule) = self.ctx.rules.accept(&pattern, &channel) else { return };
        self.ctx.deliver_subscribed(rule, &channel, message.get_payload_bytes(), scans);
    }
}

//! What the relay's two sources of events — the log tail and the raw subscription — share: the
//! parts they deliver with, and the supervisor that keeps one running: connect, deliver, notice
//! the end, mark delivery lost, back off with jitter, and start again, until cancelled. Clients
//! stay connected throughout; only new events pause.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

use service::log_eviction::EvictionWatch;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::channels::{Access, ChannelRule, ChannelRules};
use crate::commands::SharedConnection;
use crate::health::{DeliveryPath, Health};
use crate::hub::{Hub, QueuedFrame, ScanCache};
use crate::metrics::RelayMetrics;
use crate::settings::RedisSettings;
use protocol::message::{DropReason, decode};
use service::backoff::Backoff;
use service::redis_target::RedisTarget;

/// The parts a source delivers with.
pub struct SourceContext {
    pub target: Arc<RedisTarget>,
    /// Short commands: probes, and the tail's reads when it looks for its place.
    pub commands: Arc<SharedConnection>,
    pub settings: RedisSettings,
    pub rules: Arc<ChannelRules>,
    pub max_message_bytes: usize,
    pub hub: Arc<Hub>,
    pub health: Arc<Health>,
    pub metrics: RelayMetrics,
    /// Whether Redis may evict the log, looked at with every probe of the log tail.
    pub eviction: Arc<EvictionWatch>,
}

impl SourceContext {
    /// A message received on a subscription (classic or sharded), `rule` governing its
    /// channel: decoded and delivered, or dropped and counted.
    pub fn deliver_subscribed(
        &self,
        rule: &ChannelRule,
        channel: &[u8],
        payload: &[u8],
        scans: &mut ScanCache,
    ) {
        self.metrics.received();
        match decode(rule.format, channel, payload, None, self.max_message_bytes) {
            Ok(decoded) => {
                self.metrics.observe_latency(decoded.published_micros);
                let frame = QueuedFrame::new(None, decoded.frame);
                let traced = Traced {
                    id: decoded.id,
                    correlation_id: decoded.correlation_id.as_deref(),
                    exclude: decoded.exclude,
                };
                self.deliver(channel, rule.access == Access::Token, &frame, traced, scans);
            }
            Err(reason) => self.drop_message(channel, reason),
        }
    }

    /// A payload on `path`'s probe channel: the nonce of a pending probe proves delivery.
    pub fn probe_echoed(&self, path: DeliveryPath, payload: &[u8], probe: &mut Probe) {
        if let Some(nonce) = std::str::from_utf8(payload).ok().and_then(|text| text.parse::<u64>().ok()) {
            self.probe_seen(path, nonce, std::slice::from_mut(probe), 0);
        }
    }

    /// A probe nonce came back through `path` for `probes[index]` (a source reading over
    /// several connections probes each): if it is that probe's pending nonce and no other
    /// probe is still on its way, delivery works.
    pub fn probe_seen(&self, path: DeliveryPath, nonce: u64, probes: &mut [Probe], index: usize) {
        if let Some(round_trip) = probes[index].echoed(nonce) {
            self.metrics.probe_rtt.observe(round_trip.as_secs_f64());
            if probes.iter().all(|probe| !probe.is_pending()) {
                self.health.delivery_verified(path);
            }
        }
    }

    /// Hands a decoded message to the hub and logs it, at debug level under the target
    /// `sse_relay::events` (`RUST_LOG=info,sse_relay::events=debug`): its channel, log id and
    /// correlation id, and how many streams it went to.
    pub fn deliver(
        &self,
        channel: &[u8],
        token_only: bool,
        frame: &QueuedFrame,
        traced: Traced<'_>,
        scans: &mut ScanCache,
    ) {
        let streams = self.hub.publish(channel, token_only, frame, traced.exclude, scans);
        tracing::debug!(
            target: "sse_relay::events",
            channel = %String::from_utf8_lossy(channel).escape_debug(),
            id = traced.id.map(|id| id.to_string()),
            correlation_id = traced.correlation_id,
            streams,
            "event"
        );
    }

    pub fn drop_message(&self, channel: &[u8], reason: DropReason) {
        self.metrics.dropped(reason);
        // Debug level: a misbehaving publisher must not flood the logs; the metric counts it.
        let reason: &str = reason.into();
        tracing::debug!(channel = %String::from_utf8_lossy(channel).escape_debug(), reason, "message dropped");
    }
}

/// What a delivered message is traced and filtered by (the parts of its
/// [`protocol::message::Decoded`] besides the frame).
pub struct Traced<'a> {
    pub id: Option<protocol::log_id::StreamId>,
    pub correlation_id: Option<&'a str>,
    pub exclude: Option<uuid::Uuid>,
}

/// A source of events from Redis.
pub trait Source: Send {
    const PATH: DeliveryPath;
    type Error: Display + Send;

    /// The parts it delivers with.
    fn context(&self) -> &Arc<SourceContext>;

    /// Connects and delivers until `cancel` fires (`Ok`) or the connection fails or goes
    /// silent; calls [`Established::now`] once it delivers.
    fn session<'a>(
        &'a mut self,
        cancel: &'a CancellationToken,
        established: Established<'a>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'a;
}

/// Handed to each session, to say when its connection delivers.
pub struct Established<'a> {
    path: DeliveryPath,
    context: &'a SourceContext,
    backoff: &'a mut Backoff,
    sessions: &'a mut u64,
}

impl Established<'_> {
    /// Whether a session delivered before this one.
    pub fn reconnected(&self) -> bool {
        *self.sessions > 0
    }

    /// The connection is up: counts a reconnect after the first session, marks the path
    /// connected (proven only by its probe), and resets the backoff.
    pub fn now(self) {
        *self.sessions += 1;
        if *self.sessions > 1 {
            self.context.metrics.redis_reconnects.inc();
        }
        self.context.health.connected(self.path);
        self.backoff.reset();
    }
}

/// A session's delivery probe: the nonce on its way back, and until when it may take.
///
/// Only time spent waiting on Redis counts against the timeout: time spent delivering what was
/// read is added to the deadline. The echo can be queued behind a backlog the relay is still
/// working through, and a busy relay is not a silent connection — reconnecting it would lose the
/// raw messages published meanwhile.
pub struct Probe {
    timeout: Duration,
    pending: Option<PendingProbe>,
}

struct PendingProbe {
    nonce: u64,
    sent_at: Instant,
    /// Time spent delivering since the probe was sent.
    busy: Duration,
}

impl Probe {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, pending: None }
    }

    /// Starts a probe; returns its nonce, to be sent.
    pub fn start(&mut self) -> u64 {
        let nonce = rand::random::<u64>();
        self.pending = Some(PendingProbe { nonce, sent_at: Instant::now(), busy: Duration::ZERO });
        nonce
    }

    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// When the probe on its way times out, counting the delivery time so far.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|pending| pending.sent_at + self.timeout + pending.busy)
    }

    /// The session spent `spent` delivering rather than waiting on Redis.
    pub fn busy(&mut self, spent: Duration) {
        if let Some(pending) = &mut self.pending {
            pending.busy += spent;
        }
    }

    /// `nonce` came back: the round trip, if it is the probe on its way.
    pub fn echoed(&mut self, nonce: u64) -> Option<Duration> {
        let pending = self.pending.take_if(|pending| pending.nonce == nonce)?;
        Some(pending.sent_at.elapsed())
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Runs `source` until `cancel` fires.
pub async fn supervise<S: Source>(mut source: S, cancel: CancellationToken) {
    let name = S::PATH.name();
    // Its own handle: a session borrows the source mutably, while its `Established` (and the
    // outage handling between sessions) needs the context.
    let context = Arc::clone(source.context());
    let mut backoff = Backoff::new(context.settings.backoff_initial(), context.settings.backoff_max());
    let mut sessions = 0u64;
    let mut failed_attempts = 0u64;
    loop {
        let sessions_before = sessions;
        let established =
            Established { path: S::PATH, context: &context, backoff: &mut backoff, sessions: &mut sessions };
        let result = tokio::select! {
            _ = cancel.cancelled() => break,
            result = source.session(&cancel, established) => result,
        };
        let Err(error) = result else { break };
        context.health.delivery_lost(S::PATH, error.to_string());
        let delay = backoff.next_delay();
        // One warning per state change (working delivery lost, or the first attempt failing);
        // further failed attempts of the same outage are logged at debug level.
        if sessions != sessions_before || failed_attempts == 0 {
            failed_attempts = 0;
            tracing::warn!(
                redis = %context.target.describe(),
                error = %error,
                retry_in_ms = delay.as_millis() as u64,
                "redis {name} down"
            );
        } else {
            tracing::debug!(
                error = %error,
                attempt = failed_attempts,
                retry_in_ms = delay.as_millis() as u64,
                "redis {name} reconnect failed"
            );
        }
        failed_attempts += 1;
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    tracing::info!("redis {name} stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delivery_time_moves_a_probes_deadline_and_only_its_own_nonce_ends_it() {
        let mut probe = Probe::new(Duration::from_secs(2));
        assert_eq!(probe.deadline(), None);
        let nonce = probe.start();
        let sent_at = Instant::now();
        assert_eq!(probe.deadline(), Some(sent_at + Duration::from_secs(2)));
        probe.busy(Duration::from_millis(1500));
        assert_eq!(probe.deadline(), Some(sent_at + Duration::from_millis(3500)));
        assert_eq!(probe.echoed(nonce.wrapping_add(1)), None, "another probe's nonce");
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(probe.echoed(nonce), Some(Duration::from_millis(300)));
        assert!(!probe.is_pending());
        probe.busy(Duration::from_secs(1));
        let next = probe.start();
        assert_ne!(next, nonce);
        assert_eq!(probe.deadline(), Some(Instant::now() + Duration::from_secs(2)), "busy time is per probe");
    }
}

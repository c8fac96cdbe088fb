//! Resume: a stream that arrives with a Last-Event-ID gets, before live events, every logged
//! event after that id that it asked for.
//!
//! The handoff has no gap and no duplicate because the stream registers for live events first,
//! then this task reads the log (in pages, with backpressure) into the stream; the stream then
//! drains its live queue, skipping ids the replay already sent (ids are ordered). If the log no
//! longer reaches back to the id, the stream gets `relay.reset` instead and goes live. A resume
//! from an id the resume window holds ([`crate::window`]) is served from memory, without Redis.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::channels::{Access, ChannelRules, Subscription};
use crate::hub::QueuedFrame;
use crate::log::{LogReader, PAGE_SIZE, ResumePoint};
use crate::metrics::{RelayMetrics, ResumeSource};
use crate::window::ResumeWindow;
use protocol::log_id::StreamId;
use protocol::message::DropReason;
use protocol::sse::reset_frame;
use service::backoff::Backoff;

/// Backlog frames buffered between the log reader and the stream.
const REPLAY_BUFFER: usize = 64;

/// What the replay hands the stream.
#[derive(Debug)]
pub enum ReplayItem {
    /// The client has everything up to this id: live frames up to it are duplicates (another
    /// pod may deliver an event a moment later than the one the client left).
    SeenThrough(StreamId),
    /// A backlog event, or the `relay.reset` notice.
    Frame(QueuedFrame),
}

pub struct Replay {
    pub log: Arc<LogReader>,
    pub window: Arc<ResumeWindow>,
    pub rules: Arc<ChannelRules>,
    pub metrics: RelayMetrics,
    pub max_message_bytes: usize,
}

impl Replay {
    /// Starts reading the backlog after `after` for `selection`; the receiver ends when the
    /// backlog is sent. Dropping the receiver stops the task.
    pub fn start(
        self: &Arc<Self>,
        subscription: Subscription,
        after: StreamId,
    ) -> mpsc::Receiver<ReplayItem> {
        let (tx, rx) = mpsc::channel(REPLAY_BUFFER);
        let replay = Arc::clone(self);
        tokio::spawn(async move { replay.run(subscription, after, tx).await });
        rx
    }

    async fn run(&self, subscription: Subscription, after: StreamId, tx: mpsc::Sender<ReplayItem>) {
        if !self.log.enabled() {
            self.reset(&tx, "replay is disabled on this relay").await;
            return;
        }
        if let Some(frames) = self.window.after(after, &subscription) {
            self.metrics.resumes.inc(ResumeSource::Window);
            if tx.send(ReplayItem::SeenThrough(after)).await.is_err() {
                return;
            }
            for frame in frames {
                if tx.send(ReplayItem::Frame(frame)).await.is_err() {
                    return;
                }
                self.metrics.replayed_events.inc();
            }
            return;
        }
        self.metrics.resumes.inc(ResumeSource::Log);
        // Redis may be away for a while: keep trying (live events wait in the stream's queue)
        // until the client leaves.
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self.log.resume_point(after).await {
                Ok(ResumePoint::Available) => {
                    if tx.send(ReplayItem::SeenThrough(after)).await.is_err() {
                        return;
                    }
                    break;
                }
                Ok(ResumePoint::Lost { newest }) => {
                    self.reset(&tx, "events after Last-Event-ID are no longer in the log").await;
                    // The client refetches its state as of now: live events up to the log's
                    // newest entry (which the tail may deliver a moment after this stream
                    // registered) are in it.
                    if let Some(newest) = newest {
                        let _ = tx.send(ReplayItem::SeenThrough(newest)).await;
                    }
                    return;
                }
                Err(error) => {
                    tracing::debug!(error = %error, "replay: cannot read the log yet");
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
        let mut cursor = after;
        loop {
            let page = match self.log.read_after(cursor).await {
                Ok(page) => {
                    backoff.reset();
                    page
                }
                Err(error) => {
                    tracing::debug!(error = %error, "replay: log read failed; retrying");
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                    continue;
                }
            };
            let complete = page.len() < PAGE_SIZE;
            for entry in page {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(id) => {
                        cursor = id;
                        self.metrics.dropped(DropReason::BadEnvelope);
                        continue;
                    }
                };
                cursor = entry.id;
                let Some(rule) = self.rules.logged_rule_for(&entry.channel) else { continue };
                // The same rule as live delivery: asked for, and readable with this token.
                if !subscription.wants(&entry.channel, rule.access == Access::Token) {
                    continue;
                }
                match entry.decode(self.max_message_bytes) {
                    Ok(decoded) => {
                        let frame = QueuedFrame::new(decoded.id, decoded.frame);
                        if tx.send(ReplayItem::Frame(frame)).await.is_err() {
                            return;
                        }
                        self.metrics.replayed_events.inc();
                    }
                    Err(reason) => self.metrics.dropped(reason),
                }
            }
            if complete {
                return;
            }
        }
    }

    async fn reset(&self, tx: &mpsc::Sender<ReplayItem>, reason: &str) {
        let frame = QueuedFrame::new(None, reset_frame(reason));
        if tx.send(ReplayItem::Frame(frame)).await.is_ok() {
            self.metrics.resets.inc();
        }
    }
}

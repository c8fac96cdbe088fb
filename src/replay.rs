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
use crate::log::{LogEntry, LogReader, PAGE_SIZE, ResumePoint};
use crate::metrics::{RelayMetrics, ResumeSource};
use crate::window::{ResumeWindow, Resumed};
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
    /// A resume that would replay more entries gets `relay.reset` instead.
    pub max_entries: usize,
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
        match self.window.after(after, &subscription, self.max_entries) {
            Some(Resumed::Frames(frames)) => {
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
            Some(Resumed::TooFarBehind { behind, newest }) => {
                self.metrics.resumes.inc(ResumeSource::Window);
                return self.too_far_behind(&tx, behind, Some(newest)).await;
            }
            None => {}
        }
        self.metrics.resumes.inc(ResumeSource::Log);
        // Redis may be away for a while: keep trying (live events wait in the stream's queue)
        // until the client leaves.
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let newest = loop {
            match self.log.resume_point(after).await {
                Ok(ResumePoint::Available { newest }) => break newest,
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
                    if !self.pause(&tx, &mut backoff).await {
                        return;
                    }
                }
            }
        };
        let Some(mut page) = self.read_page(after, &tx, &mut backoff).await else { return };
        // A first page that is full may be the first of many: count before sending anything
        // (unless replays are unbounded).
        let bounded = self.max_entries != usize::MAX;
        if bounded && (page.len() > self.max_entries || page.len() == PAGE_SIZE) {
            match self.entries_after(after, &tx, &mut backoff).await {
                None => return,
                Some(behind) if behind > self.max_entries => {
                    return self.too_far_behind(&tx, behind, newest).await;
                }
                Some(_) => {}
            }
        }
        if tx.send(ReplayItem::SeenThrough(after)).await.is_err() {
            return;
        }
        let mut cursor = after;
        loop {
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
            let Some(next) = self.read_page_on(cursor, &tx, &mut backoff).await else { return };
            match next {
                Some(next) => page = next,
                None => {
                    // The log was replaced while it was read (a Redis restart without
                    // persistence, a lost primary): the reset goes here, after the last event of
                    // the log the client was reading, before any of the new log's.
                    self.reset(&tx, "the log changed while it was replayed: events after the last one sent are no longer in it").await;
                    return;
                }
            }
        }
    }

    /// The next page after `cursor`, as [`LogReader::read_on_from`], retried until it is read;
    /// `None` once the client left.
    async fn read_page_on(
        &self,
        cursor: StreamId,
        tx: &mpsc::Sender<ReplayItem>,
        backoff: &mut Backoff,
    ) -> Option<Option<Vec<Result<LogEntry, StreamId>>>> {
        loop {
            match self.log.read_on_from(cursor).await {
                Ok(page) => {
                    backoff.reset();
                    return Some(page);
                }
                Err(error) => {
                    tracing::debug!(error = %error, "replay: log read failed; retrying");
                    if !self.pause(tx, backoff).await {
                        return None;
                    }
                }
            }
        }
    }

    /// A page of the log after `cursor`, retried until it is read; `None` once the client left.
    async fn read_page(
        &self,
        cursor: StreamId,
        tx: &mpsc::Sender<ReplayItem>,
        backoff: &mut Backoff,
    ) -> Option<Vec<Result<LogEntry, StreamId>>> {
        loop {
            match self.log.read_after(cursor).await {
                Ok(page) => {
                    backoff.reset();
                    return Some(page);
                }
                Err(error) => {
                    tracing::debug!(error = %error, "replay: log read failed; retrying");
                    if !self.pause(tx, backoff).await {
                        return None;
                    }
                }
            }
        }
    }

    /// How many entries follow `after` in the log, counted up to one more than a replay may
    /// cover (a page at a time, nothing kept); `None` once the client left.
    async fn entries_after(
        &self,
        after: StreamId,
        tx: &mpsc::Sender<ReplayItem>,
        backoff: &mut Backoff,
    ) -> Option<usize> {
        let mut cursor = after;
        let mut counted = 0;
        loop {
            let page = self.read_page(cursor, tx, backoff).await?;
            counted += page.len();
            let Some(last) = page.last() else { return Some(counted) };
            if counted > self.max_entries || page.len() < PAGE_SIZE {
                return Some(counted);
            }
            cursor = match last {
                Ok(entry) => entry.id,
                Err(id) => *id,
            };
        }
    }

    /// The client is too far behind to be replayed to: it resynchronises instead.
    async fn too_far_behind(&self, tx: &mpsc::Sender<ReplayItem>, behind: usize, newest: Option<StreamId>) {
        let reason = format!(
            "{} or more events were published after Last-Event-ID, more than a resume replays ({}): refetch the state",
            behind.min(self.max_entries.saturating_add(1)),
            self.max_entries
        );
        self.reset(tx, &reason).await;
        if let Some(newest) = newest {
            let _ = tx.send(ReplayItem::SeenThrough(newest)).await;
        }
    }

    /// Waits before trying Redis again; false once the client left.
    async fn pause(&self, tx: &mpsc::Sender<ReplayItem>, backoff: &mut Backoff) -> bool {
        tokio::select! {
            _ = tx.closed() => false,
            _ = tokio::time::sleep(backoff.next_delay()) => true,
        }
    }

    async fn reset(&self, tx: &mpsc::Sender<ReplayItem>, reason: &str) {
        let frame = QueuedFrame::reset(reset_frame(reason));
        if tx.send(ReplayItem::Frame(frame)).await.is_ok() {
            self.metrics.resets.inc();
        }
    }
}

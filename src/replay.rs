//! Resume: a stream that arrives with a Last-Event-ID gets, before live events, every logged
//! event after that id that it asked for.
//!
//! The handoff has no gap and no duplicate because the stream registers for live events first,
//! then this task reads the log (in pages, with backpressure) into the stream; the stream then
//! drains its live queue, skipping ids the replay already sent (ids are ordered within each
//! log partition; with several, the backlog is read one partition after another). If the log no
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
    /// The client has everything up to this position (per log partition, an id): live frames
    /// up to it are duplicates (another pod may deliver an event a moment later than the one
    /// the client left).
    SeenThrough(Vec<StreamId>),
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

/// A partition's first page of backlog, kept from counting to sending.
type Page = Vec<Result<LogEntry, StreamId>>;

impl Replay {
    /// Starts reading the backlog after `after` (an id per log partition) for `selection`;
    /// the receiver ends when the backlog is sent. Dropping the receiver stops the task.
    pub fn start(
        self: &Arc<Self>,
        subscription: Subscription,
        after: Vec<StreamId>,
    ) -> mpsc::Receiver<ReplayItem> {
        let (tx, rx) = mpsc::channel(REPLAY_BUFFER);
        let replay = Arc::clone(self);
        tokio::spawn(async move { replay.run(subscription, after, tx).await });
        rx
    }

    async fn run(&self, subscription: Subscription, after: Vec<StreamId>, tx: mpsc::Sender<ReplayItem>) {
        if !self.log.enabled() {
            self.reset(&tx, "replay is disabled on this relay").await;
            return;
        }
        let partitions = self.log.partitions();
        if after.len() != partitions {
            let count =
                |n: usize| if n == 1 { "one partition".to_owned() } else { format!("{n} partitions") };
            let reason = format!(
                "Last-Event-ID is a position in a log of {}; this relay's log has {}",
                count(after.len()),
                count(partitions)
            );
            self.reset(&tx, &reason).await;
            return;
        }
        match self.window.after(&after, &subscription, self.max_entries) {
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
                return self.too_far_behind(&tx, behind, newest).await;
            }
            None => {}
        }
        self.metrics.resumes.inc(ResumeSource::Log);
        // Redis may be away for a while: keep trying (live events wait in the stream's queue)
        // until the client leaves.
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut newest = Vec::with_capacity(partitions);
        let mut lost = false;
        for (partition, &from) in after.iter().enumerate() {
            let point = loop {
                match self.log.resume_point(partition, from).await {
                    Ok(point) => break point,
                    Err(error) => {
                        tracing::debug!(error = %error, "replay: cannot read the log yet");
                        if !self.pause(&tx, &mut backoff).await {
                            return;
                        }
                    }
                }
            };
            let (ResumePoint::Available { newest: newest_here } | ResumePoint::Lost { newest: newest_here }) =
                point;
            lost |= matches!(point, ResumePoint::Lost { .. });
            newest.push(newest_here.unwrap_or(StreamId::ZERO));
        }
        if lost {
            self.reset(&tx, "events after Last-Event-ID are no longer in the log").await;
            // The client refetches its state as of now: live events up to the log's newest
            // entries (which the tail may deliver a moment after this stream registered) are in
            // it.
            let _ = tx.send(ReplayItem::SeenThrough(newest)).await;
            return;
        }
        // A bounded replay counts before sending anything, keeping the first pages that are
        // the whole backlog of their partition.
        let mut first_pages: Vec<Option<Page>> = (0..partitions).map(|_| None).collect();
        if self.max_entries != usize::MAX {
            let mut behind = 0;
            for (partition, &from) in after.iter().enumerate() {
                let Some(page) = self.read_page(partition, from, &tx, &mut backoff).await else { return };
                if page.len() < PAGE_SIZE {
                    behind += page.len();
                    first_pages[partition] = Some(page);
                } else {
                    let limit = self.max_entries - behind.min(self.max_entries);
                    let Some(counted) = self.entries_after(partition, from, limit, &tx, &mut backoff).await
                    else {
                        return;
                    };
                    behind += counted;
                }
                if behind > self.max_entries {
                    return self.too_far_behind(&tx, behind, newest).await;
                }
            }
        }
        if tx.send(ReplayItem::SeenThrough(after.clone())).await.is_err() {
            return;
        }
        for (partition, &from) in after.iter().enumerate() {
            let page = match first_pages[partition].take() {
                Some(page) => page,
                None => match self.read_page(partition, from, &tx, &mut backoff).await {
                    Some(page) => page,
                    None => return,
                },
            };
            if !self.send_partition(&subscription, partition, from, page, &tx, &mut backoff).await {
                return;
            }
        }
    }

    /// Sends what `subscription` wants of partition `partition` after `from`, starting with
    /// its first `page`; false once the stream cannot go on (the client left, or the log
    /// changed while it was read and the stream was told to reset).
    async fn send_partition(
        &self,
        subscription: &Subscription,
        partition: usize,
        from: StreamId,
        mut page: Page,
        tx: &mpsc::Sender<ReplayItem>,
        backoff: &mut Backoff,
    ) -> bool {
        let mut cursor = from;
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
                        // The stream states the client's position in the frame's `id:`.
                        let frame = QueuedFrame::logged(partition as u16, entry.id, None, decoded.frame);
                        if tx.send(ReplayItem::Frame(frame)).await.is_err() {
                            return false;
                        }
                        self.metrics.replayed_events.inc();
                    }
                    Err(reason) => self.metrics.dropped(reason),
                }
            }
            if complete {
                return true;
            }
            let Some(next) = self.read_page_on(partition, cursor, tx, backoff).await else { return false };
            match next {
                Some(next) => page = next,
                None => {
                    // The log was replaced while it was read (a Redis restart without
                    // persistence, a lost primary): the reset goes here, after the last event of
                    // the log the client was reading, before any of the new log's.
                    self.reset(tx, "the log changed while it was replayed: events after the last one sent are no longer in it").await;
                    return false;
                }
            }
        }
    }

    /// The next page after `cursor`, as [`LogReader::read_on_from`], retried until it is read;
    /// `None` once the client left.
    async fn read_page_on(
        &self,
        partition: usize,
        cursor: StreamId,
        tx: &mpsc::Sender<ReplayItem>,
        backoff: &mut Backoff,
    ) -> Option<Option<Vec<Result<LogEntry, StreamId>>>> {
        loop {
            match self.log.read_on_from(partition, cursor).await {
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

    /// A page of partition `partition` after `cursor`, retried until it is read; `None` once
    /// the client left.
    async fn read_page(
        &self,
        partition: usize,
        cursor: StreamId,
        tx: &mpsc::Sender<ReplayItem>,
        backoff: &mut Backoff,
    ) -> Option<Vec<Result<LogEntry, StreamId>>> {
        loop {
            match self.log.read_after(partition, cursor).await {
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

    /// How many entries follow `after` in partition `partition`, counted up to one more than
    /// `limit` (a page at a time, nothing kept); `None` once the client left.
    async fn entries_after(
        &self,
        partition: usize,
        after: StreamId,
        limit: usize,
        tx: &mpsc::Sender<ReplayItem>,
        backoff: &mut Backoff,
    ) -> Option<usize> {
        let mut cursor = after;
        let mut counted = 0;
        loop {
            let page = self.read_page(partition, cursor, tx, backoff).await?;
            counted += page.len();
            let Some(last) = page.last() else { return Some(counted) };
            if counted > limit || page.len() < PAGE_SIZE {
                return Some(counted);
            }
            cursor = match last {
                Ok(entry) => entry.id,
                Err(id) => *id,
            };
        }
    }

    /// The client is too far behind to be replayed to: it resynchronises instead.
    async fn too_far_behind(&self, tx: &mpsc::Sender<ReplayItem>, behind: usize, newest: Vec<StreamId>) {
        let reason = format!(
            "{} or more events were published after Last-Event-ID, more than a resume replays ({}): refetch the state",
            behind.min(self.max_entries.saturating_add(1)),
            self.max_entries
        );
        self.reset(tx, &reason).await;
        let _ = tx.send(ReplayItem::SeenThrough(newest)).await;
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

//! The resume window: the latest log entries the tail read, kept to serve resumes from memory.
//!
//! When a pod goes away its clients — thousands — reconnect to the others at once, each with a
//! Last-Event-ID a moment old. The tail read those entries anyway to deliver them, so the relay
//! keeps a bounded window of them (encoded frames shared with live delivery, no copy) and
//! replays a resume that falls inside it without asking Redis. Entries enter it only from the
//! tail, in log order, so the window is always a contiguous stretch of the log: a resume is
//! served from it only when its id is one of the window's entries (or the one just before
//! them), exactly the condition under which the log itself could serve it. When the tail finds
//! that the log it reads is not the one it read before, the window is cut back with it.

use std::collections::VecDeque;
use std::sync::{PoisonError, RwLock};

use prometheus::IntGauge;

use crate::channels::Subscription;
use crate::hub::QueuedFrame;
use protocol::log_id::StreamId;

/// What an entry costs besides its frame and channel bytes (the deque slot, the frame's `Arc`).
const ENTRY_OVERHEAD_BYTES: usize = 96;

pub struct ResumeWindow {
    max_entries: usize,
    max_bytes: usize,
    // Written by the tail once per entry, read by each resume: a resume never waits for Redis.
    state: RwLock<State>,
    entries_gauge: IntGauge,
    bytes_gauge: IntGauge,
}

#[derive(Default)]
struct State {
    /// The id of the entry just before the oldest one held (it left the window): a client that
    /// has it misses nothing the window holds.
    evicted: Option<StreamId>,
    entries: VecDeque<WindowEntry>,
    bytes: usize,
}

struct WindowEntry {
    id: StreamId,
    channel: Box<[u8]>,
    /// Whether its rule needs a token.
    token_only: bool,
    frame: QueuedFrame,
}

impl WindowEntry {
    fn bytes(&self) -> usize {
        self.frame.bytes.len() + self.channel.len() + ENTRY_OVERHEAD_BYTES
    }
}

impl ResumeWindow {
    /// At most `max_entries` entries and `max_bytes` bytes; `max_entries == 0` keeps none.
    pub fn new(max_entries: usize, max_bytes: usize, entries_gauge: IntGauge, bytes_gauge: IntGauge) -> Self {
        Self { max_entries, max_bytes, state: RwLock::default(), entries_gauge, bytes_gauge }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        // Every mutation leaves the state whole between statements that cannot panic.
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tail read this entry (the next one in the log after the previous one pushed).
    pub fn push(&self, id: StreamId, channel: &[u8], token_only: bool, frame: &QueuedFrame) {
        if self.max_entries == 0 {
            return;
        }
        let entry = WindowEntry { id, channel: channel.into(), token_only, frame: frame.clone() };
        let mut state = self.write();
        debug_assert!(state.entries.back().is_none_or(|last| last.id < id), "log order");
        state.bytes += entry.bytes();
        state.entries.push_back(entry);
        while state.entries.len() > self.max_entries
            || (state.bytes > self.max_bytes && state.entries.len() > 1)
        {
            let Some(oldest) = state.entries.pop_front() else { break };
            state.bytes -= oldest.bytes();
            state.evicted = Some(oldest.id);
        }
        self.publish_size(&state);
    }

    /// The log the tail reads lost everything after `id` (a failover lost the previous
    /// primary's latest writes): so does the window.
    pub fn truncate_after(&self, id: StreamId) {
        let mut state = self.write();
        while state.entries.back().is_some_and(|last| last.id > id) {
            let removed = state.entries.pop_back().expect("checked");
            state.bytes -= removed.bytes();
        }
        if state.evicted.is_some_and(|evicted| evicted > id) {
            state.evicted = None;
        }
        self.publish_size(&state);
    }

    /// What the log holds now, as `XINFO STREAM` says: its oldest entry (`None`: the log is
    /// empty or gone) and the newest entry ever deleted from it. Entries trimmed or deleted
    /// since leave the window too, and with them the resumes the log could no longer serve.
    pub fn follow_log(&self, oldest: Option<StreamId>, max_deleted: Option<StreamId>) {
        let Some(oldest) = oldest else {
            self.clear();
            return;
        };
        let gone = |id: StreamId| id < oldest || max_deleted.is_some_and(|deleted| id <= deleted);
        let mut state = self.write();
        let mut changed = false;
        while state.entries.front().is_some_and(|first| gone(first.id)) {
            let removed = state.entries.pop_front().expect("checked");
            state.bytes -= removed.bytes();
            changed = true;
        }
        if changed || state.evicted.is_some_and(gone) {
            state.evicted = None;
        }
        self.publish_size(&state);
    }

    /// The log the tail reads is not the one it read: nothing held is known to be in it.
    pub fn clear(&self) {
        let mut state = self.write();
        *state = State::default();
        self.publish_size(&state);
    }

    fn publish_size(&self, state: &State) {
        self.entries_gauge.set(state.entries.len() as i64);
        self.bytes_gauge.set(state.bytes as i64);
    }

    /// The frames after `after` that `subscription` wants, if the window holds everything
    /// after `after`; `None` sends the resume to the log.
    pub fn after(&self, after: StreamId, subscription: &Subscription, max_entries: usize) -> Option<Resumed> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let from = if state.evicted == Some(after) {
            0
        } else {
            let at = state.entries.binary_search_by_key(&after, |entry| entry.id).ok()?;
            at + 1
        };
        let behind = state.entries.len() - from;
        if behind > max_entries {
            let newest = state.entries.back().map(|entry| entry.id)?;
            return Some(Resumed::TooFarBehind { behind, newest });
        }
        Some(Resumed::Frames(
            state
                .entries
                .range(from..)
                .filter(|entry| subscription.wants(&entry.channel, entry.token_only))
                .map(|entry| entry.frame.clone())
                .collect(),
        ))
    }
}

/// A resume the window can answer.
#[derive(Debug)]
pub enum Resumed {
    /// What the stream selected of the entries after its id, in order.
    Frames(Vec<QueuedFrame>),
    /// More entries than a replay may cover follow the id: how many, and the newest.
    TooFarBehind { behind: usize, newest: StreamId },
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::channels::Selection;
    use protocol::glob::Pattern;

    fn window(max_entries: usize, max_bytes: usize) -> ResumeWindow {
        let gauge = |name| IntGauge::new(name, "test").unwrap();
        ResumeWindow::new(max_entries, max_bytes, gauge("entries"), gauge("bytes"))
    }

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    fn push(window: &ResumeWindow, ms: u64, channel: &str) {
        let frame = QueuedFrame::new(Some(id(ms)), Bytes::from(format!("{ms}")));
        window.push(id(ms), channel.as_bytes(), false, &frame);
    }

    fn ids(resumed: Option<Resumed>) -> Option<Vec<u64>> {
        match resumed? {
            Resumed::Frames(frames) => Some(frames.iter().map(|frame| frame.id.unwrap().ms).collect()),
            Resumed::TooFarBehind { behind, .. } => panic!("{behind} entries behind"),
        }
    }

    fn anyone() -> Subscription {
        Subscription::anonymous(Selection::All)
    }

    #[test]
    fn a_resume_too_far_behind_is_told_so_rather_than_served() {
        let window = window(10, 1 << 20);
        for ms in 1..=5 {
            push(&window, ms, "a");
        }
        assert!(matches!(window.after(id(1), &anyone(), 3), Some(Resumed::TooFarBehind { behind: 4, .. })));
        assert_eq!(ids(window.after(id(2), &anyone(), 3)), Some(vec![3, 4, 5]));
    }

    #[test]
    fn a_resume_is_served_only_from_an_id_the_window_holds_or_the_one_before_it() {
        let window = window(3, usize::MAX);
        for ms in 1..=5 {
            push(&window, ms, "a");
        }
        assert_eq!(ids(window.after(id(3), &anyone(), usize::MAX)), Some(vec![4, 5]));
        assert_eq!(ids(window.after(id(5), &anyone(), usize::MAX)), Some(vec![]));
        assert_eq!(
            ids(window.after(id(2), &anyone(), usize::MAX)),
            Some(vec![3, 4, 5]),
            "the entry evicted last"
        );
        assert_eq!(window.after(id(1), &anyone(), usize::MAX).map(|_| ()), None, "older: from the log");
        assert_eq!(
            window.after(id(6), &anyone(), usize::MAX).map(|_| ()),
            None,
            "newer than the tail read: from the log"
        );
        assert_eq!(
            window.after(StreamId { ms: 4, seq: 1 }, &anyone(), usize::MAX).map(|_| ()),
            None,
            "not an entry"
        );
    }

    #[test]
    fn only_the_channels_a_stream_wants_are_replayed() {
        let window = window(10, usize::MAX);
        push(&window, 1, "a.1");
        push(&window, 2, "b.1");
        push(&window, 3, "a.2");
        let a = Subscription::anonymous(Selection::from_patterns(vec![Pattern::parse("a.*").unwrap()]));
        assert_eq!(ids(window.after(id(1), &a, usize::MAX)), Some(vec![3]));
    }

    #[test]
    fn the_window_is_bounded_in_bytes_and_follows_the_log_back() {
        let window = window(100, 3 * (ENTRY_OVERHEAD_BYTES + 2));
        for ms in 1..=5 {
            push(&window, ms, "a");
        }
        assert_eq!(window.bytes_gauge.get() as usize, 3 * (ENTRY_OVERHEAD_BYTES + 2));
        assert_eq!(window.entries_gauge.get(), 3);
        window.truncate_after(id(4));
        assert_eq!(ids(window.after(id(2), &anyone(), usize::MAX)), Some(vec![3, 4]));
        assert_eq!(window.after(id(5), &anyone(), usize::MAX).map(|_| ()), None, "lost with the old primary");
        window.truncate_after(id(1));
        assert_eq!(window.after(id(2), &anyone(), usize::MAX).map(|_| ()), None, "the boundary went too");
        assert_eq!((window.entries_gauge.get(), window.bytes_gauge.get()), (0, 0));
        push(&window, 7, "a");
        window.clear();
        assert_eq!(window.after(id(7), &anyone(), usize::MAX).map(|_| ()), None);
    }

    #[test]
    fn entries_trimmed_or_deleted_from_the_log_leave_the_window() {
        let window = window(3, usize::MAX);
        for ms in 1..=5 {
            push(&window, ms, "a");
        }
        window.follow_log(Some(id(2)), None);
        assert_eq!(
            ids(window.after(id(2), &anyone(), usize::MAX)),
            Some(vec![3, 4, 5]),
            "nothing trimmed yet"
        );
        window.follow_log(Some(id(4)), None);
        assert_eq!(window.after(id(2), &anyone(), usize::MAX).map(|_| ()), None);
        assert_eq!(window.after(id(3), &anyone(), usize::MAX).map(|_| ()), None, "3 was trimmed");
        assert_eq!(ids(window.after(id(4), &anyone(), usize::MAX)), Some(vec![5]));
        window.follow_log(Some(id(4)), Some(id(4)));
        assert_eq!(
            window.after(id(4), &anyone(), usize::MAX).map(|_| ()),
            None,
            "deleted: the log would reset"
        );
        assert_eq!(ids(window.after(id(5), &anyone(), usize::MAX)), Some(vec![]));
        window.follow_log(None, None);
        assert_eq!(window.entries_gauge.get(), 0, "the log is gone");
    }

    #[test]
    fn a_window_of_no_entries_serves_nothing() {
        let window = window(0, usize::MAX);
        push(&window, 1, "a");
        assert_eq!(window.after(id(1), &anyone(), usize::MAX).map(|_| ()), None);
    }
}

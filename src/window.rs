//! The resume window: the latest log entries the tail read, kept to serve resumes from memory.
//!
//! When a pod goes away its clients — thousands — reconnect to the others at once, each with a
//! Last-Event-ID a moment old. The tail read those entries anyway to deliver them, so the relay
//! keeps a bounded window of them (encoded frames shared with live delivery, no copy) and
//! replays a resume that falls inside it without asking Redis. Entries enter it only from the
//! tail, in log order within each partition, so the window holds a contiguous stretch of each
//! partition: a resume is served from it only when, in every partition, its position is one of
//! the window's entries (or the one just before them), exactly the condition under which the
//! log itself could serve it. When the tail finds that a partition it reads is not the one it
//! read before, the window is cut back with it.

use std::collections::VecDeque;
use std::sync::{PoisonError, RwLock};

use prometheus::IntGauge;

use crate::channels::Subscription;
use crate::hub::QueuedFrame;
use protocol::log_id::StreamId;

/// What an entry costs besides its frame and channel bytes (the deque slots, the frame's `Arc`).
const ENTRY_OVERHEAD_BYTES: usize = 120;

pub struct ResumeWindow {
    max_entries: usize,
    max_bytes: usize,
    // Written by the tail once per entry, read by each resume: a resume never waits for Redis.
    state: RwLock<State>,
    entries_gauge: IntGauge,
    bytes_gauge: IntGauge,
}

struct State {
    /// Per partition, the id of the entry just before its oldest one held (it left the window,
    /// or the tail started after it): a client that has it misses nothing the window holds.
    before: Vec<Option<StreamId>>,
    /// In the order the tail delivered them.
    entries: VecDeque<WindowEntry>,
    /// The delivery number of `entries[0]` (each entry's is its index plus this).
    first_number: u64,
    /// Per partition, its entries' ids and delivery numbers, oldest first.
    by_partition: Vec<VecDeque<(StreamId, u64)>>,
    bytes: usize,
}

impl State {
    fn new(partitions: usize) -> Self {
        Self {
            before: vec![None; partitions],
            entries: VecDeque::new(),
            first_number: 0,
            by_partition: vec![VecDeque::new(); partitions],
            bytes: 0,
        }
    }

    fn push(&mut self, entry: WindowEntry) {
        let number = self.first_number + self.entries.len() as u64;
        self.bytes += entry.bytes();
        self.by_partition[usize::from(entry.partition)].push_back((entry.id, number));
        self.entries.push_back(entry);
    }

    fn evict_oldest(&mut self) -> bool {
        let Some(oldest) = self.entries.pop_front() else { return false };
        let partition = usize::from(oldest.partition);
        self.by_partition[partition].pop_front();
        self.before[partition] = Some(oldest.id);
        self.bytes -= oldest.bytes();
        self.first_number += 1;
        true
    }
}

struct WindowEntry {
    partition: u16,
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
    /// At most `max_entries` entries and `max_bytes` bytes of a log of `partitions` partitions;
    /// `max_entries == 0` keeps none.
    pub fn new(
        partitions: usize,
        max_entries: usize,
        max_bytes: usize,
        entries_gauge: IntGauge,
        bytes_gauge: IntGauge,
    ) -> Self {
        Self {
            max_entries,
            max_bytes,
            state: RwLock::new(State::new(partitions)),
            entries_gauge,
            bytes_gauge,
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        // Every mutation leaves the state whole between statements that cannot panic.
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tail starts reading partition `partition` after `cursor`: a client that has
    /// `cursor` misses nothing the window will hold of it.
    pub fn start(&self, partition: usize, cursor: StreamId) {
        if self.max_entries == 0 {
            return;
        }
        let mut state = self.write();
        if state.by_partition[partition].is_empty() && state.before[partition].is_none() {
            state.before[partition] = Some(cursor);
        }
    }

    /// The tail read the entry of `frame` (the next one in its partition after the previous one
    /// pushed), on `channel`.
    pub fn push(&self, channel: &[u8], token_only: bool, frame: &QueuedFrame) {
        // Only entries of the log have an id; nothing else belongs here.
        let (Some(id), partition) = (frame.id, frame.partition) else { return };
        if self.max_entries == 0 {
            return;
        }
        let entry = WindowEntry { partition, id, channel: channel.into(), token_only, frame: frame.clone() };
        let mut state = self.write();
        debug_assert!(
            state.by_partition[usize::from(partition)].back().is_none_or(|(last, _)| *last < id),
            "log order"
        );
        state.push(entry);
        while state.entries.len() > self.max_entries
            || (state.bytes > self.max_bytes && state.entries.len() > 1)
        {
            if !state.evict_oldest() {
                break;
            }
        }
        self.publish_size(&state);
    }

    /// Partition `partition` lost everything after `id` (a failover lost the previous
    /// primary's latest writes): so does the window.
    pub fn truncate_after(&self, partition: usize, id: StreamId) {
        let mut state = self.write();
        let partitions = state.before.len();
        let old = std::mem::replace(&mut *state, State::new(partitions));
        state.before = old.before;
        state.first_number = old.first_number;
        for entry in old.entries {
            if !(usize::from(entry.partition) == partition && entry.id > id) {
                state.push(entry);
            }
        }
        if state.before[partition].is_some_and(|before| before > id) {
            state.before[partition] = None;
        }
        self.publish_size(&state);
    }

    /// What partition `partition` holds now, as `XINFO STREAM` says: its oldest entry
    /// (`None`: it is empty or gone) and the newest entry ever deleted from it. Entries trimmed
    /// or deleted since leave the window (with those delivered before them), and with them
    /// the resumes the log could no longer serve.
    pub fn follow_log(&self, partition: usize, oldest: Option<StreamId>, max_deleted: Option<StreamId>) {
        let gone = |id: StreamId| {
            oldest.is_none_or(|oldest| id < oldest) || max_deleted.is_some_and(|deleted| id <= deleted)
        };
        let mut state = self.write();
        let last_gone = state.by_partition[partition]
            .iter()
            .take_while(|(id, _)| gone(*id))
            .last()
            .map(|(_, number)| *number);
        if let Some(last_gone) = last_gone {
            while state.first_number <= last_gone {
                state.evict_oldest();
            }
            state.before[partition] = None;
        }
        if state.before[partition].is_some_and(gone) {
            state.before[partition] = None;
        }
        self.publish_size(&state);
    }

    /// The log the tail reads is not the one it read: nothing held is known to be in it.
    pub fn clear(&self) {
        let mut state = self.write();
        let partitions = state.before.len();
        *state = State::new(partitions);
        self.publish_size(&state);
    }

    fn publish_size(&self, state: &State) {
        self.entries_gauge.set(state.entries.len() as i64);
        self.bytes_gauge.set(state.bytes as i64);
    }

    /// The frames after `after` (an id per partition) that `subscription` wants, if the window
    /// holds everything after it; `None` sends the resume to the log.
    pub fn after(
        &self,
        after: &[StreamId],
        subscription: &Subscription,
        max_entries: usize,
    ) -> Option<Resumed> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        if after.len() != state.before.len() {
            return None;
        }
        let mut behind = 0;
        let mut from_number = u64::MAX;
        for (partition, &has) in after.iter().enumerate() {
            let held = &state.by_partition[partition];
            let next = if state.before[partition] == Some(has) {
                0
            } else {
                held.binary_search_by_key(&has, |(id, _)| *id).ok()? + 1
            };
            behind += held.len() - next;
            if let Some((_, number)) = held.get(next) {
                from_number = from_number.min(*number);
            }
        }
        if behind > max_entries {
            let newest = state.entries.back()?;
            let newest = match &newest.frame.stamp {
                Some(stamp) => stamp.to_vec(),
                None => vec![newest.id],
            };
            return Some(Resumed::TooFarBehind { behind, newest });
        }
        let from = usize::try_from(from_number.saturating_sub(state.first_number)).unwrap_or(usize::MAX);
        Some(Resumed::Frames(
            state
                .entries
                .range(from.min(state.entries.len())..)
                .filter(|entry| entry.id > after[usize::from(entry.partition)])
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
    TooFarBehind { behind: usize, newest: Vec<StreamId> },
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::channels::Selection;
    use protocol::glob::Pattern;

    fn window(max_entries: usize, max_bytes: usize) -> ResumeWindow {
        let gauge = |name| IntGauge::new(name, "test").unwrap();
        ResumeWindow::new(1, max_entries, max_bytes, gauge("entries"), gauge("bytes"))
    }

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    fn push(window: &ResumeWindow, ms: u64, channel: &str) {
        let frame = QueuedFrame::new(Some(id(ms)), Bytes::from(format!("{ms}")));
        window.push(channel.as_bytes(), false, &frame);
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
        assert!(matches!(
            window.after(&[id(1)], &anyone(), 3),
            Some(Resumed::TooFarBehind { behind: 4, .. })
        ));
        assert_eq!(ids(window.after(&[id(2)], &anyone(), 3)), Some(vec![3, 4, 5]));
    }

    #[test]
    fn a_resume_is_served_only_from_an_id_the_window_holds_or_the_one_before_it() {
        let window = window(3, usize::MAX);
        for ms in 1..=5 {
            push(&window, ms, "a");
        }
        assert_eq!(ids(window.after(&[id(3)], &anyone(), usize::MAX)), Some(vec![4, 5]));
        assert_eq!(ids(window.after(&[id(5)], &anyone(), usize::MAX)), Some(vec![]));
        assert_eq!(
            ids(window.after(&[id(2)], &anyone(), usize::MAX)),
            Some(vec![3, 4, 5]),
            "the entry evicted last"
        );
        assert_eq!(window.after(&[id(1)], &anyone(), usize::MAX).map(|_| ()), None, "older: from the log");
        assert_eq!(
            window.after(&[id(6)], &anyone(), usize::MAX).map(|_| ()),
            None,
            "newer than the tail read: from the log"
        );
        assert_eq!(
            window.after(&[StreamId { ms: 4, seq: 1 }], &anyone(), usize::MAX).map(|_| ()),
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
        assert_eq!(ids(window.after(&[id(1)], &a, usize::MAX)), Some(vec![3]));
    }

    #[test]
    fn the_window_is_bounded_in_bytes_and_follows_the_log_back() {
        let window = window(100, 3 * (ENTRY_OVERHEAD_BYTES + 2));
        for ms in 1..=5 {
            push(&window, ms, "a");
        }
        assert_eq!(window.bytes_gauge.get() as usize, 3 * (ENTRY_OVERHEAD_BYTES + 2));
        assert_eq!(window.entries_gauge.get(), 3);
        window.truncate_after(0, id(4));
        assert_eq!(ids(window.after(&[id(2)], &anyone(), usize::MAX)), Some(vec![3, 4]));
        assert_eq!(
            window.after(&[id(5)], &anyone(), usize::MAX).map(|_| ()),
            None,
            "lost with the old primary"
        );
        window.truncate_after(0, id(1));
        assert_eq!(window.after(&[id(2)], &anyone(), usize::MAX).map(|_| ()), None, "the boundary went too");
        assert_eq!((window.entries_gauge.get(), window.bytes_gauge.get()), (0, 0));
        push(&window, 7, "a");
        window.clear();
        assert_eq!(window.after(&[id(7)], &anyone(), usize::MAX).map(|_| ()), None);
    }

    #[test]
    fn entries_trimmed_or_deleted_from_the_log_leave_the_window() {
        let window = window(3, usize::MAX);
        for ms in 1..=5 {
            push(&window, ms, "a");
        }
        window.follow_log(0, Some(id(2)), None);
        assert_eq!(
            ids(window.after(&[id(2)], &anyone(), usize::MAX)),
            Some(vec![3, 4, 5]),
            "nothing trimmed yet"
        );
        window.follow_log(0, Some(id(4)), None);
        assert_eq!(window.after(&[id(2)], &anyone(), usize::MAX).map(|_| ()), None);
        assert_eq!(window.after(&[id(3)], &anyone(), usize::MAX).map(|_| ()), None, "3 was trimmed");
        assert_eq!(ids(window.after(&[id(4)], &anyone(), usize::MAX)), Some(vec![5]));
        window.follow_log(0, Some(id(4)), Some(id(4)));
        assert_eq!(
            window.after(&[id(4)], &anyone(), usize::MAX).map(|_| ()),
            None,
            "deleted: the log would reset"
        );
        assert_eq!(ids(window.after(&[id(5)], &anyone(), usize::MAX)), Some(vec![]));
        window.follow_log(0, None, None);
        assert_eq!(window.entries_gauge.get(), 0, "the log is gone");
    }

    #[test]
    fn a_position_in_several_partitions_is_served_when_every_partition_is_held() {
        let gauge = |name| IntGauge::new(name, "test").unwrap();
        let window = ResumeWindow::new(3, 4, usize::MAX, gauge("entries"), gauge("bytes"));
        let at = |partition: u16, ms: u64| {
            let frame = QueuedFrame::logged(partition, id(ms), None, Bytes::from(format!("{ms}")));
            window.push(b"a", false, &frame);
        };
        window.start(0, id(0));
        window.start(1, id(5));
        window.start(2, id(7));
        at(0, 10);
        at(1, 11);
        at(0, 12);
        assert_eq!(ids(window.after(&[id(0), id(5), id(7)], &anyone(), usize::MAX)), Some(vec![10, 11, 12]));
        assert_eq!(ids(window.after(&[id(10), id(5), id(7)], &anyone(), usize::MAX)), Some(vec![11, 12]));
        assert_eq!(ids(window.after(&[id(12), id(11), id(7)], &anyone(), usize::MAX)), Some(vec![]));
        assert_eq!(
            window.after(&[id(12), id(6), id(7)], &anyone(), usize::MAX).map(|_| ()),
            None,
            "not held"
        );
        assert_eq!(
            window.after(&[id(12), id(11)], &anyone(), usize::MAX).map(|_| ()),
            None,
            "another layout"
        );
        at(2, 13);
        at(1, 14);
        // 10 left: partition 0 from 10 on is still held, from 0 no longer.
        assert_eq!(
            ids(window.after(&[id(10), id(5), id(7)], &anyone(), usize::MAX)),
            Some(vec![11, 12, 13, 14])
        );
        assert_eq!(window.after(&[id(0), id(5), id(7)], &anyone(), usize::MAX).map(|_| ()), None);
        assert!(matches!(
            window.after(&[id(10), id(5), id(7)], &anyone(), 2),
            Some(Resumed::TooFarBehind { behind: 4, .. })
        ));
        // Partition 1 trimmed through 11: 11 and what was delivered before it leave.
        window.follow_log(1, Some(id(14)), None);
        assert_eq!(window.after(&[id(10), id(5), id(7)], &anyone(), usize::MAX).map(|_| ()), None);
        assert_eq!(
            window.after(&[id(12), id(11), id(7)], &anyone(), usize::MAX).map(|_| ()),
            None,
            "11 is gone"
        );
        assert_eq!(ids(window.after(&[id(12), id(14), id(7)], &anyone(), usize::MAX)), Some(vec![13]));
        // Partition 2 lost 13 in a failover.
        window.truncate_after(2, id(7));
        assert_eq!(ids(window.after(&[id(12), id(14), id(7)], &anyone(), usize::MAX)), Some(vec![]));
        assert_eq!(window.entries_gauge.get(), 2);
    }

    #[test]
    fn a_window_of_no_entries_serves_nothing() {
        let window = window(0, usize::MAX);
        push(&window, 1, "a");
        assert_eq!(window.after(&[id(1)], &anyone(), usize::MAX).map(|_| ()), None);
    }
}

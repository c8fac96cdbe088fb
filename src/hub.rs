//! Fan-out: the registry of open streams and the delivery of each encoded frame to them.
//!
//! Streams with the same [`Subscription`] form a group, so a message is matched once per distinct
//! subscription and then handed to every member as a clone of one `Bytes` (a reference count, no
//! copy). Groups are found by index, not by scanning them all: a group asking for one exact
//! channel (`user.42`) by that channel, one asking for one literal prefix (`orders.eu.*`) by the
//! channel's prefixes; only the others (every channel, several patterns, other wildcards) are
//! matched one by one. Each stream has a bounded queue; when a queue is full the client is not keeping up:
//! it is removed and its connection is cut at once (it resumes elsewhere), so one slow reader
//! never delays the others nor makes the relay hold an unbounded backlog for it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::channels::{Selection, Subscription};
use crate::metrics::RelayMetrics;
use protocol::glob::Shape;
use protocol::log_id::StreamId;

/// One queued event, shared by every stream it is queued for. A queue slot is one pointer, so
/// that the queue of an idle stream costs little memory.
#[derive(Debug, Clone)]
pub struct QueuedFrame(Arc<EncodedFrame>);

/// The encoded bytes of an event, and its log id (so that a stream resuming from the log can
/// skip what its replay already sent).
#[derive(Debug)]
pub struct EncodedFrame {
    pub id: Option<StreamId>,
    pub bytes: Bytes,
}

impl QueuedFrame {
    pub fn new(id: Option<StreamId>, bytes: Bytes) -> Self {
        Self(Arc::new(EncodedFrame { id, bytes }))
    }
}

impl std::ops::Deref for QueuedFrame {
    type Target = EncodedFrame;

    fn deref(&self) -> &EncodedFrame {
        &self.0
    }
}

/// A stream's queue: filled by the hub, drained by the stream's task. Lighter than a channel
/// on both counts that matter here: an idle stream holds no buffer at all, and frames queued
/// while the task has not run yet wake it once.
struct Queue {
    state: Mutex<QueueState>,
}

struct QueueState {
    frames: VecDeque<QueuedFrame>,
    /// The hub let the stream go (shutdown, or cut as slow): it ends after the queued frames.
    ended: bool,
    /// The stream is gone: nothing more is queued.
    receiver_gone: bool,
    /// Something was queued (or a keepalive asked for) since the last keepalive sweep.
    active: bool,
    /// A keepalive is to be sent.
    ping: bool,
    waker: Option<Waker>,
}

/// A drained queue that grew beyond this many slots gives its buffer back, so that a burst
/// does not leave an idle stream holding memory.
const KEEP_QUEUE_SLOTS: usize = 16;

enum Push {
    Queued,
    Full,
    Gone,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few field updates that cannot panic halfway; a
    // poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Queue {
    fn new() -> Self {
        // The stream's preamble is about to be sent: it counts as activity.
        let state = QueueState {
            frames: VecDeque::new(),
            ended: false,
            receiver_gone: false,
            active: true,
            ping: false,
            waker: None,
        };
        Self { state: Mutex::new(state) }
    }

    fn push(&self, frame: &QueuedFrame, capacity: usize) -> Push {
        let waker = {
            let mut state = lock(&self.state);
            if state.receiver_gone {
                return Push::Gone;
            }
            if state.frames.len() >= capacity {
                return Push::Full;
            }
            state.frames.push_back(frame.clone());
            state.active = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Push::Queued
    }

    fn end(&self) {
        let waker = {
            let mut state = lock(&self.state);
            state.ended = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Asks for a keepalive if nothing was queued since the previous sweep.
    fn sweep(&self) {
        let waker = {
            let mut state = lock(&self.state);
            if std::mem::replace(&mut state.active, false) {
                return;
            }
            // The keepalive is activity too: a quiet stream gets one every other sweep.
            state.ping = true;
            state.active = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// What a stream sends next.
pub enum Next {
    Frame(QueuedFrame),
    /// The stream has been quiet for the keepalive interval.
    Ping,
}

/// The stream's end of its queue.
pub struct FrameReceiver(Arc<Queue>);

impl FrameReceiver {
    /// The next frame, else a keepalive when one is due; `None` once the hub let the stream go
    /// and every queued frame was taken.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Next>> {
        let mut state = lock(&self.0.state);
        if let Some(frame) = state.frames.pop_front() {
            if state.frames.is_empty() && state.frames.capacity() > KEEP_QUEUE_SLOTS {
                state.frames = VecDeque::new();
            }
            return Poll::Ready(Some(Next::Frame(frame)));
        }
        if state.ended {
            return Poll::Ready(None);
        }
        if std::mem::take(&mut state.ping) {
            return Poll::Ready(Some(Next::Ping));
        }
        register(&mut state, cx);
        Poll::Pending
    }

    /// Ready when a keepalive is due (frames stay queued): for a stream that is not live yet.
    pub fn poll_ping(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.0.state);
        if std::mem::take(&mut state.ping) {
            return Poll::Ready(());
        }
        register(&mut state, cx);
        Poll::Pending
    }

    /// The next frame (keepalives skipped).
    pub async fn recv(&mut self) -> Option<QueuedFrame> {
        loop {
            match std::future::poll_fn(|cx| self.poll_next(cx)).await? {
                Next::Frame(frame) => return Some(frame),
                Next::Ping => continue,
            }
        }
    }

    /// The next frame if one is queued now.
    pub fn try_recv(&mut self) -> Option<QueuedFrame> {
        lock(&self.0.state).frames.pop_front()
    }
}

fn register(state: &mut QueueState, cx: &mut Context<'_>) {
    if !state.waker.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
        state.waker = Some(cx.waker().clone());
    }
}

impl Drop for FrameReceiver {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.receiver_gone = true;
        state.frames = VecDeque::new();
        state.waker = None;
    }
}

pub struct Hub {
    // A std Mutex: publishing holds it only to queue frames, never across an await.
    inner: Mutex<Inner>,
    metrics: RelayMetrics,
    queue_capacity: usize,
    max_connections: usize,
    open: AtomicUsize,
    next_key: AtomicU64,
}

#[derive(Default)]
struct Inner {
    groups: HashMap<Subscription, Group>,
    index: Index,
    /// Set when shutdown begins: no new members.
    closing: bool,
}

/// Where the groups that may want a channel are found (see the module documentation).
#[derive(Default)]
struct Index {
    exact: HashMap<Box<[u8]>, Vec<Subscription>>,
    prefix: HashMap<Box<[u8]>, Vec<Subscription>>,
    /// The lengths of the prefixes in `prefix`, each with how many prefixes have it: a channel
    /// is looked up once per length present.
    prefix_lengths: BTreeMap<usize, usize>,
    scanned: Vec<Subscription>,
}

impl Index {
    fn slot(subscription: &Subscription) -> Shape<'_> {
        match &subscription.selection {
            Selection::Patterns(patterns) if patterns.len() == 1 => patterns[0].shape(),
            _ => Shape::Other,
        }
    }

    fn add(&mut self, subscription: &Subscription) {
        match Self::slot(subscription) {
            Shape::Exact(channel) => self.exact.entry(channel.into()).or_default().push(subscription.clone()),
            Shape::Prefix(prefix) => {
                let groups = self.prefix.entry(prefix.into()).or_default();
                if groups.is_empty() {
                    *self.prefix_lengths.entry(prefix.len()).or_default() += 1;
                }
                groups.push(subscription.clone());
            }
            Shape::Other => self.scanned.push(subscription.clone()),
        }
    }

    fn remove(&mut self, subscription: &Subscription) {
        fn take(groups: &mut Vec<Subscription>, subscription: &Subscription) {
            if let Some(at) = groups.iter().position(|s| s == subscription) {
                groups.swap_remove(at);
            }
        }
        match Self::slot(subscription) {
            Shape::Exact(channel) => {
                if let Some(groups) = self.exact.get_mut(channel) {
                    take(groups, subscription);
                    if groups.is_empty() {
                        self.exact.remove(channel);
                    }
                }
            }
            Shape::Prefix(prefix) => {
                if let Some(groups) = self.prefix.get_mut(prefix) {
                    take(groups, subscription);
                    if groups.is_empty() {
                        self.prefix.remove(prefix);
                        if let Some(count) = self.prefix_lengths.get_mut(&prefix.len()) {
                            *count -= 1;
                            if *count == 0 {
                                self.prefix_lengths.remove(&prefix.len());
                            }
                        }
                    }
                }
            }
            Shape::Other => take(&mut self.scanned, subscription),
        }
    }

    /// The groups that may want `channel`; each still checks its subscription.
    fn candidates<'a>(&'a self, channel: &'a [u8]) -> impl Iterator<Item = &'a Subscription> + 'a {
        let exact = self.exact.get(channel).into_iter().flatten();
        let prefixed = self
            .prefix_lengths
            .keys()
            .take_while(move |length| **length <= channel.len())
            .filter_map(move |length| self.prefix.get(&channel[..*length]))
            .flatten();
        exact.chain(prefixed).chain(&self.scanned)
    }
}

#[derive(Default)]
struct Group {
    members: HashMap<u64, Member>,
}

struct Member {
    queue: Arc<Queue>,
    /// Cancels the client's TCP connection (a slow client is cut, not drained).
    cut: CancellationToken,
    connection_id: Uuid,
}

impl Drop for Member {
    fn drop(&mut self) {
        // Whether removed at shutdown or cut as slow, the stream ends once its queue is drained.
        self.queue.end();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("the relay holds its maximum number of connections ({0})")]
    Full(usize),
    #[error("the relay is shutting down")]
    Closing,
}

/// A registered stream: its queue, and the guard that unregisters it when dropped.
pub struct Registration {
    pub rx: FrameReceiver,
    pub guard: MemberGuard,
}

impl Hub {
    pub fn new(metrics: RelayMetrics, queue_capacity: usize, max_connections: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            metrics,
            queue_capacity,
            max_connections,
            open: AtomicUsize::new(0),
            next_key: AtomicU64::new(1),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every mutation of `Inner` is a single map operation: a poisoned lock is consistent.
        lock(&self.inner)
    }

    /// Open streams right now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Adds a stream for `selection`. `cut` is cancelled if the stream turns out to be slow.
    pub fn register(
        self: &Arc<Self>,
        subscription: Subscription,
        connection_id: Uuid,
        cut: CancellationToken,
    ) -> Result<Registration, RegisterError> {
        // Reserve a slot first so that concurrent registrations cannot overshoot the limit.
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(RegisterError::Full(self.max_connections));
        }
        let queue = Arc::new(Queue::new());
        let rx = FrameReceiver(Arc::clone(&queue));
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        {
            let mut inner = self.inner();
            if inner.closing {
                drop(inner);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(RegisterError::Closing);
            }
            let Inner { groups, index, .. } = &mut *inner;
            let group = groups.entry(subscription.clone()).or_insert_with(|| {
                index.add(&subscription);
                Group::default()
            });
            group.members.insert(key, Member { queue, cut, connection_id });
        }
        self.metrics.connections.inc();
        self.metrics.connections_accepted.inc();
        Ok(Registration {
            rx,
            guard: MemberGuard {
                hub: Arc::clone(self),
                subscription,
                key,
                connection_id,
                opened_at: Instant::now(),
                delivered: 0,
            },
        })
    }

    /// Queues `frame` for every stream that asked for `channel` and may read it (`token_only`:
    /// its rule needs a token), except the connection `exclude` names; returns how many.
    pub fn publish(
        &self,
        channel: &[u8],
        token_only: bool,
        frame: &QueuedFrame,
        exclude: Option<Uuid>,
    ) -> usize {
        let mut delivery = Delivery::new(frame, exclude, self.queue_capacity);
        {
            let mut inner = self.inner();
            let Inner { groups, index, .. } = &mut *inner;
            for subscription in index.candidates(channel) {
                if subscription.wants(channel, token_only)
                    && let Some(group) = groups.get_mut(subscription)
                {
                    delivery.push_to(group);
                }
            }
        }
        delivery.finish(&self.metrics)
    }

    /// Queues `frame` for every stream (relay-wide notices such as `relay.reset`).
    pub fn broadcast(&self, frame: &QueuedFrame) -> usize {
        let mut delivery = Delivery::new(frame, None, self.queue_capacity);
        for group in self.inner().groups.values_mut() {
            delivery.push_to(group);
        }
        delivery.finish(&self.metrics)
    }

    /// Keeps quiet streams alive: every half `interval`, a stream that had nothing queued since
    /// the previous sweep is sent a `: ping`, so none stays silent for longer than `interval`.
    /// One sweep for all streams costs far less than a timer per stream polled at every event.
    pub async fn keep_alive(&self, interval: Duration) {
        let mut sweeps = tokio::time::interval(interval / 2);
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweeps.tick().await;
        loop {
            sweeps.tick().await;
            let inner = self.inner();
            for group in inner.groups.values() {
                for member in group.members.values() {
                    member.queue.sweep();
                }
            }
        }
    }

    /// Shutdown: refuses new streams, then ends the open ones one by one, evenly spread over
    /// `window` in random order, so their clients reconnect to other pods gradually rather
    /// than all at once. Each stream ends after flushing what is already queued for it.
    pub async fn close_all_spread(&self, window: Duration) {
        let mut members: Vec<(Subscription, u64)> = {
            let mut inner = self.inner();
            inner.closing = true;
            inner
                .groups
                .iter()
                .flat_map(|(subscription, group)| {
                    group.members.keys().map(|key| (subscription.clone(), *key))
                })
                .collect()
        };
        shuffle(&mut members);
        let count = members.len();
        let start = tokio::time::Instant::now();
        for (i, (subscription, key)) in members.into_iter().enumerate() {
            let at = start + window.mul_f64(i as f64 / count as f64);
            tokio::time::sleep_until(at).await;
            // Removing the member ends the stream once its queue is drained.
            self.remove(&subscription, key);
        }
    }

    fn remove(&self, subscription: &Subscription, key: u64) -> bool {
        let mut inner = self.inner();
        let Some(group) = inner.groups.get_mut(subscription) else {
            return false;
        };
        let removed = group.members.remove(&key).is_some();
        if group.members.is_empty() {
            inner.groups.remove(subscription);
            inner.index.remove(subscription);
        }
        removed
    }
}

/// One frame on its way to groups: what was queued, and who was too slow to take it.
struct Delivery<'a> {
    frame: &'a QueuedFrame,
    exclude: Option<Uuid>,
    capacity: usize,
    delivered: usize,
    slow: Vec<Uuid>,
}

impl<'a> Delivery<'a> {
    fn new(frame: &'a QueuedFrame, exclude: Option<Uuid>, capacity: usize) -> Self {
        Self { frame, exclude, capacity, delivered: 0, slow: Vec::new() }
    }

    fn push_to(&mut self, group: &mut Group) {
        group.members.retain(|_, member| {
            if self.exclude == Some(member.connection_id) {
                return true;
            }
            match member.queue.push(self.frame, self.capacity) {
                Push::Queued => {
                    self.delivered += 1;
                    true
                }
                Push::Full => {
                    member.cut.cancel();
                    self.slow.push(member.connection_id);
                    false
                }
                // The stream is gone; its guard is about to unregister it.
                Push::Gone => false,
            }
        });
    }

    /// Counts, and logs the slow clients cut (outside the hub's lock); returns how many streams
    /// got the frame.
    fn finish(self, metrics: &RelayMetrics) -> usize {
        metrics.events_delivered.inc_by(self.delivered as u64);
        if !self.slow.is_empty() {
            metrics.slow_client_disconnects.inc_by(self.slow.len() as u64);
            for connection_id in self.slow {
                tracing::warn!(
                    conn.id = %connection_id,
                    queue = self.capacity,
                    "slow client disconnected: its queue was full"
                );
            }
        }
        self.delivered
    }
}

fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rand::random_range(0..=i);
        items.swap(i, j);
    }
}

/// Unregisters its stream when dropped, whatever ended it, and logs the stream's close.
pub struct MemberGuard {
    hub: Arc<Hub>,
    subscription: Subscription,
    key: u64,
    connection_id: Uuid,
    opened_at: Instant,
    delivered: u64,
}

impl MemberGuard {
    /// Counts one frame written to this stream (for the close log line).
    pub fn frame_sent(&mut self) {
        self.delivered += 1;
    }
}

impl Drop for MemberGuard {
    fn drop(&mut self) {
        self.hub.remove(&self.subscription, self.key);
        self.hub.open.fetch_sub(1, Ordering::AcqRel);
        self.hub.metrics.connections.dec();
        let duration = self.opened_at.elapsed();
        self.hub.metrics.connection_duration.observe(duration.as_secs_f64());
        tracing::info!(
            conn.id = %self.connection_id,
            duration_ms = duration.as_millis() as u64,
            events = self.delivered,
            "stream closed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::Selection;
    use protocol::glob::Pattern;

    fn hub(queue: usize, max: usize) -> Arc<Hub> {
        Hub::new(RelayMetrics::new(), queue, max)
    }

    /// A stream on `selection`, without a token.
    fn open(hub: &Arc<Hub>, selection: Selection) -> Registration {
        hub.register(Subscription::anonymous(selection), Uuid::new_v4(), CancellationToken::new()).unwrap()
    }

    fn selection(patterns: &[&str]) -> Selection {
        Selection::from_patterns(patterns.iter().map(|p| Pattern::parse(p).unwrap()).collect())
    }

    #[tokio::test]
    async fn a_frame_reaches_every_matching_stream_as_the_same_bytes() {
        let hub = hub(8, 10);
        let mut a = open(&hub, Selection::All);
        let mut b = open(&hub, selection(&["x.*"]));
        let mut c = open(&hub, selection(&["y.*"]));
        let frame = QueuedFrame::new(None, Bytes::from_static(b"event: x.1\ndata: hi\n\n"));
        assert_eq!(hub.publish(b"x.1", false, &frame, None), 2);
        let got_a = a.rx.recv().await.unwrap();
        let got_b = b.rx.recv().await.unwrap();
        assert_eq!(got_a.bytes.as_ptr(), frame.bytes.as_ptr(), "shared, not copied");
        assert_eq!(got_b.bytes.as_ptr(), frame.bytes.as_ptr());
        assert!(c.rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn streams_are_found_by_channel_by_prefix_or_by_pattern_and_leave_no_trace() {
        let hub = hub(8, 100);
        let exact = open(&hub, selection(&["user.42"]));
        let prefix = open(&hub, selection(&["orders.eu.*"]));
        let other = open(&hub, selection(&["*.created"]));
        let two = open(&hub, selection(&["user.42", "orders.*"]));
        let everything = open(&hub, Selection::All);
        let frame = QueuedFrame::new(None, Bytes::from_static(b"x"));
        let reached = |channel: &[u8]| hub.publish(channel, false, &frame, None);
        assert_eq!(reached(b"user.42"), 3, "exact, two, everything");
        assert_eq!(reached(b"user.420"), 1, "everything");
        assert_eq!(reached(b"orders.eu.1"), 3, "prefix, two, everything");
        assert_eq!(reached(b"orders.us.1"), 2, "two, everything");
        assert_eq!(reached(b"orders.eu.created"), 4, "prefix, other, two, everything");
        assert_eq!(reached(b"orders.eu."), 3, "a prefix matches the channel that is only the prefix");
        drop((exact, prefix, other, two, everything));
        let inner = hub.inner();
        assert!(inner.groups.is_empty());
        let index = &inner.index;
        assert!(index.exact.is_empty() && index.prefix.is_empty() && index.prefix_lengths.is_empty());
        assert!(index.scanned.is_empty());
    }

    #[tokio::test]
    async fn frames_queued_before_the_stream_runs_wake_it_once_and_a_drained_queue_shrinks() {
        let hub = hub(64, 10);
        let mut stream = open(&hub, Selection::All);
        let (waker, wakes) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(stream.rx.poll_next(&mut cx).is_pending());
        for i in 0..40 {
            hub.publish(b"ch", false, &QueuedFrame::new(None, Bytes::from(format!("{i}"))), None);
        }
        assert_eq!(wakes.load(Ordering::SeqCst), 1, "one wake for the burst");
        for i in 0..40 {
            let Poll::Ready(Some(Next::Frame(frame))) = stream.rx.poll_next(&mut cx) else {
                panic!("frame {i}")
            };
            assert_eq!(frame.bytes, Bytes::from(format!("{i}")));
        }
        assert!(stream.rx.poll_next(&mut cx).is_pending());
        assert_eq!(
            stream.rx.0.state.lock().unwrap().frames.capacity(),
            0,
            "the burst's buffer is given back"
        );
    }

    #[tokio::test]
    async fn a_stream_let_go_by_the_hub_ends_after_its_queued_frames() {
        let hub = hub(8, 10);
        let subscription = Subscription::anonymous(Selection::All);
        let mut stream =
            hub.register(subscription.clone(), Uuid::new_v4(), CancellationToken::new()).unwrap();
        hub.publish(b"ch", false, &QueuedFrame::new(None, Bytes::from_static(b"last")), None);
        assert!(hub.remove(&subscription, stream.guard.key));
        assert_eq!(stream.rx.recv().await.unwrap().bytes, Bytes::from_static(b"last"));
        assert!(stream.rx.recv().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn only_streams_quiet_for_a_whole_interval_get_a_keepalive() {
        let hub = hub(8, 10);
        let mut quiet = open(&hub, selection(&["quiet"]));
        let mut busy = open(&hub, selection(&["busy"]));
        let sweeper = {
            let hub = Arc::clone(&hub);
            tokio::spawn(async move { hub.keep_alive(Duration::from_secs(10)).await })
        };
        let (waker, _) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut pings = (Vec::new(), Vec::new());
        let start = tokio::time::Instant::now();
        for _ in 0..35 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            hub.publish(b"busy", false, &QueuedFrame::new(None, Bytes::from_static(b"e")), None);
            for (stream, seen) in [(&mut quiet, &mut pings.0), (&mut busy, &mut pings.1)] {
                while let Poll::Ready(Some(next)) = stream.rx.poll_next(&mut cx) {
                    if matches!(next, Next::Ping) {
                        seen.push(start.elapsed().as_secs());
                    }
                }
            }
        }
        sweeper.abort();
        // Seen within the second after it was asked for.
        let first = pings.0.first().copied().unwrap_or_default();
        assert!((10..=11).contains(&first), "the first keepalive after one interval: {:?}", pings.0);
        assert_eq!(pings.0, [first, first + 10, first + 20], "the quiet stream: one keepalive per interval");
        assert!(pings.1.is_empty(), "the busy stream needs none: {:?}", pings.1);
    }

    #[test]
    fn a_stream_still_replaying_takes_keepalives_and_leaves_its_frames_queued() {
        let queue = Queue::new();
        let mut rx = FrameReceiver(Arc::new(queue));
        let (waker, wakes) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_ping(&mut cx).is_pending());
        rx.0.push(&QueuedFrame::new(None, Bytes::from_static(b"live")), 8);
        rx.0.sweep();
        assert!(rx.poll_ping(&mut cx).is_pending(), "a frame was queued since the last sweep");
        rx.0.sweep();
        assert!(wakes.load(Ordering::SeqCst) >= 2);
        assert!(rx.poll_ping(&mut cx).is_ready());
        assert!(matches!(rx.poll_next(&mut cx), Poll::Ready(Some(Next::Frame(_)))));
        assert!(rx.poll_next(&mut cx).is_pending());
    }

    fn counting_waker() -> (Waker, Arc<AtomicUsize>) {
        struct Counter(Arc<AtomicUsize>);
        impl std::task::Wake for Counter {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let wakes = Arc::new(AtomicUsize::new(0));
        (Waker::from(Arc::new(Counter(Arc::clone(&wakes)))), wakes)
    }

    #[tokio::test]
    async fn a_full_queue_cuts_only_that_client() {
        let hub = hub(2, 10);
        let slow_cut = CancellationToken::new();
        let slow =
            hub.register(Subscription::anonymous(Selection::All), Uuid::new_v4(), slow_cut.clone()).unwrap();
        let mut fast = open(&hub, Selection::All);
        for i in 0..5 {
            hub.publish(b"ch", false, &QueuedFrame::new(None, Bytes::from(format!("{i}"))), None);
            assert_eq!(fast.rx.recv().await.unwrap().bytes, Bytes::from(format!("{i}")));
        }
        assert!(slow_cut.is_cancelled());
        assert_eq!(hub.metrics.slow_client_disconnects.get(), 1);
        drop(slow);
        assert_eq!(hub.open_connections(), 1);
    }

    #[tokio::test]
    async fn the_excluded_connection_is_skipped_and_everyone_else_served() {
        let hub = hub(4, 10);
        let excluded = Uuid::new_v4();
        let mut origin = hub
            .register(Subscription::anonymous(Selection::All), excluded, CancellationToken::new())
            .unwrap();
        let mut other = open(&hub, Selection::All);
        let frame = QueuedFrame::new(None, Bytes::from_static(b"x"));
        assert_eq!(hub.publish(b"ch", false, &frame, Some(excluded)), 1);
        assert!(other.rx.try_recv().is_some());
        assert!(origin.rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn registrations_beyond_the_limit_are_refused_and_slots_come_back() {
        let hub = hub(2, 1);
        let first = open(&hub, Selection::All);
        assert!(matches!(
            hub.register(Subscription::anonymous(Selection::All), Uuid::new_v4(), CancellationToken::new()),
            Err(RegisterError::Full(1))
        ));
        drop(first);
        assert!(
            hub.register(Subscription::anonymous(Selection::All), Uuid::new_v4(), CancellationToken::new())
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_streams_spread_over_the_window() {
        let hub = hub(4, 10);
        let mut streams: Vec<_> = (0..4).map(|_| open(&hub, Selection::All)).collect();
        let start = tokio::time::Instant::now();
        let closer = {
            let hub = Arc::clone(&hub);
            tokio::spawn(async move { hub.close_all_spread(Duration::from_secs(4)).await })
        };
        let mut ended_at = Vec::new();
        for stream in &mut streams {
            assert!(stream.rx.recv().await.is_none());
            ended_at.push(start.elapsed());
        }
        closer.await.unwrap();
        ended_at.sort();
        assert_eq!(ended_at.last().unwrap().as_secs(), 3, "last stream closes near the window's end");
        assert!(matches!(
            hub.register(Subscription::anonymous(Selection::All), Uuid::new_v4(), CancellationToken::new()),
            Err(RegisterError::Closing)
        ));
    }
}

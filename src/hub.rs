//! Fan-out: the registry of open streams and the delivery of each encoded frame to them.
//!
//! Streams with the same [`Subscription`] form a group, so a message is matched once per distinct
//! subscription and then handed to every member as a clone of one `Bytes` (a reference count, no
//! copy). Groups are found by index, not by scanning them all: a group asking for one exact
//! channel (`user.42`) by that channel, one whose pattern starts with a literal (`orders.eu.*`,
//! `orders.*.created`) by the channel's prefixes. Only the others (every channel, several
//! patterns, a leading wildcard) are matched one by one, and each source remembers per channel
//! which of them want it ([`ScanCache`]), so that a message costs a lookup whatever the number of
//! distinct selections. Each stream has a bounded queue; when a queue is full the client is not
//! keeping up: it is removed and its connection is cut at once (it resumes elsewhere), so one
//! slow reader never delays the others nor makes the relay hold an unbounded backlog for it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
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

/// The encoded bytes of an event, and where it is in the log (so that a stream resuming from
/// the log can skip what its replay already sent).
#[derive(Debug)]
pub struct EncodedFrame {
    /// Its entry's id in its log partition.
    pub id: Option<StreamId>,
    pub partition: u16,
    /// With several partitions, the position its `id:` line states (one id per partition);
    /// `None` when that is the entry's id alone: one partition, or a frame replayed to one
    /// stream, whose position the stream works out.
    pub stamp: Option<Arc<[StreamId]>>,
    pub bytes: Bytes,
    /// For a `relay.reset` notice, when the incident it reports happened (at the latest): a
    /// stream that sent its client another reset since does not send this one too (the client
    /// refetched its state after the incident).
    pub reset_at: Option<std::time::Instant>,
}

impl QueuedFrame {
    pub fn new(id: Option<StreamId>, bytes: Bytes) -> Self {
        Self(Arc::new(EncodedFrame { id, partition: 0, stamp: None, bytes, reset_at: None }))
    }

    /// The frame of the entry `id` of log partition `partition`, its `id:` line stating `stamp`.
    pub fn logged(partition: u16, id: StreamId, stamp: Option<Arc<[StreamId]>>, bytes: Bytes) -> Self {
        Self(Arc::new(EncodedFrame { id: Some(id), partition, stamp, bytes, reset_at: None }))
    }

    /// A `relay.reset` notice for an incident now.
    pub fn reset(bytes: Bytes) -> Self {
        Self::reset_for(bytes, std::time::Instant::now())
    }

    /// A `relay.reset` notice for an incident that happened by `incident`.
    pub fn reset_for(bytes: Bytes, incident: std::time::Instant) -> Self {
        Self(Arc::new(EncodedFrame { id: None, partition: 0, stamp: None, bytes, reset_at: Some(incident) }))
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
    // Read by every delivery; written only when a group is created or removed (a map insert or
    // remove). Each group's members are behind the group's own lock, so a stream joining or
    // leaving an existing group, and the keepalive sweeps, never wait for a delivery to other
    // groups, nor a delivery for them. Both are std locks: never held across an await.
    groups: RwLock<Groups>,
    metrics: RelayMetrics,
    queue_capacity: usize,
    max_connections: usize,
    open: AtomicUsize,
    next_key: AtomicU64,
}

#[derive(Default)]
struct Groups {
    by_subscription: HashMap<Subscription, Arc<Group>>,
    index: Index,
    /// The `seq` of the next group created.
    next_seq: u64,
    /// Set when shutdown begins: no new members.
    closing: bool,
}

/// The streams of one subscription.
struct Group {
    subscription: Subscription,
    /// Order of creation: what a [`ScanCache`] has already checked.
    seq: u64,
    members: Mutex<Members>,
    /// Set (under the hub's write lock) when the group left the hub; nothing joins it then.
    retired: AtomicBool,
}

#[derive(Default)]
struct Members(HashMap<u64, Member>);

/// Where the groups that may want a channel are found (see the module documentation).
#[derive(Default)]
struct Index {
    exact: HashMap<Box<[u8]>, Vec<Arc<Group>>>,
    /// By literal prefix: both `orders.eu.*` and `orders.eu.*.created` under `orders.eu.`.
    prefix: HashMap<Box<[u8]>, Vec<Arc<Group>>>,
    /// The lengths of the prefixes in `prefix`, each with how many prefixes have it: a channel
    /// is looked up once per length present.
    prefix_lengths: BTreeMap<usize, usize>,
    /// Groups no index finds (several patterns, or a leading wildcard), oldest first.
    scanned: Vec<Arc<Group>>,
}

enum Slot<'a> {
    Exact(&'a [u8]),
    Prefix(&'a [u8]),
    Scanned,
}

impl Index {
    fn slot(subscription: &Subscription) -> Slot<'_> {
        let Selection::Patterns(patterns) = &subscription.selection else { return Slot::Scanned };
        if patterns.len() != 1 {
            return Slot::Scanned;
        }
        match patterns[0].shape() {
            Shape::Exact(channel) => Slot::Exact(channel),
            Shape::Prefix(prefix) | Shape::Anchored(prefix) if !prefix.is_empty() => Slot::Prefix(prefix),
            _ => Slot::Scanned,
        }
    }

    fn add(&mut self, group: &Arc<Group>) {
        match Self::slot(&group.subscription) {
            Slot::Exact(channel) => self.exact.entry(channel.into()).or_default().push(Arc::clone(group)),
            Slot::Prefix(prefix) => {
                let groups = self.prefix.entry(prefix.into()).or_default();
                if groups.is_empty() {
                    *self.prefix_lengths.entry(prefix.len()).or_default() += 1;
                }
                groups.push(Arc::clone(group));
            }
            Slot::Scanned => self.scanned.push(Arc::clone(group)),
        }
    }

    fn remove(&mut self, group: &Arc<Group>) {
        fn take(groups: &mut Vec<Arc<Group>>, group: &Arc<Group>) {
            groups.retain(|g| !Arc::ptr_eq(g, group));
        }
        match Self::slot(&group.subscription) {
            Slot::Exact(channel) => {
                if let Some(groups) = self.exact.get_mut(channel) {
                    take(groups, group);
                    if groups.is_empty() {
                        self.exact.remove(channel);
                    }
                }
            }
            Slot::Prefix(prefix) => {
                if let Some(groups) = self.prefix.get_mut(prefix) {
                    take(groups, group);
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
            // Keeps the order of creation, which the scan caches rely on.
            Slot::Scanned => take(&mut self.scanned, group),
        }
    }

    /// The indexed groups that may want `channel`; each still checks its subscription.
    fn candidates<'a>(&'a self, channel: &'a [u8]) -> impl Iterator<Item = &'a Arc<Group>> + 'a {
        let exact = self.exact.get(channel).into_iter().flatten();
        let prefixed = self
            .prefix_lengths
            .keys()
            .take_while(move |length| **length <= channel.len())
            .filter_map(move |length| self.prefix.get(&channel[..*length]))
            .flatten();
        exact.chain(prefixed)
    }
}

/// Which of the groups that no index finds want a channel, remembered per channel by each
/// source of events (so no lock is shared). Matching those groups one by one is what a message
/// costs beyond a lookup, and many distinct wildcard selections (hostile ones included) would
/// make every message pay for all of them; remembered, a channel seen before costs a lookup
/// plus a check of only the groups created since. Bounded: when it holds too many channels or
/// references it starts over.
#[derive(Default)]
pub struct ScanCache {
    /// By `token_only`, then channel.
    channels: [HashMap<Box<[u8]>, CachedScan>; 2],
    references: usize,
    /// Subscriptions matched since the hub last counted them.
    checks: u64,
}

struct CachedScan {
    /// The `seq` of the newest group checked.
    through: Option<u64>,
    groups: Vec<Arc<Group>>,
}

/// Channels a [`ScanCache`] remembers.
const SCAN_CACHE_CHANNELS: usize = 4_096;
/// Group references a [`ScanCache`] holds (8 bytes each).
const SCAN_CACHE_REFERENCES: usize = 262_144;

impl ScanCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The groups of `scanned` (oldest first) that want `channel`.
    fn wanting(&mut self, scanned: &[Arc<Group>], channel: &[u8], token_only: bool) -> &[Arc<Group>] {
        if scanned.is_empty() {
            // Nothing to remember: a relay whose streams are all indexed keeps no cache.
            if self.channels.iter().any(|map| !map.is_empty()) {
                self.channels = Default::default();
                self.references = 0;
            }
            return &[];
        }
        let newest = scanned.last().map(|group| group.seq);
        let checks = &mut self.checks;
        let wants = |group: &&Arc<Group>| {
            *checks += 1;
            group.subscription.wants(channel, token_only)
        };
        let table = usize::from(token_only);
        if !self.channels[table].contains_key(channel) {
            if self.channels[table].len() >= SCAN_CACHE_CHANNELS || self.references >= SCAN_CACHE_REFERENCES {
                self.channels = Default::default();
                self.references = 0;
            }
            let groups: Vec<Arc<Group>> = scanned.iter().filter(wants).cloned().collect();
            self.references += groups.len();
            let cached = CachedScan { through: newest, groups };
            return &self.channels[table].entry(channel.into()).or_insert(cached).groups;
        }
        let cached = self.channels[table].get_mut(channel).expect("looked up above");
        if cached.through != newest {
            // Groups created since: check only those, and let go of the groups that left.
            let from =
                cached.through.map_or(0, |through| scanned.partition_point(|group| group.seq <= through));
            let before = cached.groups.len();
            cached.groups.retain(|group| !group.retired.load(Ordering::Acquire));
            cached.groups.extend(scanned[from..].iter().filter(wants).cloned());
            cached.through = newest;
            self.references = (self.references + cached.groups.len()).saturating_sub(before);
        }
        &cached.groups
    }
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
            groups: RwLock::new(Groups::default()),
            metrics,
            queue_capacity,
            max_connections,
            open: AtomicUsize::new(0),
            next_key: AtomicU64::new(1),
        })
    }

    // Every mutation under these locks is a single map or flag update: a poisoned lock is
    // consistent.
    fn read(&self) -> RwLockReadGuard<'_, Groups> {
        self.groups.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Groups> {
        self.groups.write().unwrap_or_else(PoisonError::into_inner)
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
        if let Err(error) = self.join(&subscription, key, Member { queue, cut, connection_id }) {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(error);
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

    fn join(&self, subscription: &Subscription, key: u64, member: Member) -> Result<(), RegisterError> {
        // Usually the group exists: join it under the read lock.
        let member = {
            let groups = self.read();
            if groups.closing {
                return Err(RegisterError::Closing);
            }
            match groups.by_subscription.get(subscription) {
                Some(group) => {
                    let mut members = lock(&group.members);
                    if group.retired.load(Ordering::Acquire) {
                        Some(member)
                    } else {
                        members.0.insert(key, member);
                        None
                    }
                }
                None => Some(member),
            }
        };
        let Some(member) = member else { return Ok(()) };
        let mut groups = self.write();
        if groups.closing {
            return Err(RegisterError::Closing);
        }
        let Groups { by_subscription, index, next_seq, .. } = &mut *groups;
        let group = by_subscription.entry(subscription.clone()).or_insert_with(|| {
            let group = Arc::new(Group {
                subscription: subscription.clone(),
                seq: *next_seq,
                members: Mutex::default(),
                retired: AtomicBool::new(false),
            });
            *next_seq += 1;
            index.add(&group);
            group
        });
        lock(&group.members).0.insert(key, member);
        Ok(())
    }

    /// Queues `frame` for every stream that asked for `channel` and may read it (`token_only`:
    /// its rule needs a token), except the connection `exclude` names; returns how many.
    /// `scans` is the calling source's own [`ScanCache`].
    pub fn publish(
        &self,
        channel: &[u8],
        token_only: bool,
        frame: &QueuedFrame,
        exclude: Option<Uuid>,
        scans: &mut ScanCache,
    ) -> usize {
        let mut delivery = Delivery::new(frame, exclude, self.queue_capacity);
        {
            let groups = self.read();
            for group in groups.index.candidates(channel) {
                if group.subscription.wants(channel, token_only) {
                    delivery.push_to(group);
                }
            }
            for group in scans.wanting(&groups.index.scanned, channel, token_only) {
                delivery.push_to(group);
            }
        }
        let checks = std::mem::take(&mut scans.checks);
        if checks > 0 {
            self.metrics.selection_checks.inc_by(checks);
        }
        delivery.finish(&self.metrics)
    }

    /// Queues `frame` for every stream (relay-wide notices such as `relay.reset`).
    pub fn broadcast(&self, frame: &QueuedFrame) -> usize {
        let mut delivery = Delivery::new(frame, None, self.queue_capacity);
        for group in self.read().by_subscription.values() {
            delivery.push_to(group);
        }
        delivery.finish(&self.metrics)
    }

    /// Every group now, to visit without holding the hub's lock.
    fn snapshot(&self) -> Vec<Arc<Group>> {
        self.read().by_subscription.values().cloned().collect()
    }

    /// Keeps quiet streams alive: every half `interval`, a stream that had nothing queued since
    /// the previous sweep is sent a `: ping`, so none stays silent for longer than `interval`.
    /// One sweep for all streams costs far less than a timer per stream polled at every event;
    /// it visits one group at a time.
    pub async fn keep_alive(&self, interval: Duration) {
        let mut sweeps = tokio::time::interval(interval / 2);
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweeps.tick().await;
        loop {
            sweeps.tick().await;
            for group in self.snapshot() {
                for member in lock(&group.members).0.values() {
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
            let mut groups = self.write();
            groups.closing = true;
            groups
                .by_subscription
                .iter()
                .flat_map(|(subscription, group)| {
                    lock(&group.members).0.keys().map(|key| (subscription.clone(), *key)).collect::<Vec<_>>()
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

    /// Removes stream `key`; whether it was still there. A group left empty leaves the hub.
    fn remove(&self, subscription: &Subscription, key: u64) -> bool {
        let (removed, emptied) = {
            let groups = self.read();
            let Some(group) = groups.by_subscription.get(subscription) else {
                return false;
            };
            let mut members = lock(&group.members);
            let removed = members.0.remove(&key);
            (removed.is_some(), members.0.is_empty())
        };
        if emptied {
            self.retire_if_empty(subscription);
        }
        removed
    }

    fn retire_if_empty(&self, subscription: &Subscription) {
        let mut groups = self.write();
        let Some(group) = groups.by_subscription.get(subscription) else { return };
        {
            // Someone may have joined between the read lock and this one.
            let members = lock(&group.members);
            if !members.0.is_empty() {
                return;
            }
            group.retired.store(true, Ordering::Release);
        }
        if let Some(group) = groups.by_subscription.remove(subscription) {
            groups.index.remove(&group);
        }
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

    fn push_to(&mut self, group: &Group) {
        lock(&group.members).0.retain(|_, member| {
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

    /// Counts, and logs the slow clients cut (outside the hub's locks); returns how many
    /// streams got the frame.
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
        assert_eq!(hub.publish(b"x.1", false, &frame, None, &mut ScanCache::new()), 2);
        let got_a = a.rx.recv().await.unwrap();
        let got_b = b.rx.recv().await.unwrap();
        assert_eq!(got_a.bytes.as_ptr(), frame.bytes.as_ptr(), "shared, not copied");
        assert_eq!(got_b.bytes.as_ptr(), frame.bytes.as_ptr());
        assert!(c.rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn streams_are_found_by_channel_by_prefix_or_by_pattern_and_leave_no_trace() {
        let hub = hub(64, 100);
        let exact = open(&hub, selection(&["user.42"]));
        let prefix = open(&hub, selection(&["orders.eu.*"]));
        let anchored = open(&hub, selection(&["orders.*.created"]));
        let other = open(&hub, selection(&["*.created"]));
        let two = open(&hub, selection(&["user.42", "orders.*"]));
        let everything = open(&hub, Selection::All);
        {
            let groups = hub.read();
            assert_eq!(groups.index.exact.len(), 1);
            assert_eq!(groups.index.prefix.len(), 2, "orders.eu. and orders.");
            assert_eq!(groups.index.scanned.len(), 3);
        }
        let frame = QueuedFrame::new(None, Bytes::from_static(b"x"));
        let mut scans = ScanCache::new();
        let mut reached = |channel: &[u8]| hub.publish(channel, false, &frame, None, &mut scans);
        for _ in 0..2 {
            assert_eq!(reached(b"user.42"), 3, "exact, two, everything");
            assert_eq!(reached(b"user.420"), 1, "everything");
            assert_eq!(reached(b"orders.eu.1"), 3, "prefix, two, everything");
            assert_eq!(reached(b"orders.us.1"), 2, "two, everything");
            assert_eq!(reached(b"orders.eu.created"), 5, "prefix, anchored, other, two, everything");
            assert_eq!(reached(b"orders.eu."), 3, "a prefix matches the channel that is only the prefix");
        }
        drop((exact, prefix, anchored, other, two, everything));
        let groups = hub.read();
        assert!(groups.by_subscription.is_empty());
        let index = &groups.index;
        assert!(index.exact.is_empty() && index.prefix.is_empty() && index.prefix_lengths.is_empty());
        assert!(index.scanned.is_empty());
    }

    #[tokio::test]
    async fn a_scan_cache_finds_groups_created_after_it_remembered_a_channel_and_forgets_those_gone() {
        let hub = hub(8, 100);
        let frame = QueuedFrame::new(None, Bytes::from_static(b"x"));
        let mut scans = ScanCache::new();
        let mut reached = |channel: &[u8]| hub.publish(channel, false, &frame, None, &mut scans);
        let created = open(&hub, selection(&["*.created"]));
        assert_eq!(reached(b"a.created"), 1);
        let deleted = open(&hub, selection(&["*.deleted"]));
        let also_created = open(&hub, selection(&["*ted"]));
        assert_eq!(reached(b"a.created"), 2, "*.created and *ted");
        assert_eq!(reached(b"a.deleted"), 2, "*.deleted and *ted");
        drop(created);
        assert_eq!(reached(b"a.created"), 1, "*ted");
        let again = open(&hub, selection(&["*.created"]));
        assert_eq!(reached(b"a.created"), 2, "the subscription back, counted once");
        drop((deleted, also_created, again));
        assert_eq!(reached(b"a.created"), 0);
        assert!(scans.channels.iter().all(HashMap::is_empty), "none held");
    }

    #[tokio::test]
    async fn a_scan_cache_stays_bounded() {
        let hub = hub(SCAN_CACHE_CHANNELS * 3, 100);
        let _all = open(&hub, Selection::All);
        let frame = QueuedFrame::new(None, Bytes::from_static(b"x"));
        let mut scans = ScanCache::new();
        for i in 0..SCAN_CACHE_CHANNELS * 3 {
            assert_eq!(hub.publish(format!("c.{i}").as_bytes(), false, &frame, None, &mut scans), 1);
        }
        assert!(scans.channels[0].len() <= SCAN_CACHE_CHANNELS);
        assert_eq!(scans.references, scans.channels[0].len());
    }

    #[tokio::test]
    async fn frames_queued_before_the_stream_runs_wake_it_once_and_a_drained_queue_shrinks() {
        let hub = hub(64, 10);
        let mut stream = open(&hub, Selection::All);
        let (waker, wakes) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(stream.rx.poll_next(&mut cx).is_pending());
        for i in 0..40 {
            hub.publish(
                b"ch",
                false,
                &QueuedFrame::new(None, Bytes::from(format!("{i}"))),
                None,
                &mut ScanCache::new(),
            );
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
        hub.publish(
            b"ch",
            false,
            &QueuedFrame::new(None, Bytes::from_static(b"last")),
            None,
            &mut ScanCache::new(),
        );
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
            hub.publish(
                b"busy",
                false,
                &QueuedFrame::new(None, Bytes::from_static(b"e")),
                None,
                &mut ScanCache::new(),
            );
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
            hub.publish(
                b"ch",
                false,
                &QueuedFrame::new(None, Bytes::from(format!("{i}"))),
                None,
                &mut ScanCache::new(),
            );
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
        assert_eq!(hub.publish(b"ch", false, &frame, Some(excluded), &mut ScanCache::new()), 1);
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

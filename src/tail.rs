//! The log tail: envelope channels are delivered from the log itself.
//!
//! One dedicated connection per pod reads the log with `XREAD BLOCK` from the last id it read,
//! and the hub fans each entry out to the streams that want its channel. Live delivery, gap
//! fill and recovery are one mechanism: after any reconnect — a Redis restart, a network cut,
//! a failover to another node — the tail continues from the last id it read, so nothing
//! published meanwhile is missed and nothing is delivered twice. Ids come only from the log:
//! nothing a client can PUBLISH touches envelope delivery.
//!
//! Proof of delivery: every `probe_interval_ms` the relay appends a nonce to its own probe
//! stream (`<log>:probe:<pod id>`, read by the same `XREAD` as the log) through its command
//! connection, which reaches the current primary; the nonce must come back through the tail
//! within `probe_timeout_ms`. A tail that is connected but no longer fed (left on a node that
//! was demoted or cut off from the writers) fails the probe and is reconnected, after looking
//! the primary up again.
//!
//! A failover can lose the old primary's unreplicated tail. The tail then finds that the last
//! entry it read is not in the log of the node it reconnected to: it goes back to the newest
//! entry both logs share and continues from there, remembering the events it delivered from the
//! lost part, so that the same events published again (the outbox republishes what Redis did
//! not confirm as replicated) are not delivered twice. If it cannot find such an entry among
//! those it remembers, every stream is told to resynchronise with `relay.reset`.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::channels::Access;
use crate::commands::SharedConnection;
use crate::health::DeliveryPath;
use crate::hub::{QueuedFrame, ScanCache};
use crate::log::{LogEntry, RawEntry, entry_from_raw};
use crate::metrics::unix_seconds_now;
use crate::source::{Established, Probe, Source, SourceContext, Traced};
use crate::window::ResumeWindow;
use protocol::log_id::StreamId;
use protocol::log_id::encode_position;
use protocol::message::{Decoded, DropReason};
use protocol::sse::reset_frame;
use service::log_eviction::eviction_risk;
use service::redis_target::RedisConnection;

/// Entries read per `XREAD`.
const READ_COUNT: usize = 500;
/// Entries (id and event) the tail remembers, to find where a replacement log diverged from
/// the one it read and which events it already delivered.
const REMEMBERED_ENTRIES: usize = 16_384;
/// The [`event_key`] of a malformed entry (no channel or envelope).
const MALFORMED: u64 = 0;
/// Probe entries kept in a probe stream.
const PROBE_STREAM_LENGTH: usize = 8;

pub struct LogTail {
    reader: TailReader,
    /// One per partition of the log.
    positions: Vec<Position>,
}

/// What reads the log; kept apart from the [`Position`]s it advances.
struct TailReader {
    ctx: Arc<SourceContext>,
    /// Every entry delivered, to serve resumes from memory.
    window: Arc<ResumeWindow>,
    /// Each partition's stream and this pod's probe stream beside it.
    partitions: Vec<PartitionKeys>,
    /// When the relay started: its streams are owed every entry logged since.
    started: std::time::Instant,
}

struct PartitionKeys {
    key: String,
    probe_key: String,
}

/// Why a tail session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to Redis: {0}")]
    Connect(String),
    #[error("cannot read the log: {0}")]
    Read(redis::RedisError),
    #[error("probe not seen within {0} ms: the log tail is not fed")]
    Unfed(u128),
}

/// Where the tail stands, across sessions.
#[derive(Default)]
struct Position {
    /// The id after which to read; `None` before the first session found the log's end.
    cursor: Option<StreamId>,
    /// The last entries read (id, event), oldest first.
    recent: VecDeque<(StreamId, u64)>,
    /// Events delivered from a log that was since replaced and not yet seen again in the new
    /// one: seen again, they are not delivered a second time.
    vanished: HashSet<u64>,
    /// When the log last answered a read: a log found replaced was lost after this.
    read_at: Option<std::time::Instant>,
}

impl Position {
    fn remember(&mut self, id: StreamId, event: u64) {
        if self.recent.len() == REMEMBERED_ENTRIES {
            self.recent.pop_front();
        }
        self.recent.push_back((id, event));
    }

    /// Whether the entry (id and event) is one this tail read.
    fn read_before(&self, id: StreamId, event: u64) -> bool {
        self.recent.binary_search_by_key(&id, |(id, _)| *id).is_ok_and(|i| self.recent[i].1 == event)
    }
}

impl LogTail {
    /// The tail of the log's partitions (their stream keys), each with the probe stream of pod
    /// `pod_id` (in the partition's hash slot, so that one `XREAD` reads both in a cluster too).
    pub fn new(ctx: Arc<SourceContext>, window: Arc<ResumeWindow>, keys: Vec<String>, pod_id: &str) -> Self {
        Self {
            positions: keys.iter().map(|_| Position::default()).collect(),
            reader: TailReader {
                partitions: keys
                    .into_iter()
                    .map(|key| PartitionKeys { probe_key: probe_key(&key, pod_id), key })
                    .collect(),
                ctx,
                window,
                started: std::time::Instant::now(),
            },
        }
    }
}

impl Source for LogTail {
    const PATH: DeliveryPath = DeliveryPath::Log;
    type Error = SessionError;

    fn context(&self) -> &Arc<SourceContext> {
        &self.reader.ctx
    }

    fn session<'a>(
        &'a mut self,
        cancel: &'a CancellationToken,
        established: Established<'a>,
    ) -> impl Future<Output = Result<(), SessionError>> + Send + 'a {
        self.reader.session(cancel, established, &mut self.positions)
    }
}

/// What an `XREAD` of a partition and its probe stream brings: each stream's new entries.
type ReadReply = Vec<(String, Vec<RawEntry>)>;

/// A partition's read on its way: the partition and the reply.
type PendingRead = std::pin::Pin<Box<dyn Future<Output = (usize, redis::RedisResult<ReadReply>)> + Send>>;

/// What one session knows of a partition beside its [`Position`].
struct PartitionSession {
    connection: RedisConnection,
    /// Where the log ended when the session connected.
    log_end: StreamId,
    probe_cursor: StreamId,
    /// Seconds the partition's newest entry read is behind.
    lag: f64,
}

impl TailReader {
    async fn connect(&self) -> Result<(RedisConnection, String), SessionError> {
        let timeout = self.ctx.settings.connect_timeout();
        // The read blocks for up to `tail_block_ms`: the reply may take that long, and more.
        // A connection of its own (in a cluster too): nothing else waits behind the read.
        tokio::time::timeout(timeout, self.ctx.target.connect(self.ctx.settings.tail_block() + timeout))
            .await
            .map_err(|_| SessionError::Connect(format!("timed out after {} ms", timeout.as_millis())))?
            .map_err(|error| SessionError::Connect(error.to_string()))
    }

    async fn session(
        &self,
        cancel: &CancellationToken,
        established: Established<'_>,
        positions: &mut [Position],
    ) -> Result<(), SessionError> {
        let mut partitions = Vec::with_capacity(self.partitions.len());
        for (index, keys) in self.partitions.iter().enumerate() {
            let (mut connection, address) = self.connect().await?;
            let log_end = last_generated_id(&mut connection, &keys.key).await.map_err(SessionError::Read)?;
            let position = &mut positions[index];
            match position.cursor {
                // Streams may have opened before Redis could be reached (the relay started while
                // Redis was down): entries logged since the relay started are theirs. The tail
                // starts after an entry, so that the positions it gives clients are entries
                // a resume can find.
                None => {
                    let since_start = self.logged_since_start(&mut connection).await;
                    let cursor = newest_entry_up_to(&mut connection, &keys.key, log_end.min(since_start))
                        .await
                        .map_err(SessionError::Read)?;
                    position.cursor = Some(cursor);
                    self.window.start(index, cursor);
                }
                Some(cursor) => self
                    .locate(&mut connection, index, cursor, log_end, positions)
                    .await
                    .map_err(SessionError::Read)?,
            }
            tracing::info!(redis.node = %address, log = %keys.key, from = %positions[index].cursor.unwrap_or(log_end), "redis log tail reading");
            partitions.push(PartitionSession { connection, log_end, probe_cursor: StreamId::ZERO, lag: 0.0 });
        }
        let reconnected = established.reconnected();
        established.now();

        let mut scans = ScanCache::new();
        // One probe per partition: delivery is proven when every partition's came back.
        let mut probes: Vec<Probe> =
            partitions.iter().map(|_| Probe::new(self.ctx.settings.probe_timeout())).collect();
        // With several partitions, each frame states the relay's position in all of them.
        let mut stamp: Option<Vec<StreamId>> = (self.partitions.len() > 1)
            .then(|| positions.iter().map(|position| position.cursor.unwrap_or(StreamId::ZERO)).collect());
        let mut probe_tick = tokio::time::interval(self.ctx.settings.probe_interval());
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reads: futures_util::stream::FuturesUnordered<PendingRead> = partitions
            .iter()
            .enumerate()
            .map(|(index, partition)| self.read(index, partition, &positions[index]))
            .collect();
        loop {
            let probe_deadline = probes.iter().filter_map(Probe::deadline).min();
            // Biased: a reply already in is read before the probe's deadline is looked at.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                Some((index, reply)) = futures_util::StreamExt::next(&mut reads) => {
                    let started = Instant::now();
                    let reply = reply.map_err(SessionError::Read)?;
                    positions[index].read_at = Some(started.into_std());
                    let now = unix_seconds_now();
                    self.ctx.metrics.log_read.set(now);
                    let keys = &self.partitions[index];
                    // A read that brings nothing of the log is at its end: no lag, whatever the
                    // last entries were (those of a gap filled after an outage are old).
                    partitions[index].lag = 0.0;
                    for (key, entries) in reply {
                        if key == keys.probe_key {
                            for (id, nonce) in entries.iter().filter_map(probe_entry) {
                                partitions[index].probe_cursor = id;
                                self.ctx.probe_seen(DeliveryPath::Log, nonce, &mut probes, index);
                            }
                        } else if key == keys.key {
                            if let Some(newest) = entries.last().and_then(|(id, _)| id.parse::<StreamId>().ok()) {
                                partitions[index].lag = (now - newest.ms as f64 / 1e3).max(0.0);
                            }
                            // Entries up to the log's end at reconnect were published while the
                            // tail was away.
                            let gap_end = reconnected.then_some(partitions[index].log_end);
                            let partition = Delivering { index, stamp: stamp.as_mut(), gap_end };
                            self.deliver(entries, &mut positions[index], partition, &mut scans);
                        }
                    }
                    self.ctx.metrics.log_lag.set(partitions.iter().map(|partition| partition.lag).fold(0.0, f64::max));
                    reads.push(self.read(index, &partitions[index], &positions[index]));
                    let spent = started.elapsed();
                    for probe in &mut probes {
                        probe.busy(spent);
                    }
                }
                _ = probe_tick.tick(), if probes.iter().all(|probe| !probe.is_pending()) => {
                    let nonces: Vec<u64> = probes.iter_mut().map(Probe::start).collect();
                    self.send_probes(nonces);
                }
                _ = sleep_until(probe_deadline), if probe_deadline.is_some() => {
                    self.ctx.metrics.probe_failures.inc();
                    return Err(SessionError::Unfed(self.ctx.settings.probe_timeout().as_millis()));
                }
            }
        }
    }

    /// Appends each partition's probe nonce and, at the probes' pace, follows what the tail
    /// cannot see: trimming, and whether Redis may evict the log.
    fn send_probes(&self, nonces: Vec<u64>) {
        let commands = Arc::clone(&self.ctx.commands);
        let keys: Vec<(String, String)> =
            self.partitions.iter().map(|keys| (keys.key.clone(), keys.probe_key.clone())).collect();
        let expire_ms = self.ctx.settings.probe_interval_ms.saturating_mul(10).max(60_000);
        let window = Arc::clone(&self.window);
        let eviction = Arc::clone(&self.ctx.eviction);
        let oldest_entry = self.ctx.metrics.log_oldest_entry.clone();
        tokio::spawn(async move {
            for ((_, probe_key), nonce) in keys.iter().zip(nonces) {
                if let Err(error) = publish_probe(&commands, probe_key, nonce, expire_ms).await {
                    tracing::debug!(error = %error, "probe append failed");
                }
            }
            let mut oldest_of_all: Option<StreamId> = None;
            let mut risk: Option<(String, String, i64)> = None;
            for (index, (key, _)) in keys.iter().enumerate() {
                match log_extent(&commands, key).await {
                    Ok((oldest, max_deleted)) => {
                        if let Some(oldest) = oldest {
                            oldest_of_all = Some(oldest_of_all.map_or(oldest, |known| known.min(oldest)));
                        }
                        window.follow_log(index, oldest, max_deleted);
                    }
                    Err(error) => tracing::debug!(error = %error, "log extent unknown"),
                }
                match eviction_policy(&commands, key).await {
                    // The first partition at risk, if one is, else the last.
                    Ok((info, ttl)) => {
                        let at_risk =
                            risk.as_ref().is_some_and(|(_, info, ttl)| eviction_risk(info, *ttl).is_some());
                        if !at_risk {
                            risk = Some((key.clone(), info, ttl));
                        }
                    }
                    // An ACL user without INFO: nothing to say.
                    Err(error) => tracing::debug!(error = %error, "cannot ask Redis about eviction"),
                }
            }
            if let Some(oldest) = oldest_of_all {
                oldest_entry.set(oldest.ms as f64 / 1e3);
            }
            if let Some((key, info, ttl)) = risk {
                eviction.record(&key, &info, ttl);
            }
        });
    }

    /// One `XREAD` of a partition and its probe stream.
    fn read(&self, index: usize, partition: &PartitionSession, position: &Position) -> PendingRead {
        let keys = &self.partitions[index];
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(self.ctx.settings.tail_block_ms)
            .arg("STREAMS")
            .arg(&keys.key)
            .arg(&keys.probe_key)
            .arg(position.cursor.unwrap_or(partition.log_end).to_string())
            .arg(partition.probe_cursor.to_string());
        let mut connection = partition.connection.clone();
        Box::pin(async move {
            let reply: redis::RedisResult<Option<ReadReply>> = command.query_async(&mut connection).await;
            (index, reply.map(Option::unwrap_or_default))
        })
    }

    fn deliver(
        &self,
        entries: Vec<RawEntry>,
        position: &mut Position,
        mut partition: Delivering<'_>,
        scans: &mut ScanCache,
    ) {
        let index = partition.index as u16;
        for entry in entries.into_iter().filter_map(entry_from_raw) {
            let id = entry.as_ref().map_or_else(|id| *id, |entry| entry.id);
            position.cursor = Some(id);
            if let Some(stamp) = partition.stamp.as_deref_mut() {
                stamp[partition.index] = id;
            }
            let entry = match entry {
                Ok(entry) => entry,
                Err(id) => {
                    position.remember(id, MALFORMED);
                    self.ctx.drop_message(b"", DropReason::BadEnvelope);
                    continue;
                }
            };
            let rule = self.ctx.rules.logged_rule_for(&entry.channel);
            let max_bytes = self.ctx.max_message_bytes;
            let decoded = rule.map(|_| match partition.stamp.as_deref() {
                Some(stamp) => entry.decode_at(&encode_position(stamp), max_bytes),
                None => entry.decode(max_bytes),
            });
            let event = event_key(&entry, decoded.as_ref().and_then(|decoded| decoded.as_ref().ok()));
            position.remember(entry.id, event);
            // Delivered from the log this one replaced, published again since: not delivered
            // twice, but in the window, as in the log.
            let redelivered = position.vanished.remove(&event);
            if redelivered {
                self.ctx.metrics.redelivered_events_skipped.inc();
            }
            let (Some(rule), Some(decoded)) = (rule, decoded) else { continue };
            let decoded = match decoded {
                Ok(decoded) => decoded,
                Err(reason) => {
                    if !redelivered {
                        self.ctx.metrics.received();
                        self.ctx.drop_message(&entry.channel, reason);
                    }
                    continue;
                }
            };
            let token_only = rule.access == Access::Token;
            let stamp = partition.stamp.as_deref().map(|stamp| Arc::from(stamp.as_slice()));
            let frame = QueuedFrame::logged(index, entry.id, stamp, decoded.frame);
            // Into the window before the hub: a stream registered before this entry reaches
            // the hub finds it in one or the other (the replay skips what is in both).
            self.window.push(&entry.channel, token_only, &frame);
            if redelivered {
                continue;
            }
            self.ctx.metrics.received();
            if partition.gap_end.is_some_and(|end| entry.id <= end) {
                self.ctx.metrics.gap_filled_events.inc();
            }
            self.ctx.metrics.observe_latency(decoded.published_micros);
            let traced = Traced {
                id: decoded.id,
                correlation_id: decoded.correlation_id.as_deref(),
                exclude: decoded.exclude,
            };
            self.ctx.deliver(&entry.channel, token_only, &frame, traced, scans);
        }
    }

    /// Finds where to continue on a (re)connected node, given the last id read.
    ///
    /// Usually the last entry read is in the log and the tail continues after it. If it is
    /// not, this node's log is not the one the tail read (a failover lost its tail, or the log
    /// was deleted or trimmed past it): continue after the newest entry both share, if the tail
    /// remembers one, else tell every stream to resynchronise.
    async fn locate(
        &self,
        connection: &mut RedisConnection,
        index: usize,
        cursor: StreamId,
        log_end: StreamId,
        positions: &mut [Position],
    ) -> redis::RedisResult<()> {
        let key = &self.partitions[index].key;
        let position = &mut positions[index];
        let Some(&(last_read, last_event)) = position.recent.back() else {
            // Nothing read yet: the cursor is where the log ended at the first connect.
            return Ok(());
        };
        debug_assert_eq!(last_read, cursor);
        if entry_at(connection, key, cursor)
            .await?
            .is_some_and(|entry| self.event_key_of(&entry) == last_event)
        {
            return Ok(());
        }
        // Walk back from the cursor to the newest entry this tail read.
        let oldest_remembered = position.recent.front().map_or(cursor, |(id, _)| *id);
        let mut upper = format!("{cursor}");
        let shared = 'search: loop {
            let mut command = redis::cmd("XREVRANGE");
            command.arg(key).arg(&upper).arg("-").arg("COUNT").arg(100);
            let page: Vec<RawEntry> = command.query_async(connection).await?;
            let complete = page.len() < 100;
            for entry in page.into_iter().filter_map(entry_from_raw) {
                let id = entry.as_ref().map_or_else(|id| *id, |entry| entry.id);
                if id < oldest_remembered {
                    break 'search None;
                }
                if position.read_before(id, self.event_key_of(&entry)) {
                    break 'search Some(id);
                }
                upper = format!("({id}");
            }
            if complete {
                break None;
            }
        };
        match shared {
            Some(shared) => {
                // Everything read after the shared entry is gone from this log.
                let split = position.recent.partition_point(|(id, _)| *id <= shared);
                let vanished: Vec<(StreamId, u64)> = position.recent.drain(split..).collect();
                position.vanished.extend(vanished.iter().map(|(_, event)| *event));
                self.ctx.metrics.log_divergences.inc();
                tracing::warn!(
                    log = %key,
                    last_read = %cursor,
                    continue_after = %shared,
                    events = vanished.len(),
                    "the log of this Redis node lacks events the relay delivered (a failover lost the previous primary's latest writes); continuing from the newest shared entry, without delivering those events twice"
                );
                position.cursor = Some(shared);
                self.window.truncate_after(index, shared);
            }
            None => {
                // The events were lost after the tail's last read: a stream that reset its
                // client since (its resume found the log replaced) does not reset it again.
                let reached = self.ctx.hub.broadcast(&QueuedFrame::reset_for(
                    reset_frame("the relay missed events that are no longer in the log"),
                    position.read_at.unwrap_or_else(std::time::Instant::now),
                ));
                self.ctx.metrics.resets.inc_by(reached as u64);
                tracing::warn!(log = %key, last_read = %cursor, "the log no longer holds the relay's position: streams told to reset");
                position.recent.clear();
                position.vanished.clear();
                position.cursor = Some(newest_entry_up_to(connection, key, log_end).await?);
                self.window.clear();
                for (index, position) in positions.iter().enumerate() {
                    if let Some(cursor) = position.cursor {
                        self.window.start(index, cursor);
                    }
                }
            }
        }
        Ok(())
    }

    /// [`event_key`] of an entry read outside [`Self::deliver`], computed the same way.
    fn event_key_of(&self, entry: &Result<LogEntry, StreamId>) -> u64 {
        let Ok(entry) = entry else { return MALFORMED };
        let decoded = self
            .ctx
            .rules
            .logged_rule_for(&entry.channel)
            .and_then(|_| entry.decode(self.ctx.max_message_bytes).ok());
        event_key(entry, decoded.as_ref())
    }
}

/// The partition a session delivers entries of, and what its frames say.
struct Delivering<'a> {
    index: usize,
    /// With several partitions, the relay's position in each (this one's advances entry by
    /// entry): what every frame states.
    stamp: Option<&'a mut Vec<StreamId>>,
    /// Entries up to this id were published while the tail was away.
    gap_end: Option<StreamId>,
}

/// The probe stream of a pod: beside the log, in the same hash slot when the log's key has a
/// hash tag, so that one `XREAD` reads both.
pub fn probe_key(log: &str, pod_id: &str) -> String {
    format!("{log}:probe:{pod_id}")
}

/// Appends a probe nonce through the command connection (the current primary). The stream is
/// capped and expires, so pods that are gone leave nothing behind.
async fn publish_probe(
    commands: &SharedConnection,
    key: &str,
    nonce: u64,
    expire_ms: u64,
) -> Result<(), crate::commands::CommandError> {
    let mut pipe = redis::pipe();
    pipe.cmd("XADD")
        .arg(key)
        .arg("MAXLEN")
        .arg(PROBE_STREAM_LENGTH)
        .arg("*")
        .arg("n")
        .arg(nonce.to_string())
        .ignore()
        .cmd("PEXPIRE")
        .arg(key)
        .arg(expire_ms)
        .ignore();
    commands.query_pipeline::<()>(pipe).await
}

/// The log's oldest entry (`None` when it is empty or missing) and the newest id ever deleted.
async fn log_extent(
    commands: &SharedConnection,
    key: &str,
) -> Result<(Option<StreamId>, Option<StreamId>), crate::commands::CommandError> {
    let mut command = redis::cmd("XINFO");
    command.arg("STREAM").arg(key);
    let info: std::collections::HashMap<String, redis::Value> = match commands.query(command).await {
        Ok(info) => info,
        Err(crate::commands::CommandError::Redis(error)) if error.to_string().contains("no such key") => {
            return Ok((None, None));
        }
        Err(error) => return Err(error),
    };
    let oldest = match info.get("first-entry") {
        Some(redis::Value::Array(entry)) => crate::log::id_value(entry.first()),
        _ => None,
    };
    Ok((oldest, crate::log::id_value(info.get("max-deleted-entry-id"))))
}

/// `INFO memory` of the node holding the log, and the log's `PTTL`: whether Redis may evict
/// the log.
async fn eviction_policy(
    commands: &SharedConnection,
    key: &str,
) -> Result<(String, i64), crate::commands::CommandError> {
    let slot = protocol::partition::key_slot(key.as_bytes());
    let info: String = commands.query_on_slot(slot, redis::cmd("INFO").arg("memory").clone()).await?;
    let ttl: i64 = commands.query_on_slot(slot, redis::cmd("PTTL").arg(key).clone()).await?;
    Ok((info, ttl))
}

fn probe_entry((id, fields): &RawEntry) -> Option<(StreamId, u64)> {
    let id = id.parse().ok()?;
    let nonce = fields.iter().find(|(name, _)| name == b"n")?;
    Some((id, std::str::from_utf8(&nonce.1).ok()?.parse().ok()?))
}

/// The log's last generated id on this node (`0-0` when there is no log yet).
impl TailReader {
    /// The last id before the relay started, in the clock of Redis (which makes the ids): its
    /// `TIME` less the time since start. The highest id when Redis does not answer `TIME` (an
    /// ACL user without it): the tail then starts at the log's end.
    async fn logged_since_start(&self, connection: &mut RedisConnection) -> StreamId {
        let time: redis::RedisResult<(u64, u64)> = redis::cmd("TIME").query_async(connection).await;
        match time {
            Ok((secs, micros)) => {
                let now_ms = secs * 1000 + micros / 1000;
                let started_ms = now_ms.saturating_sub(self.started.elapsed().as_millis() as u64);
                StreamId { ms: started_ms.saturating_sub(1), seq: u64::MAX }
            }
            Err(error) => {
                tracing::debug!(error = %error, "no TIME from Redis: the log tail starts at the log's end");
                StreamId { ms: u64::MAX, seq: u64::MAX }
            }
        }
    }
}

async fn last_generated_id(connection: &mut RedisConnection, key: &str) -> redis::RedisResult<StreamId> {
    let mut command = redis::cmd("XINFO");
    command.arg("STREAM").arg(key);
    let info: redis::RedisResult<std::collections::HashMap<String, redis::Value>> =
        command.query_async(connection).await;
    match info {
        Ok(info) => Ok(crate::log::id_value(info.get("last-generated-id")).unwrap_or(StreamId::ZERO)),
        Err(error) if error.to_string().contains("no such key") => Ok(StreamId::ZERO),
        Err(error) => Err(error),
    }
}

/// The newest entry of the log up to `bound` (`0-0` when there is none): a position a resume
/// can find in the log.
async fn newest_entry_up_to(
    connection: &mut RedisConnection,
    key: &str,
    bound: StreamId,
) -> redis::RedisResult<StreamId> {
    let mut command = redis::cmd("XREVRANGE");
    command.arg(key).arg(bound.to_string()).arg("-").arg("COUNT").arg(1);
    let entries: Vec<RawEntry> = command.query_async(connection).await?;
    Ok(entries.first().and_then(|(id, _)| id.parse().ok()).unwrap_or(StreamId::ZERO))
}

async fn entry_at(
    connection: &mut RedisConnection,
    key: &str,
    id: StreamId,
) -> redis::RedisResult<Option<Result<LogEntry, StreamId>>> {
    let mut command = redis::cmd("XRANGE");
    command.arg(key).arg(id.to_string()).arg(id.to_string());
    let entries: Vec<RawEntry> = command.query_async(connection).await?;
    Ok(entries.into_iter().find_map(entry_from_raw))
}

/// What identifies an event across logs: its `event_id` (the same when a publisher publishes it
/// again), or else its content. Hashes are compared within one process only.
fn event_key(entry: &LogEntry, decoded: Option<&Decoded>) -> u64 {
    let mut hasher = DefaultHasher::new();
    match decoded.and_then(|decoded| decoded.event_id.as_deref()) {
        Some(event_id) => event_id.hash(&mut hasher),
        None => (&entry.channel, &entry.message).hash(&mut hasher),
    }
    hasher.finish()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_recognises_entries_it_read_by_id_and_event() {
        let mut position = Position::default();
        let id = |ms| StreamId { ms, seq: 0 };
        for ms in 1..=3 {
            position.remember(id(ms), ms * 10);
        }
        assert!(position.read_before(id(2), 20));
        assert!(!position.read_before(id(2), 99), "same id, other event: another log's entry");
        assert!(!position.read_before(id(4), 40));
    }

    #[test]
    fn the_tail_remembers_a_bounded_number_of_entries() {
        let mut position = Position::default();
        for ms in 0..(REMEMBERED_ENTRIES as u64 + 10) {
            position.remember(StreamId { ms, seq: 0 }, ms);
        }
        assert_eq!(position.recent.len(), REMEMBERED_ENTRIES);
        assert_eq!(position.recent.front().unwrap().0.ms, 10);
    }

    #[test]
    fn probe_streams_share_the_logs_hash_tag() {
        assert_eq!(probe_key("sse:log", "pod-1"), "sse:log:probe:pod-1");
        assert_eq!(probe_key("sse:{p3}:log", "pod-1"), "sse:{p3}:log:probe:pod-1");
    }
}

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
use protocol::message::{Decoded, DropReason};
use protocol::sse::reset_frame;
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
    position: Position,
}

/// What reads the log; kept apart from the [`Position`] it advances.
struct TailReader {
    ctx: Arc<SourceContext>,
    /// Every entry delivered, to serve resumes from memory.
    window: Arc<ResumeWindow>,
    key: String,
    probe_key: String,
    /// When the relay started: its streams are owed every entry logged since.
    started: std::time::Instant,
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
    /// The tail of the log stream `key`, with the probe stream of pod `pod_id` (in the log's
    /// hash slot, so that one `XREAD` reads both in a cluster too).
    pub fn new(ctx: Arc<SourceContext>, window: Arc<ResumeWindow>, key: String, pod_id: &str) -> Self {
        Self {
            reader: TailReader {
                probe_key: probe_key(&key, pod_id),
                key,
                ctx,
                window,
                started: std::time::Instant::now(),
            },
            position: Position::default(),
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
        self.reader.session(cancel, established, &mut self.position)
    }
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
        position: &mut Position,
    ) -> Result<(), SessionError> {
        let (mut connection, address) = self.connect().await?;
        let log_end = last_generated_id(&mut connection, &self.key).await.map_err(SessionError::Read)?;
        match position.cursor {
            // Streams may have opened before Redis could be reached (the relay started while
            // Redis was down): entries logged since the relay started are theirs.
            None => position.cursor = Some(log_end.min(self.logged_since_start(&mut connection).await)),
            Some(cursor) => {
                self.locate(&mut connection, cursor, log_end, position).await.map_err(SessionError::Read)?
            }
        }
        let reconnected = established.reconnected();
        established.now();
        tracing::info!(redis.node = %address, log = %self.key, from = %position.cursor.unwrap_or(log_end), "redis log tail reading");

        let mut scans = ScanCache::new();
        let mut probe = Probe::new(self.ctx.settings.probe_timeout());
        let mut probe_tick = tokio::time::interval(self.ctx.settings.probe_interval());
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probe_cursor = StreamId::ZERO;
        // Entries up to the log's end at reconnect were published while the tail was away.
        let gap_end = reconnected.then_some(log_end);
        let mut read =
            Box::pin(self.read(connection.clone(), position.cursor.unwrap_or(log_end), probe_cursor));
        loop {
            let probe_deadline = probe.deadline();
            // Biased: a reply already in is read before the probe's deadline is looked at.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                reply = &mut read => {
                    let started = Instant::now();
                    let reply = reply.map_err(SessionError::Read)?;
                    position.read_at = Some(started.into_std());
                    let now = unix_seconds_now();
                    self.ctx.metrics.log_read.set(now);
                    // A read that brings nothing of the log is at its end: no lag, whatever the
                    // last entries were (those of a gap filled after an outage are old).
                    if !reply.iter().any(|(key, entries)| *key == self.key && !entries.is_empty()) {
                        self.ctx.metrics.log_lag.set(0.0);
                    }
                    for (key, entries) in reply {
                        if key == self.probe_key {
                            for (id, nonce) in entries.iter().filter_map(probe_entry) {
                                probe_cursor = id;
                                self.ctx.probe_seen(DeliveryPath::Log, nonce, &mut probe);
                            }
                        } else if key == self.key {
                            if let Some(newest) = entries.last().and_then(|(id, _)| id.parse::<StreamId>().ok()) {
                                self.ctx.metrics.log_lag.set((now - newest.ms as f64 / 1e3).max(0.0));
                            }
                            self.deliver(entries, position, gap_end, &mut scans);
                        }
                    }
                    read.set(self.read(connection.clone(), position.cursor.unwrap_or(log_end), probe_cursor));
                    probe.busy(started.elapsed());
                }
                _ = probe_tick.tick(), if !probe.is_pending() => {
                    let nonce = probe.start();
                    let commands = Arc::clone(&self.ctx.commands);
                    let (key, probe_key) = (self.key.clone(), self.probe_key.clone());
                    let expire_ms = self.ctx.settings.probe_interval_ms.saturating_mul(10).max(60_000);
                    let window = Arc::clone(&self.window);
                    let eviction = Arc::clone(&self.ctx.eviction);
                    let oldest_entry = self.ctx.metrics.log_oldest_entry.clone();
                    tokio::spawn(async move {
                        if let Err(error) = publish_probe(&commands, &probe_key, nonce, expire_ms).await {
                            tracing::debug!(error = %error, "probe append failed");
                        }
                        // Trimming is invisible to the tail: follow it at the probe's pace.
                        match log_extent(&commands, &key).await {
                            Ok((oldest, max_deleted)) => {
                                if let Some(oldest) = oldest {
                                    oldest_entry.set(oldest.ms as f64 / 1e3);
                                }
                                window.follow_log(oldest, max_deleted);
                            }
                            Err(error) => tracing::debug!(error = %error, "log extent unknown"),
                        }
                        match eviction_policy(&commands, &key).await {
                            Ok((info, ttl)) => eviction.record(&key, &info, ttl),
                            // An ACL user without INFO: nothing to say.
                            Err(error) => tracing::debug!(error = %error, "cannot ask Redis about eviction"),
                        }
                    });
                }
                _ = sleep_until(probe_deadline), if probe_deadline.is_some() => {
                    self.ctx.metrics.probe_failures.inc();
                    return Err(SessionError::Unfed(probe.timeout().as_millis()));
                }
            }
        }
    }

    /// One `XREAD` of the log and the probe stream.
    fn read(
        &self,
        mut connection: RedisConnection,
        cursor: StreamId,
        probe_cursor: StreamId,
    ) -> impl Future<Output = redis::RedisResult<Vec<(String, Vec<RawEntry>)>>> + use<> {
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(self.ctx.settings.tail_block_ms)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(&self.probe_key)
            .arg(cursor.to_string())
            .arg(probe_cursor.to_string());
        async move {
            let reply: Option<Vec<(String, Vec<RawEntry>)>> = command.query_async(&mut connection).await?;
            Ok(reply.unwrap_or_default())
        }
    }

    fn deliver(
        &self,
        entries: Vec<RawEntry>,
        position: &mut Position,
        gap_end: Option<StreamId>,
        scans: &mut ScanCache,
    ) {
        for entry in entries.into_iter().filter_map(entry_from_raw) {
            let entry = match entry {
                Ok(entry) => entry,
                Err(id) => {
                    position.cursor = Some(id);
                    position.remember(id, MALFORMED);
                    self.ctx.drop_message(b"", DropReason::BadEnvelope);
                    continue;
                }
            };
            position.cursor = Some(entry.id);
            let rule = self.ctx.rules.logged_rule_for(&entry.channel);
            let decoded = rule.map(|_| entry.decode(self.ctx.max_message_bytes));
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
            let frame = QueuedFrame::new(decoded.id, decoded.frame);
            // Into the window before the hub: a stream registered before this entry reaches
            // the hub finds it in one or the other (the replay skips what is in both).
            self.window.push(entry.id, &entry.channel, token_only, &frame);
            if redelivered {
                continue;
            }
            self.ctx.metrics.received();
            if gap_end.is_some_and(|end| entry.id <= end) {
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
        cursor: StreamId,
        log_end: StreamId,
        position: &mut Position,
    ) -> redis::RedisResult<()> {
        let Some(&(last_read, last_event)) = position.recent.back() else {
            // Nothing read yet: the cursor is where the log ended at the first connect.
            return Ok(());
        };
        debug_assert_eq!(last_read, cursor);
        if entry_at(connection, &self.key, cursor)
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
            command.arg(&self.key).arg(&upper).arg("-").arg("COUNT").arg(100);
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
                    log = %self.key,
                    last_read = %cursor,
                    continue_after = %shared,
                    events = vanished.len(),
                    "the log of this Redis node lacks events the relay delivered (a failover lost the previous primary's latest writes); continuing from the newest shared entry, without delivering those events twice"
                );
                position.cursor = Some(shared);
                self.window.truncate_after(shared);
            }
            None => {
                // The events were lost after the tail's last read: a stream that reset its
                // client since (its resume found the log replaced) does not reset it again.
                let reached = self.ctx.hub.broadcast(&QueuedFrame::reset_for(
                    reset_frame("the relay missed events that are no longer in the log"),
                    position.read_at.unwrap_or_else(std::time::Instant::now),
                ));
                self.ctx.metrics.resets.inc_by(reached as u64);
                tracing::warn!(log = %self.key, last_read = %cursor, "the log no longer holds the relay's position: streams told to reset");
                position.recent.clear();
                position.vanished.clear();
                self.window.clear();
                position.cursor = Some(log_end);
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

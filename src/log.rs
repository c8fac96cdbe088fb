//! The Redis history log (`sse:log`): reading entries after an id, in pages, and resume points.
//!
//! Publishers append every envelope event to the log (one Lua script), so ids are global and
//! ordered across all pods and the log is the source of truth: the tail ([`crate::tail`])
//! delivers from it, and streams resuming with Last-Event-ID replay from it.

use std::collections::HashMap;
use std::sync::Arc;

use protocol::log_id::StreamId;
use protocol::message::{Decoded, DropReason, Format, decode, decode_logged};

use crate::commands::SharedConnection;

/// Entries read per XRANGE call.
pub const PAGE_SIZE: usize = 500;

/// One log entry: the channel and the envelope as published (without its `id`).
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub id: StreamId,
    pub channel: Vec<u8>,
    pub message: Vec<u8>,
}

impl LogEntry {
    /// The entry as a frame: the log stores the envelope without its `id`, which is the entry's.
    pub fn decode(&self, max_bytes: usize) -> Result<Decoded, DropReason> {
        decode(Format::Envelope, &self.channel, &self.message, Some(self.id), max_bytes)
    }

    /// As [`Self::decode`], the frame's `id:` stating `position` (the relay's position across
    /// log partitions) rather than the entry's id.
    pub fn decode_at(&self, position: &str, max_bytes: usize) -> Result<Decoded, DropReason> {
        decode_logged(&self.channel, &self.message, self.id, position, max_bytes)
    }
}

/// Where a resume point stands relative to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumePoint {
    /// Every entry after the id is still in the log; `newest` is its newest entry then.
    Available { newest: Option<StreamId> },
    /// Entries after the id were trimmed, or the log is not the one that issued it: the client
    /// must resynchronise. `newest` is the log's newest entry then: what the client refetches
    /// includes everything up to it.
    Lost { newest: Option<StreamId> },
}

pub use crate::commands::CommandError as LogError;

/// Reads the log's partitions through the relay's shared command connection.
pub struct LogReader {
    redis: Arc<SharedConnection>,
    /// Each partition's stream; none when replay is disabled.
    keys: Vec<String>,
}

/// An entry as `XRANGE`/`XREAD` return it: the id and the field/value pairs.
pub(crate) type RawEntry = (String, Vec<(Vec<u8>, Vec<u8>)>);

impl LogReader {
    pub fn new(redis: Arc<SharedConnection>, keys: Vec<String>) -> Self {
        Self { redis, keys }
    }

    /// False when replay is disabled (`redis.log_stream = ""`).
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// How many partitions the log has.
    pub fn partitions(&self) -> usize {
        self.keys.len()
    }

    async fn query<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, LogError> {
        self.redis.query(command).await
    }

    /// Up to [`PAGE_SIZE`] entries with ids greater than `after`, oldest first; a malformed
    /// one (without its channel or envelope) as its id, so that readers can step over it.
    pub async fn read_after(
        &self,
        partition: usize,
        after: StreamId,
    ) -> Result<Vec<Result<LogEntry, StreamId>>, LogError> {
        let mut command = redis::cmd("XRANGE");
        command.arg(&self.keys[partition]).arg(format!("({after}")).arg("+").arg("COUNT").arg(PAGE_SIZE);
        let raw: Vec<RawEntry> = self.query(command).await?;
        Ok(raw.into_iter().filter_map(entry_from_raw).collect())
    }

    /// As [`Self::read_after`], continuing a read that already went up to `cursor`: `None` when
    /// the log no longer holds `cursor` itself (it was trimmed past it, deleted, or replaced
    /// by another log since), so that a reader does not carry on into another log's entries.
    pub async fn read_on_from(
        &self,
        partition: usize,
        cursor: StreamId,
    ) -> Result<Option<Vec<Result<LogEntry, StreamId>>>, LogError> {
        let key = &self.keys[partition];
        let mut pipe = redis::pipe();
        pipe.cmd("XRANGE").arg(key).arg(cursor.to_string()).arg(cursor.to_string());
        pipe.cmd("XRANGE").arg(key).arg(format!("({cursor}")).arg("+").arg("COUNT").arg(PAGE_SIZE);
        let (at, page): (Vec<RawEntry>, Vec<RawEntry>) = self.redis.query_pipeline(pipe).await?;
        if at.is_empty() {
            return Ok(None);
        }
        Ok(Some(page.into_iter().filter_map(entry_from_raw).collect()))
    }

    /// Whether everything after `after` is still in the log's partition `partition`.
    ///
    /// `after` is the id of the last entry the client received, so that entry must still be in
    /// the log: then nothing after it was trimmed (trimming removes the oldest entries first),
    /// and this is the log that issued it — a log lost in a failover, deleted and recreated, or
    /// evicted does not hold it, whatever ids it has reached since. An entry after `after`
    /// deleted with XDEL (`max-deleted-entry-id`) is a loss too. `0-0` (from the start) is
    /// available while the log never lost an entry.
    pub async fn resume_point(&self, partition: usize, after: StreamId) -> Result<ResumePoint, LogError> {
        let key = &self.keys[partition];
        let mut pipe = redis::pipe();
        pipe.cmd("XRANGE").arg(key).arg(after.to_string()).arg(after.to_string());
        pipe.cmd("XINFO").arg("STREAM").arg(key);
        let (at, info): (Vec<RawEntry>, HashMap<String, redis::Value>) =
            match self.redis.query_pipeline(pipe).await {
                Ok(replies) => replies,
                Err(LogError::Redis(error)) if error.to_string().contains("no such key") => {
                    // No log at all: nothing was ever lost only if the client has seen nothing.
                    return Ok(if after == StreamId::ZERO {
                        ResumePoint::Available { newest: None }
                    } else {
                        ResumePoint::Lost { newest: None }
                    });
                }
                Err(error) => return Err(error),
            };
        let newest = match info.get("last-entry") {
            Some(redis::Value::Array(entry)) => id_value(entry.first()),
            _ => None,
        };
        let lost = ResumePoint::Lost { newest };
        if id_value(info.get("max-deleted-entry-id")).is_some_and(|deleted| deleted > after) {
            return Ok(lost);
        }
        if after != StreamId::ZERO {
            return Ok(if at.is_empty() { lost } else { ResumePoint::Available { newest } });
        }
        let lost_some = match (info.get("entries-added"), info.get("length")) {
            (Some(redis::Value::Int(added)), Some(redis::Value::Int(length))) => added > length,
            // Before Redis 7 there is no count of entries added: assume the worst.
            _ => true,
        };
        Ok(if lost_some { lost } else { ResumePoint::Available { newest } })
    }
}

/// A stream id in an `XINFO STREAM` reply.
pub(crate) fn id_value(value: Option<&redis::Value>) -> Option<StreamId> {
    match value {
        Some(redis::Value::BulkString(bytes)) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Some(redis::Value::SimpleString(text)) => text.parse().ok(),
        _ => None,
    }
}

/// The entry, or only its id when a field is missing (anyone with write access to the log can
/// add such an entry; readers count it as dropped and step over it); `None` for an id Redis
/// would never write.
pub(crate) fn entry_from_raw((id, fields): RawEntry) -> Option<Result<LogEntry, StreamId>> {
    let id = id.parse().ok()?;
    let mut channel = None;
    let mut message = None;
    for (name, value) in fields {
        match name.as_slice() {
            b"ch" => channel = Some(value),
            b"m" => message = Some(value),
            _ => {}
        }
    }
    Some(match (channel, message) {
        (Some(channel), Some(message)) => Ok(LogEntry { id, channel, message }),
        _ => Err(id),
    })
}

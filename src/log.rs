//! The Redis history log (`sse:log`): reading entries after an id, in pages, and resume points.
//!
//! Publishers append every envelope event to the log before publishing it (one Lua script), so
//! ids are global and ordered across all pods and the log is the source of truth for replay on
//! resume and for filling the relay's own gaps after a lost subscription.

use std::sync::Arc;

use protocol::log_id::StreamId;
use protocol::message::{Decoded, DropReason, Format, decode};

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
}

/// Where a resume point stands relative to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumePoint {
    /// Every entry after the id is still in the log.
    Available,
    /// Entries after the id were trimmed (or the log was reset): the client must resynchronise.
    Lost,
}

pub use crate::commands::CommandError as LogError;

/// Reads the log through the relay's shared command connection.
pub struct LogReader {
    redis: Arc<SharedConnection>,
    key: String,
}

type RawEntry = (String, Vec<(Vec<u8>, Vec<u8>)>);

impl LogReader {
    pub fn new(redis: Arc<SharedConnection>, key: String) -> Self {
        Self { redis, key }
    }

    /// False when replay is disabled (`redis.log_stream = ""`).
    pub fn enabled(&self) -> bool {
        !self.key.is_empty()
    }

    async fn query<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, LogError> {
        self.redis.query(command).await
    }

    /// Up to [`PAGE_SIZE`] entries with ids greater than `after`, oldest first.
    pub async fn read_after(&self, after: StreamId) -> Result<Vec<LogEntry>, LogError> {
        let mut command = redis::cmd("XRANGE");
        command.arg(&self.key).arg(format!("({after}")).arg("+").arg("COUNT").arg(PAGE_SIZE);
        let raw: Vec<RawEntry> = self.query(command).await?;
        Ok(raw.into_iter().filter_map(entry_from_raw).collect())
    }

    /// Whether everything after `after` is still in the log.
    ///
    /// Trimming removes the oldest entries: if the oldest remaining entry is not newer than
    /// `after`, everything newer is there. If it is newer, entries may have been trimmed, which
    /// matters only if the stream ever lost entries (`entries-added` exceeds its `length`). An
    /// id beyond the last one the stream generated means the log was reset; an entry deleted
    /// with XDEL after `after` (`max-deleted-entry-id`) is a loss too. A missing stream holds
    /// nothing after the start.
    pub async fn resume_point(&self, after: StreamId) -> Result<ResumePoint, LogError> {
        use redis::Value;
        let mut command = redis::cmd("XINFO");
        command.arg("STREAM").arg(&self.key);
        let info: std::collections::HashMap<String, Value> = match self.query(command).await {
            Ok(info) => info,
            Err(LogError::Redis(error)) if error.to_string().contains("no such key") => {
                return Ok(if after == StreamId::ZERO { ResumePoint::Available } else { ResumePoint::Lost });
            }
            Err(error) => return Err(error),
        };
        let as_id = |value: Option<&Value>| match value {
            Some(Value::BulkString(bytes)) => std::str::from_utf8(bytes).ok()?.parse::<StreamId>().ok(),
            Some(Value::SimpleString(text)) => text.parse::<StreamId>().ok(),
            _ => None,
        };
        let as_int = |value: Option<&Value>| match value {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let last_generated = as_id(info.get("last-generated-id")).unwrap_or(StreamId::ZERO);
        if after > last_generated {
            return Ok(ResumePoint::Lost);
        }
        if as_id(info.get("max-deleted-entry-id")).is_some_and(|deleted| deleted > after) {
            return Ok(ResumePoint::Lost);
        }
        if after == last_generated {
            return Ok(ResumePoint::Available);
        }
        let first = match info.get("first-entry") {
            Some(Value::Array(entry)) => as_id(entry.first()),
            _ => None,
        };
        if first.is_some_and(|first| first <= after) {
            return Ok(ResumePoint::Available);
        }
        // The oldest entry is newer than `after` (or the stream is empty): did it ever lose any?
        let lost_some = match (as_int(info.get("entries-added")), as_int(info.get("length"))) {
            (Some(added), Some(length)) => added > length,
            // Before Redis 7 there is no count of entries added: assume the worst.
            _ => after != StreamId::ZERO,
        };
        Ok(if lost_some { ResumePoint::Lost } else { ResumePoint::Available })
    }

    /// The newest id in the log, if any.
    pub async fn last_id(&self) -> Result<Option<StreamId>, LogError> {
        let mut last = redis::cmd("XREVRANGE");
        last.arg(&self.key).arg("+").arg("-").arg("COUNT").arg(1);
        let last: Vec<RawEntry> = self.query(last).await?;
        Ok(last.first().and_then(|(id, _)| id.parse().ok()))
    }
}

fn entry_from_raw((id, fields): RawEntry) -> Option<LogEntry> {
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
    Some(LogEntry { id, channel: channel?, message: message? })
}

//! The outbox dispatcher: publishes committed outbox rows to Redis, exactly once, each channel's
//! in order (a batch's log partitions side by side, each partition's rows in outbox order).
//!
//! Each row goes through [`PUBLISH_SCRIPT`] (dedup key, XADD to the history log, and PUBLISH on
//! the channel where configured) and is deleted once published — and, with
//! `redis.min_replicas`, once `WAIT` confirms that many replicas hold the batch, so that a
//! failover cannot lose an event the outbox already forgot. A crash between publishing and
//! deleting, or a batch not confirmed in time, only repeats the script, which the dedup key
//! turns into a no-op where the first write survived. While Redis is unreachable the dispatcher
//! retries with backoff and jitter; writes keep succeeding and the rows wait
//! (`forecast_api_outbox_pending`). Each (re)connect asks [`RedisTarget`] for the node to use,
//! so the dispatcher follows a Sentinel failover.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::events::Channel;
use crate::metrics::ForecastMetrics;
use crate::settings::{OutboxSettings, RedisSettings};
use crate::store::{OutboxRow, Store};
use protocol::envelope::{OutgoingEnvelope, PUBLISH_SCRIPT, now_micros};
use protocol::partition::{Partitions, key_slot};
use service::backoff::Backoff;
use service::log_eviction::EvictionWatch;
use service::redis_target::{RedisConnection, RedisTarget, TargetError, needs_new_connection};

/// The last attempt to empty the outbox at shutdown, at most.
const FINAL_DRAIN: Duration = Duration::from_secs(2);

pub struct Dispatcher {
    store: Store,
    target: Arc<RedisTarget>,
    redis: RedisSettings,
    settings: OutboxSettings,
    metrics: ForecastMetrics,
    notify: Arc<Notify>,
    script: redis::Script,
    connection: Option<RedisConnection>,
    /// The log's partitions (one unless the log is spread over a Redis Cluster).
    partitions: Partitions,
    /// Whether Redis may evict the log: looked at on start and every [`EVICTION_CHECK`].
    eviction: Arc<EvictionWatch>,
    eviction_checked: Option<tokio::time::Instant>,
}

/// How often the dispatcher asks Redis whether it may evict the log.
const EVICTION_CHECK: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: {0}")]
    Target(#[from] TargetError),
    #[error(
        "only {confirmed} of redis.min_replicas = {wanted} replicas confirmed the batch within {timeout_ms} ms; it is published again later"
    )]
    Unreplicated { confirmed: i64, wanted: u32, timeout_ms: u64 },
    #[error("outbox row {seq} holds invalid JSON: {error}")]
    BadPayload { seq: i64, error: serde_json::Error },
}

impl Dispatcher {
    pub fn new(
        store: Store,
        target: Arc<RedisTarget>,
        redis: RedisSettings,
        settings: OutboxSettings,
        metrics: ForecastMetrics,
        notify: Arc<Notify>,
        eviction: Arc<EvictionWatch>,
    ) -> Self {
        Self {
            partitions: Partitions::new(redis.log_partitions, target.is_cluster()),
            store,
            target,
            redis,
            settings,
            metrics,
            notify,
            script: redis::Script::new(PUBLISH_SCRIPT),
            connection: None,
            eviction,
            eviction_checked: None,
        }
    }

    /// Publishes until `cancel` fires, then makes one last attempt to empty the outbox.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(self.settings.backoff_initial(), self.settings.backoff_max());
        let mut failing = false;
        // What waits from a previous run, shown before the first (maybe slow) word with Redis.
        self.update_pending().await;
        loop {
            // A drain cut short (a Redis that stopped answering) leaves rows that are published
            // but not deleted: the next attempt repeats them, and their dedup keys make that a
            // no-op.
            if self.eviction_checked.is_none_or(|at| at.elapsed() >= EVICTION_CHECK) {
                self.check_eviction().await;
            }
            let drained = tokio::select! {
                _ = cancel.cancelled() => break,
                drained = self.drain() => drained,
            };
            match drained {
                Ok(()) => {
                    if failing {
                        tracing::info!("outbox publishing resumed");
                    }
                    failing = false;
                    backoff.reset();
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = self.notify.notified() => {}
                        _ = tokio::time::sleep(self.settings.poll_interval()) => {}
                    }
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    if !failing {
                        tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "outbox publishing failing; events wait in the outbox");
                    } else {
                        tracing::debug!(error = %error, retry_in_ms = delay.as_millis() as u64, "outbox publishing still failing");
                    }
                    failing = true;
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        match tokio::time::timeout(FINAL_DRAIN, self.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "outbox not empty at shutdown; the next start publishes the rest");
            }
            Err(_) => tracing::warn!(
                timeout_ms = FINAL_DRAIN.as_millis() as u64,
                "outbox not emptied in time at shutdown; the next start publishes the rest"
            ),
        }
    }

    /// Asks Redis (`INFO memory`, the log's `PTTL`) whether it may evict the log; an ACL user
    /// without `INFO`, or a Redis that is away, leaves it unsaid until the next time.
    async fn check_eviction(&mut self) {
        self.eviction_checked = Some(tokio::time::Instant::now());
        // The first partition's node answers for the log (a cluster's nodes share a policy).
        let log = self.partitions.log_key(&self.redis.log_stream, 0);
        let slot = key_slot(log.as_bytes());
        let asked = async {
            let connection = connection(&mut self.connection, &self.target, &self.redis).await?;
            let info: String =
                connection.query_on_slot(slot, redis::cmd("INFO").arg("memory").clone()).await?;
            let ttl: i64 = connection.query_on_slot(slot, redis::cmd("PTTL").arg(&log).clone()).await?;
            Ok::<(String, i64), PublishError>((info, ttl))
        };
        match asked.await {
            Ok((info, ttl)) => self.eviction.record(&log, &info, ttl),
            Err(error) => {
                self.forget_connection_after(&error);
                tracing::debug!(error = %error, "cannot ask Redis about eviction");
            }
        }
    }

    /// Publishes batches until the outbox is empty (or another replica holds the lock).
    async fn drain(&mut self) -> anyhow::Result<()> {
        // What waits now, before publishing (at start, rows left by a previous run).
        self.update_pending().await;
        let limit = i64::from(self.settings.batch_size);
        loop {
            let Some(batch) = self.store.next_outbox_batch(limit).await? else { return Ok(()) };
            let (mut published, slots, mut failure) = match self.publish_batch(&batch.rows).await {
                Ok(lanes) => lanes,
                Err(error) => (Vec::new(), BTreeSet::new(), Some(error)),
            };
            if let Some(error) = &failure {
                self.metrics.publish_failures.inc();
                self.forget_connection_after(error);
            }
            if !published.is_empty()
                && self.redis.min_replicas > 0
                && let Err(error) = self.wait_for_replicas(&slots).await
            {
                // Keep every row of the batch: each is published again, a no-op where the
                // first write did reach the replicas.
                self.metrics.unreplicated.inc();
                self.forget_connection_after(&error);
                published.clear();
                failure = failure.or(Some(error));
            }
            let full = batch.rows.len() as i64 == limit;
            batch.complete(&published).await?;
            self.update_pending().await;
            if let Some(error) = failure {
                return Err(error.into());
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Publishes `rows`, the partitions side by side and each partition's rows one after
    /// another in outbox order (a channel lives in one partition, so its events keep their
    /// order; a partition stops at its first failure, the others go on). The rows published,
    /// the hash slots written, and the first failure.
    async fn publish_batch(
        &mut self,
        rows: &[OutboxRow],
    ) -> Result<(Vec<i64>, BTreeSet<u16>, Option<PublishError>), PublishError> {
        let connection = connection(&mut self.connection, &self.target, &self.redis).await?.clone();
        let mut lanes: BTreeMap<u32, Vec<&OutboxRow>> = BTreeMap::new();
        for row in rows {
            lanes.entry(self.partitions.of_channel(row.channel.as_bytes())).or_default().push(row);
        }
        let this = &*self;
        let outcomes = futures_util::future::join_all(lanes.into_iter().map(|(partition, rows)| {
            let mut connection = connection.clone();
            async move {
                let mut published = Vec::with_capacity(rows.len());
                for row in rows {
                    if let Err(error) = this.publish_one(&mut connection, partition, row).await {
                        return (partition, published, Some(error));
                    }
                    published.push(row);
                }
                (partition, published, None)
            }
        }))
        .await;
        let mut published = Vec::new();
        let mut slots = BTreeSet::new();
        let mut failure = None;
        for (partition, rows, error) in outcomes {
            if !rows.is_empty() {
                let log_key = self.partitions.log_key(&self.redis.log_stream, partition);
                slots.insert(key_slot(log_key.as_bytes()));
            }
            for row in rows {
                // Rows are written by this service, so their channels are known; one from a
                // newer version is published all the same, without a label.
                if let Some(channel) = Channel::from_name(&row.channel) {
                    self.metrics.events_published.inc(channel);
                }
                published.push(row.seq);
            }
            failure = failure.or(error);
        }
        Ok((published, slots, failure))
    }

    /// Publishes one row into `partition`, its channel's.
    async fn publish_one(
        &self,
        connection: &mut RedisConnection,
        partition: u32,
        row: &OutboxRow,
    ) -> Result<(), PublishError> {
        let data = RawValue::from_string(row.payload.clone())
            .map_err(|error| PublishError::BadPayload { seq: row.seq, error })?;
        let envelope = OutgoingEnvelope {
            event_id: &row.event_id,
            event: None,
            data: &data,
            correlation_id: &row.correlation_id,
            exclude: row.exclude_connection.as_deref(),
            ts: now_micros(),
        }
        .to_json();
        let publish_channels = self.redis.publish_channels;
        // The deduplication key and the stream share the partition's hash slot.
        let dedup_key =
            format!("{}{}", self.partitions.dedup_prefix(&self.redis.dedup_prefix, partition), row.event_id);
        let log_key = self.partitions.log_key(&self.redis.log_stream, partition);
        let log_id: Option<String> = self
            .script
            .key(dedup_key)
            .key(&log_key)
            .arg(self.redis.dedup_ttl_secs)
            .arg(self.redis.log_retention)
            .arg(&row.channel)
            .arg(envelope)
            .arg(if publish_channels { "1" } else { "0" })
            .invoke_async(connection)
            .await?;
        // `None`: the deduplication key says an earlier attempt published it.
        tracing::info!(
            target: "forecast_api::events",
            event_id = %row.event_id,
            channel = %row.channel,
            log_id = log_id.as_deref().map_or("(already published)", |id| if id.is_empty() { "(no log)" } else { id }),
            correlation_id = %row.correlation_id,
            actor = %row.actor,
            "event published"
        );
        Ok(())
    }

    /// `WAIT`s until `redis.min_replicas` replicas hold every write of this connection: on the
    /// node, or on the primary of each slot written (in a cluster).
    async fn wait_for_replicas(&mut self, slots: &BTreeSet<u16>) -> Result<(), PublishError> {
        let wanted = self.redis.min_replicas;
        let timeout_ms = self.redis.wait_timeout_ms;
        let connection = connection(&mut self.connection, &self.target, &self.redis).await?;
        for &slot in slots {
            let confirmed: i64 = connection
                .query_on_slot(slot, redis::cmd("WAIT").arg(wanted).arg(timeout_ms).clone())
                .await?;
            if confirmed < i64::from(wanted) {
                return Err(PublishError::Unreplicated { confirmed, wanted, timeout_ms });
            }
        }
        Ok(())
    }

    /// A broken connection, or a node that is no longer the primary, is replaced on the next
    /// attempt (looking the primary up again).
    fn forget_connection_after(&mut self, error: &PublishError) {
        let replace = match error {
            PublishError::Redis(error) => needs_new_connection(error),
            PublishError::Target(_) | PublishError::Unreplicated { .. } => true,
            PublishError::BadPayload { .. } => false,
        };
        if replace {
            self.connection = None;
        }
    }

    async fn update_pending(&self) {
        if let Ok((pending, oldest)) = self.store.outbox_pending().await {
            self.metrics.outbox_pending.set(pending);
            self.metrics.outbox_oldest.set(oldest.unwrap_or(0.0));
        }
    }
}

/// The dispatcher's connection, made on first use for the node [`RedisTarget`] names now (or
/// for the cluster).
async fn connection<'a>(
    slot: &'a mut Option<RedisConnection>,
    target: &RedisTarget,
    redis: &RedisSettings,
) -> Result<&'a mut RedisConnection, PublishError> {
    let connection = match slot.take() {
        Some(connection) => connection,
        None => {
            // WAIT holds the reply for up to its timeout.
            let (connection, address) =
                target.connect(redis.response_timeout() + redis.wait_timeout()).await?;
            tracing::info!(redis.node = %address, "outbox publishing to redis");
            connection
        }
    };
    Ok(slot.insert(connection))
}

//! One shared multiplexed Redis connection for the relay's short commands (log reads for
//! replay, probe appends, ticket claims), established on first use and replaced after any
//! failure that says the connection or the node is no longer usable. Every command is bounded
//! by a timeout, so a wedged connection costs one timeout, not a hang.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;

use service::redis_target::{RedisConnection, RedisTarget, TargetError, needs_new_connection};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Target(#[from] TargetError),
    #[error("timed out after {0} ms")]
    Timeout(u128),
}

impl CommandError {
    /// The connection itself failed (closed, reset, refused): not a reply, not a timeout.
    fn is_broken_connection(&self) -> bool {
        matches!(self, Self::Redis(error) if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal())
    }
}

pub struct SharedConnection {
    target: Arc<RedisTarget>,
    timeout: Duration,
    connection: AsyncMutex<Option<RedisConnection>>,
}

impl SharedConnection {
    pub fn new(target: Arc<RedisTarget>, timeout: Duration) -> Self {
        Self { target, timeout, connection: AsyncMutex::new(None) }
    }

    /// The connection, and whether it was in use before (it may have broken since).
    async fn connection(&self) -> Result<(RedisConnection, bool), CommandError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok((connection.clone(), true));
        }
        let connection = tokio::time::timeout(self.timeout, self.target.connect(self.timeout))
            .await
            .map_err(|_| CommandError::Timeout(self.timeout.as_millis()))??
            .0;
        *slot = Some(connection.clone());
        Ok((connection, false))
    }

    /// A command for the node that owns `slot` (a cluster's `INFO` of one node), sent once.
    pub async fn query_on_slot<T: redis::FromRedisValue>(
        &self,
        slot: u16,
        command: redis::Cmd,
    ) -> Result<T, CommandError> {
        let (mut connection, _) = self.connection().await?;
        let result = tokio::time::timeout(self.timeout, connection.query_on_slot::<T>(slot, command)).await;
        self.settle(result).await
    }

    /// A command that may run twice (reads, probes): found broken on a connection that was
    /// idle since Redis went away, it is sent again once on a new connection.
    pub async fn query<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, CommandError> {
        let (mut connection, reused) = self.connection().await?;
        let result = tokio::time::timeout(self.timeout, command.query_async::<T>(&mut connection)).await;
        match self.settle(result).await {
            Err(error) if reused && error.is_broken_connection() => {
                let (mut connection, _) = self.connection().await?;
                let result =
                    tokio::time::timeout(self.timeout, command.query_async::<T>(&mut connection)).await;
                self.settle(result).await
            }
            result => result,
        }
    }

    /// A command that must not run twice (a ticket claim): sent once, whatever happens.
    pub async fn query_once<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, CommandError> {
        let (mut connection, _) = self.connection().await?;
        let result = tokio::time::timeout(self.timeout, command.query_async::<T>(&mut connection)).await;
        self.settle(result).await
    }

    /// Several commands that may run twice, in one round trip; the first error, if any, is the
    /// result. Sent again once on a new connection, as [`Self::query`].
    pub async fn query_pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: redis::Pipeline,
    ) -> Result<T, CommandError> {
        let (mut connection, reused) = self.connection().await?;
        let result = tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut connection)).await;
        match self.settle(result).await {
            Err(error) if reused && error.is_broken_connection() => {
                let (mut connection, _) = self.connection().await?;
                let result = tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut connection)).await;
                self.settle(result).await
            }
            result => result,
        }
    }

    async fn settle<T>(
        &self,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, CommandError> {
        let result = result
            .map_err(|_| CommandError::Timeout(self.timeout.as_millis()))
            .and_then(|result| result.map_err(CommandError::from));
        if let Err(error) = &result {
            // A reply that is an error (no such key…) says nothing about the connection; a
            // broken connection or a node that is no longer the primary does.
            let replace = match error {
                CommandError::Redis(error) => needs_new_connection(error),
                CommandError::Target(_) | CommandError::Timeout(_) => true,
            };
            if replace {
                *self.connection.lock().await = None;
            }
        }
        result
    }
}

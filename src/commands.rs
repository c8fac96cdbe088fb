//! One shared multiplexed Redis connection for the relay's short commands (log reads, ticket
//! claims), established on first use and replaced after any failure. Every command is bounded
//! by a timeout, so a wedged connection costs one timeout, not a hang.

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex as AsyncMutex;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("timed out after {0} ms")]
    Timeout(u128),
}

pub struct SharedConnection {
    client: redis::Client,
    timeout: Duration,
    connection: AsyncMutex<Option<MultiplexedConnection>>,
}

impl SharedConnection {
    pub fn new(client: redis::Client, timeout: Duration) -> Self {
        Self { client, timeout, connection: AsyncMutex::new(None) }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, CommandError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let connection = tokio::time::timeout(
            self.timeout,
            self.client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| CommandError::Timeout(self.timeout.as_millis()))??;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    pub async fn query<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, CommandError> {
        let mut connection = self.connection().await?;
        let result = tokio::time::timeout(self.timeout, command.query_async::<T>(&mut connection))
            .await
            .map_err(|_| CommandError::Timeout(self.timeout.as_millis()))
            .and_then(|result| result.map_err(CommandError::from));
        if let Err(error) = &result {
            // A reply that is an error (no such key…) says nothing about the connection.
            let connection_fault = match error {
                CommandError::Redis(error) => {
                    error.is_io_error() || error.is_timeout() || error.is_connection_dropped()
                }
                CommandError::Timeout(_) => true,
            };
            if connection_fault {
                *self.connection.lock().await = None;
            }
        }
        result
    }
}

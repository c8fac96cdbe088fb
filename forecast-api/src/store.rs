//! Persistence with sqlx over SQLite (embedded default) or PostgreSQL, chosen by URL.
//!
//! Every mutation writes its row and its outbox entry in one transaction, so an event exists
//! exactly when its change does. Queries are written once, in SQL both databases accept
//! (`$n` placeholders, TEXT timestamps, 64-bit integers); migrations are per dialect.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use std::collections::BTreeMap;

use crate::events::DomainEvent;
use crate::model::{Forecast, ForecastInput, fahrenheit};
use crate::settings::{DatabaseKind, DatabaseSettings};
use crate::users::Role;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The `If-Match` version is not the current one.
    #[error("version mismatch: current version is {current}")]
    VersionMismatch { current: i64 },
    /// A unique value (a username) is taken.
    #[error("already exists")]
    Duplicate,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A unique constraint refused the write: [`StoreError::Duplicate`], else the error itself.
fn duplicate_or(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(database) if database.is_unique_violation() => StoreError::Duplicate,
        _ => StoreError::Database(error),
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    kind: DatabaseKind,
    /// Set while the database is known to be unreachable: requests are then refused at once
    /// rather than each waiting for a connection that will not come.
    unreachable: Arc<AtomicBool>,
}

/// Whether an error says the database cannot be reached (or is not taking connections), as
/// opposed to a fault in what was asked of it.
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            true
        }
        // Class 08: connection exceptions; 57P01–57P03: the server is shutting down or starting.
        sqlx::Error::Database(error) => error
            .code()
            .is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// A stored API key (the secret itself is never stored, only its hash).
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub key_hash: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// The columns [`user_from_row`] reads (a macro: queries must be string literals).
macro_rules! user_columns {
    () => {
        "id, username, password_hash, role, claims, created_at, updated_at"
    };
}

/// A user account (its password only as an Argon2id hash).
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub claims: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A session that has not ended, with its user.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    pub user: UserRecord,
    pub expires_at: String,
}

/// An outbox row waiting to be published.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub event_id: String,
    pub channel: String,
    pub payload: String,
    pub correlation_id: String,
    pub exclude_connection: Option<String>,
    /// The API key id that made the change.
    pub actor: String,
}

/// The current time as stored: RFC 3339, UTC, milliseconds.
pub fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Store {
    /// Connects (creating the SQLite file and its directory if needed) and applies migrations.
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        use anyhow::Context;
        sqlx::any::install_default_drivers();
        let kind = settings.kind()?;
        let mut url = settings.url.clone();
        if kind == DatabaseKind::Sqlite {
            let path = sqlite_path(&url);
            if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create the database directory {}", parent.display()))?;
            }
            if !url.contains("mode=") {
                url.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if kind == DatabaseKind::Sqlite {
                1.max(settings.max_connections.min(4))
            } else {
                settings.max_connections
            })
            .acquire_timeout(settings.connect_timeout())
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if kind == DatabaseKind::Sqlite {
                        // WAL lets readers proceed during a write; the busy timeout makes writers
                        // queue instead of failing when the file is locked.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *connection).await?;
                        sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *connection).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .context("cannot connect to the database")?;
        match kind {
            DatabaseKind::Sqlite => SQLITE_MIGRATIONS.run(&pool).await,
            DatabaseKind::Postgres => POSTGRES_MIGRATIONS.run(&pool).await,
        }
        .context("cannot apply database migrations")?;
        Ok(Self { pool, kind, unreachable: Arc::new(AtomicBool::new(false)) })
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        let result = sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ());
        if result.is_ok() {
            self.unreachable.store(false, Ordering::Release);
        }
        result
    }

    /// Whether the database was found unreachable and has not answered since.
    pub fn is_known_unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Acquire)
    }

    /// The database was found unreachable: until a ping succeeds (tried every `interval`,
    /// each within `interval`), [`Self::is_known_unreachable`] says so.
    pub fn found_unreachable(&self, interval: Duration) {
        if self.unreachable.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            while store.is_known_unreachable() {
                tokio::time::sleep(interval).await;
                let _ = tokio::time::timeout(interval, store.ping()).await;
            }
        });
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- forecasts ----

    pub async fn list_forecasts(&self, offset: i64, limit: i64) -> Result<(Vec<Forecast>, i64), StoreError> {
        let total: i64 =
            sqlx::query("SELECT COUNT(*) FROM forecasts").fetch_one(&self.pool).await?.try_get(0)?;
        let rows = sqlx::query(
            "SELECT id, date, temperature_c, summary, version, created_at, updated_at \
             FROM forecasts ORDER BY date, id LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(forecast_from_row).collect::<Result<_, _>>()?;
        Ok((items, total))
    }

    pub async fn get_forecast(&self, id: &str) -> Result<Forecast, StoreError> {
        let row = sqlx::query(
            "SELECT id, date, temperature_c, summary, version, created_at, updated_at FROM forecasts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(forecast_from_row(&row)?)
    }

    /// Inserts a forecast and its `created` event.
    pub async fn create_forecast(
        &self,
        input: &ForecastInput,
        event: impl FnOnce(&Forecast) -> DomainEvent,
    ) -> Result<(Forecast, DomainEvent), StoreError> {
        let now = now_text();
        let forecast = Forecast {
            id: Uuid::new_v4().to_string(),
            date: input.date.clone(),
            temperature_c: input.temperature_c,
            temperature_f: fahrenheit(input.temperature_c),
            summary: input.summary.clone(),
            created_at: now.clone(),
            updated_at: now,
            version: 1,
        };
        let event = event(&forecast);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO forecasts (id, date, temperature_c, summary, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&forecast.id)
        .bind(&forecast.date)
        .bind(forecast.temperature_c)
        .bind(&forecast.summary)
        .bind(forecast.version)
        .bind(&forecast.created_at)
        .bind(&forecast.updated_at)
        .execute(&mut *tx)
        .await?;
        insert_outbox(&mut tx, &event).await?;
        tx.commit().await?;
        Ok((forecast, event))
    }

    /// Replaces a forecast if `expected_version` (from `If-Match`) is current or not given.
    pub async fn update_forecast(
        &self,
        id: &str,
        input: &ForecastInput,
        expected_version: Option<i64>,
        event: impl FnOnce(&Forecast) -> DomainEvent,
    ) -> Result<(Forecast, DomainEvent), StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = now_text();
        // The version check and the write are one statement, so two concurrent updates with the
        // same If-Match cannot both succeed.
        let row = sqlx::query(
            "UPDATE forecasts SET date = $1, temperature_c = $2, summary = $3, version = version + 1, updated_at = $4 \
             WHERE id = $5 AND ($6 < 0 OR version = $6) \
             RETURNING id, date, temperature_c, summary, version, created_at, updated_at",
        )
        .bind(&input.date)
        .bind(input.temperature_c)
        .bind(&input.summary)
        .bind(&now)
        .bind(id)
        .bind(expected_version.unwrap_or(-1))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            drop(tx);
            return Err(self.missing_or_mismatch(id).await);
        };
        let forecast = forecast_from_row(&row)?;
        let event = event(&forecast);
        insert_outbox(&mut tx, &event).await?;
        tx.commit().await?;
        Ok((forecast, event))
    }

    /// Deletes a forecast if `expected_version` is current or not given.
    pub async fn delete_forecast(
        &self,
        id: &str,
        expected_version: Option<i64>,
        event: impl FnOnce() -> DomainEvent,
    ) -> Result<DomainEvent, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM forecasts WHERE id = $1 AND ($2 < 0 OR version = $2)")
            .bind(id)
            .bind(expected_version.unwrap_or(-1))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            drop(tx);
            return Err(self.missing_or_mismatch(id).await);
        }
        let event = event();
        insert_outbox(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(event)
    }

    async fn missing_or_mismatch(&self, id: &str) -> StoreError {
        match self.get_forecast(id).await {
            Ok(current) => StoreError::VersionMismatch { current: current.version },
            Err(error) => error,
        }
    }

    // ---- API keys ----

    pub async fn insert_api_key(
        &self,
        key: &ApiKeyRecord,
        event: Option<&DomainEvent>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, scopes, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.key_hash)
        .bind(key.scopes.join(" "))
        .bind(&key.created_at)
        .execute(&mut *tx)
        .await?;
        if let Some(event) = event {
            insert_outbox(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn find_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, key_hash, scopes, created_at, revoked_at FROM api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| api_key_from_row(&row)).transpose().map_err(Into::into)
    }

    pub async fn has_active_admin_key(&self) -> Result<bool, StoreError> {
        let rows =
            sqlx::query("SELECT scopes FROM api_keys WHERE revoked_at IS NULL").fetch_all(&self.pool).await?;
        for row in rows {
            let scopes: String = row.try_get(0)?;
            if scopes.split(' ').any(|scope| scope == "admin") {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Marks a key revoked; `NotFound` if it does not exist or was already revoked.
    pub async fn revoke_api_key(
        &self,
        id: &str,
        event: impl FnOnce(&ApiKeyRecord) -> DomainEvent,
    ) -> Result<(ApiKeyRecord, DomainEvent), StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
             RETURNING id, name, key_hash, scopes, created_at, revoked_at",
        )
        .bind(now_text())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let key = api_key_from_row(&row)?;
        let event = event(&key);
        insert_outbox(&mut tx, &event).await?;
        tx.commit().await?;
        Ok((key, event))
    }

    // ---- users and sessions ----

    /// Inserts a user and its `registered` event; [`StoreError::Duplicate`] when the username
    /// is taken.
    pub async fn insert_user(&self, user: &UserRecord, event: &DomainEvent) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, claims, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(claims_text(&user.claims))
        .bind(&user.created_at)
        .bind(&user.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(duplicate_or)?;
        insert_outbox(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let rows = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users ORDER BY username"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn find_user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE username = $1"))
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| user_from_row(&row)).transpose()?)
    }

    /// Changes a user's role or claims (`change` gets the user as it is and changes it); the
    /// event `event` makes of the user before and after is written with it, if it makes one.
    pub async fn update_user(
        &self,
        id: &str,
        change: impl FnOnce(&mut UserRecord),
        event: impl FnOnce(&UserRecord, &UserRecord) -> Option<DomainEvent>,
    ) -> Result<(UserRecord, Option<DomainEvent>), StoreError> {
        let mut tx = self.pool.begin().await?;
        // A write first: on SQLite a transaction that reads and then writes fails at once if
        // another connection wrote in between, while one that starts by writing waits its turn.
        sqlx::query("UPDATE users SET id = id WHERE id = $1").bind(id).execute(&mut *tx).await?;
        let row = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let before = user_from_row(&row)?;
        let mut after = before.clone();
        change(&mut after);
        let Some(event) = event(&before, &after) else { return Ok((before, None)) };
        after.updated_at = now_text();
        sqlx::query("UPDATE users SET role = $1, claims = $2, updated_at = $3 WHERE id = $4")
            .bind(after.role.as_str())
            .bind(claims_text(&after.claims))
            .bind(&after.updated_at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_outbox(&mut tx, &event).await?;
        tx.commit().await?;
        Ok((after, Some(event)))
    }

    /// Starts a session for `user`, writing `events` (signed in, session created) with it.
    pub async fn insert_session(
        &self,
        id: &str,
        secret_hash: &str,
        user: &UserRecord,
        expires_at: &str,
        events: &[DomainEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, secret_hash, user_id, created_at, expires_at, ended_at) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(id)
        .bind(secret_hash)
        .bind(&user.id)
        .bind(now_text())
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        for event in events {
            insert_outbox(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The session whose secret hashes to `secret_hash`, if it has neither ended nor expired.
    pub async fn active_session(&self, secret_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        // RFC 3339 texts in UTC with one precision (see `now_text`) compare as times.
        let row = sqlx::query(
            "SELECT s.id AS session_id, s.expires_at, u.id, u.username, u.password_hash, u.role, u.claims, \
             u.created_at, u.updated_at FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.secret_hash = $1 AND s.ended_at IS NULL AND s.expires_at > $2",
        )
        .bind(secret_hash)
        .bind(now_text())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(SessionRecord {
            id: row.try_get("session_id")?,
            expires_at: row.try_get("expires_at")?,
            user: user_from_row(&row)?,
        }))
    }

    /// Ends the sessions of a user (`session`: only that one), writing the event `event`
    /// makes of how many ended, if any did; [`StoreError::NotFound`] for an unknown user.
    pub async fn end_sessions(
        &self,
        user_id: &str,
        session: Option<&str>,
        event: impl FnOnce(&UserRecord, u64) -> DomainEvent,
    ) -> Result<(u64, Option<DomainEvent>), StoreError> {
        let mut tx = self.pool.begin().await?;
        // The write first (see `update_user`).
        let ended = sqlx::query(
            "UPDATE sessions SET ended_at = $1 WHERE user_id = $2 AND ended_at IS NULL AND ($3 = '' OR id = $3)",
        )
        .bind(now_text())
        .bind(user_id)
        .bind(session.unwrap_or(""))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let row = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let user = user_from_row(&row)?;
        if ended == 0 {
            return Ok((0, None));
        }
        let event = event(&user, ended);
        insert_outbox(&mut tx, &event).await?;
        tx.commit().await?;
        Ok((ended, Some(event)))
    }

    // ---- outbox ----

    /// The rows waiting, and when the oldest was written (unix seconds; `None` when none waits).
    pub async fn outbox_pending(&self) -> Result<(i64, Option<f64>), StoreError> {
        let row = sqlx::query("SELECT COUNT(*), MIN(created_at) FROM outbox").fetch_one(&self.pool).await?;
        let oldest: Option<String> = row.try_get(1)?;
        // Stored as RFC 3339 in UTC (see `now_text`), so the text's minimum is the oldest.
        let oldest = oldest
            .and_then(|text| chrono::DateTime::parse_from_rfc3339(&text).ok())
            .map(|at| at.timestamp_millis() as f64 / 1e3);
        Ok((row.try_get(0)?, oldest))
    }

    /// The oldest outbox rows, in order, to publish; `None` when another replica is publishing.
    ///
    /// On PostgreSQL the batch lives in a transaction holding an advisory lock, so that with
    /// several replicas one dispatcher at a time publishes and events stay in order. On SQLite
    /// (one process owns the file) there is a single dispatcher and no transaction is held while
    /// publishing, which would block writers meanwhile.
    pub async fn next_outbox_batch(&self, limit: i64) -> Result<Option<OutboxBatch>, StoreError> {
        const SELECT: &str = "SELECT seq, event_id, channel, payload, correlation_id, exclude_connection, actor \
                              FROM outbox ORDER BY seq LIMIT $1";
        let (tx, rows) = match self.kind {
            DatabaseKind::Postgres => {
                let mut tx = self.pool.begin().await?;
                // The constant names "the outbox dispatcher" across replicas.
                let locked: bool = sqlx::query("SELECT pg_try_advisory_xact_lock(7263514089)")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
                if !locked {
                    return Ok(None);
                }
                let rows = sqlx::query(SELECT).bind(limit).fetch_all(&mut *tx).await?;
                (Some(tx), rows)
            }
            DatabaseKind::Sqlite => (None, sqlx::query(SELECT).bind(limit).fetch_all(&self.pool).await?),
        };
        let rows = rows.iter().map(outbox_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(Some(OutboxBatch { tx, pool: self.pool.clone(), rows }))
    }
}

/// Outbox rows being published; [`OutboxBatch::complete`] deletes the published ones.
pub struct OutboxBatch {
    tx: Option<sqlx::Transaction<'static, sqlx::Any>>,
    pool: AnyPool,
    pub rows: Vec<OutboxRow>,
}

impl OutboxBatch {
    pub async fn complete(self, published: &[i64]) -> Result<(), StoreError> {
        const DELETE: &str = "DELETE FROM outbox WHERE seq = $1";
        if published.is_empty() && self.tx.is_none() {
            return Ok(());
        }
        // One commit for the batch: on SQLite a commit per row made deleting, not publishing,
        // what bounded the dispatcher's rate.
        let mut tx = match self.tx {
            Some(tx) => tx,
            None => self.pool.begin().await?,
        };
        for seq in published {
            sqlx::query(DELETE).bind(seq).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The file path in a `sqlite://path?query` or `sqlite:path` URL.
fn sqlite_path(url: &str) -> &str {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    rest.split('?').next().unwrap_or(rest)
}

async fn insert_outbox(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    event: &DomainEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (event_id, channel, payload, correlation_id, exclude_connection, created_at, actor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event.event_id.to_string())
    .bind(event.channel.name())
    .bind(event.data.to_string())
    .bind(&event.correlation_id)
    .bind(&event.exclude)
    .bind(now_text())
    .bind(&event.actor)
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

fn forecast_from_row(row: &AnyRow) -> Result<Forecast, sqlx::Error> {
    let temperature_c: i64 = row.try_get("temperature_c")?;
    Ok(Forecast {
        id: row.try_get("id")?,
        date: row.try_get("date")?,
        temperature_c,
        temperature_f: fahrenheit(temperature_c),
        summary: row.try_get("summary")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn api_key_from_row(row: &AnyRow) -> Result<ApiKeyRecord, sqlx::Error> {
    let scopes: String = row.try_get("scopes")?;
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        key_hash: row.try_get("key_hash")?,
        scopes: scopes.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn user_from_row(row: &AnyRow) -> Result<UserRecord, sqlx::Error> {
    let role: String = row.try_get("role")?;
    let claims: String = row.try_get("claims")?;
    let decode = |what: &str, error: String| sqlx::Error::Decode(format!("users.{what}: {error}").into());
    Ok(UserRecord {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        role: Role::parse(&role).ok_or_else(|| decode("role", format!("unknown role {role:?}")))?,
        claims: serde_json::from_str(&claims).map_err(|error| decode("claims", error.to_string()))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn claims_text(claims: &BTreeMap<String, String>) -> String {
    // A map of strings always serializes.
    serde_json::to_string(claims).unwrap_or_else(|_| "{}".into())
}

fn outbox_from_row(row: &AnyRow) -> Result<OutboxRow, sqlx::Error> {
    Ok(OutboxRow {
        seq: row.try_get("seq")?,
        event_id: row.try_get("event_id")?,
        channel: row.try_get("channel")?,
        payload: row.try_get("payload")?,
        correlation_id: row.try_get("correlation_id")?,
        exclude_connection: row.try_get("exclude_connection")?,
        actor: row.try_get("actor")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_are_read_from_urls() {
        assert_eq!(sqlite_path("sqlite://data/forecast.db"), "data/forecast.db");
        assert_eq!(sqlite_path("sqlite:///tmp/x.db?mode=rwc"), "/tmp/x.db");
        assert_eq!(sqlite_path("sqlite:x.db"), "x.db");
    }
}

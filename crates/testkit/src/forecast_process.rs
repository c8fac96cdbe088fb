//! The real `forecast-api` binary, the databases it can run on, a client of its API, and
//! [`TestApi`]: forecast-api with a Redis and a database of its own, the prologue of an API
//! test.

use std::process::{Command, Stdio};
use std::sync::Arc;

use tempfile::TempDir;

use crate::postgres::PostgresServer;
use crate::redis_server::RedisServer;
use crate::service_process::ServiceProcess;

/// The bootstrap admin key every test instance is configured with.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";
/// Who events caused with [`ADMIN_KEY`] name as their actor.
pub const ADMIN_ACTOR: &str = "key:bootstrap";

/// An event's data as forecast-api publishes it for a change that answered `answer`: the same,
/// plus who caused it.
pub fn event_data(answer: &serde_json::Value, actor: &str) -> serde_json::Value {
    let mut data = answer.clone();
    data["actor"] = actor.into();
    data
}
pub const RELAY_JWT_SECRET: &str = "test-relay-secret-0123456789abcdef0123";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// A database for one test: a SQLite file in a temp dir, or a fresh PostgreSQL database.
pub struct TestDb {
    pub url: String,
    _dir: Option<TempDir>,
    _server: Option<Arc<PostgresServer>>,
}

impl TestDb {
    pub async fn new(kind: DbKind) -> Self {
        match kind {
            DbKind::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir for sqlite");
                let url = format!("sqlite://{}/data/forecast.db", dir.path().display());
                Self { url, _dir: Some(dir), _server: None }
            }
            DbKind::Postgres => {
                let server = PostgresServer::shared();
                let url = server.create_database().await;
                Self { url, _dir: None, _server: Some(server) }
            }
        }
    }
}

/// A fresh Redis, a fresh database of `kind` and forecast-api on them, with a client holding
/// the admin key; all stopped when dropped. `let app = TestApi::start(db).await;`
pub struct TestApi {
    pub redis: RedisServer,
    pub db: TestDb,
    pub process: ServiceProcess,
    pub api: Api,
}

impl TestApi {
    pub async fn start(kind: DbKind) -> Self {
        Self::with(kind, |api| api).await
    }

    /// With forecast-api configured by `configure`.
    pub async fn with(kind: DbKind, configure: impl FnOnce(ForecastBuilder) -> ForecastBuilder) -> Self {
        let redis = RedisServer::start();
        let db = TestDb::new(kind).await;
        let process = configure(ForecastBuilder::new(&db, redis.url())).start();
        let api = Api::new(&process);
        Self { redis, db, process, api }
    }
}

pub struct ForecastBuilder {
    database_url: String,
    redis_url: String,
    env: Vec<(String, String)>,
}

impl ForecastBuilder {
    pub fn new(db: &TestDb, redis_url: impl Into<String>) -> Self {
        Self { database_url: db.url.clone(), redis_url: redis_url.into(), env: Vec::new() }
    }

    /// Sets a key through its environment variable, e.g. `env("HTTP__MAX_BODY_BYTES", 100)`.
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((format!("FORECAST_API__{key}"), value.to_string()));
        self
    }

    pub fn start(self) -> ServiceProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(crate::workspace_binary("forecast-api"));
        command
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info,forecast_api=debug")
            .env("FORECAST_API__LISTEN", "127.0.0.1:0")
            .env("FORECAST_API__DATABASE__URL", &self.database_url)
            .env("FORECAST_API__REDIS__URL", &self.redis_url)
            .env("FORECAST_API__AUTH__ADMIN_KEY", ADMIN_KEY)
            .env("FORECAST_API__AUTH__RELAY_JWT_SECRET", RELAY_JWT_SECRET)
            .env("FORECAST_API__OUTBOX__POLL_INTERVAL_MS", "200")
            .env("FORECAST_API__OUTBOX__BACKOFF_INITIAL_MS", "50")
            .env("FORECAST_API__OUTBOX__BACKOFF_MAX_MS", "300")
            .env("FORECAST_API__REDIS__CONNECT_TIMEOUT_MS", "500")
            .env("FORECAST_API__REDIS__RESPONSE_TIMEOUT_MS", "1000")
            .envs(self.env)
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ServiceProcess::spawn(command, dir)
    }
}

/// A client for the API with the admin key (or another) attached.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(process: &ServiceProcess) -> Self {
        Self { base: process.url(""), http: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn post(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(key)
    }

    pub fn put(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http.put(self.url(path)).bearer_auth(key)
    }

    pub fn delete(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(key)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path))
    }

    /// Creates a forecast with the admin key; returns its JSON.
    pub async fn create(&self, date: &str, temperature_c: i64, summary: &str) -> serde_json::Value {
        let response = self
            .post("/api/weatherforecast", ADMIN_KEY)
            .json(&serde_json::json!({ "date": date, "temperatureC": temperature_c, "summary": summary }))
            .send()
            .await
            .expect("POST forecast");
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json().await.expect("forecast JSON")
    }
}

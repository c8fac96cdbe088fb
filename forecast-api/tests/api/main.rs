//! Black-box tests of the forecast-api binary against real Redis, SQLite and PostgreSQL.

/// Runs one scenario `async fn name(db: DbKind)` on SQLite and on PostgreSQL, as two tests
/// `name::on_sqlite` and `name::on_postgres`.
macro_rules! on_both_databases {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$name(testkit::forecast_process::DbKind::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                super::$name(testkit::forecast_process::DbKind::Postgres).await
            }
        }
    )+};
}

mod auth;
mod cluster;
mod concurrency;
mod configuration;
mod crud;
mod events;
mod handlers;
mod operations;
mod outage;
mod replicas;
mod schema;
mod users;
mod validation;

//! A real PostgreSQL server on a free loopback port, shared by the tests of one test binary
//! while any of them runs, stopped when the last one finishes. Each test gets its own
//! database.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tempfile::TempDir;

use crate::redis_server::free_port;

pub struct PostgresServer {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
}

static SHARED: Mutex<Weak<PostgresServer>> = Mutex::new(Weak::new());
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(1);

/// The PostgreSQL server binaries (Debian puts them under /usr/lib/postgresql/<major>/bin).
fn find_bin() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    candidates.sort();
    candidates.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; \
             run `scripts/ensure-deps.sh postgres` (as root) or `apt-get install postgresql`"
        )
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// Runs a PostgreSQL tool; as root it runs as the `postgres` user (initdb refuses root).
fn run_tool(bin: &Path, tool: &str, args: &[String]) {
    let program = bin.join(tool);
    let status = if is_root() {
        let mut line = shell_quote(&program.to_string_lossy());
        for arg in args {
            line.push(' ');
            line.push_str(&shell_quote(arg));
        }
        Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", &line]).stdout(Stdio::null()).status()
    } else {
        Command::new(&program).args(args).stdout(Stdio::null()).status()
    }
    .unwrap_or_else(|error| panic!("cannot run {tool}: {error}"));
    assert!(status.success(), "{tool} {args:?} failed with {status}");
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

impl PostgresServer {
    /// The running shared server, or a new one.
    pub fn shared() -> Arc<Self> {
        let mut shared = SHARED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let server = Arc::new(Self::start());
        *shared = Arc::downgrade(&server);
        server
    }

    fn start() -> Self {
        let bin = find_bin();
        let dir = tempfile::tempdir().expect("temp dir for postgres");
        if is_root() {
            let status =
                Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown of the PostgreSQL directory failed");
        }
        let data = dir.path().join("data");
        let port = free_port();
        run_tool(
            &bin,
            "initdb",
            &[
                "-D".into(),
                data.to_string_lossy().into_owned(),
                "-U".into(),
                "postgres".into(),
                "--auth=trust".into(),
                "-E".into(),
                "UTF8".into(),
                "--locale=C.UTF-8".into(),
            ],
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            dir.path().display()
        );
        run_tool(
            &bin,
            "pg_ctl",
            &[
                "-D".into(),
                data.to_string_lossy().into_owned(),
                "-l".into(),
                dir.path().join("log").to_string_lossy().into_owned(),
                "-w".into(),
                "-o".into(),
                options,
                "start".into(),
            ],
        );
        Self { bin, dir, port }
    }

    /// Creates a fresh database and returns its URL.
    pub async fn create_database(&self) -> String {
        use sqlx::Connection;
        let name = format!("test_{}_{}", std::process::id(), NEXT_DATABASE.fetch_add(1, Ordering::SeqCst));
        let admin_url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let mut connection = sqlx::PgConnection::connect(&admin_url).await.expect("connect to test postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut connection)
            .await
            .expect("create test database");
        connection.close().await.ok();
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").to_string_lossy().into_owned();
        run_tool(
            &self.bin,
            "pg_ctl",
            &["-D".into(), data, "-m".into(), "immediate".into(), "-w".into(), "stop".into()],
        );
    }
}

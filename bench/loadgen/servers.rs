//! The servers under test, each pinned to the server core: the relay (release build), the
//! floor, and nginx with nchan; and Redis, pinned to the load core. Killed on drop.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A directory of the run's own, removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(name: String) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn name_hint() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("sse-bench-{}-{n}", std::process::id())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

fn pinned(core: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("taskset");
    command.arg("-c").arg(core.to_string()).arg(program);
    command
}

pub struct Process {
    child: Child,
    pub name: &'static str,
    pub addr: SocketAddr,
    _dir: ScratchDir,
}

impl Process {
    /// Every process of the server (nginx: master and workers).
    pub fn pids(&self) -> Vec<u32> {
        let root = self.child.id();
        let mut pids = vec![root];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // Field 4 (after the parenthesised name) is the parent pid.
                let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
                if ppid == Some(root.to_string().as_str()) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Resident memory of all its processes, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.pids()
            .iter()
            .map(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_default()
                    .lines()
                    .find_map(|line| line.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1024
            })
            .sum()
    }

    /// User + system CPU time of all its processes, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        self.pids()
            .iter()
            .map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map(|(_, rest)| rest.split_whitespace().collect())
                    .unwrap_or_default();
                // utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
                let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                (ticks(11) + ticks(12)) / 100.0
            })
            .sum()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_listening(process: &mut Process) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(process.addr).is_err() {
        if let Some(status) = process.child.try_wait()? {
            anyhow::bail!("{} exited with {status} before listening", process.name);
        }
        anyhow::ensure!(Instant::now() < deadline, "{} did not listen on {}", process.name, process.addr);
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn spawn(
    name: &'static str,
    mut command: Command,
    addr: SocketAddr,
    dir: ScratchDir,
) -> anyhow::Result<Process> {
    command.stdout(Stdio::null()).stderr(Stdio::inherit());
    let child = command.spawn().with_context(|| format!("start {name}"))?;
    let mut process = Process { child, name, addr, _dir: dir };
    wait_listening(&mut process)?;
    Ok(process)
}

pub fn redis(core: usize) -> anyhow::Result<Process> {
    let port = free_port();
    let dir = ScratchDir::new(name_hint())?;
    let mut command = pinned(core, "redis-server");
    command.args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"]);
    command.arg("--dir").arg(dir.path());
    spawn("redis", command, ([127, 0, 0, 1], port).into(), dir)
}

/// The relay with the benchmark's channels: `bench.*` raw, `benchlog.*` envelope (replayable).
pub fn relay(core: usize, binary: &Path, redis_url: &str) -> anyhow::Result<Process> {
    let port = free_port();
    let dir = ScratchDir::new(name_hint())?;
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\npod_id = \"bench\"\n[redis]\nurl = \"{redis_url}\"\n\
             [[channels]]\npattern = \"bench.*\"\nformat = \"raw\"\n\
             [[channels]]\npattern = \"benchlog.*\"\nformat = \"envelope\"\n\
             [limits]\nmax_connections = 1000000\n"
        ),
    )?;
    let mut command = pinned(core, binary);
    command.arg("--config").arg(&config).env("RUST_LOG", "warn");
    spawn("sse-relay", command, ([127, 0, 0, 1], port).into(), dir)
}

pub fn floor(core: usize, binary: &Path, redis_url: &str) -> anyhow::Result<Process> {
    let port = free_port();
    let mut command = pinned(core, binary);
    command.args(["--listen", &format!("127.0.0.1:{port}"), "--redis", redis_url, "--pattern", "bench*"]);
    spawn("floor", command, ([127, 0, 0, 1], port).into(), ScratchDir::new(name_hint())?)
}

/// nginx + nchan: one worker; subscribers on /sub (EventSource), publishers POST to /pub.
pub const NCHAN_CONFIG: &str = r#"load_module {module};
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events { worker_connections 19500; }
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {
        listen 127.0.0.1:{port} backlog=4096;
        location = /sub {
            nchan_subscriber eventsource;
            nchan_channel_id $arg_channel;
        }
        location = /pub {
            nchan_publisher;
            nchan_channel_id $arg_channel;
            nchan_message_buffer_length 100;
            nchan_message_timeout 10m;
        }
    }
}
"#;

pub fn nchan(core: usize) -> anyhow::Result<Process> {
    let module = PathBuf::from("/usr/lib/nginx/modules/ngx_nchan_module.so");
    anyhow::ensure!(
        module.is_file(),
        "nchan is missing: run `scripts/ensure-deps.sh nchan` (apt-get install libnginx-mod-nchan)"
    );
    let port = free_port();
    let dir = ScratchDir::new(name_hint())?;
    let config = NCHAN_CONFIG
        .replace("{module}", &module.display().to_string())
        .replace("{dir}", &dir.path().display().to_string())
        .replace("{port}", &port.to_string());
    let config_path = dir.path().join("nginx.conf");
    std::fs::write(&config_path, config)?;
    let mut command = pinned(core, "nginx");
    command.arg("-p").arg(dir.path()).arg("-e").arg(dir.path().join("error.log")).arg("-c").arg(&config_path);
    spawn("nchan", command, ([127, 0, 0, 1], port).into(), dir)
}

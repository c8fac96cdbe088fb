//! The servers under test, each pinned to the server core: the relay (release build), the
//! floor, nginx with nchan, forecast-api; and Redis (or a Redis Cluster), pinned to the load
//! core. Killed on drop.

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
    redis_node(core, free_port(), &[])
}

/// Redis on `port`, clients authenticated with `password`.
pub fn redis_with_password(core: usize, port: u16, password: &str) -> anyhow::Result<Process> {
    redis_node(core, port, &["--requirepass", password])
}

fn redis_node(core: usize, port: u16, extra: &[&str]) -> anyhow::Result<Process> {
    let dir = ScratchDir::new(name_hint())?;
    let mut command = pinned(core, "redis-server");
    command.args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"]);
    command.arg("--dir").arg(dir.path()).args(extra);
    spawn("redis", command, ([127, 0, 0, 1], port).into(), dir)
}

/// `count` free ports whose cluster bus ports (port + 10000) are free too, below 55000.
pub fn cluster_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let mut ports: Vec<u16> = Vec::new();
    for _ in 0..1000 {
        if ports.len() == count {
            return Ok(ports);
        }
        let port = rand::random_range(20_000..45_000);
        let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
        if !ports.contains(&port) && free(port) && free(port + 10_000) {
            ports.push(port);
        }
    }
    anyhow::bail!("no {count} free ports with free cluster bus ports below 55000")
}

/// A Redis Cluster of one primary on each of `ports` (no replicas), clients authenticated with
/// `password`, every slot assigned and every node giving the same slot map.
pub fn redis_cluster(core: usize, ports: &[u16], password: &str) -> anyhow::Result<Vec<Process>> {
    let nodes = ports
        .iter()
        .map(|&port| {
            let args =
                ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000", "--requirepass", password];
            redis_node(core, port, &args)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let addresses: Vec<String> = nodes.iter().map(|node| node.addr.to_string()).collect();
    let output = Command::new("redis-cli")
        .args(["-a", password, "--no-auth-warning", "--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .context("run redis-cli --cluster create")?;
    anyhow::ensure!(
        output.status.success(),
        "redis-cli --cluster create failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Each node's view: every node's id and slots, in a fixed order.
        let views: Vec<String> = nodes
            .iter()
            .map(|node| {
                let said: String = redis::Client::open(format!("redis://:{password}@{}", node.addr))
                    .and_then(|client| client.get_connection())
                    .and_then(|mut connection| redis::cmd("CLUSTER").arg("NODES").query(&mut connection))
                    .unwrap_or_default();
                let mut lines: Vec<String> = said
                    .lines()
                    .map(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        format!(
                            "{} {}",
                            fields.first().unwrap_or(&""),
                            fields.get(8..).unwrap_or_default().join(" ")
                        )
                    })
                    .collect();
                lines.sort();
                lines.join("\n")
            })
            .collect();
        let assigned = views[0].lines().filter(|line| line.contains(' ')).count() == nodes.len();
        if assigned && views.iter().all(|view| *view == views[0]) {
            return Ok(nodes);
        }
        anyhow::ensure!(Instant::now() < deadline, "the cluster's nodes did not agree within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// forecast-api with `config` (TOML) and an SQLite database of its own.
pub fn forecast_api(core: usize, binary: &Path, config: &str) -> anyhow::Result<Process> {
    let port = free_port();
    let dir = ScratchDir::new(name_hint())?;
    let config_path = dir.path().join("forecast-api.toml");
    std::fs::write(
        &config_path,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[database]\nurl = \"sqlite://{}\"\n{config}",
            dir.path().join("forecast.db").display()
        ),
    )?;
    let mut command = pinned(core, binary);
    // The Redis client warns at every refused connect, which the scale-out scenario causes.
    command.arg("--config").arg(&config_path).env("RUST_LOG", "warn,redis=error");
    spawn("forecast-api", command, ([127, 0, 0, 1], port).into(), dir)
}

/// The relay with the benchmark's channels: `bench.*` raw, `benchlog.*` envelope (replayable).
pub fn relay(core: usize, binary: &Path, redis_url: &str) -> anyhow::Result<Process> {
    relay_configured(
        core,
        binary,
        &format!(
            "[redis]\nurl = \"{redis_url}\"\n\
             [[channels]]\npattern = \"bench.*\"\nformat = \"raw\"\n\
             [[channels]]\npattern = \"benchlog.*\"\nformat = \"envelope\"\n\
             [limits]\nmax_connections = 1000000\n"
        ),
    )
}

/// The relay with `config` (TOML, after its listen address and pod id).
pub fn relay_configured(core: usize, binary: &Path, config: &str) -> anyhow::Result<Process> {
    let port = free_port();
    let dir = ScratchDir::new(name_hint())?;
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, format!("listen = \"127.0.0.1:{port}\"\npod_id = \"bench\"\n{config}"))?;
    let config = path;
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

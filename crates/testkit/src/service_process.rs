//! A service binary as a child process, its JSON log lines (stderr) and standard output
//! captured for assertions, and what every service of ours answers (`/readyz`, `/metrics`,
//! signals). Killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::eventually;

pub struct ServiceProcess {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    stdout_lines: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

impl ServiceProcess {
    /// Spawns `command` (its stderr must be piped, with `LOG_FORMAT=json`) and waits for its
    /// `listening` log line. `dir` lives as long as the process (its config files).
    pub fn spawn(mut command: Command, dir: TempDir) -> Self {
        let mut child = command.spawn().expect("spawn service");
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(stdout) = child.stdout.take() {
            let stdout_lines = Arc::clone(&stdout_lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    stdout_lines.lock().unwrap().push(line);
                }
            });
        }
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                        && value["message"] == "listening"
                        && let Some(addr) = value["addr"].as_str()
                    {
                        let _ = addr_tx.send(addr.parse::<SocketAddr>().expect("listening addr"));
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let addr = match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("service did not report its address; logs:\n{}", logs.lock().unwrap().join("\n"));
            }
        };
        Self { child, addr, logs, stdout_lines, _dir: dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines.lock().unwrap().clone()
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Log lines (JSON) whose `message` equals `message`.
    pub fn log_events(&self, message: &str) -> Vec<serde_json::Value> {
        self.logs()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|value| value["message"] == message)
            .collect()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(self.url(path)).await.expect("GET")
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.expect("metrics body")
    }

    pub async fn metric(&self, sample: &str) -> f64 {
        crate::metric(&self.metrics().await, sample)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        eventually(Duration::from_secs(20), "/readyz to answer 200", || async {
            let response = reqwest::get(self.url("/readyz")).await.ok()?;
            (response.status() == 200).then_some(())
        })
        .await
    }

    /// Waits until `/readyz` answers 503 and returns its JSON body.
    pub async fn wait_unready(&self) -> serde_json::Value {
        eventually(Duration::from_secs(20), "/readyz to answer 503", || async {
            let response = reqwest::get(self.url("/readyz")).await.ok()?;
            if response.status() == 503 { response.json().await.ok() } else { None }
        })
        .await
    }

    pub async fn wait_metric(&self, sample: &str, predicate: impl Fn(f64) -> bool) -> f64 {
        eventually(Duration::from_secs(20), sample, || async {
            let value = crate::metric(&self.metrics().await, sample);
            predicate(value).then_some(value)
        })
        .await
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion with `args` and environment overrides; returns its exit
/// code and standard error.
pub fn run_to_exit(binary: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut command = Command::new(binary);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn binary");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} {args:?} did not exit", binary.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().expect("output");
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    (status.code().unwrap_or(-1), text)
}

//! A real Prometheus (Debian's) scraping the services under test on loopback, queried through
//! its HTTP API; and `promtool`, which checks metrics and rules as Prometheus reads them.
//! Stopped on drop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::redis_server::free_port;
use crate::require_program;

const INSTALL: &str = "run `scripts/ensure-deps.sh prometheus` or `apt-get install prometheus`";

pub struct Prometheus {
    child: Child,
    port: u16,
    _dir: TempDir,
}

/// One sample of an instant query: its labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Prometheus {
    /// Scrapes each job's targets (`/metrics` on each address) every 500 ms.
    pub async fn start(jobs: &[(&str, Vec<SocketAddr>)]) -> Self {
        let prometheus = require_program("prometheus", INSTALL);
        let dir = tempfile::tempdir().expect("temp dir for prometheus");
        let port = free_port();
        let mut config =
            String::from("global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\nscrape_configs:\n");
        for (job, targets) in jobs {
            let targets: Vec<String> = targets.iter().map(|addr| format!("'{addr}'")).collect();
            config.push_str(&format!(
                "  - job_name: '{job}'\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let child = Command::new(prometheus)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn prometheus");
        let mut server = Self { child, port, _dir: dir };
        let ready = format!("http://127.0.0.1:{port}/-/ready");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if reqwest::get(&ready).await.is_ok_and(|response| response.status() == 200) {
                return server;
            }
            let exited = server.child.try_wait().expect("try_wait prometheus");
            assert!(
                exited.is_none() && tokio::time::Instant::now() < deadline,
                "prometheus did not become ready on {port}: {}",
                server.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stderr(&mut self) -> String {
        let _ = self.child.kill();
        let output = self.child.stderr.take().map(|mut stderr| {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        output.unwrap_or_default()
    }

    /// An instant query; panics on an error, naming the query and what Prometheus said.
    pub async fn query(&self, promql: &str) -> Vec<Sample> {
        let url = reqwest::Url::parse_with_params(
            &format!("http://127.0.0.1:{}/api/v1/query", self.port),
            [("query", promql)],
        )
        .expect("a query URL");
        let response: serde_json::Value =
            reqwest::get(url).await.expect("query prometheus").json().await.expect("prometheus answers JSON");
        assert_eq!(response["status"], "success", "{promql}: {response}");
        let result = &response["data"]["result"];
        let samples = match response["data"]["resultType"].as_str() {
            Some("vector") => result.as_array().cloned().unwrap_or_default(),
            Some("scalar") => vec![serde_json::json!({ "metric": {}, "value": result })],
            other => panic!("{promql}: a {other:?} result"),
        };
        samples
            .iter()
            .map(|sample| Sample {
                labels: serde_json::from_value(sample["metric"].clone()).unwrap_or_default(),
                value: sample["value"][1].as_str().and_then(|value| value.parse().ok()).unwrap_or(f64::NAN),
            })
            .collect()
    }

    /// Waits (20 s at most) until `promql` returns one sample whose value satisfies
    /// `predicate`; its value.
    pub async fn wait_for(&self, promql: &str, predicate: impl Fn(f64) -> bool) -> f64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let samples = self.query(promql).await;
            if let [sample] = samples.as_slice()
                && predicate(sample.value)
            {
                return sample.value;
            }
            assert!(tokio::time::Instant::now() < deadline, "{promql} within 20 s; it returned {samples:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `promtool check metrics` on an exposition: what it complains of (empty when clean).
pub fn check_metrics(exposition: &str) -> String {
    use std::io::Write;
    let promtool = require_program("promtool", INSTALL);
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child.stdin.take().expect("stdin").write_all(exposition.as_bytes()).expect("write to promtool");
    let output = child.wait_with_output().expect("promtool");
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() && said.trim().is_empty() { String::new() } else { said }
}

//! The relay configuration the Helm chart renders (its ConfigMap) is one the relay accepts and
//! serves with, for the default values and for the production example.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::log_publisher::LogPublisher;
use testkit::redis_cluster::RedisCluster;
use testkit::redis_server::RedisServer;
use testkit::relay_process::RelayProcess;
use testkit::service_process::ServiceProcess;
use testkit::workspace_binary;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn helm() -> PathBuf {
    let local = Path::new(ROOT).join(".tools/bin/helm");
    if local.is_file() {
        return local;
    }
    testkit::require_program(
        "helm",
        "run `scripts/ensure-deps.sh deploy-tools` (installs it into .tools/bin)",
    )
}

/// `relay.toml` from the chart's ConfigMap, rendered with `values` (a file under the chart).
fn rendered_relay_toml(values: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("helm home");
    let mut command = Command::new(helm());
    command
        .args(["template", "t", "helm/sse-relay", "--show-only", "templates/relay-configmap.yaml"])
        .current_dir(ROOT)
        .env("HELM_CACHE_HOME", dir.path().join("cache"))
        .env("HELM_CONFIG_HOME", dir.path().join("config"))
        .env("HELM_DATA_HOME", dir.path().join("data"));
    if let Some(values) = values {
        command.args(["-f", values]);
    }
    let output = command.output().expect("run helm");
    assert!(output.status.success(), "helm template failed: {}", String::from_utf8_lossy(&output.stderr));
    let manifest = String::from_utf8(output.stdout).expect("UTF-8 manifest");
    // The block scalar under `relay.toml: |`, indented by four spaces.
    let body = manifest.split_once("relay.toml: |\n").expect("relay.toml in the ConfigMap").1;
    body.lines()
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn relay_serves_with(toml: &str) {
    let redis = RedisServer::start();
    let publisher = LogPublisher::connect(&redis.url()).await;
    relay_serves_through(toml, &[("SSE_RELAY__REDIS__URL", redis.url())], publisher).await;
}

/// The relay started as the Deployment starts it (`toml` and what it sets in `env`), then an
/// event published by `publisher` delivered.
async fn relay_serves_through(toml: &str, env: &[(&str, String)], mut publisher: LogPublisher) {
    let dir = tempfile::tempdir().expect("config dir");
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, toml).expect("write relay.toml");
    let mut command = Command::new(workspace_binary("sse-relay"));
    command
        .arg("--config")
        .arg(&config)
        .env("LOG_FORMAT", "json")
        // What the Deployment sets from the Secret and the pod.
        .env("SSE_RELAY__LISTEN", "127.0.0.1:0")
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .env("SSE_RELAY__AUTH__JWT_SECRET", "a-secret-as-the-chart-generates-it-0123456789")
        .env("POD_NAME", "sse-relay-7d4b9c-x2x9q")
        .env("SSE_RELAY__REDIS__PROBE_INTERVAL_MS", "200")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if toml.contains("metrics_listen") {
        // A port of the pod's own, as the listener's: on loopback here.
        command.env("SSE_RELAY__METRICS_LISTEN", "127.0.0.1:0");
    }
    let relay = RelayProcess::new(ServiceProcess::spawn(command, dir));
    relay.wait_ready().await;
    let mut stream = relay.open_stream("?channel=weatherforecast.*").await;
    let id = publisher.publish("weatherforecast.created", r#"{"id":"f1"}"#, None).await.expect("publish");
    let event = stream.next_event(Duration::from_secs(10)).await;
    assert_eq!(event.id.as_deref(), Some(id.as_str()), "the chart's channel rule delivers envelopes");
    assert_eq!(event.data.as_deref(), Some(r#"{"id":"f1"}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_serves_with_the_configuration_the_chart_renders_by_default() {
    relay_serves_with(&rendered_relay_toml(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_serves_with_the_configuration_of_the_production_example() {
    relay_serves_with(&rendered_relay_toml(Some("helm/sse-relay/examples/production.yaml"))).await;
}

/// A cluster whose nodes advertise host names nothing resolves (as managed endpoints advertise
/// names a client cannot use as they are): the chart's `redis.cluster.addressMap` rendered
/// into `relay.toml` leads the relay to them, with the seed nodes as the Deployment passes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_serves_through_a_cluster_with_the_address_map_the_chart_renders() {
    const DOMAIN: &str = "cluster.invalid";
    let cluster = RedisCluster::start(3, 1);
    cluster.announce_hostnames(DOMAIN);
    let dir = tempfile::tempdir().expect("values dir");
    let values = dir.path().join("cluster.yaml");
    let map: String = cluster
        .nodes()
        .iter()
        .map(|node| {
            let port = node.port();
            format!(
                "      \"{}:{port}\": \"127.0.0.1:{port}\"\n",
                RedisCluster::advertised_host(port, DOMAIN)
            )
        })
        .collect();
    let seeds = cluster.seed_nodes().join("\", \"");
    std::fs::write(&values, format!("redis:\n  cluster:\n    nodes: [\"{seeds}\"]\n    addressMap:\n{map}"))
        .expect("write values");
    let toml = rendered_relay_toml(Some(values.to_str().expect("UTF-8 path")));
    assert!(toml.contains("[redis.cluster.address_map]"), "{toml}");
    let publisher = LogPublisher::connect_cluster(&cluster.client_mapping(DOMAIN)).await;
    relay_serves_through(
        &toml,
        &[("SSE_RELAY__REDIS__CLUSTER__NODES", cluster.seed_nodes().join(","))],
        publisher,
    )
    .await;
}

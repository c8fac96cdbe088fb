//! A real Redis Cluster on loopback: primaries and their replicas as `redis-server` processes,
//! joined with `redis-cli --cluster create`, and taken apart again when dropped. Nodes can be
//! killed (a replica is then promoted) and restarted.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::redis_server::{RedisConfig, RedisServer};
use crate::require_program;

pub struct RedisCluster {
    /// Primaries first, then their replicas, as created.
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// `primaries` primaries with `replicas` replicas each, every slot assigned, every node
    /// agreeing that the cluster is up.
    pub fn start(primaries: usize, replicas: usize) -> Self {
        let redis_cli = require_program(
            "redis-cli",
            "run `scripts/ensure-deps.sh redis` or `apt-get install redis-tools`",
        );
        let nodes: Vec<RedisServer> = (0..primaries * (1 + replicas))
            .map(|_| {
                RedisServer::start_configured(RedisConfig { cluster_node: true, ..RedisConfig::default() })
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|node| format!("127.0.0.1:{}", node.port())).collect();
        let output = Command::new(redis_cli)
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_until_up(Duration::from_secs(30));
        cluster
    }

    /// Waits until every running node says `cluster_state:ok` and knows every other one.
    pub fn wait_until_up(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let expected = self.nodes.len();
        loop {
            let all_up = self.nodes.iter().all(|node| {
                let Ok(mut connection) =
                    node.client().get_connection_with_timeout(Duration::from_millis(500))
                else {
                    return false;
                };
                let info: String =
                    redis::cmd("CLUSTER").arg("INFO").query(&mut connection).unwrap_or_default();
                let known = info
                    .lines()
                    .find_map(|line| line.trim().strip_prefix("cluster_known_nodes:"))
                    .and_then(|n| n.parse::<usize>().ok());
                info.lines().any(|line| line.trim() == "cluster_state:ok") && known == Some(expected)
            });
            if all_up {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not come up within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `host:port` of every node: what a client is given as seed nodes.
    pub fn seed_nodes(&self) -> Vec<String> {
        self.nodes.iter().map(|node| format!("127.0.0.1:{}", node.port())).collect()
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// A client of the whole cluster, as the harness uses it.
    pub fn client(&self) -> redis::cluster::ClusterClient {
        let urls: Vec<String> = self.nodes.iter().map(|node| node.url()).collect();
        redis::cluster::ClusterClient::new(urls).expect("cluster client")
    }

    /// The index of the node that is primary for `slot` now.
    pub fn primary_for_slot(&self, slot: u16) -> usize {
        let mut connection = self.nodes[0].connection();
        let slots: Vec<redis::Value> =
            redis::cmd("CLUSTER").arg("SLOTS").query(&mut connection).expect("CLUSTER SLOTS");
        for range in slots {
            let redis::Value::Array(range) = range else { continue };
            let number = |value: &redis::Value| match value {
                redis::Value::Int(n) => *n,
                _ => -1,
            };
            if (number(&range[0])..=number(&range[1])).contains(&i64::from(slot))
                && let redis::Value::Array(primary) = &range[2]
            {
                let port = number(&primary[1]);
                return self
                    .nodes
                    .iter()
                    .position(|node| i64::from(node.port()) == port)
                    .expect("a node of this cluster");
            }
        }
        panic!("no primary serves slot {slot}");
    }

    /// Kills node `index` (SIGKILL).
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Starts node `index` again (it rejoins with its configuration file).
    pub fn restart(&mut self, index: usize) {
        self.nodes[index].restart();
    }
}

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
    /// Held while the cluster runs: see [`ONE_AT_A_TIME`].
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// One cluster at a time in a test process: several clusters of 6–9 nodes, each with services
/// and a hundred clients, on two cores starve each other's replication and failure detection,
/// and a test would then measure the machine rather than the product.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl RedisCluster {
    /// `primaries` primaries with `replicas` replicas each, every slot assigned, every node
    /// agreeing that the cluster is up.
    pub fn start(primaries: usize, replicas: usize) -> Self {
        let redis_cli = require_program(
            "redis-cli",
            "run `scripts/ensure-deps.sh redis` or `apt-get install redis-tools`",
        );
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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
        let cluster = Self { nodes, _turn: turn };
        cluster.wait_until_up(Duration::from_secs(30));
        // Each node's role reaches the others by gossip: until it has, a failover can be
        // voted on by nodes that still take a replica for a primary.
        cluster.wait_until_agreed(Duration::from_secs(30));
        cluster
    }

    /// Waits until every running node says `cluster_state:ok` and knows every other one, and
    /// every replica has synced with its primary.
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
                let replication: String =
                    redis::cmd("INFO").arg("replication").query(&mut connection).unwrap_or_default();
                let synced = !replication.lines().any(|line| line.trim() == "role:slave")
                    || replication.lines().any(|line| line.trim() == "master_link_status:up");
                info.lines().any(|line| line.trim() == "cluster_state:ok")
                    && known == Some(expected)
                    && synced
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
        self.slot_ranges()
            .into_iter()
            .find(|(range, _)| range.contains(&slot))
            .map(|(_, primary)| primary)
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
    }

    /// The lowest slot node `index` serves.
    pub fn first_slot_of(&self, index: usize) -> u16 {
        self.slot_ranges()
            .into_iter()
            .filter(|(_, primary)| *primary == index)
            .map(|(range, _)| *range.start())
            .min()
            .unwrap_or_else(|| panic!("node {index} serves no slot"))
    }

    /// Slot ranges and the index of the primary serving each, as the first node that answers
    /// (`CLUSTER SLOTS`) sees them.
    fn slot_ranges(&self) -> Vec<(std::ops::RangeInclusive<u16>, usize)> {
        let number = |value: &redis::Value| match value {
            redis::Value::Int(n) => *n,
            _ => -1,
        };
        for node in self.nodes.iter().filter(|node| node.is_running()) {
            let Ok(mut connection) = node.client().get_connection_with_timeout(Duration::from_millis(500))
            else {
                continue;
            };
            let Ok(slots) = redis::cmd("CLUSTER").arg("SLOTS").query::<Vec<redis::Value>>(&mut connection)
            else {
                continue;
            };
            return slots
                .into_iter()
                .filter_map(|range| {
                    let redis::Value::Array(range) = range else { return None };
                    let redis::Value::Array(primary) = &range[2] else { return None };
                    let port = number(&primary[1]);
                    let index = self.nodes.iter().position(|node| i64::from(node.port()) == port)?;
                    Some((number(&range[0]) as u16..=number(&range[1]) as u16, index))
                })
                .collect();
        }
        panic!("no node of the cluster answers CLUSTER SLOTS");
    }

    /// Makes every node advertise the host name `node-<port>.<domain>` instead of its address
    /// (`cluster-announce-hostname`, `cluster-preferred-endpoint-type hostname`), as nodes
    /// behind a managed endpoint advertise names a client cannot use as they are; returns once
    /// every node's `CLUSTER SLOTS` says so. A client then needs an address map
    /// ([`Self::client_mapping`]). Nothing resolves these names: the map is applied first.
    pub fn announce_hostnames(&self, domain: &str) {
        for node in &self.nodes {
            let mut connection = node.connection();
            for (parameter, value) in [
                ("cluster-announce-hostname", Self::advertised_host(node.port(), domain)),
                ("cluster-preferred-endpoint-type", "hostname".to_owned()),
            ] {
                let _: () = redis::cmd("CONFIG")
                    .arg("SET")
                    .arg(parameter)
                    .arg(value)
                    .query(&mut connection)
                    .expect("CONFIG SET");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let announced = |node: &RedisServer| {
            let slots: Vec<redis::Value> =
                redis::cmd("CLUSTER").arg("SLOTS").query(&mut node.connection()).unwrap_or_default();
            let text = format!("{slots:?}");
            self.nodes.iter().all(|other| text.contains(&Self::advertised_host(other.port(), domain)))
        };
        while !self.nodes.iter().all(announced) {
            assert!(
                Instant::now() < deadline,
                "the nodes did not all advertise their host names within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The name node `port` advertises after [`Self::announce_hostnames`].
    pub fn advertised_host(port: u16, domain: &str) -> String {
        format!("node-{port}.{domain}")
    }

    /// A client of the cluster that reaches the nodes advertised under `domain` at
    /// `127.0.0.1:<port>` (after [`Self::announce_hostnames`]).
    pub fn client_mapping(&self, domain: &str) -> redis::cluster::ClusterClient {
        let urls: Vec<String> = self.nodes.iter().map(|node| node.url()).collect();
        let map = self
            .nodes
            .iter()
            .map(|node| {
                (
                    redis::cluster::NodeAddress::new(Self::advertised_host(node.port(), domain), node.port()),
                    redis::cluster::NodeAddress::new("127.0.0.1", node.port()),
                )
            })
            .collect();
        redis::cluster::ClusterClientBuilder::new(urls).node_address_map(map).build().expect("cluster client")
    }

    /// What each node says of the cluster (`CLUSTER NODES`, its role, its keys): for the
    /// message of a failed assertion.
    pub fn describe(&self) -> String {
        let mut description = String::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let said = node.client().get_connection_with_timeout(Duration::from_millis(500)).map(
                |mut connection| {
                    let nodes: String =
                        redis::cmd("CLUSTER").arg("NODES").query(&mut connection).unwrap_or_default();
                    let replication: String =
                        redis::cmd("INFO").arg("replication").query(&mut connection).unwrap_or_default();
                    let keys: i64 = redis::cmd("DBSIZE").query(&mut connection).unwrap_or(-1);
                    let role = replication.lines().find(|line| line.starts_with("role:")).unwrap_or("role:?");
                    let offsets: Vec<&str> = replication
                        .lines()
                        .filter(|line| {
                            line.contains("repl_offset:") || line.starts_with("master_link_status")
                        })
                        .collect();
                    format!("{role}, {keys} keys, {}\n{nodes}", offsets.join(", "))
                },
            );
            let said = said.unwrap_or_else(|error| format!("unreachable: {error}"));
            description.push_str(&format!("node {index} (port {}): {said}\n", node.port()));
        }
        description
    }

    /// The cluster id of node `index` (`CLUSTER MYID`).
    pub fn node_id(&self, index: usize) -> String {
        redis::cmd("CLUSTER").arg("MYID").query(&mut self.nodes[index].connection()).expect("CLUSTER MYID")
    }

    /// Waits until every running node gives the same slot map: a change made through one node
    /// reaches the others by gossip, and `redis-cli --cluster` refuses to work before.
    pub fn wait_until_agreed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let views: Vec<String> = self
                .nodes
                .iter()
                .filter(|node| node.is_running())
                .map(|node| {
                    let nodes: String = node
                        .client()
                        .get_connection_with_timeout(Duration::from_millis(500))
                        .and_then(|mut connection| redis::cmd("CLUSTER").arg("NODES").query(&mut connection))
                        .unwrap_or_default();
                    // Each node's id, role and slots, in a fixed order.
                    let mut lines: Vec<String> = nodes
                        .lines()
                        .map(|line| {
                            let fields: Vec<&str> = line.split_whitespace().collect();
                            let role = fields.get(2).map_or("", |flags| {
                                if flags.contains("master") { "master" } else { "replica" }
                            });
                            let slots = fields.get(8..).unwrap_or_default().join(" ");
                            format!("{} {role} {slots}", fields.first().unwrap_or(&""))
                        })
                        .collect();
                    lines.sort();
                    lines.join("\n")
                })
                .collect();
            if !views[0].is_empty() && views.iter().all(|view| *view == views[0]) {
                return;
            }
            assert!(Instant::now() < deadline, "the nodes did not agree on the slots within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Moves the `count` lowest slots of node `from` to node `to`, keys and all, with
    /// `redis-cli --cluster reshard` (as an operator does while the cluster serves).
    pub fn reshard(&self, from: usize, to: usize, count: u16) {
        self.wait_until_agreed(Duration::from_secs(30));
        let redis_cli = require_program(
            "redis-cli",
            "run `scripts/ensure-deps.sh redis` or `apt-get install redis-tools`",
        );
        let output = Command::new(redis_cli)
            .args(["--cluster", "reshard", &format!("127.0.0.1:{}", self.nodes[from].port())])
            .args(["--cluster-from", &self.node_id(from), "--cluster-to", &self.node_id(to)])
            .args(["--cluster-slots", &count.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster reshard");
        assert!(
            output.status.success(),
            "redis-cli --cluster reshard failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        self.wait_until_agreed(Duration::from_secs(30));
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

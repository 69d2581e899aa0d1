//! A real Redis Cluster per test: N primaries with R replicas each, every node a
//! `redis-server --cluster-enabled yes` on a free loopback port, killed when dropped.
//!
//! Ports are picked below 55535 because each node also listens on its port + 10000 (the
//! cluster bus), and both must be free. Slots are split evenly between the primaries with
//! `CLUSTER ADDSLOTSRANGE`, the nodes meet through the first one, replicas attach with
//! `CLUSTER REPLICATE`, and the cluster is handed out once every node says `cluster_state:ok`.
//!
//! `cluster-node-timeout` is low (1 s, see [`NODE_TIMEOUT_MS`]) so that a killed primary's
//! replica is promoted within a few seconds, keeping failover tests short; production
//! clusters use more.
//!
//! - `node`: one node's process and its port pair.
//! - `topology`: who serves a slot, whose replicas are whose, failovers, moving a slot.

mod node;
mod topology;

use std::process::{Child, Command};
use std::time::Duration;

use crate::process::{stop, wait_until};
use node::Node;
use topology::slot_ranges;

/// `cluster-node-timeout` of every test node, in milliseconds.
pub const NODE_TIMEOUT_MS: u64 = 1_000;
/// Slots in a Redis Cluster.
const SLOTS: u16 = 16_384;

/// A Redis Cluster started for one test.
pub struct RedisCluster {
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts `primaries` primaries (at least 3, as Redis Cluster's failover needs a majority)
    /// with `replicas` replicas each, and waits until the cluster is ok everywhere.
    /// Nodes 0..primaries are the primaries; replica `r` of primary `p` is node
    /// `primaries + p * replicas + r`.
    pub async fn start(primaries: usize, replicas: usize) -> Self {
        assert!(primaries >= 1, "a cluster needs a primary");
        let mut cluster = Self { nodes: Vec::new() };
        for _ in 0..primaries * (1 + replicas) {
            cluster.nodes.push(Node::spawn().await);
        }
        for (index, range) in slot_ranges(primaries).into_iter().enumerate() {
            let _: () = cluster
                .cmd(
                    index,
                    redis::cmd("CLUSTER")
                        .arg("ADDSLOTSRANGE")
                        .arg(range.0)
                        .arg(range.1),
                )
                .await
                .expect("CLUSTER ADDSLOTSRANGE");
        }
        let first = cluster.nodes[0].port;
        for index in 1..cluster.nodes.len() {
            let _: () = cluster
                .cmd(
                    index,
                    redis::cmd("CLUSTER")
                        .arg("MEET")
                        .arg("127.0.0.1")
                        .arg(first),
                )
                .await
                .expect("CLUSTER MEET");
        }
        let total = cluster.nodes.len();
        cluster
            .wait_everywhere("every node to know every other", |nodes| {
                nodes
                    .lines()
                    .filter(|line| !line.contains("handshake"))
                    .count()
                    == total
            })
            .await;
        for primary in 0..primaries {
            let id = cluster.node_id(primary).await;
            for replica in 0..replicas {
                let index = primaries + primary * replicas + replica;
                let _: () = cluster
                    .cmd(index, redis::cmd("CLUSTER").arg("REPLICATE").arg(&id))
                    .await
                    .expect("CLUSTER REPLICATE");
            }
        }
        cluster.wait_until_ok().await;
        for index in primaries..total {
            cluster.wait_for_link(index).await;
        }
        cluster
    }

    /// Waits until every live node reports `cluster_state:ok`.
    pub async fn wait_until_ok(&self) {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .collect();
        wait_until(
            Duration::from_secs(30),
            Duration::from_millis(50),
            "the cluster never reached cluster_state:ok on every node",
            || async {
                for &index in &live {
                    let info: Option<String> = self
                        .cmd(index, redis::cmd("CLUSTER").arg("INFO"))
                        .await
                        .ok();
                    if !info.is_some_and(|info| info.contains("cluster_state:ok")) {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }

    async fn wait_everywhere(&self, what: &str, ready: impl Fn(&str) -> bool) {
        wait_until(
            Duration::from_secs(30),
            Duration::from_millis(50),
            what,
            || async {
                for index in 0..self.nodes.len() {
                    let nodes: Option<String> = self
                        .cmd(index, redis::cmd("CLUSTER").arg("NODES"))
                        .await
                        .ok();
                    if !nodes.is_some_and(|nodes| ready(&nodes)) {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }

    async fn wait_for_link(&self, index: usize) {
        let what = format!("cluster replica node {index} never linked to its primary");
        self.wait_for_replication(index, "master_link_status:up", &what)
            .await;
    }

    /// Waits (up to 30 s) until node `index`'s `INFO replication` contains `needle`.
    pub(crate) async fn wait_for_replication(&self, index: usize, needle: &str, what: &str) {
        wait_until(
            Duration::from_secs(30),
            Duration::from_millis(50),
            what,
            || async {
                self.info(index, "replication")
                    .await
                    .is_some_and(|info| info.contains(needle))
            },
        )
        .await;
    }

    /// Node `index`'s `host:port`.
    pub fn address(&self, index: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[index].port)
    }

    /// Node `index`'s `redis://` URL.
    pub fn url(&self, index: usize) -> String {
        format!("redis://{}", self.address(index))
    }

    /// Every node's port, in node order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// How many nodes the cluster was started with.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// True until node `index` is killed.
    pub fn is_running(&self, index: usize) -> bool {
        self.nodes[index].child.is_some()
    }

    /// One command on node `index`.
    pub async fn cmd<T: redis::FromRedisValue>(
        &self,
        index: usize,
        command: &mut redis::Cmd,
    ) -> redis::RedisResult<T> {
        let client = redis::Client::open(self.url(index))?;
        let asked = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            command.query_async(&mut conn).await
        };
        tokio::time::timeout(Duration::from_secs(5), asked)
            .await
            .unwrap_or_else(|_| Err((redis::ErrorKind::Io, "no answer within 5 s").into()))
    }

    /// `INFO section` of node `index`, if it answers.
    pub async fn info(&self, index: usize, section: &str) -> Option<String> {
        self.cmd(index, redis::cmd("INFO").arg(section)).await.ok()
    }

    /// Node `index`'s cluster id.
    pub async fn node_id(&self, index: usize) -> String {
        self.cmd(index, redis::cmd("CLUSTER").arg("MYID"))
            .await
            .expect("CLUSTER MYID")
    }

    /// kill -9 of node `index`, then waits for the process to be gone.
    pub fn kill(&mut self, index: usize) {
        stop(&mut self.nodes[index].child);
    }

    /// Starts a killed node again, same port and identity, with no data (nothing is persisted):
    /// like a restarted pod, it learns that its slots moved on and rejoins as a replica of the
    /// node promoted in its place. Waits until it has linked to that primary.
    pub async fn restart(&mut self, index: usize) {
        stop(&mut self.nodes[index].child);
        self.nodes[index].launch().await;
        self.wait_for_link(index).await;
    }

    /// SIGSTOP of node `index`: it keeps its sockets open and answers nothing (a replica so
    /// paused falls behind its primary).
    pub fn pause(&self, index: usize) {
        self.signal(index, "-STOP");
    }

    /// SIGCONT of node `index`.
    pub fn resume(&self, index: usize) {
        self.signal(index, "-CONT");
    }

    fn signal(&self, index: usize, signal: &str) {
        let pid = self.pid(index).expect("the node is running");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// The PID of node `index`, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.nodes[index].child.as_ref().map(Child::id)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            stop(&mut node.child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::topology::in_range;
    use super::*;

    #[test]
    fn the_slots_are_split_without_gaps() {
        assert_eq!(slot_ranges(3), [(0, 5460), (5461, 10921), (10922, 16383)]);
        assert!(in_range("0-5460", 7) && !in_range("0-5460", 5461) && in_range("12", 12));
    }

    #[tokio::test]
    async fn a_cluster_serves_every_slot_and_promotes_a_replica_of_a_killed_primary() {
        let mut cluster = RedisCluster::start(3, 1).await;
        let slot = cluster.slot_of("{guestbook:default}").await;
        let owner = cluster.owner_of_slot(slot).await.expect("an owner");
        let replicas = cluster.replicas_of(owner).await;
        assert_eq!(replicas.len(), 1, "one replica per primary");
        cluster.kill(owner);
        cluster.wait_for_promotion(replicas[0]).await;
        assert_eq!(cluster.owner_of_slot(slot).await, Some(replicas[0]));
        cluster.restart(owner).await;
        assert_eq!(
            cluster.replicas_of(replicas[0]).await,
            [owner],
            "rejoins as a replica"
        );
        cluster.failover(owner, false).await;
        assert_eq!(
            cluster.owner_of_slot(slot).await,
            Some(owner),
            "a manual failover back"
        );
    }
}

//! What the cluster says about its slots and roles, and changing them: who serves a slot,
//! whose replicas are whose, a manual failover, a slot moved with its keys.

use std::time::Duration;

use super::{RedisCluster, SLOTS};
use crate::process::wait_until;

impl RedisCluster {
    /// The slot of `key` (its hash tag's, if it has one).
    pub async fn slot_of(&self, key: &str) -> u16 {
        let live = (0..self.nodes.len())
            .find(|&i| self.is_running(i))
            .expect("a live node");
        self.cmd(live, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .await
            .expect("CLUSTER KEYSLOT")
    }

    /// The node (index) a live node says serves `slot` as primary, if any.
    pub async fn owner_of_slot(&self, slot: u16) -> Option<usize> {
        for index in (0..self.nodes.len()).filter(|&i| self.is_running(i)) {
            let Ok(nodes) = self
                .cmd::<String>(index, redis::cmd("CLUSTER").arg("NODES"))
                .await
            else {
                continue;
            };
            for line in nodes.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let serves = fields
                    .get(2)
                    .is_some_and(|flags| flags.contains("master") && !flags.contains("fail"))
                    && fields.iter().skip(8).any(|range| in_range(range, slot));
                if serves {
                    let port = fields[1].split(['@', ',']).next()?.rsplit(':').next()?;
                    let port: u16 = port.parse().ok()?;
                    return self.nodes.iter().position(|node| node.port == port);
                }
            }
        }
        None
    }

    /// The replicas (indices) of node `primary`, as it reports them.
    pub async fn replicas_of(&self, primary: usize) -> Vec<usize> {
        let id = self.node_id(primary).await;
        let nodes: String = self
            .cmd(primary, redis::cmd("CLUSTER").arg("NODES"))
            .await
            .expect("CLUSTER NODES");
        nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.get(3) == Some(&id.as_str())).then_some(())?;
                let port: u16 = fields[1]
                    .split('@')
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()?;
                self.nodes.iter().position(|node| node.port == port)
            })
            .collect()
    }

    /// A manual failover (`CLUSTER FAILOVER`, or `FORCE` when its primary is down) run on the
    /// replica `replica`; waits until it is a primary and the cluster is ok again.
    pub async fn failover(&self, replica: usize, force: bool) {
        let mut command = redis::cmd("CLUSTER");
        command.arg("FAILOVER");
        if force {
            command.arg("FORCE");
        }
        let _: () = self
            .cmd(replica, &mut command)
            .await
            .expect("CLUSTER FAILOVER");
        self.wait_for_promotion(replica).await;
    }

    /// Waits until node `index` reports itself a primary and the cluster is ok again.
    pub async fn wait_for_promotion(&self, index: usize) {
        let what = format!("cluster node {index} was never promoted");
        self.wait_for_replication(index, "role:master", &what).await;
        self.wait_until_ok().await;
        // The promoted node knows first; the others learn it by gossip. Until every live node
        // names it a primary, a question asked of another node can still name the old one.
        let what = format!("not every live node names cluster node {index} a primary");
        wait_until(
            Duration::from_secs(30),
            Duration::from_millis(50),
            &what,
            || self.every_view_names_primary(index),
        )
        .await;
    }

    /// True when every live node's `CLUSTER NODES` lists node `index` as a primary in good
    /// standing.
    async fn every_view_names_primary(&self, index: usize) -> bool {
        let port = self.nodes[index].port;
        for asked in (0..self.nodes.len()).filter(|&i| self.is_running(i)) {
            let Ok(nodes) = self
                .cmd::<String>(asked, redis::cmd("CLUSTER").arg("NODES"))
                .await
            else {
                return false;
            };
            let named = nodes.lines().any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let at_port = fields.get(1).is_some_and(|address| {
                    address
                        .split(['@', ','])
                        .next()
                        .and_then(|address| address.rsplit(':').next())
                        .is_some_and(|found| found == port.to_string())
                });
                at_port
                    && fields
                        .get(2)
                        .is_some_and(|flags| flags.contains("master") && !flags.contains("fail"))
            });
            if !named {
                return false;
            }
        }
        true
    }

    /// Moves `slot`, with its keys, from primary `from` to primary `to` (the resharding steps
    /// `redis-cli --cluster reshard` takes), and tells every live primary.
    pub async fn move_slot(&self, slot: u16, from: usize, to: usize) {
        let (from_id, to_id) = (self.node_id(from).await, self.node_id(to).await);
        let setslot = |state: &str, id: &str| {
            let mut command = redis::cmd("CLUSTER");
            command.arg("SETSLOT").arg(slot).arg(state).arg(id);
            command
        };
        let _: () = self
            .cmd(to, &mut setslot("IMPORTING", &from_id))
            .await
            .expect("IMPORTING");
        let _: () = self
            .cmd(from, &mut setslot("MIGRATING", &to_id))
            .await
            .expect("MIGRATING");
        loop {
            let keys: Vec<String> = self
                .cmd(
                    from,
                    redis::cmd("CLUSTER")
                        .arg("GETKEYSINSLOT")
                        .arg(slot)
                        .arg(100),
                )
                .await
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let _: () = self
                .cmd(
                    from,
                    redis::cmd("MIGRATE")
                        .arg("127.0.0.1")
                        .arg(self.nodes[to].port)
                        .arg("")
                        .arg(0)
                        .arg(5_000)
                        .arg("KEYS")
                        .arg(&keys),
                )
                .await
                .expect("MIGRATE");
        }
        for index in [to, from] {
            let _: () = self
                .cmd(index, &mut setslot("NODE", &to_id))
                .await
                .expect("SETSLOT NODE");
        }
        self.wait_until_ok().await;
    }
}

/// Even shares of the slots, one range per primary.
pub(super) fn slot_ranges(primaries: usize) -> Vec<(u16, u16)> {
    let n = u32::try_from(primaries).expect("a few primaries");
    (0..n)
        .map(|i| {
            let low = u32::from(SLOTS) * i / n;
            let high = u32::from(SLOTS) * (i + 1) / n - 1;
            (low as u16, high as u16)
        })
        .collect()
}

/// True when a `CLUSTER NODES` slot field (`5`, `0-5460`) holds `slot`.
pub(super) fn in_range(field: &str, slot: u16) -> bool {
    let parse = |s: &str| s.parse::<u16>().ok();
    match field.split_once('-') {
        Some((low, high)) => {
            matches!((parse(low), parse(high)), (Some(l), Some(h)) if (l..=h).contains(&slot))
        }
        None => parse(field) == Some(slot),
    }
}

//! Redis Cluster (`REDIS_CLUSTER_NODES`): following the node that serves the guestbook's slot.
//!
//! Every key of a guestbook shares one hash tag (`{guestbook:NAME}`, see [`super::keys`]), so
//! the whole guestbook lives in one slot, on one primary at a time. The backend therefore
//! treats a cluster as Sentinel treats a replicated primary: it finds the slot's primary, and
//! every connection (the shared one, the `watch` pool, the `WAIT` connection, the live tail)
//! goes to that node, rebuilt as a whole when the slot moves or a replica is promoted.
//!
//! Why not redis-rs's cluster client: it picks the node per command, so an append and the
//! `WAIT` that confirms it could reach two different primaries across a failover, and the new
//! one would vouch for an append it never received (the hole `REDIS_MIN_REPLICAS_ACK` exists
//! to close). `SCAN` (clearing idempotency records) and `WATCH` also need the slot's own node.
//!
//! The slot's primary is learnt from `CLUSTER NODES`, asked of every known node (the seeds and
//! every node they named) every [`POLL`]; when answers disagree (a node that has not heard of
//! a failover yet) the claim with the highest config epoch wins, as in Redis itself. A `MOVED`
//! reply is followed at once (see [`Cluster::moved_to`]); the failed call is retried once by
//! the store, which is safe: a `MOVED` command was not executed.

use std::sync::RwLock;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::config::RedisArgs;
use crate::store::error::StoreError;
use crate::store::sentinel::url_with_address;

/// How often the nodes are asked.
pub(crate) const POLL: Duration = Duration::from_millis(500);
/// Slots in a Redis Cluster.
const SLOTS: u16 = 16_384;

/// One node as the cluster describes it, for `/health/dependencies`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterNode {
    /// `host:port`.
    pub address: String,
    /// `primary` or `replica`.
    pub role: &'static str,
    /// The cluster's view: linked and not flagged failing.
    pub reachable: bool,
    /// True for the primary that serves the guestbook's slot.
    pub serves_guestbook: bool,
}

/// The seeds, what has been learnt from them, and the guestbook's slot.
pub(crate) struct Cluster {
    /// Every node ever named, the seeds first.
    known: RwLock<Vec<String>>,
    /// `REDIS_URL`, whose host and port each node's address replaces.
    template: String,
    timeout: Duration,
    slot: u16,
    /// The nodes as last described.
    view: RwLock<Vec<ClusterNode>>,
    /// Wakes the poller early (a `MOVED` was seen).
    wake: Notify,
}

/// The slot's primary as one node claims it.
struct Claim {
    owner: String,
    epoch: u64,
    nodes: Vec<ClusterNode>,
}

impl Cluster {
    /// The cluster `REDIS_CLUSTER_NODES` names, for the slot of `key` (any key of the guestbook).
    pub(crate) fn from_settings(settings: &RedisArgs, key: &str) -> Option<Self> {
        let seeds = settings.cluster_addresses();
        if seeds.is_empty() {
            return None;
        }
        Some(Self {
            known: RwLock::new(seeds),
            template: settings.redis_url.clone(),
            timeout: settings.redis_timeout(),
            slot: slot_of(key),
            view: RwLock::default(),
            wake: Notify::new(),
        })
    }

    /// The nodes as last described (empty before the first answer).
    pub(crate) fn nodes(&self) -> Vec<ClusterNode> {
        read(&self.view).clone()
    }

    /// The URL of the node a `MOVED` reply named, and a wake-up for the poller to confirm it.
    pub(crate) fn moved_to(&self, address: &str) -> Result<String, StoreError> {
        self.wake.notify_one();
        let (host, port) = split_address(address)
            .ok_or_else(|| StoreError::Corrupt(format!("MOVED to {address:?}")))?;
        url_with_address(&self.template, host, port).map_err(StoreError::Corrupt)
    }

    /// The URL of the primary serving the slot, as the node with the newest view says.
    pub(crate) async fn primary_url(&self) -> Result<String, String> {
        let known = read(&self.known).clone();
        let answers = join_all(known.iter().map(|address| self.ask(address))).await;
        let mut claims = Vec::with_capacity(answers.len());
        let mut last_error = "no cluster node answered".to_owned();
        for (address, answer) in known.iter().zip(answers) {
            match answer {
                Ok(claim) => claims.push(claim),
                Err(err) => last_error = format!("cluster node {address}: {err}"),
            }
        }
        let claim = newest(claims).ok_or(last_error)?;
        {
            let mut known = write(&self.known);
            for node in &claim.nodes {
                if !known.contains(&node.address) {
                    known.push(node.address.clone());
                }
            }
        }
        *write(&self.view) = claim.nodes;
        let (host, port) = split_address(&claim.owner)
            .ok_or_else(|| format!("the cluster named {:?}", claim.owner))?;
        url_with_address(&self.template, host, port)
    }

    /// `CLUSTER NODES` of one node, read as a claim about the slot's primary.
    async fn ask(&self, address: &str) -> Result<Claim, String> {
        let (host, port) = split_address(address).ok_or("not host:port")?;
        let url = url_with_address(&self.template, host, port)?;
        let client = redis::Client::open(url).map_err(|err| err.to_string())?;
        let asked = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async::<String>(&mut conn)
                .await
        };
        let nodes = match tokio::time::timeout(self.timeout, asked).await {
            Ok(Ok(nodes)) => nodes,
            Ok(Err(err)) => return Err(err.to_string()),
            Err(_) => return Err(format!("no answer within {:?}", self.timeout)),
        };
        parse_nodes(&nodes, address, self.slot)
            .ok_or_else(|| format!("names no live primary for slot {}", self.slot))
    }
}

/// Asks the nodes until `stop` (every [`POLL`], sooner after a `MOVED`), calling `switch` with
/// the URL of each newly named primary of the slot.
pub(crate) async fn follow(
    cluster: &Cluster,
    switch: impl Fn(&str) -> Result<(), StoreError>,
    current: impl Fn() -> Option<String>,
    stop: CancellationToken,
) {
    loop {
        match cluster.primary_url().await {
            Ok(url) if current().as_deref() != Some(url.as_str()) => {
                if let Err(err) = switch(&url) {
                    tracing::error!(error = %err, "cannot use the primary the cluster named");
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "no cluster node named the slot's primary"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
            () = cluster.wake.notified() => {}
        }
    }
}

/// The claim with the highest config epoch: a node that has not yet heard of a failover, or an
/// old primary restarted with its stale view, names the primary it knew with an older epoch. On
/// a tie the first answer stands.
fn newest(claims: impl IntoIterator<Item = Claim>) -> Option<Claim> {
    claims
        .into_iter()
        .fold(None, |best: Option<Claim>, claim| match best {
            Some(best) if best.epoch >= claim.epoch => Some(best),
            _ => Some(claim),
        })
}

/// Reads `CLUSTER NODES` (one line per node: id, `ip:port@bus[,hostname]`, flags, primary
/// id, ping, pong, config epoch, link state, slots...) as asked of `asked`.
fn parse_nodes(text: &str, asked: &str, slot: u16) -> Option<Claim> {
    let mut nodes = Vec::new();
    let mut owner = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, address, flags, _, _, _, epoch, link, slots @ ..] = fields.as_slice() else {
            continue;
        };
        let address = address.split(['@', ',']).next().unwrap_or_default();
        // A node that has met no other may not know its own IP yet (`:6379`).
        let address = if flags.contains("myself") && address.starts_with(':') {
            asked.to_owned()
        } else {
            address.to_owned()
        };
        if flags.contains("noaddr") || flags.contains("handshake") || address.starts_with(':') {
            continue;
        }
        let failing = flags.contains("fail");
        let primary = flags.contains("master");
        let serves = primary && !failing && slots.iter().any(|range| holds(range, slot));
        if serves {
            owner = Some((address.clone(), epoch.parse().unwrap_or(0)));
        }
        nodes.push(ClusterNode {
            address,
            role: if primary { "primary" } else { "replica" },
            reachable: !failing && (flags.contains("myself") || *link == "connected"),
            serves_guestbook: serves,
        });
    }
    let (owner, epoch) = owner?;
    Some(Claim {
        owner,
        epoch,
        nodes,
    })
}

/// True when a slot field (`5`, `0-5460`; not `[5->-id]`, a migration in progress) holds `slot`.
fn holds(field: &str, slot: u16) -> bool {
    let parse = |s: &str| s.parse::<u16>().ok();
    match field.split_once('-') {
        Some((low, high)) => {
            matches!((parse(low), parse(high)), (Some(low), Some(high)) if (low..=high).contains(&slot))
        }
        None => parse(field) == Some(slot),
    }
}

/// `host:port` split at its last colon (an IPv6 host keeps its own colons).
fn split_address(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?)).filter(|(host, _)| !host.is_empty())
}

/// The slot of `key`, as Redis Cluster computes it: CRC16 (XMODEM) modulo 16384 of its hash
/// tag (what lies between the first `{` and the next `}`, when not empty), else of the key.
pub(crate) fn slot_of(key: &str) -> u16 {
    let hashed = key
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(tag, _)| tag)
        .filter(|tag| !tag.is_empty())
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for byte in hashed.bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_is_redis_clusters_crc16() {
        // The reference value from the Redis Cluster specification.
        assert_eq!(slot_of("123456789"), 0x31C3 % SLOTS);
        assert_eq!(
            slot_of("{guestbook:default}:seq"),
            slot_of("guestbook:default")
        );
        // The log: `Moved: 7398` for the default guestbook.
        assert_eq!(slot_of("{guestbook:default}:log"), 7398);
        // An empty tag is no tag: the whole key is hashed.
        assert_ne!(slot_of("{}a"), slot_of("{}b"));
    }

    #[test]
    fn the_slots_primary_is_the_live_master_holding_it() {
        let text = "\
a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:7001@17001 master,fail - 0 0 2 disconnected
c 127.0.0.1:7004@17004 master - 0 0 7 connected 5461-10922
d 127.0.0.1:7002@17002 slave c 0 0 7 connected
";
        let claim = parse_nodes(text, "127.0.0.1:7000", 7000).expect("an owner");
        assert_eq!((claim.owner.as_str(), claim.epoch), ("127.0.0.1:7004", 7));
        assert_eq!(claim.nodes.len(), 4);
        assert!(!claim.nodes[1].reachable);
        assert_eq!(claim.nodes[3].role, "replica");
        assert!(parse_nodes(text, "127.0.0.1:7000", 16000).is_none());
    }

    #[test]
    fn the_claim_with_the_newest_config_epoch_wins_in_any_order() {
        // Node a has not heard of the failover yet: it still names 7001 (epoch 2); node b
        // knows 7004 took the slot over (epoch 7).
        let stale = "\
a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
";
        let fresh = "\
b 127.0.0.1:7004@17004 myself,master - 0 0 7 connected 5461-10922
c 127.0.0.1:7001@17001 master,fail - 0 0 2 disconnected
";
        let claims = || {
            (
                parse_nodes(stale, "127.0.0.1:7000", 7000).expect("a stale claim"),
                parse_nodes(fresh, "127.0.0.1:7004", 7000).expect("a fresh claim"),
            )
        };
        let (old, new) = claims();
        let winner = newest([old, new]).expect("a winner");
        assert_eq!(winner.owner, "127.0.0.1:7004");
        let (old, new) = claims();
        let winner = newest([new, old]).expect("a winner");
        assert_eq!(winner.owner, "127.0.0.1:7004");
        assert!(newest([]).is_none());
    }

    #[test]
    fn addresses_split_at_the_last_colon() {
        assert_eq!(split_address("127.0.0.1:7000"), Some(("127.0.0.1", 7000)));
        assert_eq!(split_address("::1:7000"), Some(("::1", 7000)));
        assert_eq!(split_address(":7000"), None);
    }
}

//! Redis Cluster (`REDIS_CLUSTER_NODES`): following the node that serves each book's slot.
//!
//! Every key of a book (a guestbook) shares one hash tag (`{guestbook:NAME}`, see
//! [`super::keys`]), so the whole book lives in one slot, on one primary at a time; books spread
//! over the cluster's primaries by their slots. The backend therefore treats a cluster as
//! Sentinel treats a replicated primary, once per node: it learns which primary serves each
//! slot, and every connection a book uses (the shared one, the `watch` pool, the `WAIT`
//! connection, the live tail) goes to that node; the links are rebuilt when a slot moves or a
//! replica is promoted.
//!
//! Why not redis-rs's cluster client: it picks the node per command, so an append and the
//! `WAIT` that confirms it could reach two different primaries across a failover, and the new
//! one would vouch for an append it never received (the hole `REDIS_MIN_REPLICAS_ACK` exists
//! to close). `SCAN` (clearing idempotency records) and `WATCH` also need the slot's own node.
//!
//! The slots' primaries are learnt from `CLUSTER NODES`, asked of every known node (the seeds
//! and every node they named) every [`POLL`]; when answers disagree (a node that has not heard
//! of a failover yet) the claim with the highest config epoch wins, slot by slot, as in Redis
//! itself. A `MOVED` reply is followed at once (see [`Cluster::moved`]); the failed call is
//! retried once by the store, which is safe: a `MOVED` command was not executed.

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
    /// True for the primary that serves the default book's slot.
    pub serves_guestbook: bool,
    /// How many slots this process believes the node serves (primaries only).
    pub slots: u32,
}

/// Which primary serves each slot: an index into `nodes` plus one (0: unknown) per slot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owners {
    /// `(address, URL)` of every primary that serves a slot.
    nodes: Vec<(String, String)>,
    by_slot: Vec<u16>,
}

impl Default for Owners {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            by_slot: vec![0; usize::from(SLOTS)],
        }
    }
}

impl Owners {
    fn url(&self, slot: u16) -> Option<&str> {
        let index = *self.by_slot.get(usize::from(slot))?;
        let (_, url) = self.nodes.get(usize::from(index).checked_sub(1)?)?;
        Some(url)
    }

    fn address(&self, slot: u16) -> Option<&str> {
        let index = *self.by_slot.get(usize::from(slot))?;
        let (address, _) = self.nodes.get(usize::from(index).checked_sub(1)?)?;
        Some(address)
    }

    /// Makes `address` (at `url`) the owner of the slots `low..=high`.
    fn assign(&mut self, low: u16, high: u16, address: &str, url: &str) {
        let index = match self.nodes.iter().position(|(known, _)| known == address) {
            Some(index) => index,
            None => {
                self.nodes.push((address.to_owned(), url.to_owned()));
                self.nodes.len() - 1
            }
        };
        let Ok(index) = u16::try_from(index + 1) else {
            return;
        };
        let high = high.min(SLOTS - 1);
        for owner in self
            .by_slot
            .iter_mut()
            .take(usize::from(high) + 1)
            .skip(usize::from(low))
        {
            *owner = index;
        }
    }

    fn slots_of(&self, address: &str) -> u32 {
        let Some(index) = self.nodes.iter().position(|(known, _)| known == address) else {
            return 0;
        };
        let wanted = u16::try_from(index + 1).unwrap_or(0);
        self.by_slot
            .iter()
            .filter(|owner| **owner == wanted)
            .count() as u32
    }
}

/// The seeds, what has been learnt from them, and which primary serves each slot.
pub(crate) struct Cluster {
    /// Every node ever named, the seeds first.
    known: RwLock<Vec<String>>,
    /// `REDIS_URL`, whose host and port each node's address replaces.
    template: String,
    timeout: Duration,
    /// The default book's slot (marked in `/health/dependencies`).
    default_slot: u16,
    /// The nodes as last described.
    view: RwLock<Vec<ClusterNode>>,
    owners: RwLock<Owners>,
    /// Wakes the poller early (a `MOVED` was seen).
    wake: Notify,
}

/// What one node's `CLUSTER NODES` says.
struct Claim {
    /// `(first slot, last slot, primary, its config epoch)` for each slot range served by a
    /// live primary.
    ranges: Vec<(u16, u16, String, u64)>,
    /// The highest config epoch the node knows of: the freshest view wins `/health`.
    epoch: u64,
    nodes: Vec<ClusterNode>,
}

impl Cluster {
    /// The cluster `REDIS_CLUSTER_NODES` names; `default_key` is any key of the default book.
    pub(crate) fn from_settings(settings: &RedisArgs, default_key: &str) -> Option<Self> {
        let seeds = settings.cluster_addresses();
        if seeds.is_empty() {
            return None;
        }
        Some(Self {
            known: RwLock::new(seeds),
            template: settings.redis_url.clone(),
            timeout: settings.redis_timeout(),
            default_slot: slot_of(default_key),
            view: RwLock::default(),
            owners: RwLock::default(),
            wake: Notify::new(),
        })
    }

    /// The nodes as last described (empty before the first answer).
    pub(crate) fn nodes(&self) -> Vec<ClusterNode> {
        let owners = read(&self.owners);
        let default_owner = owners.address(self.default_slot);
        read(&self.view)
            .iter()
            .map(|node| ClusterNode {
                serves_guestbook: default_owner == Some(node.address.as_str()),
                slots: owners.slots_of(&node.address),
                ..node.clone()
            })
            .collect()
    }

    /// The URL of the primary serving `slot`, when known.
    pub(crate) fn url_for(&self, slot: u16) -> Option<String> {
        read(&self.owners).url(slot).map(str::to_owned)
    }

    /// After a `MOVED` reply for `slot`: the node it named serves the slot from now on (the
    /// poller, woken, confirms it). Returns the node's URL.
    pub(crate) fn moved(&self, slot: u16, address: &str) -> Result<String, StoreError> {
        self.wake.notify_one();
        let (host, port) = split_address(address)
            .ok_or_else(|| StoreError::Corrupt(format!("MOVED to {address:?}")))?;
        let url = url_with_address(&self.template, host, port).map_err(StoreError::Corrupt)?;
        write(&self.owners).assign(slot, slot, address, &url);
        Ok(url)
    }

    /// Asks every known node and rebuilds the slot map from their answers; true when it
    /// changed.
    pub(crate) async fn refresh(&self) -> Result<bool, String> {
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
        if claims.is_empty() {
            return Err(last_error);
        }
        let owners = owners(&claims, |address| {
            let (host, port) = split_address(address)?;
            url_with_address(&self.template, host, port).ok()
        });
        {
            let mut known = write(&self.known);
            for claim in &claims {
                for node in &claim.nodes {
                    if !known.contains(&node.address) {
                        known.push(node.address.clone());
                    }
                }
            }
        }
        if let Some(freshest) = claims.into_iter().max_by_key(|claim| claim.epoch) {
            *write(&self.view) = freshest.nodes;
        }
        let mut current = write(&self.owners);
        let changed = *current != owners;
        *current = owners;
        Ok(changed)
    }

    /// `CLUSTER NODES` of one node, read as a claim about the slots' primaries.
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
        Ok(parse_nodes(&nodes, address))
    }
}

/// Asks the nodes until `stop` (every [`POLL`], sooner after a `MOVED`), calling `changed`
/// whenever a slot changes hands.
pub(crate) async fn follow(cluster: &Cluster, changed: impl Fn(), stop: CancellationToken) {
    loop {
        match cluster.refresh().await {
            Ok(true) => changed(),
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "no cluster node described the cluster"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
            () = cluster.wake.notified() => {}
        }
    }
}

/// The slot map the claims make together: slot by slot, the claim with the highest config
/// epoch wins (a node that has not yet heard of a failover, or an old primary restarted with
/// its stale view, names the primary it knew with an older epoch). On a tie the first answer
/// stands. `url` makes a node's URL from its address (`None`: the node is skipped).
fn owners(claims: &[Claim], url: impl Fn(&str) -> Option<String>) -> Owners {
    let mut ranges: Vec<&(u16, u16, String, u64)> = claims
        .iter()
        .flat_map(|claim| claim.ranges.iter())
        .collect();
    // Stable: among equal epochs the first answer's ranges are painted last and stand.
    ranges.reverse();
    ranges.sort_by_key(|(_, _, _, epoch)| *epoch);
    let mut owners = Owners::default();
    for (low, high, address, _) in ranges {
        if let Some(url) = url(address) {
            owners.assign(*low, *high, address, &url);
        }
    }
    owners
}

/// Reads `CLUSTER NODES` (one line per node: id, `ip:port@bus[,hostname]`, flags, primary
/// id, ping, pong, config epoch, link state, slots...) as asked of `asked`.
fn parse_nodes(text: &str, asked: &str) -> Claim {
    let mut nodes = Vec::new();
    let mut ranges = Vec::new();
    let mut newest = 0;
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
        let epoch: u64 = epoch.parse().unwrap_or(0);
        newest = newest.max(epoch);
        let failing = flags.contains("fail");
        let primary = flags.contains("master");
        if primary && !failing {
            ranges.extend(
                slots
                    .iter()
                    .filter_map(|field| slot_range(field))
                    .map(|(low, high)| (low, high, address.clone(), epoch)),
            );
        }
        nodes.push(ClusterNode {
            address,
            role: if primary { "primary" } else { "replica" },
            reachable: !failing && (flags.contains("myself") || *link == "connected"),
            serves_guestbook: false,
            slots: 0,
        });
    }
    Claim {
        ranges,
        epoch: newest,
        nodes,
    }
}

/// A slot field (`5`, `0-5460`) as a range; `None` for `[5->-id]` (a migration in progress)
/// and anything unreadable.
fn slot_range(field: &str) -> Option<(u16, u16)> {
    let parse = |s: &str| s.parse::<u16>().ok().filter(|slot| *slot < SLOTS);
    match field.split_once('-') {
        Some((low, high)) => Some((parse(low)?, parse(high)?)).filter(|(low, high)| low <= high),
        None => parse(field).map(|slot| (slot, slot)),
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

    fn url(address: &str) -> Option<String> {
        Some(format!("redis://{address}"))
    }

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
    fn each_slot_belongs_to_the_live_master_holding_it() {
        let text = "\
a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:7001@17001 master,fail - 0 0 2 disconnected 5461-10922
c 127.0.0.1:7004@17004 master - 0 0 7 connected 5461-10922 16000 [16001->-abc]
d 127.0.0.1:7002@17002 slave c 0 0 7 connected
";
        let claim = parse_nodes(text, "127.0.0.1:7000");
        assert_eq!(claim.nodes.len(), 4);
        assert!(!claim.nodes[1].reachable);
        assert_eq!(claim.nodes[3].role, "replica");
        let owners = owners(&[claim], url);
        assert_eq!(owners.address(7000), Some("127.0.0.1:7004"));
        assert_eq!(owners.url(0), Some("redis://127.0.0.1:7000"));
        assert_eq!(owners.address(16000), Some("127.0.0.1:7004"));
        assert_eq!(
            owners.address(16001),
            None,
            "a slot being migrated is nobody's yet"
        );
        assert_eq!(owners.address(12000), None);
        assert_eq!(owners.slots_of("127.0.0.1:7000"), 5461);
    }

    #[test]
    fn the_claim_with_the_newest_config_epoch_wins_in_any_order() {
        // Node a has not heard of the failover yet: it still names 7001 (epoch 2); node b
        // knows 7004 took the slots over (epoch 7).
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
                parse_nodes(stale, "127.0.0.1:7000"),
                parse_nodes(fresh, "127.0.0.1:7004"),
            )
        };
        let (old, new) = claims();
        let map = owners(&[old, new], url);
        assert_eq!(map.address(7000), Some("127.0.0.1:7004"));
        assert_eq!(map.address(100), Some("127.0.0.1:7000"));
        let (old, new) = claims();
        let map = owners(&[new, old], url);
        assert_eq!(map.address(7000), Some("127.0.0.1:7004"));
        assert_eq!(owners(&[], url).address(7000), None);
    }

    #[test]
    fn a_moved_slot_changes_hands_alone() {
        let mut map = Owners::default();
        map.assign(0, SLOTS - 1, "127.0.0.1:7000", "redis://127.0.0.1:7000");
        map.assign(42, 42, "127.0.0.1:7001", "redis://127.0.0.1:7001");
        assert_eq!(map.address(42), Some("127.0.0.1:7001"));
        assert_eq!(map.address(41), Some("127.0.0.1:7000"));
        assert_eq!(map.address(43), Some("127.0.0.1:7000"));
    }

    #[test]
    fn addresses_split_at_the_last_colon() {
        assert_eq!(split_address("127.0.0.1:7000"), Some(("127.0.0.1", 7000)));
        assert_eq!(split_address("::1:7000"), Some(("::1", 7000)));
        assert_eq!(split_address(":7000"), None);
    }
}

//! The store's settings: every Redis and append setting ([`RedisArgs`]), with its validation
//! and a `Debug` that hides passwords.
//!
//! They live with the store, not with the application's `Settings`, so that the store is built
//! from what it needs and nothing else: `Settings` flattens them in (`#[command(flatten)]`),
//! and the store never sees the rest of the application's settings.

use std::time::Duration;

use clap::Args;
use guestbook_common::cli::{parse_bool, within};
use guestbook_common::redact;

/// Largest `MAX_MESSAGES`: a hundred million messages is tens of GB of Redis.
pub const MAX_RETENTION: u64 = 100_000_000;
/// Longest `IDEMPOTENCY_TTL_SECS`: 30 days. Each keyed post keeps a small record that long.
pub const MAX_IDEMPOTENCY_TTL_SECS: u64 = 30 * 24 * 3_600;

/// How one logical append is made atomic (`APPEND_STRATEGY`); see `store::strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AppendStrategy {
    /// One server-side script (EVALSHA, reloaded on NOSCRIPT). The default: fastest and safe.
    Lua,
    /// WATCH/MULTI/EXEC with bounded optimistic retries.
    Watch,
    /// A Redis lock (SET NX PX) with a fencing token checked by the write.
    Lock,
    /// Seed 000's GET-then-SET of one serialized value. Loses messages; for tests only.
    Naive,
}

impl AppendStrategy {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lua => "lua",
            Self::Watch => "watch",
            Self::Lock => "lock",
            Self::Naive => "naive",
        }
    }
}

/// Where Redis is, how long a call may take, and how appends are made and kept.
///
/// `Debug` is written by hand so that logging the settings never shows a password in
/// `REDIS_URL` or `REDIS_REPLICA_URL`.
#[derive(Clone, Args)]
pub struct RedisArgs {
    /// Redis primary (writes). `rediss://` for TLS (the server's certificate is checked against
    /// the system's roots, or the PEM file named by SSL_CERT_FILE); `redis://user:password@...`
    /// for AUTH or an ACL user.
    // Its value is hidden from --help: it may carry a password.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// How an append is made atomic: lua, watch, lock, or naive (unsafe, loses messages).
    #[arg(long, env = "APPEND_STRATEGY", value_enum, default_value_t = AppendStrategy::Lua)]
    pub append_strategy: AppendStrategy,

    /// Permits APPEND_STRATEGY=naive, which loses messages under concurrency.
    #[arg(long, env = "ALLOW_UNSAFE", default_value = "false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub allow_unsafe: bool,

    /// Retention cap: the oldest messages beyond it are trimmed.
    #[arg(long, env = "MAX_MESSAGES", default_value_t = 10_000)]
    pub max_messages: u64,

    /// How long an Idempotency-Key is remembered, in seconds.
    #[arg(long, env = "IDEMPOTENCY_TTL_SECS", default_value_t = 86_400)]
    pub idempotency_ttl_secs: u64,

    /// Read replica for listing and for live-update catch-up; the primary serves reads when
    /// it is down. Unset: every read goes to the primary.
    // Hidden from --help like REDIS_URL: it may carry a password.
    #[arg(long, env = "REDIS_REPLICA_URL", hide_env_values = true)]
    pub redis_replica_url: Option<String>,

    /// Sentinels (`host:port`, comma-separated) that name the primary; when set, REDIS_URL's
    /// host and port are replaced by theirs (its credentials, TLS and database are kept) and
    /// a failover is followed without a restart.
    #[arg(long, env = "REDIS_SENTINELS")]
    pub redis_sentinels: Option<String>,

    /// Redis Cluster seed nodes (`host:port`, comma-separated). When set, the backend finds the
    /// node serving the guestbook's slot and follows it across resharding and failovers;
    /// REDIS_URL's credentials and TLS apply to every node (its host and port are not used).
    /// Cannot be combined with REDIS_SENTINELS or REDIS_REPLICA_URL.
    #[arg(long, env = "REDIS_CLUSTER_NODES")]
    pub redis_cluster_nodes: Option<String>,

    /// The primary's name in Sentinel's configuration.
    #[arg(long, env = "REDIS_MASTER_NAME", default_value = "mymaster")]
    pub redis_master_name: String,

    /// Replicas that must confirm an append (Redis WAIT) before it is acknowledged; 0 acknowledges
    /// once the primary has it.
    #[arg(long, env = "REDIS_MIN_REPLICAS_ACK", default_value_t = 0)]
    pub redis_min_replicas_ack: u32,

    /// Longest wait for those confirmations, in milliseconds; past it the append answers 503
    /// (it is on the primary: a retry with the same Idempotency-Key waits again, never writes twice).
    #[arg(long, env = "REDIS_WAIT_TIMEOUT_MS", default_value_t = 500)]
    pub redis_wait_timeout_ms: u64,

    /// Time limit of every Redis call, in milliseconds; past it the request answers 503.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 1_000)]
    pub redis_timeout_ms: u64,

    /// Dedicated connections for the watch strategy (WATCH needs a connection of its own).
    #[arg(long, env = "REDIS_POOL_SIZE", default_value_t = 16)]
    pub redis_pool_size: usize,

    /// Optimistic attempts of the watch strategy before answering 503.
    #[arg(long, env = "WATCH_MAX_ATTEMPTS", default_value_t = 16)]
    pub watch_max_attempts: u32,

    /// Lifetime of the lock strategy's lock, in milliseconds.
    #[arg(long, env = "LOCK_TTL_MS", default_value_t = 2_000)]
    pub lock_ttl_ms: u64,

    /// Longest wait to acquire the lock, in milliseconds, before answering 503.
    #[arg(long, env = "LOCK_WAIT_MS", default_value_t = 2_000)]
    pub lock_wait_ms: u64,

    /// Name of the guestbook; its keys share the hash tag `{guestbook:NAME}`.
    #[arg(long, env = "GUESTBOOK_NAME", default_value = "default")]
    pub guestbook_name: String,
}

impl RedisArgs {
    /// `REDIS_SENTINELS` split into addresses (empty: no Sentinel).
    pub fn sentinel_addresses(&self) -> Vec<String> {
        addresses(self.redis_sentinels.as_deref())
    }

    /// `REDIS_CLUSTER_NODES` split into addresses (empty: not a cluster).
    pub fn cluster_addresses(&self) -> Vec<String> {
        addresses(self.redis_cluster_nodes.as_deref())
    }

    /// The per-call Redis time limit.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// Returns a one-line description of the first problem found.
    pub fn validate(&self) -> Result<(), String> {
        if self.append_strategy == AppendStrategy::Naive && !self.allow_unsafe {
            return Err("APPEND_STRATEGY=naive loses messages under concurrency; \
                        set ALLOW_UNSAFE=true to run it anyway"
                .into());
        }
        redis::Client::open(self.redis_url.as_str())
            .map_err(|err| format!("REDIS_URL is not a Redis URL: {err}"))?;
        if let Some(url) = &self.redis_replica_url {
            redis::Client::open(url.as_str())
                .map_err(|err| format!("REDIS_REPLICA_URL is not a Redis URL: {err}"))?;
        }
        let lists = [
            ("REDIS_SENTINELS", self.sentinel_addresses()),
            ("REDIS_CLUSTER_NODES", self.cluster_addresses()),
        ];
        for (name, list) in lists {
            for address in list {
                let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                });
                if !valid {
                    return Err(format!("{name}: {address:?} is not host:port"));
                }
            }
        }
        // A cluster has its own replicas and failover; Sentinel and a separate read replica
        // would each name a different server for the same guestbook.
        if !self.cluster_addresses().is_empty() {
            if !self.sentinel_addresses().is_empty() {
                return Err("REDIS_CLUSTER_NODES and REDIS_SENTINELS cannot both be set".into());
            }
            if self.redis_replica_url.is_some() {
                return Err("REDIS_CLUSTER_NODES and REDIS_REPLICA_URL cannot both be set".into());
            }
        }
        if self.redis_master_name.trim().is_empty() {
            return Err("REDIS_MASTER_NAME must not be empty".into());
        }
        if self.redis_min_replicas_ack > 16 {
            return Err("REDIS_MIN_REPLICAS_ACK must be between 0 and 16".into());
        }
        if !(1..=60_000).contains(&self.redis_wait_timeout_ms) {
            return Err("REDIS_WAIT_TIMEOUT_MS must be between 1 and 60000".into());
        }
        // Bounds that keep every value within what Redis takes (an EX beyond its range used to
        // fail an append half-way) and within what one backend can sensibly hold.
        let bounds = [
            ("MAX_MESSAGES", self.max_messages, 1, MAX_RETENTION),
            (
                "IDEMPOTENCY_TTL_SECS",
                self.idempotency_ttl_secs,
                1,
                MAX_IDEMPOTENCY_TTL_SECS,
            ),
            ("LOCK_TTL_MS", self.lock_ttl_ms, 1, 60_000),
            ("LOCK_WAIT_MS", self.lock_wait_ms, 1, 60_000),
            (
                "WATCH_MAX_ATTEMPTS",
                u64::from(self.watch_max_attempts),
                1,
                1_000,
            ),
            ("REDIS_POOL_SIZE", self.redis_pool_size as u64, 1, 1_024),
        ];
        for (name, value, low, high) in bounds {
            within(name, value, low, high)?;
        }
        if !(1..=600_000).contains(&self.redis_timeout_ms) {
            return Err("REDIS_TIMEOUT_MS must be between 1 and 600000".into());
        }
        if !guestbook_api::is_valid_book_name(&self.guestbook_name) {
            return Err("GUESTBOOK_NAME must be 1-64 characters of [A-Za-z0-9_-]".into());
        }
        Ok(())
    }
}

/// A comma-separated list of addresses, trimmed, empty entries dropped.
fn addresses(list: Option<&str>) -> Vec<String> {
    list.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(str::to_owned)
        .collect()
}

impl std::fmt::Debug for RedisArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisArgs")
            .field("redis_url", &redact::url(&self.redis_url))
            .field(
                "redis_replica_url",
                &self.redis_replica_url.as_deref().map(redact::url),
            )
            .field("redis_sentinels", &self.redis_sentinels)
            .field("redis_cluster_nodes", &self.redis_cluster_nodes)
            .field("redis_master_name", &self.redis_master_name)
            .field("redis_min_replicas_ack", &self.redis_min_replicas_ack)
            .field("redis_wait_timeout_ms", &self.redis_wait_timeout_ms)
            .field("append_strategy", &self.append_strategy)
            .field("max_messages", &self.max_messages)
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .field("guestbook_name", &self.guestbook_name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Only {
        #[command(flatten)]
        redis: RedisArgs,
    }

    fn parse(args: &[&str]) -> Result<RedisArgs, String> {
        let only = Only::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .map_err(|err| err.to_string())?;
        only.redis.validate()?;
        Ok(only.redis)
    }

    #[test]
    fn naive_is_refused_unless_unsafe_is_allowed() {
        assert!(parse(&["--append-strategy", "naive"]).is_err());
        assert!(parse(&["--append-strategy", "naive", "--allow-unsafe", "true"]).is_ok());
    }

    #[test]
    fn debug_output_hides_the_passwords() {
        let redis = parse(&[
            "--redis-url",
            "redis://app:hunter2-redis@127.0.0.1:6390",
            "--redis-replica-url",
            "redis://app:hunter2-replica@127.0.0.1:6391",
        ])
        .expect("valid settings");
        let shown = format!("{redis:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis://app:***@127.0.0.1:6390"), "{shown}");
    }

    #[test]
    fn a_bad_guestbook_name_is_refused() {
        assert!(parse(&["--guestbook-name", "a b"]).is_err());
        assert!(parse(&["--guestbook-name", "x}y"]).is_err());
    }

    #[test]
    fn sentinels_split_on_commas_and_must_be_host_port() {
        let redis = parse(&["--redis-sentinels", " a:1, b:2 ,"]).expect("valid");
        assert_eq!(redis.sentinel_addresses(), ["a:1", "b:2"]);
        assert!(parse(&["--redis-sentinels", "a"]).is_err());
    }

    #[test]
    fn cluster_nodes_exclude_sentinels_and_a_replica_url() {
        let redis =
            parse(&["--redis-cluster-nodes", "127.0.0.1:7000,127.0.0.1:7001"]).expect("valid");
        assert_eq!(
            redis.cluster_addresses(),
            ["127.0.0.1:7000", "127.0.0.1:7001"]
        );
        assert!(parse(&["--redis-cluster-nodes", "a"]).is_err());
        let both = ["--redis-cluster-nodes", "a:1", "--redis-sentinels", "b:2"];
        let refused = parse(&both).expect_err("refused");
        assert!(refused.contains("REDIS_CLUSTER_NODES") && refused.contains("REDIS_SENTINELS"));
        let both = [
            "--redis-cluster-nodes",
            "a:1",
            "--redis-replica-url",
            "redis://b:2",
        ];
        let refused = parse(&both).expect_err("refused");
        assert!(refused.contains("REDIS_REPLICA_URL"), "{refused}");
    }
}

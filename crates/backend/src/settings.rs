//! Every backend setting, parsed once at start (each an environment variable with an equal
//! `--kebab-case` flag). The application never reads the environment itself.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use guestbook_common::cli::{Validate, parse_bool};
use guestbook_common::redact;
use guestbook_common::service::{ServiceArgs, validate_rate_limit};

use crate::store::AppendStrategy;

/// The guestbook API over Redis.
///
/// `Debug` is written by hand so that logging the settings never shows `ADMIN_TOKEN` or the
/// password in `REDIS_URL`.
#[derive(Clone, Parser)]
#[command(name = "guestbook-backend", version, about)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,

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

    /// Enables the fault-injection endpoints under /config/*.
    #[arg(long, env = "FAULT_INJECTION", default_value = "false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub fault_injection: bool,

    /// Bearer token for /config/* and DELETE /api/messages; when unset, DELETE answers 404.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

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

    /// Live-update (Server-Sent Events) connections allowed at once, from every client together.
    #[arg(long, env = "MAX_STREAM_CLIENTS", default_value_t = 1_024)]
    pub max_stream_clients: usize,

    /// Live-update connections one client address (an IPv4 address or an IPv6 /64) may hold at once, at most MAX_STREAM_CLIENTS. Every browser behind a guestbook-client arrives from the client's address, so keep it at least the client's MAX_STREAM_CLIENTS (256 by default): 256 lets four client instances share the 1024 while no single address holds more than a quarter.
    #[arg(long, env = "MAX_STREAMS_PER_CLIENT", default_value_t = 256)]
    pub max_streams_per_client: usize,
    /// Seconds between keep-alive comments on a live-update stream: below common proxy idle
    /// timeouts (60 s), and below IDLE_TIMEOUT_SECS, which they keep the connection under.
    #[arg(long, env = "STREAM_KEEP_ALIVE_SECS", default_value_t = 15)]
    pub stream_keep_alive_secs: u64,

    /// Name of the guestbook; its keys share the hash tag `{guestbook:NAME}`.
    #[arg(long, env = "GUESTBOOK_NAME", default_value = "default")]
    pub guestbook_name: String,

    /// /slow holds one of SLOW_WORKERS permits for this long, in milliseconds.
    #[arg(long, env = "SLOW_MS", default_value_t = 200)]
    pub slow_ms: u64,

    /// Concurrent /slow calls: the capacity of the bounded resource it stands for.
    #[arg(long, env = "SLOW_WORKERS", default_value_t = 4)]
    pub slow_workers: usize,

    /// Longest predicted queueing for /slow before a call is refused at once (0: unbounded
    /// queue, only to measure what the bound buys; also unbounded when SHEDDING=false).
    #[arg(long, env = "SLOW_MAX_WAIT_MS", default_value_t = 400)]
    pub slow_max_wait_ms: u64,

    /// Writes (POST /api/messages) allowed per second per client (an IPv4 address or an IPv6
    /// /64); 0 turns the limit off. Off by default: the backend's callers are normally the
    /// client (every browser behind one address) and the load tools; the client limits per
    /// browser.
    #[arg(long, env = "RATE_LIMIT_WRITES_PER_SEC", default_value_t = 0.0)]
    pub rate_limit_writes_per_sec: f64,

    /// Writes a client may make at once before RATE_LIMIT_WRITES_PER_SEC applies.
    #[arg(long, env = "RATE_LIMIT_WRITES_BURST", default_value_t = 20)]
    pub rate_limit_writes_burst: u32,

    /// Logging, shutdown, connection limits and backpressure, as in the client.
    #[command(flatten)]
    pub service: ServiceArgs,
}

impl Settings {
    /// Settings with every default and the given Redis URL: the starting point of tests.
    pub fn for_tests(redis_url: &str) -> Self {
        let mut settings = Self::parse_from(["guestbook-backend"]);
        settings.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.redis_url = redis_url.to_owned();
        settings.service.shorten_shutdown_for_tests();
        settings
    }

    /// `REDIS_SENTINELS` split into addresses (empty: no Sentinel).
    pub fn sentinel_addresses(&self) -> Vec<String> {
        self.redis_sentinels
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|address| !address.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The per-call Redis time limit.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen_addr", &self.listen_addr)
            .field("redis_url", &redact::url(&self.redis_url))
            .field(
                "redis_replica_url",
                &self.redis_replica_url.as_deref().map(redact::url),
            )
            .field("redis_sentinels", &self.redis_sentinels)
            .field("redis_master_name", &self.redis_master_name)
            .field("redis_min_replicas_ack", &self.redis_min_replicas_ack)
            .field("redis_wait_timeout_ms", &self.redis_wait_timeout_ms)
            .field("append_strategy", &self.append_strategy)
            .field("fault_injection", &self.fault_injection)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| redact::REDACTED),
            )
            .field("max_messages", &self.max_messages)
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .field("guestbook_name", &self.guestbook_name)
            .field("rate_limit_writes_per_sec", &self.rate_limit_writes_per_sec)
            .field("rate_limit_writes_burst", &self.rate_limit_writes_burst)
            .field("max_stream_clients", &self.max_stream_clients)
            .field("max_streams_per_client", &self.max_streams_per_client)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), String> {
        self.service.validate()?;
        if self.stream_keep_alive_secs == 0
            || self.stream_keep_alive_secs >= self.service.connections.idle_timeout_secs
        {
            return Err(
                "STREAM_KEEP_ALIVE_SECS must be at least 1 and below IDLE_TIMEOUT_SECS, or idle \
                 live-update streams are cut"
                    .into(),
            );
        }
        validate_rate_limit(self.rate_limit_writes_per_sec, self.rate_limit_writes_burst)?;
        if self.max_stream_clients == 0
            || self.max_streams_per_client == 0
            || self.max_streams_per_client > self.max_stream_clients
        {
            return Err(
                "MAX_STREAM_CLIENTS must be at least 1, and MAX_STREAMS_PER_CLIENT between 1 and MAX_STREAM_CLIENTS"
                    .into(),
            );
        }
        if self.append_strategy == AppendStrategy::Naive && !self.allow_unsafe {
            return Err("APPEND_STRATEGY=naive loses messages under concurrency; \
                        set ALLOW_UNSAFE=true to run it anyway"
                .into());
        }
        redis::Client::open(self.redis_url.as_str())
            .map_err(|err| format!("REDIS_URL is not a Redis URL: {err}"))?;
        if self
            .admin_token
            .as_deref()
            .is_some_and(|token| token.len() < 16)
        {
            return Err("ADMIN_TOKEN must be at least 16 characters".into());
        }
        if let Some(url) = &self.redis_replica_url {
            redis::Client::open(url.as_str())
                .map_err(|err| format!("REDIS_REPLICA_URL is not a Redis URL: {err}"))?;
        }
        for address in self.sentinel_addresses() {
            let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid {
                return Err(format!("REDIS_SENTINELS: {address:?} is not host:port"));
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
        within("MAX_MESSAGES", self.max_messages, 1, MAX_RETENTION)?;
        within(
            "IDEMPOTENCY_TTL_SECS",
            self.idempotency_ttl_secs,
            1,
            MAX_IDEMPOTENCY_TTL_SECS,
        )?;
        within("LOCK_TTL_MS", self.lock_ttl_ms, 1, 60_000)?;
        within("LOCK_WAIT_MS", self.lock_wait_ms, 1, 60_000)?;
        within(
            "WATCH_MAX_ATTEMPTS",
            u64::from(self.watch_max_attempts),
            1,
            1_000,
        )?;
        within("REDIS_POOL_SIZE", self.redis_pool_size as u64, 1, 1_024)?;
        within("SLOW_MS", self.slow_ms, 1, 60_000)?;
        within("SLOW_WORKERS", self.slow_workers as u64, 1, 10_000)?;
        within("SLOW_MAX_WAIT_MS", self.slow_max_wait_ms, 0, 600_000)?;
        within(
            "RATE_LIMIT_WRITES_BURST",
            u64::from(self.rate_limit_writes_burst),
            1,
            1_000_000,
        )?;
        if self.rate_limit_writes_per_sec > 1_000_000.0 {
            return Err("RATE_LIMIT_WRITES_PER_SEC must be at most 1000000".into());
        }
        if !(1..=600_000).contains(&self.redis_timeout_ms) {
            return Err("REDIS_TIMEOUT_MS must be between 1 and 600000".into());
        }
        let name_ok = !self.guestbook_name.is_empty()
            && self.guestbook_name.len() <= 64
            && self
                .guestbook_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err("GUESTBOOK_NAME must be 1-64 characters of [A-Za-z0-9_-]".into());
        }
        Ok(())
    }
}

/// Largest `MAX_MESSAGES`: a hundred million messages is tens of GB of Redis.
pub const MAX_RETENTION: u64 = 100_000_000;
/// Longest `IDEMPOTENCY_TTL_SECS`: 30 days. Each keyed post keeps a small record that long.
pub const MAX_IDEMPOTENCY_TTL_SECS: u64 = 30 * 24 * 3_600;

/// `Ok` when `value` is within `low..=high`, else the one-line complaint.
fn within(name: &str, value: u64, low: u64, high: u64) -> Result<(), String> {
    if (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{name} must be between {low} and {high}, got {value}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let settings = Settings::try_parse_from(
            std::iter::once("guestbook-backend").chain(args.iter().copied()),
        )
        .map_err(|err| err.to_string())?;
        settings.validate()?;
        Ok(settings)
    }

    #[test]
    fn defaults_are_valid() {
        assert!(parse(&[]).is_ok());
    }

    #[test]
    fn naive_is_refused_unless_unsafe_is_allowed() {
        assert!(parse(&["--append-strategy", "naive"]).is_err());
        assert!(parse(&["--append-strategy", "naive", "--allow-unsafe", "true"]).is_ok());
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let settings = parse(&[
            "--redis-url",
            "redis://app:hunter2-redis@127.0.0.1:6390",
            "--admin-token",
            "hunter2-admin-token-0123",
        ])
        .unwrap();
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis://app:***@127.0.0.1:6390"), "{shown}");
    }

    #[test]
    fn the_per_client_stream_cap_is_between_1_and_the_global_cap() {
        assert!(parse(&["--max-streams-per-client", "0"]).is_err());
        assert!(parse(&["--max-stream-clients", "0"]).is_err());
        assert!(
            parse(&[
                "--max-stream-clients",
                "10",
                "--max-streams-per-client",
                "11"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "--max-stream-clients",
                "10",
                "--max-streams-per-client",
                "10"
            ])
            .is_ok()
        );
    }

    #[test]
    fn by_default_one_address_holds_less_than_every_stream() {
        let defaults = parse(&[]).unwrap();
        assert!(defaults.max_streams_per_client < defaults.max_stream_clients);
    }

    #[test]
    fn a_short_admin_token_is_refused() {
        assert!(parse(&["--admin-token", "short"]).is_err());
    }

    #[test]
    fn a_bad_guestbook_name_is_refused() {
        assert!(parse(&["--guestbook-name", "a b"]).is_err());
        assert!(parse(&["--guestbook-name", "x}y"]).is_err());
    }
}

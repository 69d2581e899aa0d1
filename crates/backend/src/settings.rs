//! Every backend setting, parsed once at start (each an environment variable with an equal
//! `--kebab-case` flag). The application never reads the environment itself.

use std::net::SocketAddr;

use clap::Parser;
use guestbook_common::cli::{Validate, parse_bool, within};
use guestbook_common::service::{ServiceArgs, validate_rate_limit};
use guestbook_common::{redact, stream_limit};

use crate::store::RedisArgs;

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

    /// Enables the fault-injection endpoints under /config/*.
    #[arg(long, env = "FAULT_INJECTION", default_value = "false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub fault_injection: bool,

    /// Bearer token for /config/* and DELETE /api/messages; when unset, DELETE answers 404.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Live-update (Server-Sent Events) connections allowed at once, from every client together. Each costs about 16 KiB; under a cgroup memory limit, a cap whose streams do not fit beside 32 MiB for the rest of the process is lowered to one that does, with a warning at start.
    #[arg(long, env = "MAX_STREAM_CLIENTS", default_value_t = 10_000)]
    pub max_stream_clients: usize,

    /// Live-update connections one client address (an IPv4 address or an IPv6 /64) may hold at once, at most MAX_STREAM_CLIENTS. Every browser behind a guestbook-client arrives from the client's address, so keep it at least the client's MAX_STREAM_CLIENTS (256 by default): 256 lets client instances share the 10000 while no single address holds more than one fortieth.
    #[arg(long, env = "MAX_STREAMS_PER_CLIENT", default_value_t = 256)]
    pub max_streams_per_client: usize,
    /// Seconds between keep-alive comments on a live-update stream: below common proxy idle
    /// timeouts (60 s), and below IDLE_TIMEOUT_SECS, which they keep the connection under.
    #[arg(long, env = "STREAM_KEEP_ALIVE_SECS", default_value_t = 15)]
    pub stream_keep_alive_secs: u64,

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

    #[command(flatten)]
    pub redis: RedisArgs,

    /// Logging, shutdown, connection limits and backpressure, as in the client.
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// Resident bytes one live-update stream costs the backend, rounded up from what
/// `scripts/bench_stream.py` measures at 10,000 streams: what bounds MAX_STREAM_CLIENTS under a
/// memory limit.
pub const STREAM_BYTES: u64 = 16 * 1024;

/// Memory kept for everything but the streams under a memory limit: a busy backend's goal is
/// under 30 MiB resident (see `scripts/bench_memory.py`).
pub const RESERVED_BYTES: u64 = 32 * 1024 * 1024;

impl Settings {
    /// MAX_STREAM_CLIENTS bounded by this process's cgroup memory limit, if it has one.
    pub fn stream_cap(&self) -> usize {
        self.stream_cap_within(stream_limit::memory_limit())
    }

    /// MAX_STREAM_CLIENTS bounded by a memory limit of `limit` bytes; logs why when lowered.
    pub fn stream_cap_within(&self, limit: Option<u64>) -> usize {
        let fitted = stream_limit::fit_to_memory(
            "MAX_STREAM_CLIENTS",
            self.max_stream_clients,
            STREAM_BYTES,
            RESERVED_BYTES,
            limit,
        );
        if let Some(why) = &fitted.lowered {
            tracing::warn!("{why}");
        }
        fitted.cap
    }

    /// Settings with every default and the given Redis URL: the starting point of tests.
    pub fn for_tests(redis_url: &str) -> Self {
        let mut settings = Self::parse_from(["guestbook-backend"]);
        settings.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.redis.redis_url = redis_url.to_owned();
        settings.service.shorten_shutdown_for_tests();
        settings
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen_addr", &self.listen_addr)
            .field("fault_injection", &self.fault_injection)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| redact::REDACTED),
            )
            .field("rate_limit_writes_per_sec", &self.rate_limit_writes_per_sec)
            .field("rate_limit_writes_burst", &self.rate_limit_writes_burst)
            .field("max_stream_clients", &self.max_stream_clients)
            .field("max_streams_per_client", &self.max_streams_per_client)
            .field("redis", &self.redis)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), String> {
        self.redis.validate()?;
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
        if self
            .admin_token
            .as_deref()
            .is_some_and(|token| token.len() < 16)
        {
            return Err("ADMIN_TOKEN must be at least 16 characters".into());
        }
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
        Ok(())
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
    fn the_default_stream_cap_is_ten_thousand_and_fits_a_256_mib_pod() {
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.max_stream_clients, 10_000);
        assert_eq!(defaults.stream_cap_within(Some(256 << 20)), 10_000);
        assert_eq!(defaults.stream_cap_within(None), 10_000);
    }

    #[test]
    fn a_stream_cap_that_cannot_fit_the_memory_limit_is_lowered_with_the_reason() {
        let settings = parse(&["--max-stream-clients", "50000"]).unwrap();
        // 128 MiB less 32 MiB reserved, in 16 KiB streams.
        assert_eq!(settings.stream_cap_within(Some(128 << 20)), 6_144);
        let fitted = stream_limit::fit_to_memory(
            "MAX_STREAM_CLIENTS",
            settings.max_stream_clients,
            STREAM_BYTES,
            RESERVED_BYTES,
            Some(128 << 20),
        );
        assert_eq!(
            fitted.lowered.as_deref(),
            Some(
                "MAX_STREAM_CLIENTS=50000 lowered to 6144: 50000 streams of 16384 bytes each do \
                 not fit in the memory limit of 128 MiB beside 32 MiB for the rest of the process"
            )
        );
    }

    #[test]
    fn a_short_admin_token_is_refused() {
        assert!(parse(&["--admin-token", "short"]).is_err());
    }
}

//! Every client setting, parsed once at start (each an environment variable with an equal
//! `--kebab-case` flag).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use guestbook_common::cli::Validate;
use guestbook_common::redact;
use guestbook_common::service::{ServiceArgs, validate_rate_limit};

use crate::middleware::circuit_breaker::BreakerConfig;

/// The guestbook client: UI, /fetch and the /api proxy.
///
/// `Debug` is written by hand so that logging the settings never shows a password in
/// `BACKEND_URL`.
#[derive(Clone, Parser)]
#[command(name = "guestbook-client", version, about)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8081")]
    pub listen_addr: SocketAddr,
    /// The backend's base URL: http:// or https:// (the certificate checked against the
    /// system's roots, or the PEM file named by SSL_CERT_FILE).
    // Its value is hidden from --help: it may carry a password.
    #[arg(
        long,
        env = "BACKEND_URL",
        default_value = "http://127.0.0.1:8080",
        hide_env_values = true
    )]
    pub backend_url: String,
    /// Attempts per backend call, the first included (1 = no retry).
    #[arg(long, env = "RETRY_MAX_ATTEMPTS", default_value_t = 7)]
    pub retry_max_attempts: u32,
    /// Backoff base, in milliseconds (waits are at most base, 2×base, 4×base...: with 7 attempts and 5 ms, 315 ms in all).
    #[arg(long, env = "RETRY_BASE_MS", default_value_t = 5)]
    pub retry_base_ms: u64,
    /// Longest backoff wait and cap on Retry-After, in milliseconds.
    #[arg(long, env = "RETRY_MAX_MS", default_value_t = 1_000)]
    pub retry_max_ms: u64,
    /// Retries may add this percentage of the requests of the last 2 s, plus three per retry that succeeded in them.
    #[arg(long, env = "RETRY_BUDGET_PERCENT", default_value_t = 20.0)]
    pub retry_budget_percent: f32,
    /// ... plus this many retries per second.
    #[arg(long, env = "RETRY_BUDGET_MIN_PER_SEC", default_value_t = 10)]
    pub retry_budget_min_per_sec: u32,
    /// Consecutive failed calls that open the circuit (seed 002: 3; 0 turns the rule off).
    #[arg(long, env = "BREAKER_FAILURE_THRESHOLD", default_value_t = 3)]
    pub breaker_failure_threshold: u32,
    /// Seconds the circuit stays open before trial calls (seed 002: 15).
    #[arg(long, env = "BREAKER_RESET_SECS", default_value_t = 15)]
    pub breaker_reset_secs: u64,
    /// Failure share of the last BREAKER_WINDOW calls that opens the circuit (above 0; 1 turns the rule off).
    #[arg(long, env = "BREAKER_FAILURE_RATE", default_value_t = 0.5)]
    pub breaker_failure_rate: f64,
    /// Calls in the breaker's count-based window.
    #[arg(long, env = "BREAKER_WINDOW", default_value_t = 20)]
    pub breaker_window: usize,
    /// Calls the window needs before its rates count.
    #[arg(long, env = "BREAKER_MIN_CALLS", default_value_t = 10)]
    pub breaker_min_calls: usize,
    /// Trial calls admitted while half-open.
    #[arg(long, env = "BREAKER_HALF_OPEN_CALLS", default_value_t = 1)]
    pub breaker_half_open_calls: u32,
    /// Time limit of one backend attempt, in milliseconds.
    #[arg(long, env = "BACKEND_TIMEOUT_MS", default_value_t = 3_000)]
    pub backend_timeout_ms: u64,
    /// Time limit of a whole backend call, retries included, in milliseconds.
    #[arg(long, env = "REQUEST_DEADLINE_MS", default_value_t = 5_000)]
    pub request_deadline_ms: u64,
    /// Backend calls and live-update streams in flight at once; above MAX_STREAM_CLIENTS, so that streams cannot take every slot.
    #[arg(long, env = "BACKEND_CONCURRENCY", default_value_t = 512)]
    pub backend_concurrency: usize,
    /// Milliseconds after which a pooled backend connection takes no new call, so that backend replicas added behind a Service get their share (0: kept for ever; else 100 to 86400000).
    #[arg(long, env = "BACKEND_CONNECTION_MAX_AGE_MS", default_value_t = 2_000)]
    pub backend_connection_max_age_ms: u64,
    /// Above 0: /fetch may answer from the last good response this many seconds old.
    #[arg(long, env = "FALLBACK_CACHE_SECS", default_value_t = 0)]
    pub fallback_cache_secs: u64,
    /// Longest run of the /start-load generator, in seconds.
    #[arg(long, env = "LOAD_MAX_SECS", default_value_t = 600)]
    pub load_max_secs: u64,
    /// Directory of the browser UI, read at request time (for editing it); unset: the copy
    /// built into the binary.
    #[arg(long, env = "FRONTEND_DIR")]
    pub frontend_dir: Option<PathBuf>,
    /// Writes (POST /api/*) allowed per second per client (an IPv4 address or an IPv6 /64); 0
    /// turns the limit off.
    #[arg(long, env = "RATE_LIMIT_WRITES_PER_SEC", default_value_t = 20.0)]
    pub rate_limit_writes_per_sec: f64,
    /// Writes a client may make at once before RATE_LIMIT_WRITES_PER_SEC applies.
    #[arg(long, env = "RATE_LIMIT_WRITES_BURST", default_value_t = 40)]
    pub rate_limit_writes_burst: u32,
    /// Live-update streams passed through at once, from every browser together. Each is one backend stream from this client's address, so keep it at most the backend's MAX_STREAMS_PER_CLIENT (256 by default).
    #[arg(long, env = "MAX_STREAM_CLIENTS", default_value_t = 256)]
    pub max_stream_clients: usize,
    /// Live-update streams one browser address (an IPv4 address or an IPv6 /64) may hold at once, at most MAX_STREAM_CLIENTS: a person keeps a few tabs open, and 8 leaves room for a small office behind one address while 32 addresses are needed to fill the client.
    #[arg(long, env = "MAX_STREAMS_PER_CLIENT", default_value_t = 8)]
    pub max_streams_per_client: usize,
    /// Logging, shutdown, connection limits and backpressure, as in the backend.
    #[command(flatten)]
    pub service: ServiceArgs,
}

impl Settings {
    /// Every default, on port 0, against `backend_url`: the starting point of tests.
    pub fn for_tests(backend_url: &str) -> Self {
        let mut settings = Self::parse_from(["guestbook-client"]);
        settings.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.backend_url = backend_url.to_owned();
        settings.service.shorten_shutdown_for_tests();
        settings
    }

    /// The circuit breaker's configuration.
    pub fn breaker_config(&self) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: self.breaker_failure_threshold,
            failure_rate: self.breaker_failure_rate,
            window: self.breaker_window,
            min_calls: self.breaker_min_calls,
            open_for: Duration::from_secs(self.breaker_reset_secs),
            half_open_calls: self.breaker_half_open_calls,
            ..BreakerConfig::default()
        }
    }

    /// Per-attempt time limit.
    pub fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.backend_timeout_ms)
    }

    /// Lifetime of a pooled backend connection; `None` for ever.
    pub fn connection_max_age(&self) -> Option<Duration> {
        (self.backend_connection_max_age_ms > 0)
            .then(|| Duration::from_millis(self.backend_connection_max_age_ms))
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen_addr", &self.listen_addr)
            .field("backend_url", &redact::url(&self.backend_url))
            .field("retry_max_attempts", &self.retry_max_attempts)
            .field("backend_timeout_ms", &self.backend_timeout_ms)
            .field("request_deadline_ms", &self.request_deadline_ms)
            .field("backend_concurrency", &self.backend_concurrency)
            .field(
                "backend_connection_max_age_ms",
                &self.backend_connection_max_age_ms,
            )
            .field("rate_limit_writes_per_sec", &self.rate_limit_writes_per_sec)
            .field("rate_limit_writes_burst", &self.rate_limit_writes_burst)
            .field("max_stream_clients", &self.max_stream_clients)
            .field("max_streams_per_client", &self.max_streams_per_client)
            .field("frontend_dir", &self.frontend_dir)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), String> {
        self.service.validate()?;
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
        let backend = reqwest::Url::parse(&self.backend_url).ok();
        let usable = backend.as_ref().is_some_and(|url| {
            matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some_and(|h| !h.is_empty())
        });
        if !usable {
            return Err(format!(
                "BACKEND_URL must be an http:// or https:// URL with a host, got {:?}",
                redact::url(&self.backend_url)
            ));
        }
        // Loads the trusted roots for an https:// backend now, so a missing CA file is one
        // line at start rather than every call failing.
        crate::backend::Transport::for_url(&self.backend_url)?;
        if self.retry_max_attempts == 0 {
            return Err("RETRY_MAX_ATTEMPTS must be at least 1".into());
        }
        if self.retry_base_ms > self.retry_max_ms {
            return Err("RETRY_BASE_MS must not exceed RETRY_MAX_MS".into());
        }
        if !(self.breaker_failure_rate > 0.0 && self.breaker_failure_rate <= 1.0) {
            return Err("BREAKER_FAILURE_RATE must be above 0 and at most 1".into());
        }
        self.breaker_config()
            .validate()
            .map_err(|problem| format!("breaker settings: {problem}"))?;
        if self.breaker_window == 0
            || self.breaker_half_open_calls == 0
            || self.backend_concurrency == 0
        {
            return Err("BREAKER_WINDOW, BREAKER_HALF_OPEN_CALLS and BACKEND_CONCURRENCY must be at least 1".into());
        }
        if self.max_stream_clients >= self.backend_concurrency {
            // Each open stream holds a BACKEND_CONCURRENCY slot for as long as it lasts.
            return Err(
                "MAX_STREAM_CLIENTS must be below BACKEND_CONCURRENCY: open streams hold their slots, and calls need some left"
                    .into(),
            );
        }
        if self.backend_connection_max_age_ms != 0
            && !CONNECTION_MAX_AGE_MS.contains(&self.backend_connection_max_age_ms)
        {
            // Under 100 ms nearly every call would build a client and open a connection (a
            // TCP, and for https:// a TLS, handshake per call); a day is "for ever" anyway.
            return Err(format!(
                "BACKEND_CONNECTION_MAX_AGE_MS must be 0 (for ever) or between {} and {}",
                CONNECTION_MAX_AGE_MS.start(),
                CONNECTION_MAX_AGE_MS.end()
            ));
        }
        if self.backend_timeout_ms == 0 || self.request_deadline_ms < self.backend_timeout_ms {
            return Err(
                "BACKEND_TIMEOUT_MS must be at least 1 and not above REQUEST_DEADLINE_MS".into(),
            );
        }
        Ok(())
    }
}

/// The connection ages accepted besides 0 (for ever), in milliseconds: 100 ms to a day.
const CONNECTION_MAX_AGE_MS: std::ops::RangeInclusive<u64> = 100..=86_400_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_leave_calls_slots_beside_every_stream() {
        let settings = Settings::for_tests("http://127.0.0.1:8080");
        assert_eq!(settings.validate(), Ok(()));
        assert!(settings.max_stream_clients < settings.backend_concurrency);
    }

    #[test]
    fn streams_that_could_take_every_backend_slot_are_refused() {
        let mut settings = Settings::for_tests("http://127.0.0.1:8080");
        settings.backend_concurrency = settings.max_stream_clients;
        assert!(
            settings
                .validate()
                .is_err_and(|problem| problem.contains("MAX_STREAM_CLIENTS"))
        );
    }

    #[test]
    fn a_max_age_of_zero_keeps_connections_for_ever() {
        let mut settings = Settings::for_tests("http://127.0.0.1:8080");
        assert_eq!(settings.connection_max_age(), Some(Duration::from_secs(2)));
        settings.backend_connection_max_age_ms = 0;
        assert_eq!(settings.connection_max_age(), None);
    }

    #[test]
    fn a_max_age_is_0_or_between_100_ms_and_a_day() {
        let mut settings = Settings::for_tests("http://127.0.0.1:8080");
        for (age, accepted) in [
            (0, true),
            (1, false),
            (99, false),
            (100, true),
            (86_400_000, true),
            (86_400_001, false),
            (u64::MAX, false),
        ] {
            settings.backend_connection_max_age_ms = age;
            assert_eq!(settings.validate().is_ok(), accepted, "{age}");
        }
    }
}

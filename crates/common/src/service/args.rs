//! The settings every service repeats, flattened into each one's `Settings` as `service`.
//!
//! `LISTEN_ADDR` and the write rate limit stay in each service's own settings: their defaults
//! differ (8080 and 8081; the backend's limit is off by default, the client's is on), and a
//! flattened clap struct has one default per field.

use crate::cli::Validate;
use crate::lifecycle::ShutdownArgs;
use crate::pressure::PressureArgs;
use crate::server::ConnectionArgs;
use crate::telemetry::LogFormat;

/// Logging, shutdown timing, connection limits and backpressure: the same settings, names,
/// defaults and bounds in both services.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Log format: auto (JSON unless a terminal), json or pretty.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub shutdown: ShutdownArgs,

    #[command(flatten)]
    pub connections: ConnectionArgs,

    #[command(flatten)]
    pub pressure: PressureArgs,
}

impl ServiceArgs {
    /// Settings for tests: every default, no shutdown delay and a short drain, so a test's
    /// server stops at once.
    pub fn shorten_shutdown_for_tests(&mut self) {
        self.shutdown.shutdown_delay_secs = 0;
        self.shutdown.drain_timeout_secs = 5;
    }
}

impl Validate for ServiceArgs {
    fn validate(&self) -> Result<(), String> {
        self.pressure.validate()?;
        self.connections.validate()
    }
}

/// Checks a per-client write limit (`RATE_LIMIT_WRITES_PER_SEC`, `RATE_LIMIT_WRITES_BURST`):
/// both services take the same ranges, only their defaults differ.
pub fn validate_rate_limit(per_sec: f64, burst: u32) -> Result<(), String> {
    if !(per_sec.is_finite() && per_sec >= 0.0) || burst == 0 {
        return Err(
            "RATE_LIMIT_WRITES_PER_SEC must be 0 (off) or above, RATE_LIMIT_WRITES_BURST at least 1"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        use clap::Parser;
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            service: ServiceArgs,
        }
        assert_eq!(Only::parse_from(["t"]).service.validate(), Ok(()));
    }

    #[test]
    fn a_write_limit_is_off_or_positive_with_a_burst() {
        assert_eq!(validate_rate_limit(0.0, 1), Ok(()));
        assert!(validate_rate_limit(-1.0, 1).is_err());
        assert!(validate_rate_limit(f64::NAN, 1).is_err());
        assert!(validate_rate_limit(5.0, 0).is_err());
    }
}

//! The backpressure settings both services share (`READINESS_*`, `SHED_P999_MS`, the latency
//! window, the runtime and memory limits) and their cross-field checks.

/// Backpressure settings, shared by both services.
#[derive(Debug, Clone, clap::Args)]
pub struct PressureArgs {
    /// /readiness fails while the windowed p99.9 of the time requests spend in this process (waits on dependencies excluded) is above this, in milliseconds.
    #[arg(long, env = "READINESS_P999_MS", default_value_t = 400)]
    pub readiness_p999_ms: u64,
    /// Shedding starts while that windowed p99.9 is above this, in milliseconds.
    #[arg(long, env = "SHED_P999_MS", default_value_t = 800)]
    pub shed_p999_ms: u64,
    /// Length of the latency window, in seconds.
    #[arg(long, env = "LATENCY_WINDOW_SECS", default_value_t = 60)]
    pub latency_window_secs: u64,
    /// Age buckets the window rotates through.
    #[arg(long, env = "LATENCY_AGE_BUCKETS", default_value_t = 5)]
    pub latency_age_buckets: u32,
    /// Samples the window needs before latency may fail readiness or start shedding; requests the recent seconds need before their refused share may fail readiness.
    #[arg(long, env = "READINESS_MIN_SAMPLES", default_value_t = 100)]
    pub readiness_min_samples: u64,
    /// /readiness fails while the share of requests refused for this process's own capacity (shedding, the /slow bulkhead, the stream cap; not a dependency's 503) over the last READINESS_RECENT_SECS is above this, 0-1; it recovers at half of it.
    #[arg(long, env = "READINESS_SHED_RATIO", default_value_t = 0.1)]
    pub readiness_shed_ratio: f64,
    /// Seconds of recent traffic that tell whether the pressure is still there: the refused share is measured over them, and latency fails readiness only while they too hold requests slower than 90 % of READINESS_P999_MS.
    #[arg(long, env = "READINESS_RECENT_SECS", default_value_t = 5)]
    pub readiness_recent_secs: u64,
    /// Load shedding on or off (off only to measure what it buys).
    #[arg(long, env = "SHEDDING", default_value = "true", value_parser = crate::cli::parse_bool, action = clap::ArgAction::Set)]
    pub shedding: bool,
    /// Shed while the worst tokio scheduling delay of the last second is above this, ms.
    #[arg(long, env = "RUNTIME_DELAY_SHED_MS", default_value_t = 250)]
    pub runtime_delay_shed_ms: u64,
    /// Shed while resident memory is above this many MiB (0: no limit).
    #[arg(long, env = "MAX_RSS_MB", default_value_t = 0)]
    pub max_rss_mb: u64,
}

impl PressureArgs {
    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), String> {
        if self.latency_window_secs == 0 || self.latency_age_buckets == 0 {
            return Err("LATENCY_WINDOW_SECS and LATENCY_AGE_BUCKETS must be at least 1".into());
        }
        if self.latency_age_buckets > 60 {
            return Err("LATENCY_AGE_BUCKETS must be at most 60".into());
        }
        if self.readiness_p999_ms == 0 || self.shed_p999_ms == 0 {
            return Err("READINESS_P999_MS and SHED_P999_MS must be at least 1".into());
        }
        if self.shed_p999_ms < self.readiness_p999_ms {
            return Err(
                "SHED_P999_MS must not be below READINESS_P999_MS: readiness should fail first"
                    .into(),
            );
        }
        // Written so that NaN fails too.
        if !(self.readiness_shed_ratio > 0.0 && self.readiness_shed_ratio <= 1.0) {
            return Err("READINESS_SHED_RATIO must be above 0 and at most 1".into());
        }
        if !(1..=60).contains(&self.readiness_recent_secs) {
            return Err("READINESS_RECENT_SECS must be 1-60".into());
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The settings the pressure unit tests start from.
    pub(crate) fn args() -> PressureArgs {
        PressureArgs {
            readiness_p999_ms: 400,
            shed_p999_ms: 800,
            latency_window_secs: 10,
            latency_age_buckets: 2,
            readiness_min_samples: 10,
            readiness_shed_ratio: 0.1,
            readiness_recent_secs: 5,
            shedding: true,
            runtime_delay_shed_ms: 60_000,
            max_rss_mb: 0,
        }
    }

    #[test]
    fn settings_keep_the_thresholds_in_order() {
        let mut bad = args();
        bad.shed_p999_ms = 300;
        assert!(bad.validate().is_err());
        for ratio in [0.0, -0.1, 1.5, f64::NAN] {
            let mut bad = args();
            bad.readiness_shed_ratio = ratio;
            assert!(bad.validate().is_err(), "{ratio}");
        }
        for secs in [0, 61] {
            let mut bad = args();
            bad.readiness_recent_secs = secs;
            assert!(bad.validate().is_err(), "{secs}");
        }
        assert!(args().validate().is_ok());
    }
}

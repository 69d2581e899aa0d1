//! The breaker's settings: when it trips, how long it stays open, how it probes recovery.
//!
//! The defaults are seed 002's breaker (pybreaker with `fail_max=3`, `reset_timeout=15`)
//! plus resilience4j's rate rules, with a window sized for this client's traffic.

use std::time::Duration;

/// Consecutive failures that open the circuit: seed 002's `fail_max`.
const SEED_FAILURE_THRESHOLD: u32 = 3;
/// How long the circuit stays open: seed 002's `reset_timeout` of 15 s.
const SEED_OPEN_FOR: Duration = Duration::from_secs(15);
/// resilience4j's default `failureRateThreshold` (50 %).
const DEFAULT_FAILURE_RATE: f64 = 0.5;
/// A call slower than this counts as slow. resilience4j's default is 60 s, far beyond any
/// per-attempt timeout here; 2 s is four times the backend's readiness p99.9 (400 ms).
const DEFAULT_SLOW_CALL_DURATION: Duration = Duration::from_secs(2);
/// 1.0 turns the slow-call rule off: latency alone does not trip unless asked to.
const DEFAULT_SLOW_CALL_RATE: f64 = 1.0;
/// resilience4j's default window is 100 calls with a minimum of 100; at the seed's load of
/// one call per second that is close to two minutes of history. 20 calls with a minimum of
/// 10 reacts within seconds and still needs more than a handful of calls to judge a rate.
const DEFAULT_WINDOW: usize = 20;
/// See [`DEFAULT_WINDOW`].
const DEFAULT_MIN_CALLS: usize = 10;
/// One trial call, as pybreaker: its success closes the circuit, its failure reopens it.
const DEFAULT_HALF_OPEN_CALLS: u32 = 1;

/// When the breaker trips and how it recovers. See the module docs for the semantics.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit; 0 turns this rule off.
    pub failure_threshold: u32,
    /// The circuit opens when the window's share of failures reaches this (0 < rate < 1);
    /// 1.0 or more turns this rule off.
    pub failure_rate: f64,
    /// A call that takes longer than this is slow (whether it succeeded or failed).
    pub slow_call_duration: Duration,
    /// The circuit opens when the window's share of slow calls reaches this (0 < rate < 1);
    /// 1.0 or more turns this rule off.
    pub slow_call_rate: f64,
    /// How many of the most recent calls the rates are computed over.
    pub window: usize,
    /// Rates are not evaluated until the window holds at least this many calls.
    pub min_calls: usize,
    /// How long the circuit stays open before trial calls are admitted.
    pub open_for: Duration,
    /// Trial calls admitted while half-open; all must succeed to close the circuit.
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: SEED_FAILURE_THRESHOLD,
            failure_rate: DEFAULT_FAILURE_RATE,
            slow_call_duration: DEFAULT_SLOW_CALL_DURATION,
            slow_call_rate: DEFAULT_SLOW_CALL_RATE,
            window: DEFAULT_WINDOW,
            min_calls: DEFAULT_MIN_CALLS,
            open_for: SEED_OPEN_FOR,
            half_open_calls: DEFAULT_HALF_OPEN_CALLS,
        }
    }
}

impl BreakerConfig {
    /// Cross-field checks; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if !positive(self.failure_rate) {
            return Err("failure_rate must be above 0 (1.0 or more turns it off)".into());
        }
        if !positive(self.slow_call_rate) {
            return Err("slow_call_rate must be above 0 (1.0 or more turns it off)".into());
        }
        if self.slow_call_duration.is_zero() {
            return Err("slow_call_duration must be above 0".into());
        }
        if self.window == 0 {
            return Err("window must hold at least 1 call".into());
        }
        if self.min_calls == 0 || self.min_calls > self.window {
            return Err(format!(
                "min_calls must be between 1 and window ({}), got {}",
                self.window, self.min_calls
            ));
        }
        if self.open_for.is_zero() {
            return Err("open_for must be above 0".into());
        }
        if self.half_open_calls == 0 {
            return Err("half_open_calls must be at least 1, or the circuit never closes".into());
        }
        Ok(())
    }

    /// Whether the failure-rate rule can trip the circuit.
    pub fn failure_rate_enabled(&self) -> bool {
        self.failure_rate < 1.0
    }

    /// Whether the slow-call rule can trip the circuit (and a slow trial reopen it).
    pub fn slow_call_rate_enabled(&self) -> bool {
        self.slow_call_rate < 1.0
    }
}

/// Above zero, and not NaN (which compares false with everything).
fn positive(rate: f64) -> bool {
    !rate.is_nan() && rate > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_seed_breaker_with_rate_rules_and_is_valid() {
        let config = BreakerConfig::default();
        assert_eq!(config.failure_threshold, 3);
        assert_eq!(config.open_for, Duration::from_secs(15));
        assert!(config.failure_rate_enabled());
        assert!(
            !config.slow_call_rate_enabled(),
            "slow calls alone do not trip"
        );
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn rates_that_are_not_above_zero_are_refused() {
        for rate in [0.0, -0.5, f64::NAN] {
            let config = BreakerConfig {
                failure_rate: rate,
                ..BreakerConfig::default()
            };
            assert!(config.validate().is_err(), "failure_rate {rate}");
            let config = BreakerConfig {
                slow_call_rate: rate,
                ..BreakerConfig::default()
            };
            assert!(config.validate().is_err(), "slow_call_rate {rate}");
        }
    }

    #[test]
    fn a_minimum_larger_than_the_window_is_refused() {
        let config = BreakerConfig {
            window: 5,
            min_calls: 6,
            ..BreakerConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn zero_trials_or_a_zero_open_time_are_refused() {
        let no_trials = BreakerConfig {
            half_open_calls: 0,
            ..BreakerConfig::default()
        };
        assert!(no_trials.validate().is_err());
        let no_wait = BreakerConfig {
            open_for: Duration::ZERO,
            ..BreakerConfig::default()
        };
        assert!(no_wait.validate().is_err());
    }
}

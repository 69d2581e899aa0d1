//! Fault injection: seed 002's failure and latency knobs for `/data`, and faults on the Redis
//! hop that none of the reference systems has.
//!
//! Both are inert (all zero) unless an operator turns them on through `/config/*`, which only
//! exists with `FAULT_INJECTION=true`. The Redis knobs are read on every Redis call, so they
//! are atomics rather than a lock.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Faults on `GET /data`, as in seed 002.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HttpFaults {
    /// Probability in [0, 1] that `/data` fails.
    pub failure_rate: f64,
    /// Status code of an injected failure (400–599).
    pub status_code: u16,
    /// Added delay in milliseconds.
    pub delay_ms: u64,
    /// Probability in [0, 1] that the delay is added.
    pub delay_rate: f64,
}

impl Default for HttpFaults {
    fn default() -> Self {
        Self {
            failure_rate: 0.0,
            status_code: 500,
            delay_ms: 0,
            delay_rate: 0.0,
        }
    }
}

/// Faults on every Redis call the backend makes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RedisFaults {
    /// Delay added before every Redis call, in milliseconds (counts against the call's timeout).
    pub delay_ms: u64,
    /// Probability in [0, 1] that a Redis call fails without being sent.
    pub failure_rate: f64,
}

/// The live fault configuration.
#[derive(Debug, Default)]
pub struct Faults {
    http: RwLock<HttpFaults>,
    redis_delay_ms: AtomicU64,
    redis_failure_rate_bits: AtomicU64,
}

/// A Redis call that failed on purpose.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("injected Redis failure")]
pub struct InjectedFailure;

impl Faults {
    /// The current `/data` faults.
    pub fn http(&self) -> HttpFaults {
        *self
            .http
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `change` to the `/data` faults and returns the result.
    pub fn update_http(&self, change: impl FnOnce(&mut HttpFaults)) -> HttpFaults {
        let mut guard = self
            .http
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut guard);
        *guard
    }

    /// The current Redis faults.
    pub fn redis(&self) -> RedisFaults {
        RedisFaults {
            delay_ms: self.redis_delay_ms.load(Ordering::Relaxed),
            failure_rate: f64::from_bits(self.redis_failure_rate_bits.load(Ordering::Relaxed)),
        }
    }

    /// Replaces the Redis faults.
    pub fn set_redis(&self, faults: RedisFaults) {
        self.redis_delay_ms
            .store(faults.delay_ms, Ordering::Relaxed);
        self.redis_failure_rate_bits
            .store(faults.failure_rate.to_bits(), Ordering::Relaxed);
    }

    /// Run before each Redis call: sleeps for the configured delay, then maybe fails.
    pub async fn before_redis_call(&self) -> Result<(), InjectedFailure> {
        let faults = self.redis();
        if faults.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.delay_ms)).await;
        }
        if faults.failure_rate > 0.0 && fastrand::f64() < faults.failure_rate {
            return Err(InjectedFailure);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_certain_redis_failure_always_fails() {
        let faults = Faults::default();
        assert!(faults.before_redis_call().await.is_ok());
        faults.set_redis(RedisFaults {
            delay_ms: 0,
            failure_rate: 1.0,
        });
        assert!(faults.before_redis_call().await.is_err());
        assert_eq!(faults.redis().failure_rate, 1.0);
    }
}

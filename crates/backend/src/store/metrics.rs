//! The store's Prometheus metrics: Redis call latency, append outcomes, and the cost of each
//! strategy's concurrency control (watch conflicts, lock waits, fenced writes).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a Redis operation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// The operation (`append_script`, `xrange`, `watch_get`, ...).
    pub op: &'static str,
}

/// Labels of one append outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppendLabels {
    /// Strategy in use.
    pub strategy: &'static str,
    /// `created`, `replayed`, or an error label.
    pub outcome: &'static str,
}

/// Handles to the store's metrics.
#[derive(Clone)]
pub struct StoreMetrics {
    /// Duration of each Redis call, by operation.
    pub redis_call_seconds: Family<OpLabels, Histogram, fn() -> Histogram>,
    /// Appends by strategy and outcome.
    pub appends: Family<AppendLabels, Counter>,
    /// Optimistic transactions aborted by a concurrent writer (watch strategy).
    pub watch_conflicts: Counter,
    /// Time spent waiting for the lock (lock strategy).
    pub lock_wait_seconds: Histogram,
    /// Writes refused because a newer lock holder had touched the data.
    pub fenced_writes: Counter,
    /// Reads the replica failed that the primary answered instead.
    pub replica_fallbacks: Counter,
}

fn redis_histogram() -> Histogram {
    // 50 µs to ~3.3 s: a healthy call on loopback takes tens of microseconds.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

impl StoreMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            redis_call_seconds: Family::new_with_constructor(redis_histogram as fn() -> Histogram),
            appends: Family::default(),
            watch_conflicts: Counter::default(),
            lock_wait_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            fenced_writes: Counter::default(),
            replica_fallbacks: Counter::default(),
        };
        registry.register(
            "redis_replica_read_fallbacks",
            "Reads the replica could not serve (down, slow) that went to the primary",
            metrics.replica_fallbacks.clone(),
        );
        registry.register(
            "redis_call_duration_seconds",
            "Duration of Redis calls made by the backend, by operation",
            metrics.redis_call_seconds.clone(),
        );
        registry.register(
            "guestbook_appends",
            "Appends by strategy and outcome",
            metrics.appends.clone(),
        );
        registry.register(
            "guestbook_watch_conflicts",
            "WATCH/MULTI/EXEC transactions aborted by a concurrent writer",
            metrics.watch_conflicts.clone(),
        );
        registry.register(
            "guestbook_lock_wait_seconds",
            "Time spent acquiring the append lock",
            metrics.lock_wait_seconds.clone(),
        );
        registry.register(
            "guestbook_fenced_writes",
            "Writes refused because the lock holder's fencing token was superseded",
            metrics.fenced_writes.clone(),
        );
        metrics
    }
}

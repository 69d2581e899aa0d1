//! Every metric the pressure module publishes, registered in one place: the latency windows
//! (full, own, dependency waits), the refused share, readiness, the shedding limit and
//! refusals by reason, and the runtime and process figures.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::controller::NO_LIMIT;
use super::process::ProcessGauges;
use super::signals::Counts;
use crate::window::WindowSnapshot;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// What one tick publishes.
pub(super) struct Tick {
    /// Full latency, dependency waits included.
    pub(super) full: WindowSnapshot,
    /// Own time.
    pub(super) own: WindowSnapshot,
    /// Dependency waits.
    pub(super) waits: WindowSnapshot,
    pub(super) counts: Counts,
    pub(super) ready: bool,
    pub(super) limit: u64,
    pub(super) scheduling_delay: std::time::Duration,
    pub(super) rss: Option<u64>,
}

/// The registered gauges and counters.
#[derive(Default)]
pub(super) struct Gauges {
    p50: Gauge<f64, AtomicU64>,
    p99: Gauge<f64, AtomicU64>,
    p999: Gauge<f64, AtomicU64>,
    samples: Gauge,
    own_p50: Gauge<f64, AtomicU64>,
    own_p99: Gauge<f64, AtomicU64>,
    own_p999: Gauge<f64, AtomicU64>,
    wait_p99: Gauge<f64, AtomicU64>,
    wait_p999: Gauge<f64, AtomicU64>,
    wait_samples: Gauge,
    refused_ratio: Gauge<f64, AtomicU64>,
    ready: Gauge,
    limit: Gauge,
    shed: Family<ReasonLabel, Counter>,
    scheduling_delay: Gauge<f64, AtomicU64>,
    process: ProcessGauges,
}

impl Gauges {
    /// Creates the metrics and registers them in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let gauges = Self::default();
        // Gauges per quantile rather than one with a `quantile` label: that label belongs to
        // summaries.
        registry.register(
            "http_request_own_duration_window_p999_seconds",
            "p99.9 over the sliding window of the time requests spent in this process, waits on dependencies excluded: what readiness, shedding and the HPA act on",
            gauges.own_p999.clone(),
        );
        registry.register(
            "http_request_own_duration_window_p99_seconds",
            "p99 over the sliding window of the time requests spent in this process, waits on dependencies excluded",
            gauges.own_p99.clone(),
        );
        registry.register(
            "http_request_own_duration_window_p50_seconds",
            "Median over the sliding window of the time requests spent in this process, waits on dependencies excluded",
            gauges.own_p50.clone(),
        );
        registry.register(
            "http_request_duration_window_p999_seconds",
            "p99.9 request latency over the sliding window, waits on dependencies included (for people: decisions use the own duration)",
            gauges.p999.clone(),
        );
        registry.register(
            "http_request_duration_window_p99_seconds",
            "p99 request latency over the sliding window, waits on dependencies included",
            gauges.p99.clone(),
        );
        registry.register(
            "http_request_duration_window_p50_seconds",
            "Median request latency over the sliding window, waits on dependencies included",
            gauges.p50.clone(),
        );
        registry.register(
            "http_request_duration_window_samples",
            "Samples in the latency window",
            gauges.samples.clone(),
        );
        registry.register(
            "http_request_dependency_wait_window_p999_seconds",
            "p99.9 over the sliding window of the time a request waited on dependencies (Redis for the backend, the backend for the client), among requests that waited",
            gauges.wait_p999.clone(),
        );
        registry.register(
            "http_request_dependency_wait_window_p99_seconds",
            "p99 over the sliding window of the time a request waited on dependencies, among requests that waited",
            gauges.wait_p99.clone(),
        );
        registry.register(
            "http_request_dependency_wait_window_samples",
            "Requests in the sliding window that waited on a dependency",
            gauges.wait_samples.clone(),
        );
        registry.register(
            "load_shed_refused_ratio",
            "Share of the requests of the last READINESS_RECENT_SECS refused for this process's own capacity (shedding, bulkhead, stream cap)",
            gauges.refused_ratio.clone(),
        );
        registry.register(
            "readiness_ready",
            "1 while /readiness answers 200",
            gauges.ready.clone(),
        );
        registry.register(
            "load_shed_concurrency_limit",
            "Concurrency limit while shedding (0: no limit)",
            gauges.limit.clone(),
        );
        registry.register(
            "http_requests_shed",
            "Requests refused to protect the service, by reason",
            gauges.shed.clone(),
        );
        registry.register(
            "tokio_scheduling_delay_seconds",
            "Worst lateness of a 10 ms timer over the last second",
            gauges.scheduling_delay.clone(),
        );
        registry.register(
            "tokio_workers",
            "tokio worker threads",
            gauges.process.workers.clone(),
        );
        registry.register(
            "tokio_alive_tasks",
            "tokio tasks alive",
            gauges.process.alive_tasks.clone(),
        );
        registry.register(
            "tokio_global_queue_depth",
            "Tasks in tokio's global queue",
            gauges.process.global_queue.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory",
            gauges.process.rss.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time",
            gauges.process.cpu.clone(),
        );
        gauges
    }

    /// Counts one request refused for `reason`.
    pub(super) fn count_shed(&self, reason: &'static str) {
        self.shed.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Publishes one tick's figures.
    pub(super) fn publish(&self, tick: &Tick) {
        self.p50.set(tick.full.p50);
        self.p99.set(tick.full.p99);
        self.p999.set(tick.full.p999);
        self.samples
            .set(i64::try_from(tick.full.samples).unwrap_or(i64::MAX));
        self.own_p50.set(tick.own.p50);
        self.own_p99.set(tick.own.p99);
        self.own_p999.set(tick.own.p999);
        self.wait_p99.set(tick.waits.p99);
        self.wait_p999.set(tick.waits.p999);
        self.wait_samples
            .set(i64::try_from(tick.waits.samples).unwrap_or(i64::MAX));
        self.refused_ratio.set(tick.counts.refused_ratio());
        self.ready.set(i64::from(tick.ready));
        self.limit.set(if tick.limit == NO_LIMIT {
            0
        } else {
            i64::try_from(tick.limit).unwrap_or(i64::MAX)
        });
        self.scheduling_delay
            .set(tick.scheduling_delay.as_secs_f64());
        self.process.refresh(tick.rss);
    }
}

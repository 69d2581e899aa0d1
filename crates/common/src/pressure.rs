//! Backpressure (seeds 001 and 004): readiness and load shedding driven by the pod's *own*
//! saturation, never by its dependencies.
//!
//! Seed 001 (an autoscaling demo whose p99.9 latency over a 60-second window drives the HPA,
//! readiness and load shedding) gives three thresholds on one p99.9: the HPA scales at 300 ms
//! (outside the process), `/readiness` fails at `READINESS_P999_MS` (400), shedding starts at
//! `SHED_P999_MS` (800). Seed 004 (a post-mortem of a deep health check that took every replica
//! out at once) says readiness must be shallow: a slow or absent dependency must not fail it.
//!
//! # Own time, not total time
//! Both hold only if the p99.9 measures the pod. A request's latency is its own work plus its
//! waits on a dependency (Redis for the backend, the backend for the client): the
//! [`guard`] gives each request a [`DependencyClock`], every dependency call adds its time to
//! it (see [`crate::dependency`]), and the window that drives readiness, shedding and the HPA
//! gauge records `own = total − waited`. A slow Redis therefore answers fast 503s from pods
//! that stay ready (there is nothing to gain by moving traffic between replicas of one Redis,
//! and an unready pod gets no traffic to clear its window with); the full latency stays in
//! `http_request_duration_seconds` and the `http_request_duration_window_*` gauges, and the
//! dependency share in `http_request_dependency_wait_window_*`.
//!
//! # Refusing is saturation too
//! A pod that keeps its latency by refusing work (the `/slow` bulkhead, this shedder, the stream
//! cap) never shows a high p99.9, yet it is overloaded (seed 001: it should leave the load
//! balancer). So every request is also counted, per 250 ms bucket over the last
//! `READINESS_RECENT_SECS`, as answered or refused *for local capacity* (a dependency's 503 is
//! answered, not refused). Readiness fails while the refused share is above
//! `READINESS_SHED_RATIO` (with at least `READINESS_MIN_SAMPLES` requests) and comes back at
//! half of it; the buckets age out, so a pod that gets no traffic recovers by itself.
//!
//! # Recovering once the pressure passes
//! The 60-second p99.9 says *that* the pod was overloaded; it cannot say whether it still is,
//! and an unready pod gets no traffic that would tell. Latency fails readiness only while the
//! recent buckets also hold requests slower than the recovery point (90 % of the threshold), and
//! readiness returns as soon as they hold none (or the window's p99.9 falls under that point):
//! seconds after the load stops instead of a whole window.
//!
//! # Why not all-or-nothing
//! Fastify's under-pressure answers 503 to *every* request while its check fails, until the
//! window clears; under overload goodput collapses to a fraction of capacity (rebuilt on this
//! kind of machine, seed 001's example served about a fifth of what it had served before). Here, while overloaded, a concurrency limit applies instead: requests
//! beyond it are shed at once, the rest are served. The limit shrinks by a fifth per tick
//! (250 ms) while recent latency stays above the threshold, and grows again by a tenth
//! per tick once recent latency is back under it; without overload there is no limit at all.
//! "Recent" is the last second: the 60-second window says *that* we are overloaded, the last
//! second says whether the current limit is working.
//!
//! # Shedding signals
//! - windowed own p99.9 above `SHED_P999_MS`, with at least `READINESS_MIN_SAMPLES` samples;
//! - tokio scheduling delay: a probe task asks to wake every 10 ms and measures how late it
//!   wakes; the worst delay of the last second above `RUNTIME_DELAY_SHED_MS` means the
//!   runtime is saturated (the mean would hide the spikes that hurt);
//! - resident memory above `MAX_RSS_MB`, when set.
//!
//! Each of them sheds, and shedding is what readiness sees: CPU or memory saturation reaches
//! `/readiness` through the refused share.
//!
//! Probes and `/metrics` are never shed and never recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dependency::DependencyClock;
use crate::lifecycle::Lifecycle;
use crate::window::{LatencyWindow, WindowSnapshot};

/// How often the snapshot, readiness, signals and limit are refreshed; also the length of one
/// bucket of the recent counts.
pub const TICK: Duration = Duration::from_millis(250);
/// The runtime probe's requested sleep.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Readiness comes back once p99.9 is this share of its threshold (hysteresis); a request
/// slower than this share of it counts as pressure in the recent buckets.
const RECOVER_RATIO: f64 = 0.9;
/// Readiness failed on the refused share comes back once the share is this part of
/// `READINESS_SHED_RATIO` (hysteresis: a pod hovering at the threshold does not flap).
const SHED_RECOVER_RATIO: f64 = 0.5;
/// The smallest concurrency limit shedding goes down to.
const MIN_LIMIT: u64 = 2;
/// Paths that are never shed nor recorded (the OpenAPI documents leave their 503 out too).
pub const EXEMPT: [&str; 3] = ["/liveness", "/readiness", "/metrics"];

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

/// Why requests are being shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// Not overloaded.
    None = 0,
    /// Windowed p99.9 above `SHED_P999_MS`.
    Latency = 1,
    /// tokio scheduling delay above `RUNTIME_DELAY_SHED_MS`.
    Runtime = 2,
    /// Resident memory above `MAX_RSS_MB`.
    Memory = 3,
}

impl Reason {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Latency,
            2 => Self::Runtime,
            3 => Self::Memory,
            _ => Self::None,
        }
    }

    /// The label used in metrics and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Latency => "latency",
            Self::Runtime => "runtime",
            Self::Memory => "memory",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// One bucket of [`Recent`].
#[derive(Default)]
struct Bucket {
    /// Which bucket (since start, from 1) the counts belong to.
    epoch: AtomicU64,
    answered: AtomicU64,
    refused: AtomicU64,
    slow: AtomicU64,
}

/// What the recent buckets hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    /// Requests answered, refused ones included.
    answered: u64,
    /// Refused for this process's own capacity.
    refused: u64,
    /// Served, and slower (own time) than the readiness recovery point.
    slow: u64,
}

impl Counts {
    fn refused_ratio(self) -> f64 {
        if self.answered == 0 {
            0.0
        } else {
            self.refused as f64 / self.answered as f64
        }
    }
}

/// Requests answered, refused and slow over the last few seconds, in [`TICK`]-long buckets.
///
/// Lock-free on the request path: a bucket found holding an older epoch is claimed by one
/// compare-and-swap and zeroed. A count made by another thread in the instant between the
/// claim and the zeroing can be lost; these are shares over thousands of requests, and a
/// lock on every request would cost more than that error.
struct Recent {
    buckets: Vec<Bucket>,
    start: Instant,
}

impl Recent {
    fn new(span: Duration) -> Self {
        let n = usize::try_from(span.as_millis() / TICK.as_millis())
            .unwrap_or(1)
            .max(1);
        Self {
            buckets: (0..n).map(|_| Bucket::default()).collect(),
            start: Instant::now(),
        }
    }

    fn epoch(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos() / TICK.as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    fn bucket(&self) -> &Bucket {
        let epoch = self.epoch();
        let index = usize::try_from(epoch % self.buckets.len() as u64).unwrap_or(0);
        let bucket = &self.buckets[index];
        let seen = bucket.epoch.load(Ordering::Acquire);
        if seen != epoch
            && bucket
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.answered.store(0, Ordering::Relaxed);
            bucket.refused.store(0, Ordering::Relaxed);
            bucket.slow.store(0, Ordering::Relaxed);
        }
        bucket
    }

    fn answered(&self, slow: bool) {
        let bucket = self.bucket();
        bucket.answered.fetch_add(1, Ordering::Relaxed);
        if slow {
            bucket.slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn refused(&self) {
        let bucket = self.bucket();
        bucket.answered.fetch_add(1, Ordering::Relaxed);
        bucket.refused.fetch_add(1, Ordering::Relaxed);
    }

    fn counts(&self) -> Counts {
        let now = self.epoch();
        let oldest = now.saturating_sub(self.buckets.len() as u64 - 1);
        let mut counts = Counts::default();
        for bucket in &self.buckets {
            let epoch = bucket.epoch.load(Ordering::Acquire);
            if epoch >= oldest && epoch <= now {
                counts.answered += bucket.answered.load(Ordering::Relaxed);
                counts.refused += bucket.refused.load(Ordering::Relaxed);
                counts.slow += bucket.slow.load(Ordering::Relaxed);
            }
        }
        counts
    }
}

/// Which readiness signal failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unready {
    /// Ready.
    No,
    /// The windowed own p99.9 (and the recent seconds) above `READINESS_P999_MS`.
    Latency,
    /// The recent refused share above `READINESS_SHED_RATIO`.
    Shedding,
}

/// Readiness as of the last tick, with the figures it was decided on.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    unready: Unready,
    own: WindowSnapshot,
    counts: Counts,
}

impl Default for Verdict {
    fn default() -> Self {
        Self {
            unready: Unready::No,
            own: WindowSnapshot::default(),
            counts: Counts::default(),
        }
    }
}

struct Gauges {
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
    workers: Gauge,
    alive_tasks: Gauge,
    global_queue: Gauge,
    rss: Gauge,
    cpu: Counter<f64, AtomicU64>,
}

/// The process's backpressure state; cheap to share.
pub struct Pressure {
    args: PressureArgs,
    /// Full latency, dependency waits included: for people, not for decisions.
    window: LatencyWindow,
    /// Own time (total − dependency waits): readiness, shedding, the HPA.
    own: LatencyWindow,
    /// Own time over the last second: whether the shedding limit works.
    recent_own: LatencyWindow,
    /// Dependency waits of the requests that had any.
    waits: LatencyWindow,
    /// Answered, refused and slow requests of the last `READINESS_RECENT_SECS`.
    recent: Recent,
    /// Own time above which a request counts as slow in `recent`.
    slow_after: Duration,
    lifecycle: Lifecycle,
    snapshot: std::sync::Mutex<WindowSnapshot>,
    verdict: std::sync::Mutex<Verdict>,
    waits_snapshot: std::sync::Mutex<WindowSnapshot>,
    ready: AtomicBool,
    reason: AtomicU8,
    limit: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    probe_worst_micros: AtomicU64,
    gauges: Gauges,
    last_cpu_seconds: std::sync::Mutex<f64>,
}

/// A request was refused to protect the service: for its own capacity, never because a
/// dependency failed. Put in a response's extensions, it tells [`guard`] to count the answer as
/// refused (and not to record its latency).
#[derive(Debug, Clone, Copy)]
pub struct Shed(pub &'static str);

impl IntoResponse for Shed {
    fn into_response(self) -> Response {
        let body = json!({"error": "overloaded, retry later", "reason": self.0});
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response.extensions_mut().insert(self);
        response
    }
}

impl Pressure {
    /// Creates the state and registers its metrics.
    pub fn new(args: PressureArgs, lifecycle: Lifecycle, registry: &mut Registry) -> Arc<Self> {
        let gauges = Gauges {
            p50: Gauge::default(),
            p99: Gauge::default(),
            p999: Gauge::default(),
            samples: Gauge::default(),
            own_p50: Gauge::default(),
            own_p99: Gauge::default(),
            own_p999: Gauge::default(),
            wait_p99: Gauge::default(),
            wait_p999: Gauge::default(),
            wait_samples: Gauge::default(),
            refused_ratio: Gauge::default(),
            ready: Gauge::default(),
            limit: Gauge::default(),
            shed: Family::default(),
            scheduling_delay: Gauge::default(),
            workers: Gauge::default(),
            alive_tasks: Gauge::default(),
            global_queue: Gauge::default(),
            rss: Gauge::default(),
            cpu: Counter::default(),
        };
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
            gauges.workers.clone(),
        );
        registry.register(
            "tokio_alive_tasks",
            "tokio tasks alive",
            gauges.alive_tasks.clone(),
        );
        registry.register(
            "tokio_global_queue_depth",
            "Tasks in tokio's global queue",
            gauges.global_queue.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory",
            gauges.rss.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time",
            gauges.cpu.clone(),
        );
        let window = Duration::from_secs(args.latency_window_secs);
        let recent = Duration::from_secs(args.readiness_recent_secs);
        let slow_after = Duration::from_millis(args.readiness_p999_ms).mul_f64(RECOVER_RATIO);
        Arc::new(Self {
            window: LatencyWindow::new(window, args.latency_age_buckets),
            own: LatencyWindow::new(window, args.latency_age_buckets),
            recent_own: LatencyWindow::new(Duration::from_secs(1), 4),
            waits: LatencyWindow::new(window, args.latency_age_buckets),
            recent: Recent::new(recent),
            slow_after,
            args,
            lifecycle,
            snapshot: std::sync::Mutex::new(WindowSnapshot::default()),
            verdict: std::sync::Mutex::new(Verdict::default()),
            waits_snapshot: std::sync::Mutex::new(WindowSnapshot::default()),
            ready: AtomicBool::new(true),
            reason: AtomicU8::new(Reason::None as u8),
            limit: AtomicU64::new(u64::MAX),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            probe_worst_micros: AtomicU64::new(0),
            gauges,
            last_cpu_seconds: std::sync::Mutex::new(0.0),
        })
    }

    /// The settings.
    pub fn args(&self) -> &PressureArgs {
        &self.args
    }

    /// The last refreshed window of own time (what readiness and shedding act on).
    pub fn snapshot(&self) -> WindowSnapshot {
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The last refreshed window of dependency waits, for `/health/dependencies`.
    pub fn dependency_waits(&self) -> WindowSnapshot {
        *self
            .waits_snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Current shedding reason.
    pub fn reason(&self) -> Reason {
        Reason::from_u8(self.reason.load(Ordering::Relaxed))
    }

    /// Counts a request refused by a handler's own admission control (a full bulkhead).
    pub fn count_shed(&self, reason: &'static str) {
        self.gauges
            .shed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Records a served request: its whole latency and the part of it spent waiting on
    /// dependencies.
    pub fn record(&self, latency: Duration, waited: Duration) {
        let own = latency.saturating_sub(waited);
        self.window.record(latency);
        self.own.record(own);
        self.recent_own.record(own);
        if !waited.is_zero() {
            self.waits.record(waited);
        }
        self.recent.answered(own > self.slow_after);
    }

    /// Counts a request refused for this process's own capacity.
    pub fn record_refused(&self) {
        self.recent.refused();
    }

    /// `Some(reason)` when this request should be shed.
    fn admit(&self) -> Option<Reason> {
        if !self.args.shedding {
            return None;
        }
        let reason = self.reason();
        if reason == Reason::None {
            return None;
        }
        (self.in_flight.load(Ordering::Relaxed) >= self.limit.load(Ordering::Relaxed))
            .then_some(reason)
    }

    /// Readiness: `Ok` when ready, else the JSON reason (`latency`, `shedding` or
    /// `shutting_down`) with the figures.
    pub fn readiness(&self) -> Result<serde_json::Value, serde_json::Value> {
        if self.lifecycle.is_shutting_down() {
            return Err(json!({"status": "unready", "reason": "shutting_down"}));
        }
        let verdict = *self
            .verdict
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut body = json!({
            "status": "ready",
            "p999_ms": verdict.own.p999 * 1e3,
            "threshold_ms": self.args.readiness_p999_ms,
            "samples": verdict.own.samples,
            "shed_ratio": verdict.counts.refused_ratio(),
            "shed_ratio_threshold": self.args.readiness_shed_ratio,
        });
        let reason = match verdict.unready {
            Unready::No => return Ok(body),
            Unready::Latency => "latency",
            Unready::Shedding => "shedding",
        };
        body["status"] = json!("unready");
        body["reason"] = json!(reason);
        Err(body)
    }

    /// Readiness from the windows and the recent counts, with hysteresis on each signal.
    fn judge(&self, own: WindowSnapshot, counts: Counts, was: Unready) -> Unready {
        let enough = own.samples >= self.args.readiness_min_samples;
        let threshold = self.args.readiness_p999_ms as f64 / 1e3;
        // The recent seconds' own p99.9 is above the recovery point: more than one request in
        // a thousand was slower than it.
        let pressing = counts.slow.saturating_mul(1_000) > counts.answered;
        let latency = if was == Unready::Latency {
            enough && own.p999 > threshold * RECOVER_RATIO && counts.slow > 0
        } else {
            enough && own.p999 > threshold && pressing
        };
        let ratio = counts.refused_ratio();
        let limit = self.args.readiness_shed_ratio;
        let shedding = if was == Unready::Shedding {
            ratio > limit * SHED_RECOVER_RATIO
        } else {
            counts.answered >= self.args.readiness_min_samples && ratio > limit
        };
        if latency {
            Unready::Latency
        } else if shedding {
            Unready::Shedding
        } else {
            Unready::No
        }
    }

    /// One refresh: snapshot, readiness, signals, limit, gauges.
    fn tick(&self) {
        let snapshot = self.own.snapshot();
        let full = self.window.snapshot();
        let waits = self.waits.snapshot();
        let counts = self.recent.counts();
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
        *self
            .waits_snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = waits;
        let unready = {
            let mut verdict = self
                .verdict
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let unready = self.judge(snapshot, counts, verdict.unready);
            *verdict = Verdict {
                unready,
                own: snapshot,
                counts,
            };
            unready
        };
        let ready = unready == Unready::No;
        if ready != self.ready.swap(ready, Ordering::Relaxed) {
            tracing::warn!(
                ready,
                reason = ?unready,
                p999_ms = snapshot.p999 * 1e3,
                samples = snapshot.samples,
                shed_ratio = counts.refused_ratio(),
                "readiness changed"
            );
        }

        let enough = snapshot.samples >= self.args.readiness_min_samples;
        let delay = Duration::from_micros(self.probe_worst_micros.swap(0, Ordering::Relaxed));
        let rss = resident_bytes();
        let shed = self.args.shed_p999_ms as f64 / 1e3;
        let reason = if enough && snapshot.p999 > shed {
            Reason::Latency
        } else if delay > Duration::from_millis(self.args.runtime_delay_shed_ms) {
            Reason::Runtime
        } else if self.args.max_rss_mb > 0
            && rss.is_some_and(|rss| rss > self.args.max_rss_mb * 1024 * 1024)
        {
            Reason::Memory
        } else {
            Reason::None
        };
        let previous = Reason::from_u8(self.reason.swap(reason as u8, Ordering::Relaxed));
        if reason != previous {
            tracing::warn!(
                reason = reason.as_str(),
                p999_ms = snapshot.p999 * 1e3,
                "load shedding changed"
            );
        }

        let peak = self
            .peak_in_flight
            .swap(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        let limit = self.limit.load(Ordering::Relaxed);
        let next = if reason == Reason::None {
            u64::MAX
        } else if reason != Reason::Latency || self.recent_own.snapshot().p99 > shed {
            // Still too slow (or another signal): a fifth fewer than what was in flight.
            ((limit.min(peak) as f64 * 0.8) as u64).max(MIN_LIMIT)
        } else {
            // The limit works: grow back carefully.
            let base = limit.min(peak.max(MIN_LIMIT));
            base.saturating_add((base / 10).max(1))
        };
        self.limit.store(next, Ordering::Relaxed);

        let g = &self.gauges;
        g.p50.set(full.p50);
        g.p99.set(full.p99);
        g.p999.set(full.p999);
        g.samples
            .set(i64::try_from(full.samples).unwrap_or(i64::MAX));
        g.own_p50.set(snapshot.p50);
        g.own_p99.set(snapshot.p99);
        g.own_p999.set(snapshot.p999);
        g.wait_p99.set(waits.p99);
        g.wait_p999.set(waits.p999);
        g.wait_samples
            .set(i64::try_from(waits.samples).unwrap_or(i64::MAX));
        g.refused_ratio.set(counts.refused_ratio());
        g.ready.set(i64::from(ready));
        g.limit.set(if next == u64::MAX {
            0
        } else {
            i64::try_from(next).unwrap_or(i64::MAX)
        });
        g.scheduling_delay.set(delay.as_secs_f64());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let metrics = handle.metrics();
            g.workers
                .set(i64::try_from(metrics.num_workers()).unwrap_or(i64::MAX));
            g.alive_tasks
                .set(i64::try_from(metrics.num_alive_tasks()).unwrap_or(i64::MAX));
            g.global_queue
                .set(i64::try_from(metrics.global_queue_depth()).unwrap_or(i64::MAX));
        }
        if let Some(rss) = rss {
            g.rss.set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        if let Some(cpu) = cpu_seconds() {
            let mut last = self
                .last_cpu_seconds
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if cpu > *last {
                g.cpu.inc_by(cpu - *last);
                *last = cpu;
            }
        }
    }

    /// Runs the refresh loop and the runtime probe until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let probe = {
            let this = Arc::clone(&self);
            async move {
                // The worst lateness of the last second: kept for four ticks, so one quiet tick
                // does not hide a spike.
                let mut recent = [0_u64; 4];
                let mut slot = 0;
                let mut since_tick = Instant::now();
                loop {
                    let asked = Instant::now();
                    tokio::time::sleep(PROBE_INTERVAL).await;
                    let late = asked.elapsed().saturating_sub(PROBE_INTERVAL);
                    let late = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
                    recent[slot] = recent[slot].max(late);
                    if since_tick.elapsed() >= TICK {
                        this.probe_worst_micros.fetch_max(
                            recent.iter().copied().max().unwrap_or(0),
                            Ordering::Relaxed,
                        );
                        slot = (slot + 1) % recent.len();
                        recent[slot] = 0;
                        since_tick = Instant::now();
                    }
                }
            }
        };
        let refresh = {
            let this = Arc::clone(&self);
            async move {
                let mut interval = tokio::time::interval(TICK);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    this.tick();
                }
            }
        };
        tokio::select! {
            () = stop.cancelled() => {}
            () = probe => {}
            () = refresh => {}
        }
    }
}

/// Keeps the in-flight count right when a request future is dropped.
struct InFlight<'a>(&'a Pressure);

impl<'a> InFlight<'a> {
    fn enter(pressure: &'a Pressure) -> Self {
        let now = pressure.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        pressure.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(pressure)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Middleware: sheds the excess while overloaded; records each served request's latency and
/// the part of it spent waiting on dependencies (the request runs inside its own
/// [`DependencyClock`]), and counts refusals for local capacity.
pub async fn guard(
    State(pressure): State<Arc<Pressure>>,
    request: Request,
    next: Next,
) -> Response {
    if EXEMPT.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    if let Some(reason) = pressure.admit() {
        pressure.count_shed(reason.as_str());
        pressure.record_refused();
        return Shed(reason.as_str()).into_response();
    }
    let started = Instant::now();
    let clock = DependencyClock::new();
    let response = {
        let _in_flight = InFlight::enter(&pressure);
        clock.clone().scope(next.run(request)).await
    };
    // A handler's own fast refusal is not a served request: it would dilute the window.
    if response.extensions().get::<Shed>().is_some() {
        pressure.record_refused();
    } else {
        pressure.record(started.elapsed(), clock.waited());
    }
    response
}

/// Resident set size from /proc (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User + system CPU seconds from /proc (Linux, 100 ticks per second as on every common
/// kernel configuration); `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> PressureArgs {
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

    fn pressure() -> Arc<Pressure> {
        Pressure::new(args(), Lifecycle::new(), &mut Registry::default())
    }

    fn served(pressure: &Pressure, n: usize, ms: u64) {
        for _ in 0..n {
            pressure.record(Duration::from_millis(ms), Duration::ZERO);
        }
    }

    fn refused(pressure: &Pressure, n: usize) {
        for _ in 0..n {
            pressure.record_refused();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn three_slow_requests_do_not_flip_readiness() {
        let pressure = pressure();
        served(&pressure, 3, 2_000);
        pressure.tick();
        assert!(pressure.readiness().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_fails_above_the_threshold_and_recovers_as_samples_age_out() {
        let pressure = pressure();
        served(&pressure, 100, 500);
        pressure.tick();
        let unready = pressure.readiness().expect_err("unready");
        assert_eq!(unready["reason"], "latency");
        assert!(
            unready["p999_ms"].as_f64().is_some_and(|p| p > 400.0),
            "{unready}"
        );

        tokio::time::advance(Duration::from_secs(11)).await;
        pressure.tick();
        assert!(pressure.readiness().is_ok(), "recovered with no traffic");
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_recovers_only_well_below_the_threshold() {
        let pressure = pressure();
        served(&pressure, 100, 500);
        pressure.tick();
        // Then steady traffic at 380 ms: once the slow bucket ages out of the window, p99.9 is
        // 380 ms, under 400 but above the 360 ms recovery point, and the recent seconds are
        // still full of such requests.
        for _ in 0..40 {
            tokio::time::advance(TICK).await;
            served(&pressure, 30, 380);
            pressure.tick();
        }
        assert!(pressure.snapshot().p999 < 0.4, "{:?}", pressure.snapshot());
        assert!(pressure.readiness().is_err(), "hysteresis holds it unready");
    }

    #[tokio::test(start_paused = true)]
    async fn latency_readiness_returns_once_the_pressure_has_passed() {
        let pressure = pressure();
        served(&pressure, 100, 500);
        pressure.tick();
        assert!(pressure.readiness().is_err());

        // No traffic for the recent seconds: the window still holds the slow samples, but
        // nothing says the pod is still overloaded (and an unready pod gets no traffic to say
        // otherwise).
        tokio::time::advance(Duration::from_millis(5_250)).await;
        pressure.tick();
        assert!(pressure.snapshot().p999 > 0.4, "{:?}", pressure.snapshot());
        assert!(
            pressure.readiness().is_ok(),
            "ready long before the window clears"
        );

        // Fast traffic keeps it ready although the window's p99.9 is still high.
        served(&pressure, 100, 10);
        pressure.tick();
        assert!(pressure.readiness().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn time_waiting_on_a_dependency_does_not_count() {
        // Every request took 2 s, 1.95 s of it waiting on Redis.
        let pressure = pressure();
        for _ in 0..1_000 {
            pressure.record(Duration::from_secs(2), Duration::from_millis(1_950));
        }
        pressure.tick();
        assert!(pressure.readiness().is_ok());
        assert_eq!(pressure.reason(), Reason::None, "nothing to shed");
        assert!(pressure.snapshot().p999 < 0.06, "{:?}", pressure.snapshot());
        assert!(
            (pressure.dependency_waits().p999 - 1.95).abs() < 0.02,
            "{:?}",
            pressure.dependency_waits()
        );
        // The full figure is still there for people.
        let full = pressure.window.snapshot();
        assert!((full.p999 - 2.0).abs() < 0.02, "{full:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_high_refused_share_fails_readiness_and_time_brings_it_back() {
        let pressure = pressure();
        served(&pressure, 100, 10);
        refused(&pressure, 50);
        pressure.tick();
        let unready = pressure.readiness().expect_err("unready");
        assert_eq!(unready["reason"], "shedding", "{unready}");
        assert!(
            unready["shed_ratio"]
                .as_f64()
                .is_some_and(|r| (r - 1.0 / 3.0).abs() < 1e-9),
            "{unready}"
        );

        // No traffic: the buckets age out.
        tokio::time::advance(Duration::from_millis(5_250)).await;
        pressure.tick();
        let ready = pressure.readiness().expect("ready again");
        assert_eq!(ready["shed_ratio"], 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_refused_share_has_hysteresis_and_needs_enough_requests() {
        let pressure = pressure();
        served(&pressure, 3, 10);
        refused(&pressure, 5);
        pressure.tick();
        assert!(pressure.readiness().is_ok(), "8 requests are not enough");

        served(&pressure, 80, 10);
        refused(&pressure, 15);
        pressure.tick();
        assert!(pressure.readiness().is_err(), "20 of 103 refused");

        // 7 % refused: under the 10 % threshold, above the 5 % recovery point.
        tokio::time::advance(Duration::from_millis(5_250)).await;
        served(&pressure, 93, 10);
        refused(&pressure, 7);
        pressure.tick();
        assert!(pressure.readiness().is_err(), "hysteresis holds it unready");

        tokio::time::advance(Duration::from_millis(5_250)).await;
        served(&pressure, 97, 10);
        refused(&pressure, 3);
        pressure.tick();
        assert!(
            pressure.readiness().is_ok(),
            "3 % is under the recovery point"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutting_down_is_unready() {
        let lifecycle = Lifecycle::new();
        let pressure = Pressure::new(args(), lifecycle.clone(), &mut Registry::default());
        lifecycle.begin_shutdown();
        assert_eq!(
            pressure.readiness().expect_err("unready")["reason"],
            "shutting_down"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn overload_sheds_only_beyond_a_shrinking_limit() {
        let pressure = pressure();
        served(&pressure, 100, 1_000);
        let held: Vec<_> = (0..10).map(|_| InFlight::enter(&pressure)).collect();
        pressure.tick();
        assert_eq!(pressure.reason(), Reason::Latency);
        // 10 were in flight and recent latency is high: the limit is 8.
        assert_eq!(pressure.limit.load(Ordering::Relaxed), 8);
        assert_eq!(pressure.admit(), Some(Reason::Latency), "10 in flight ≥ 8");
        drop(held);
        assert_eq!(
            pressure.admit(),
            None,
            "below the limit, requests are served"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_overload_means_no_limit() {
        let pressure = pressure();
        pressure.tick();
        assert_eq!(pressure.reason(), Reason::None);
        let _held: Vec<_> = (0..10_000).map(|_| InFlight::enter(&pressure)).collect();
        assert_eq!(pressure.admit(), None);
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

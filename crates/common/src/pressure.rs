//! Backpressure (seeds 001 and 004): readiness and load shedding driven by the windowed
//! p99.9 latency, with a runtime signal and an optional memory limit.
//!
//! Seed 001's three thresholds on one p99.9: the HPA scales at 300 ms (outside the process),
//! `/readiness` fails at `READINESS_P999_MS` (400), shedding starts at `SHED_P999_MS` (800).
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
//! # Signals
//! - windowed p99.9 above `SHED_P999_MS`, with at least `READINESS_MIN_SAMPLES` samples;
//! - tokio scheduling delay: a probe task asks to wake every 10 ms and measures how late it
//!   wakes; the worst delay of the last second above `RUNTIME_DELAY_SHED_MS` means the
//!   runtime is saturated (the mean would hide the spikes that hurt);
//! - resident memory above `MAX_RSS_MB`, when set.
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

use crate::lifecycle::Lifecycle;
use crate::window::{LatencyWindow, WindowSnapshot};

/// How often the snapshot, readiness, signals and limit are refreshed.
pub const TICK: Duration = Duration::from_millis(250);
/// The runtime probe's requested sleep.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Readiness comes back once p99.9 is this share of its threshold (hysteresis).
const RECOVER_RATIO: f64 = 0.9;
/// The smallest concurrency limit shedding goes down to.
const MIN_LIMIT: u64 = 2;
/// Paths that are never shed nor recorded (the OpenAPI documents leave their 503 out too).
pub const EXEMPT: [&str; 3] = ["/liveness", "/readiness", "/metrics"];

/// Backpressure settings, shared by both services.
#[derive(Debug, Clone, clap::Args)]
pub struct PressureArgs {
    /// /readiness fails while the windowed p99.9 is above this, in milliseconds.
    #[arg(long, env = "READINESS_P999_MS", default_value_t = 400)]
    pub readiness_p999_ms: u64,
    /// Shedding starts while the windowed p99.9 is above this, in milliseconds.
    #[arg(long, env = "SHED_P999_MS", default_value_t = 800)]
    pub shed_p999_ms: u64,
    /// Length of the latency window, in seconds.
    #[arg(long, env = "LATENCY_WINDOW_SECS", default_value_t = 60)]
    pub latency_window_secs: u64,
    /// Age buckets the window rotates through.
    #[arg(long, env = "LATENCY_AGE_BUCKETS", default_value_t = 5)]
    pub latency_age_buckets: u32,
    /// Samples the window needs before latency may fail readiness or start shedding.
    #[arg(long, env = "READINESS_MIN_SAMPLES", default_value_t = 100)]
    pub readiness_min_samples: u64,
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

struct Gauges {
    p50: Gauge<f64, AtomicU64>,
    p99: Gauge<f64, AtomicU64>,
    p999: Gauge<f64, AtomicU64>,
    samples: Gauge,
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
    window: LatencyWindow,
    recent: LatencyWindow,
    lifecycle: Lifecycle,
    snapshot: std::sync::Mutex<WindowSnapshot>,
    ready: AtomicBool,
    reason: AtomicU8,
    limit: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    probe_worst_micros: AtomicU64,
    gauges: Gauges,
    last_cpu_seconds: std::sync::Mutex<f64>,
}

/// A request was refused to protect the service.
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
        // Three gauges rather than one with a `quantile` label: that label belongs to summaries.
        registry.register(
            "http_request_duration_window_p999_seconds",
            "p99.9 request latency over the sliding window: what readiness, shedding and the HPA act on",
            gauges.p999.clone(),
        );
        registry.register(
            "http_request_duration_window_p99_seconds",
            "p99 request latency over the sliding window",
            gauges.p99.clone(),
        );
        registry.register(
            "http_request_duration_window_p50_seconds",
            "Median request latency over the sliding window",
            gauges.p50.clone(),
        );
        registry.register(
            "http_request_duration_window_samples",
            "Samples in the latency window",
            gauges.samples.clone(),
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
        Arc::new(Self {
            window: LatencyWindow::new(window, args.latency_age_buckets),
            recent: LatencyWindow::new(Duration::from_secs(1), 4),
            args,
            lifecycle,
            snapshot: std::sync::Mutex::new(WindowSnapshot::default()),
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

    /// The last refreshed window.
    pub fn snapshot(&self) -> WindowSnapshot {
        *self
            .snapshot
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

    /// Records a served request's latency.
    pub fn record(&self, latency: Duration) {
        self.window.record(latency);
        self.recent.record(latency);
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

    /// Readiness: `Ok` when ready, else the JSON reason.
    pub fn readiness(&self) -> Result<serde_json::Value, serde_json::Value> {
        if self.lifecycle.is_shutting_down() {
            return Err(json!({"status": "unready", "reason": "shutting_down"}));
        }
        let snapshot = self.snapshot();
        let body = |status: &str| {
            json!({
                "status": status,
                "p999_ms": snapshot.p999 * 1e3,
                "threshold_ms": self.args.readiness_p999_ms,
                "samples": snapshot.samples,
            })
        };
        if self.ready.load(Ordering::Relaxed) {
            Ok(body("ready"))
        } else {
            let mut unready = body("unready");
            unready["reason"] = json!("latency");
            Err(unready)
        }
    }

    /// One refresh: snapshot, readiness, signals, limit, gauges.
    fn tick(&self) {
        let snapshot = self.window.snapshot();
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
        let enough = snapshot.samples >= self.args.readiness_min_samples;
        let readiness = self.args.readiness_p999_ms as f64 / 1e3;
        let ready = if self.ready.load(Ordering::Relaxed) {
            !(enough && snapshot.p999 > readiness)
        } else {
            !enough || snapshot.p999 <= readiness * RECOVER_RATIO
        };
        if ready != self.ready.swap(ready, Ordering::Relaxed) {
            tracing::warn!(
                ready,
                p999_ms = snapshot.p999 * 1e3,
                samples = snapshot.samples,
                "readiness changed"
            );
        }

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
        } else if reason != Reason::Latency || self.recent.snapshot().p99 > shed {
            // Still too slow (or another signal): a fifth fewer than what was in flight.
            ((limit.min(peak) as f64 * 0.8) as u64).max(MIN_LIMIT)
        } else {
            // The limit works: grow back carefully.
            let base = limit.min(peak.max(MIN_LIMIT));
            base.saturating_add((base / 10).max(1))
        };
        self.limit.store(next, Ordering::Relaxed);

        let g = &self.gauges;
        g.p50.set(snapshot.p50);
        g.p99.set(snapshot.p99);
        g.p999.set(snapshot.p999);
        g.samples
            .set(i64::try_from(snapshot.samples).unwrap_or(i64::MAX));
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

/// Middleware: sheds the excess while overloaded, and records served requests' latency.
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
        return Shed(reason.as_str()).into_response();
    }
    let started = Instant::now();
    let response = {
        let _in_flight = InFlight::enter(&pressure);
        next.run(request).await
    };
    // A handler's own fast refusal is not a served request: it would dilute the window.
    if response.extensions().get::<Shed>().is_none() {
        pressure.record(started.elapsed());
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
            shedding: true,
            runtime_delay_shed_ms: 60_000,
            max_rss_mb: 0,
        }
    }

    fn pressure() -> Arc<Pressure> {
        Pressure::new(args(), Lifecycle::new(), &mut Registry::default())
    }

    #[tokio::test(start_paused = true)]
    async fn three_slow_requests_do_not_flip_readiness() {
        let pressure = pressure();
        for _ in 0..3 {
            pressure.record(Duration::from_secs(2));
        }
        pressure.tick();
        assert!(pressure.readiness().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_fails_above_the_threshold_and_recovers_as_samples_age_out() {
        let pressure = pressure();
        for _ in 0..100 {
            pressure.record(Duration::from_millis(500));
        }
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
        for _ in 0..100 {
            pressure.record(Duration::from_millis(500));
        }
        pressure.tick();
        // Half a window later the slow bucket is still there, plus many at 380 ms: p99.9
        // is at 500 ms, then (once the slow bucket ages out) at 380 ms, under 400 but above
        // the 360 ms recovery point.
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..1_000 {
            pressure.record(Duration::from_millis(380));
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        pressure.tick();
        assert!(pressure.snapshot().p999 < 0.4, "{:?}", pressure.snapshot());
        assert!(pressure.readiness().is_err(), "hysteresis holds it unready");
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
        for _ in 0..100 {
            pressure.record(Duration::from_secs(1));
        }
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
        assert!(args().validate().is_ok());
    }
}

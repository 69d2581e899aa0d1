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
//! [`GuardLayer`] gives each request a [`DependencyClock`](crate::dependency::DependencyClock), every dependency call adds its time to
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
//!
//! # Where it lives
//! - [`settings`]: [`PressureArgs`], the thresholds and their checks.
//! - `signals`: what is measured besides the latency windows: the recent answered / refused /
//!   slow counts and the runtime's scheduling delay.
//! - `process`: resident memory and CPU time from `/proc`, the runtime's counts.
//! - `controller`: the pure policy: readiness with hysteresis, the shed reason, the adaptive
//!   limit; readings in, decisions out.
//! - `metrics`: every metric this module publishes, registered in one place.
//! - [`layer`]: the tower [`GuardLayer`] that asks for admission and answers [`Shed`] with 503.
//!
//! A request goes through [`GuardLayer`], which asks for admission (the controller's decision on the
//! last tick's reason and limit) and records the served request's own time into the
//! windows and the recent counts. Every [`TICK`], [`Pressure::run`] reads the windows, the
//! counts, the runtime probe and memory, asks the controller for readiness, the shed reason and
//! the next limit, stores them and publishes the metrics; `/readiness` reads the stored verdict.

mod controller;
pub mod layer;
mod metrics;
mod process;
pub mod settings;
mod signals;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::Lifecycle;
use crate::window::{LatencyWindow, WindowSnapshot};
pub use controller::Reason;
use controller::{Controller, NO_LIMIT, RECOVER_RATIO, Unready};
pub use layer::{Guard, GuardLayer, Shed};
use metrics::Gauges;
pub use settings::PressureArgs;
use signals::{Counts, Recent};

/// How often the snapshot, readiness, signals and limit are refreshed; also the length of one
/// bucket of the recent counts.
pub const TICK: Duration = Duration::from_millis(250);
/// Paths that are never shed nor recorded (the OpenAPI documents leave their 503 out too).
pub const EXEMPT: [&str; 3] = ["/liveness", "/readiness", "/metrics"];

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

/// Reads a value behind a lock that a panic cannot leave half-written (plain copies).
fn read<T: Copy>(lock: &Mutex<T>) -> T {
    *lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Replaces a value behind such a lock.
fn write<T>(lock: &Mutex<T>, value: T) {
    *lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
}

/// The process's backpressure state; cheap to share.
pub struct Pressure {
    args: PressureArgs,
    controller: Controller,
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
    snapshot: Mutex<WindowSnapshot>,
    verdict: Mutex<Verdict>,
    waits_snapshot: Mutex<WindowSnapshot>,
    ready: AtomicBool,
    reason: AtomicU8,
    limit: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    probe_worst_micros: AtomicU64,
    gauges: Gauges,
}

impl Pressure {
    /// Creates the state and registers its metrics.
    pub fn new(args: PressureArgs, lifecycle: Lifecycle, registry: &mut Registry) -> Arc<Self> {
        let window = Duration::from_secs(args.latency_window_secs);
        let recent = Duration::from_secs(args.readiness_recent_secs);
        let slow_after = Duration::from_millis(args.readiness_p999_ms).mul_f64(RECOVER_RATIO);
        Arc::new(Self {
            controller: Controller::new(&args),
            window: LatencyWindow::new(window, args.latency_age_buckets),
            own: LatencyWindow::new(window, args.latency_age_buckets),
            recent_own: LatencyWindow::new(Duration::from_secs(1), 4),
            waits: LatencyWindow::new(window, args.latency_age_buckets),
            recent: Recent::new(recent),
            slow_after,
            args,
            lifecycle,
            snapshot: Mutex::new(WindowSnapshot::default()),
            verdict: Mutex::new(Verdict::default()),
            waits_snapshot: Mutex::new(WindowSnapshot::default()),
            ready: AtomicBool::new(true),
            reason: AtomicU8::new(Reason::None as u8),
            limit: AtomicU64::new(NO_LIMIT),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            probe_worst_micros: AtomicU64::new(0),
            gauges: Gauges::register(registry),
        })
    }

    /// The settings.
    pub fn args(&self) -> &PressureArgs {
        &self.args
    }

    /// The last refreshed window of own time (what readiness and shedding act on).
    pub fn snapshot(&self) -> WindowSnapshot {
        read(&self.snapshot)
    }

    /// The last refreshed window of dependency waits, for `/health/dependencies`.
    pub fn dependency_waits(&self) -> WindowSnapshot {
        read(&self.waits_snapshot)
    }

    /// Current shedding reason.
    pub fn reason(&self) -> Reason {
        Reason::from_u8(self.reason.load(Ordering::Relaxed))
    }

    /// Counts a request refused by a handler's own admission control (a full bulkhead).
    pub fn count_shed(&self, reason: &'static str) {
        self.gauges.count_shed(reason);
    }

    /// Records a served request: its whole latency and the part of it spent waiting on
    /// dependencies.
    pub fn record(&self, latency: Duration, waited: Duration) {
        let own = latency.saturating_sub(waited);
        // One clock read for the four windows (each read was a visible share, issue 17).
        let now = Instant::now();
        self.window.record_at(latency, now);
        self.own.record_at(own, now);
        self.recent_own.record_at(own, now);
        if !waited.is_zero() {
            self.waits.record_at(waited, now);
        }
        self.recent.answered(own > self.slow_after);
    }

    /// Counts a request refused for this process's own capacity.
    pub fn record_refused(&self) {
        self.recent.refused();
    }

    /// `Some(reason)` when this request should be shed.
    fn admit(&self) -> Option<Reason> {
        self.controller.admit(
            self.reason(),
            self.in_flight.load(Ordering::Relaxed),
            self.limit.load(Ordering::Relaxed),
        )
    }

    /// Readiness: `Ok` when ready, else the JSON reason (`latency`, `shedding` or
    /// `shutting_down`) with the figures.
    pub fn readiness(&self) -> Result<serde_json::Value, serde_json::Value> {
        if self.lifecycle.is_shutting_down() {
            return Err(json!({"status": "unready", "reason": "shutting_down"}));
        }
        let verdict = read(&self.verdict);
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

    /// One refresh: read the signals, ask the controller, store its decisions, publish.
    fn tick(&self) {
        let own = self.own.snapshot();
        let waits = self.waits.snapshot();
        let counts = self.recent.counts();
        write(&self.snapshot, own);
        write(&self.waits_snapshot, waits);
        let unready = {
            let mut verdict = self
                .verdict
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let unready = self.controller.readiness(own, counts, verdict.unready);
            *verdict = Verdict {
                unready,
                own,
                counts,
            };
            unready
        };
        let ready = unready == Unready::No;
        if ready != self.ready.swap(ready, Ordering::Relaxed) {
            tracing::warn!(
                ready,
                reason = ?unready,
                p999_ms = own.p999 * 1e3,
                samples = own.samples,
                shed_ratio = counts.refused_ratio(),
                "readiness changed"
            );
        }

        let delay = Duration::from_micros(self.probe_worst_micros.swap(0, Ordering::Relaxed));
        let rss = process::resident_bytes();
        let reason = self.controller.shed_reason(own, delay, rss);
        let previous = Reason::from_u8(self.reason.swap(reason as u8, Ordering::Relaxed));
        if reason != previous {
            tracing::warn!(
                reason = reason.as_str(),
                p999_ms = own.p999 * 1e3,
                "load shedding changed"
            );
        }

        let peak = self
            .peak_in_flight
            .swap(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        let limit = self.controller.next_limit(
            reason,
            self.limit.load(Ordering::Relaxed),
            peak,
            self.recent_own.snapshot().p99,
        );
        self.limit.store(limit, Ordering::Relaxed);

        self.gauges.publish(&metrics::Tick {
            full: self.window.snapshot(),
            own,
            waits,
            counts,
            ready,
            limit,
            scheduling_delay: delay,
            rss,
        });
    }

    /// Runs the refresh loop and the runtime probe until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let refresh = async {
            let mut interval = tokio::time::interval(TICK);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                self.tick();
            }
        };
        tokio::select! {
            () = stop.cancelled() => {}
            () = signals::probe_runtime(&self.probe_worst_micros) => {}
            () = refresh => {}
        }
    }
}

#[cfg(test)]
mod tests;

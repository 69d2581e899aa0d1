//! A sliding-window latency estimator: p50, p99 and p99.9 over the last
//! `LATENCY_WINDOW_SECS`, rotated in `LATENCY_AGE_BUCKETS` (the semantics of prom-client's
//! Summary with `maxAgeSeconds` and `ageBuckets`, which seed 001 reads its p99.9 from).
//!
//! # Design
//! Recording sits on every request's hot path, from every worker thread. So:
//! - samples go to one of a few *shards* (chosen per thread), each behind its own mutex, so
//!   threads rarely meet on a lock;
//! - each shard keeps a ring of HDR histograms, one per age bucket, tagged with the *epoch*
//!   (bucket number since start) it holds; a sample finds its slot by the current epoch and
//!   clears a slot left over from an older epoch. Nothing rotates in the background, and an
//!   idle window ages out on its own: a bucket whose epoch has passed is simply not read;
//! - reading merges the live buckets of every shard. It costs a few microseconds, so readers
//!   (readiness, shedding, /metrics) use a [`WindowSnapshot`] refreshed a few times a second
//!   rather than merging per request.
//!
//! Values are microseconds with two significant digits (1 % resolution): enough to compare
//! with thresholds of hundreds of milliseconds, and small enough to merge quickly.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// Longest latency recorded without clamping: ten minutes.
const MAX_MICROS: u64 = 600_000_000;
/// Shards: enough that the worker threads of a small pod rarely share one.
const SHARDS: usize = 8;

fn empty() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("static histogram bounds are valid")
}

struct Slot {
    epoch: u64,
    histogram: Histogram<u64>,
}

struct Shard {
    slots: Vec<Slot>,
}

/// The window's quantiles at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowSnapshot {
    /// Samples in the window.
    pub samples: u64,
    /// Median, seconds.
    pub p50: f64,
    /// 99th percentile, seconds.
    pub p99: f64,
    /// 99.9th percentile, seconds.
    pub p999: f64,
}

/// Latencies of the last `window`, in `buckets` age buckets.
pub struct LatencyWindow {
    shards: Vec<Mutex<Shard>>,
    /// An age bucket's length in nanoseconds, so that finding a sample's bucket is one 64-bit
    /// division (a `Duration`'s `as_nanos` is 128-bit, and its division a library call).
    bucket_nanos: u64,
    buckets: u64,
    start: Instant,
}

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

impl LatencyWindow {
    /// A window of `window` rotated in `buckets` age buckets (at least one).
    pub fn new(window: Duration, buckets: u32) -> Self {
        let buckets = buckets.max(1);
        let bucket_len = (window / buckets).max(Duration::from_millis(1));
        let shards = (0..SHARDS)
            .map(|_| {
                let slots = (0..buckets)
                    .map(|_| Slot {
                        epoch: 0,
                        histogram: empty(),
                    })
                    .collect();
                Mutex::new(Shard { slots })
            })
            .collect();
        Self {
            shards,
            bucket_nanos: u64::try_from(bucket_len.as_nanos()).unwrap_or(u64::MAX),
            buckets: u64::from(buckets),
            start: Instant::now(),
        }
    }

    /// The epoch (age-bucket number since start) of now. Epochs start at 1, so a slot's
    /// initial epoch 0 never counts as live.
    fn epoch(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start);
        // u64 nanoseconds last 584 years; a longer uptime stays in the last epoch.
        let elapsed = elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()));
        (elapsed / self.bucket_nanos).min(u64::MAX - 2) + 1
    }

    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        self.record_at(latency, Instant::now());
    }

    /// Records one latency observed at `now`: a caller recording into several windows reads
    /// the clock once for all of them.
    pub fn record_at(&self, latency: Duration, now: Instant) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let epoch = self.epoch(now);
        let index = SHARD.with(|shard| *shard);
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ring = usize::try_from(epoch % self.buckets).unwrap_or(0);
        let slot = &mut shard.slots[ring];
        if slot.epoch != epoch {
            slot.histogram.reset();
            slot.epoch = epoch;
        }
        slot.histogram.saturating_record(micros);
    }

    /// The quantiles over the live age buckets.
    pub fn snapshot(&self) -> WindowSnapshot {
        let now = self.epoch(Instant::now());
        let oldest = now.saturating_sub(self.buckets - 1);
        // Built from the first live bucket with samples: an idle shard or bucket costs a
        // comparison, not a pass over its counts, and an idle window no allocation at all.
        let mut merged: Option<Histogram<u64>> = None;
        for shard in &self.shards {
            let shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for slot in &shard.slots {
                if slot.epoch < oldest || slot.epoch > now || slot.histogram.is_empty() {
                    continue;
                }
                match merged.as_mut() {
                    // Same bounds everywhere, so adding cannot fail.
                    Some(merged) => {
                        let _ = merged.add(&slot.histogram);
                    }
                    None => merged = Some(slot.histogram.clone()),
                }
            }
        }
        let Some(merged) = merged else {
            return WindowSnapshot::default();
        };
        let seconds = |q: f64| merged.value_at_quantile(q) as f64 / 1e6;
        WindowSnapshot {
            samples: merged.len(),
            p50: seconds(0.5),
            p99: seconds(0.99),
            p999: seconds(0.999),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within_one_percent(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= expected * 0.01
    }

    #[tokio::test(start_paused = true)]
    async fn quantiles_of_a_known_distribution() {
        let window = LatencyWindow::new(Duration::from_secs(60), 5);
        // 1 ms .. 1000 ms, 10 samples each.
        for ms in 1..=1_000_u64 {
            for _ in 0..10 {
                window.record(Duration::from_millis(ms));
            }
        }
        let snapshot = window.snapshot();
        assert_eq!(snapshot.samples, 10_000);
        assert!(within_one_percent(snapshot.p50, 0.5), "{snapshot:?}");
        assert!(within_one_percent(snapshot.p99, 0.99), "{snapshot:?}");
        assert!(within_one_percent(snapshot.p999, 0.999), "{snapshot:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn samples_age_out_bucket_by_bucket_without_new_traffic() {
        let window = LatencyWindow::new(Duration::from_secs(60), 5);
        window.record(Duration::from_millis(900));
        tokio::time::advance(Duration::from_secs(30)).await;
        window.record(Duration::from_millis(10));
        assert_eq!(window.snapshot().samples, 2);

        // 60 s after the first sample its bucket has left the window; the second remains.
        tokio::time::advance(Duration::from_secs(31)).await;
        let snapshot = window.snapshot();
        assert_eq!(snapshot.samples, 1);
        assert!(within_one_percent(snapshot.p999, 0.010), "{snapshot:?}");

        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(window.snapshot(), WindowSnapshot::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reused_slot_forgets_its_old_epoch() {
        let window = LatencyWindow::new(Duration::from_secs(10), 2);
        for _ in 0..100 {
            window.record(Duration::from_secs(1));
        }
        // Two whole windows later the same ring slot comes round again.
        tokio::time::advance(Duration::from_secs(20)).await;
        window.record(Duration::from_millis(1));
        let snapshot = window.snapshot();
        assert_eq!(snapshot.samples, 1);
        assert!(snapshot.p999 < 0.01, "{snapshot:?}");
    }

    #[test]
    fn samples_from_many_threads_are_all_counted() {
        let window = std::sync::Arc::new(LatencyWindow::new(Duration::from_secs(60), 5));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let window = std::sync::Arc::clone(&window);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        window.record(Duration::from_micros(300));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("recorder thread");
        }
        assert_eq!(window.snapshot().samples, 40_000);
    }
}

//! What the pressure controller reads: the requests answered, refused and slow over the recent
//! seconds (the shed ratio and whether latency still presses), and the tokio runtime's
//! scheduling delay. The latency windows themselves are [`crate::window`]'s; the process's
//! memory comes from [`super::process`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::TICK;

/// The runtime probe's requested sleep.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

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
pub struct Counts {
    /// Requests answered, refused ones included.
    pub answered: u64,
    /// Refused for this process's own capacity.
    pub refused: u64,
    /// Served, and slower (own time) than the readiness recovery point.
    pub slow: u64,
}

impl Counts {
    /// The refused share of the answered requests (0 with none).
    pub fn refused_ratio(self) -> f64 {
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
pub(super) struct Recent {
    buckets: Vec<Bucket>,
    start: Instant,
}

impl Recent {
    pub(super) fn new(span: Duration) -> Self {
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

    pub(super) fn answered(&self, slow: bool) {
        let bucket = self.bucket();
        bucket.answered.fetch_add(1, Ordering::Relaxed);
        if slow {
            bucket.slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn refused(&self) {
        let bucket = self.bucket();
        bucket.answered.fetch_add(1, Ordering::Relaxed);
        bucket.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn counts(&self) -> Counts {
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

/// Measures how late the runtime wakes a task that asked to sleep [`PROBE_INTERVAL`], and keeps
/// the worst lateness of the last second (four ticks, so one quiet tick does not hide a spike;
/// the mean would hide the spikes that hurt) in `worst_micros`, which each tick takes. Never
/// returns.
pub(super) async fn probe_runtime(worst_micros: &AtomicU64) {
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
            worst_micros.fetch_max(recent.iter().copied().max().unwrap_or(0), Ordering::Relaxed);
            slot = (slot + 1) % recent.len();
            recent[slot] = 0;
            since_tick = Instant::now();
        }
    }
}

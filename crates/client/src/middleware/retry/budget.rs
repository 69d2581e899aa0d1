//! [`RetryBudget`]: how many retries the client may send, priced by how well retries do.
//!
//! A flat budget (Linkerd's: retries may add 20 % to the requests, plus 10 a second) is the
//! wrong shape at both ends. At 50 % failure a call needs about one retry on average to
//! succeed, so a 20 % budget runs dry at any real rate and the calls it no longer saves open
//! the circuit (issue 14 measured 14–16 % of `/fetch` succeeding at 100 req/s). During an
//! outage the same 20 % is pure extra load, since no retry succeeds.
//!
//! Here the budget is earned: every retry that succeeded in the last [`WINDOW`] buys
//! [`RETRIES_PER_SUCCESS`] more, on top of the flat allowance (`RETRY_BUDGET_PERCENT` of the
//! requests of the window plus `RETRY_BUDGET_MIN_PER_SEC` a second). While at least one retry
//! in three succeeds, retries pay for themselves and only `RETRY_MAX_ATTEMPTS` bounds them;
//! when fewer do, they shrink back to the flat allowance, and to nothing once the circuit
//! opens. At 50 % failure each retry earns 1.5 on average, so the budget never binds; at
//! 100 % it earns nothing.
//!
//! The window is short (2 s) so that the price follows the backend: a backend that stops
//! answering is charged the flat allowance within 2 s, one that recovers is trusted again
//! as soon as retries succeed.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How far back requests, retries and successful retries count.
pub const WINDOW: Duration = Duration::from_secs(2);
/// Buckets the window is split into: the window slides in steps of 100 ms.
const BUCKETS: usize = 20;
/// Retries a successful retry pays for: itself and two more, so retries are free while at
/// least a third of them succeed. Two would make 50 % failure the break-even point, exactly
/// where the target sits; three leaves a margin.
pub const RETRIES_PER_SUCCESS: u64 = 3;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which step of time this bucket holds (`elapsed / step`); stale when behind.
    step: u64,
    requests: u64,
    retries: u64,
    succeeded: u64,
}

/// The shared retry budget; one per client.
#[derive(Debug)]
pub struct RetryBudget {
    started: Instant,
    step: Duration,
    /// Retries allowed per window without any request or success.
    reserve: f64,
    /// Share of the window's requests that retries may add.
    ratio: f64,
    buckets: Mutex<[Bucket; BUCKETS]>,
}

/// What the window holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    /// Requests (first attempts).
    pub requests: u64,
    /// Retries sent.
    pub retries: u64,
    /// Retries that succeeded.
    pub succeeded: u64,
}

impl RetryBudget {
    /// A budget of `min_per_sec` retries a second plus `percent` % of the requests, plus
    /// [`RETRIES_PER_SUCCESS`] per retry that succeeded, all over the last [`WINDOW`].
    pub fn new(min_per_sec: u32, percent: f32) -> Self {
        Self {
            started: Instant::now(),
            step: WINDOW / BUCKETS as u32,
            reserve: f64::from(min_per_sec) * WINDOW.as_secs_f64(),
            ratio: f64::from(percent.max(0.0)) / 100.0,
            buckets: Mutex::new([Bucket::default(); BUCKETS]),
        }
    }

    /// Counts a request (its first attempt).
    pub fn deposit(&self) {
        self.update(|bucket| bucket.requests += 1);
    }

    /// Counts a retry that succeeded: it earns [`RETRIES_PER_SUCCESS`] retries.
    pub fn earn(&self) {
        self.update(|bucket| bucket.succeeded += 1);
    }

    /// Takes one retry if the window allows it.
    pub fn withdraw(&self) -> bool {
        let now = self.step_of(Instant::now());
        let mut buckets = self.lock();
        let spent = Self::sum(&buckets, now);
        let allowed = self.reserve
            + self.ratio * spent.requests as f64
            + (RETRIES_PER_SUCCESS * spent.succeeded) as f64;
        if (spent.retries as f64) + 1.0 > allowed {
            return false;
        }
        Self::current(&mut buckets, now).retries += 1;
        true
    }

    /// The window's counts now (for tests and `/status`).
    pub fn spent(&self) -> Spent {
        let now = self.step_of(Instant::now());
        Self::sum(&self.lock(), now)
    }

    fn update(&self, change: impl FnOnce(&mut Bucket)) {
        let now = self.step_of(Instant::now());
        let mut buckets = self.lock();
        change(Self::current(&mut buckets, now));
    }

    fn step_of(&self, at: Instant) -> u64 {
        let elapsed = at.saturating_duration_since(self.started);
        u64::try_from(elapsed.as_nanos() / self.step.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    /// The bucket of step `now`, emptied first if it still holds an older step.
    fn current(buckets: &mut [Bucket; BUCKETS], now: u64) -> &mut Bucket {
        let bucket = &mut buckets[(now % BUCKETS as u64) as usize];
        if bucket.step != now {
            *bucket = Bucket {
                step: now,
                ..Bucket::default()
            };
        }
        bucket
    }

    /// Totals of the buckets still inside the window at step `now`.
    fn sum(buckets: &[Bucket; BUCKETS], now: u64) -> Spent {
        let oldest = now.saturating_sub(BUCKETS as u64 - 1);
        buckets
            .iter()
            .filter(|bucket| bucket.step >= oldest && bucket.step <= now)
            .fold(
                Spent {
                    requests: 0,
                    retries: 0,
                    succeeded: 0,
                },
                |total, bucket| Spent {
                    requests: total.requests + bucket.requests,
                    retries: total.retries + bucket.retries,
                    succeeded: total.succeeded + bucket.succeeded,
                },
            )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Bucket; BUCKETS]> {
        // Counters only: a panic elsewhere cannot leave them in a state worse than stale.
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn withdrawn(budget: &RetryBudget, tries: usize) -> usize {
        (0..tries).filter(|_| budget.withdraw()).count()
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_alone_allows_min_per_sec_over_the_window() {
        let budget = RetryBudget::new(10, 0.0);
        assert_eq!(withdrawn(&budget, 100), 20, "10 a second over 2 s");
        tokio::time::advance(WINDOW).await;
        assert_eq!(withdrawn(&budget, 100), 20, "spent retries age out");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_add_their_percentage() {
        let budget = RetryBudget::new(0, 20.0);
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!(withdrawn(&budget, 100), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn each_successful_retry_pays_for_three() {
        let budget = RetryBudget::new(0, 0.0);
        assert!(!budget.withdraw(), "nothing earned yet");
        budget.earn();
        assert_eq!(withdrawn(&budget, 10), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_that_succeed_half_the_time_are_never_refused() {
        // 50 % failure: of every two retries one succeeds. A small reserve starts it off.
        let budget = RetryBudget::new(1, 0.0);
        let mut refused = 0;
        for n in 0..10_000 {
            if budget.withdraw() {
                if n % 2 == 0 {
                    budget.earn();
                }
            } else {
                refused += 1;
            }
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(refused, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_that_never_succeed_fall_back_to_the_flat_allowance() {
        let budget = RetryBudget::new(10, 20.0);
        let mut allowed = 0;
        // 100 requests a second for 10 s, each wanting a retry that fails.
        for _ in 0..1_000 {
            budget.deposit();
            if budget.withdraw() {
                allowed += 1;
            }
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        // 20 % of 1,000 requests plus 10 a second for 10 s, and the first window's reserve.
        assert!((290..=330).contains(&allowed), "{allowed}");
    }
}

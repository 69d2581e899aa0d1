//! A bulkhead (resilience4j's name): at most `workers` calls run at once, the rest queue. It
//! predicts each arrival's wait and refuses at once when that wait exceeds the budget.
//!
//! # Why predict instead of time out
//! resilience4j's bulkhead lets a call wait up to `maxWaitDuration` and then fails it: under
//! overload every refused call has already waited the whole budget, so refusals are slow and
//! the queue is always full. Knowing how many calls are ahead and how long one takes (an
//! average of recent calls), the wait is known on arrival; the excess is refused in
//! microseconds, and those admitted finish within `max_wait + service time`.
//! Workers stay busy as long as anyone is queued, so goodput stays at capacity.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The bulkhead is full: the predicted wait is over the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bulkhead full: predicted wait {predicted:?}")]
pub struct Full {
    /// The wait this call would have had.
    pub predicted: Duration,
}

/// Bounded concurrency with a predicted-wait admission check.
pub struct Bulkhead {
    permits: Arc<Semaphore>,
    workers: u64,
    waiting: AtomicU64,
    service_micros: AtomicU64,
    max_wait: Option<Duration>,
}

impl Bulkhead {
    /// `workers` at once; `expected` service time until calls have been measured; `max_wait`
    /// `None` queues without limit (only to show what the limit buys).
    pub fn new(workers: usize, expected: Duration, max_wait: Option<Duration>) -> Self {
        let workers = workers.max(1);
        Self {
            permits: Arc::new(Semaphore::new(workers)),
            workers: workers as u64,
            waiting: AtomicU64::new(0),
            service_micros: AtomicU64::new(u64::try_from(expected.as_micros()).unwrap_or(u64::MAX)),
            max_wait,
        }
    }

    /// The wait of a call arriving now behind `ahead` queued calls: it starts after
    /// `ahead / workers + 1` rounds of service (conservative: a running call may be nearly done).
    pub fn predicted_wait(&self, ahead: u64) -> Duration {
        if self.permits.available_permits() > 0 && ahead == 0 {
            return Duration::ZERO;
        }
        let rounds = ahead / self.workers + 1;
        Duration::from_micros(
            self.service_micros
                .load(Ordering::Relaxed)
                .saturating_mul(rounds),
        )
    }

    /// Runs the work `start` creates, once a worker is free, or refuses at once.
    ///
    /// A closure rather than a future, because a future may start its clock when created:
    /// `tokio::time::sleep(d)` fixes its deadline then, and would "finish" while queued.
    pub async fn run<F, W>(&self, start: W) -> Result<F::Output, Full>
    where
        W: FnOnce() -> F,
        F: std::future::Future,
    {
        let ahead = self.waiting.load(Ordering::Relaxed);
        let predicted = self.predicted_wait(ahead);
        if self.max_wait.is_some_and(|max| predicted > max) {
            return Err(Full { predicted });
        }
        let permit = {
            let _queued = Queued::enter(&self.waiting);
            // The semaphore is never closed, so acquiring cannot fail.
            Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(|_| Full { predicted })?
        };
        let started = Instant::now();
        let output = start().await;
        drop(permit);
        // An exponentially weighted mean (α = 1/5) follows changes within a few calls.
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let old = self.service_micros.load(Ordering::Relaxed);
        self.service_micros
            .store((old * 4 + took) / 5, Ordering::Relaxed);
        Ok(output)
    }

    /// Calls queued now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }
}

struct Queued<'a>(&'a AtomicU64);

impl<'a> Queued<'a> {
    fn enter(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_beyond_the_wait_budget_are_refused_at_once_and_the_rest_are_served() {
        // 2 workers, 100 ms per call, 200 ms of queueing allowed.
        let bulkhead = Arc::new(Bulkhead::new(
            2,
            Duration::from_millis(100),
            Some(Duration::from_millis(200)),
        ));
        let mut calls = Vec::new();
        for _ in 0..20 {
            let bulkhead = Arc::clone(&bulkhead);
            calls.push(tokio::spawn(async move {
                let arrived = Instant::now();
                let outcome = bulkhead
                    .run(|| tokio::time::sleep(Duration::from_millis(100)))
                    .await;
                (outcome.is_ok(), arrived.elapsed())
            }));
            tokio::task::yield_now().await;
        }
        let mut served = 0;
        for call in calls {
            let (ok, took) = call.await.expect("call");
            if ok {
                served += 1;
                assert!(
                    took >= Duration::from_millis(100),
                    "a served call holds its worker: {took:?}"
                );
                assert!(
                    took <= Duration::from_millis(300),
                    "served within budget + service: {took:?}"
                );
            } else {
                assert_eq!(took, Duration::ZERO, "refused without waiting");
            }
        }
        // 2 running + 4 queued (ahead 0..3 → 1..2 rounds ≤ 200 ms).
        assert_eq!(served, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_budget_everything_queues() {
        let bulkhead = Arc::new(Bulkhead::new(1, Duration::from_millis(10), None));
        let calls: Vec<_> = (0..10)
            .map(|_| {
                let bulkhead = Arc::clone(&bulkhead);
                tokio::spawn(async move {
                    bulkhead
                        .run(|| tokio::time::sleep(Duration::from_millis(10)))
                        .await
                        .is_ok()
                })
            })
            .collect();
        let started = Instant::now();
        for call in calls {
            assert!(call.await.expect("call"));
        }
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "one worker runs ten 10 ms calls in turn"
        );
    }
}

//! Time a request spends waiting on a dependency (Redis for the backend, the backend for the
//! client), so that readiness, shedding and the HPA can measure the pod itself (issue 14).
//!
//! # Why
//! A request's latency is the pod's own work plus its waits on dependencies. Readiness and
//! shedding that act on the total take every replica out of its Service when a shared
//! dependency is slow, and keep it out while no traffic refreshes the window: seed 004's
//! deep-health-check cascade, by latency instead of by probe. Scaling out on the total adds
//! load to the slow dependency. So [`crate::pressure::GuardLayer`] gives each request a
//! [`DependencyClock`] (a task-local), every dependency call runs inside [`timed`] or
//! [`WaitLayer`], and the guard records `own = total − waited`.
//!
//! # How the time adds up
//! The clock measures the *union* of the intervals during which at least one dependency call
//! was running, not their sum: calls made concurrently (a `join`), or nested (a timed block
//! around timed calls), are counted once, so `waited` never exceeds the request's wall time.
//! A call made outside any request (background tasks, a spawned task the scope did not cross)
//! finds no clock and costs nothing.
//!
//! A task-local does not cross `tokio::spawn`: work spawned by a request must either be timed
//! as a whole by the awaiting request (what the backend's detached append strategies do) or
//! carry the clock in with [`DependencyClock::scope`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service};

tokio::task_local! {
    static CLOCK: DependencyClock;
}

#[derive(Debug, Default)]
struct Running {
    /// Dependency calls running now.
    active: u32,
    /// When `active` last went from 0 to 1.
    since: Option<Instant>,
    /// Closed intervals so far.
    waited: Duration,
}

/// One request's time spent waiting on dependencies; cheap to clone (all clones share it).
#[derive(Debug, Clone, Default)]
pub struct DependencyClock(Arc<Mutex<Running>>);

impl DependencyClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Time waited so far, including a call still running.
    pub fn waited(&self) -> Duration {
        let running = self.lock();
        running.waited
            + running
                .since
                .map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// Runs `work` with this clock as the task's current one.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        CLOCK.scope(self, work).await
    }

    /// [`Self::scope`] as a named future, for a hand-written middleware future to hold.
    pub fn scoped<F: Future>(self, work: F) -> tokio::task::futures::TaskLocalFuture<Self, F> {
        CLOCK.scope(self, work)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        // Plain counters: a panic elsewhere cannot leave them inconsistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enter(&self) -> Waiting {
        let mut running = self.lock();
        if running.active == 0 {
            running.since = Some(Instant::now());
        }
        running.active += 1;
        Waiting(self.clone())
    }
}

/// One dependency call in progress; ends its interval when dropped, so a call whose future is
/// dropped (a timeout, a client that left) stops counting too.
struct Waiting(DependencyClock);

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut running = self.0.lock();
        running.active = running.active.saturating_sub(1);
        if running.active == 0
            && let Some(since) = running.since.take()
        {
            running.waited += since.elapsed();
        }
    }
}

/// The current request's clock, if this task runs inside one.
pub fn current() -> Option<DependencyClock> {
    CLOCK.try_with(Clone::clone).ok()
}

/// Awaits `call`, counting its time as waiting on a dependency for the current request.
pub async fn timed<F: Future>(call: F) -> F::Output {
    let _waiting = current().map(|clock| clock.enter());
    call.await
}

/// Tower layer: every call through the wrapped service counts as waiting on a dependency for
/// the request that makes it. `poll_ready` is not timed: waiting there for capacity (a
/// concurrency limit's permit) is the pod's own queueing.
#[derive(Debug, Clone, Copy, Default)]
pub struct WaitLayer;

impl<S> Layer<S> for WaitLayer {
    type Service = Wait<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Wait(inner)
    }
}

/// The service [`WaitLayer`] makes.
#[derive(Debug, Clone)]
pub struct Wait<S>(S);

impl<S, Request> Service<Request> for Wait<S>
where
    S: Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = WaitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // Read here, in the caller's task: the returned future may be polled elsewhere.
        let waiting = current().map(|clock| clock.enter());
        WaitFuture {
            inner: self.0.call(request),
            waiting,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner call, counted as waiting until it completes or is dropped.
    ///
    /// A named future rather than a boxed `async` block: the box moved the whole stack's
    /// future to the heap on every backend call (issue 17).
    pub struct WaitFuture<F> {
        #[pin]
        inner: F,
        waiting: Option<Waiting>,
    }
}

impl<F: Future> Future for WaitFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        // The interval ends with the call, as it did when the guard lived in an async block.
        this.waiting.take();
        Poll::Ready(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleep(ms: u64) -> tokio::time::Sleep {
        tokio::time::sleep(Duration::from_millis(ms))
    }

    /// How long `request` waited on dependencies, run as one request in its own clock.
    async fn waited_in(request: impl Future<Output = ()>) -> Duration {
        let clock = DependencyClock::new();
        clock.clone().scope(request).await;
        clock.waited()
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_call_counts_and_the_rest_does_not() {
        let waited = waited_in(async {
            sleep(30).await;
            timed(sleep(100)).await;
            sleep(20).await;
        })
        .await;
        assert_eq!(waited, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_and_nested_calls_count_once() {
        let waited = waited_in(async {
            // 0-100 and 50-150 overlap: 150 ms of waiting, not 200.
            tokio::join!(timed(sleep(100)), async {
                sleep(50).await;
                timed(sleep(100)).await;
            });
            // A timed block around timed calls: 60 ms, not 120.
            timed(async {
                timed(sleep(30)).await;
                timed(sleep(30)).await;
            })
            .await;
        })
        .await;
        assert_eq!(waited, Duration::from_millis(210));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_call_stops_counting() {
        let waited = waited_in(async {
            let _ = tokio::time::timeout(Duration::from_millis(40), timed(sleep(1_000))).await;
            sleep(500).await;
        })
        .await;
        assert_eq!(waited, Duration::from_millis(40));
    }

    #[tokio::test(start_paused = true)]
    async fn outside_a_request_nothing_is_counted_and_spawned_work_needs_the_scope() {
        assert!(current().is_none());
        timed(sleep(10)).await;
        let waited = waited_in(async {
            // The task-local does not cross spawn...
            tokio::spawn(timed(sleep(10))).await.expect("task");
            // ...unless the clock is carried in.
            let carried = current().expect("in scope");
            tokio::spawn(carried.scope(timed(sleep(25))))
                .await
                .expect("task");
        })
        .await;
        assert_eq!(waited, Duration::from_millis(25));
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_times_calls_not_readiness() {
        use tower::{ServiceBuilder, ServiceExt};
        let service = ServiceBuilder::new()
            .layer(WaitLayer)
            .service_fn(|ms: u64| async move {
                sleep(ms).await;
                Ok::<_, std::convert::Infallible>(ms)
            });
        let clock = DependencyClock::new();
        let answer = clock.clone().scope(service.oneshot(70)).await;
        assert_eq!(answer.ok(), Some(70));
        assert_eq!(clock.waited(), Duration::from_millis(70));
    }
}

//! [`RetryWithin`]: the retries of one call and its total deadline, with no deadline timer
//! while the first attempt is the only one.
//!
//! # Why not `tower::timeout` around `tower::retry`
//! That pair, with the per-attempt timeout below it, gave every call two tokio timers, each
//! registered and removed under the timer driver's lock, which two workers contend for (the
//! largest source of futex calls in a profile of `/fetch`, issue 17). But while the first
//! attempt is in flight its own timeout (`BACKEND_TIMEOUT_MS`, started with the call) ends it
//! before the deadline whenever that timeout is the shorter, as it is by default (3 s against
//! 5 s). So the deadline timer is armed only when the call goes on past its first attempt (a
//! retry's wait, its turn for a backend permit, the attempts after), or from the start when
//! the attempt timeout is the longer. Most calls never need it.
//!
//! When it fires, the call ends with [`Elapsed`], as `tower::timeout` ended it, and what is
//! in flight (an attempt, a wait) is dropped with it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tokio::time::{Instant, Sleep};
use tower::retry::Policy;
use tower::timeout::error::Elapsed;
use tower::{BoxError, Layer, Service};

use super::policy::{RetryPolicy, RetryWait};

/// Layer for [`RetryWithin`].
#[derive(Clone)]
pub struct RetryWithinLayer {
    policy: RetryPolicy,
    deadline: Duration,
    first_attempt_bounded: bool,
}

impl RetryWithinLayer {
    /// Retries by `policy` within `deadline` in all; `attempt_timeout` is the timeout of each
    /// attempt below this layer (which must have one).
    pub fn new(policy: RetryPolicy, deadline: Duration, attempt_timeout: Duration) -> Self {
        Self {
            policy,
            deadline,
            first_attempt_bounded: attempt_timeout <= deadline,
        }
    }
}

impl<S> Layer<S> for RetryWithinLayer {
    type Service = RetryWithin<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryWithin {
            policy: self.policy.clone(),
            service: inner,
            deadline: self.deadline,
            first_attempt_bounded: self.first_attempt_bounded,
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct RetryWithin<S> {
    policy: RetryPolicy,
    service: S,
    deadline: Duration,
    /// The attempt timeout below is no longer than the deadline.
    first_attempt_bounded: bool,
}

impl<S> Service<Request<Bytes>> for RetryWithin<S>
where
    S: Service<Request<Bytes>, Response = Response<Bytes>, Error = BoxError> + Clone,
{
    type Response = Response<Bytes>;
    type Error = BoxError;
    type Future = RetryCall<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let ends = Instant::now() + self.deadline;
        // A policy per call: it counts the call's attempts.
        let mut policy = self.policy.clone();
        let copy = policy.clone_request(&request);
        let first = self.service.call(request);
        let mut call = RetryCall {
            request: copy,
            // A clone for the retries: it takes its own backend permit before each of them.
            service: self.service.clone(),
            policy,
            state: State::Called { future: first },
            ends,
            deadline: None,
        };
        if !self.first_attempt_bounded {
            arm(&mut call.deadline, ends);
        }
        call
    }
}

pin_project_lite::pin_project! {
    /// One call: its attempts, the waits between them, and the deadline once armed.
    pub struct RetryCall<S: Service<Request<Bytes>>> {
        request: Option<Request<Bytes>>,
        service: S,
        policy: RetryPolicy,
        #[pin]
        state: State<S::Future>,
        ends: Instant,
        // Boxed: armed on few calls, so most futures stay smaller without it.
        deadline: Option<Pin<Box<Sleep>>>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        /// An attempt in flight.
        Called { #[pin] future: F },
        /// The wait before a retry.
        Waiting { wait: RetryWait },
        /// Waiting for the service (a backend permit) before the retry.
        Retrying,
    }
}

/// Starts the deadline's timer, unless it runs already.
fn arm(deadline: &mut Option<Pin<Box<Sleep>>>, ends: Instant) {
    if deadline.is_none() {
        *deadline = Some(Box::pin(tokio::time::sleep_until(ends)));
    }
}

impl<S> Future for RetryCall<S>
where
    S: Service<Request<Bytes>, Response = Response<Bytes>, Error = BoxError>,
{
    type Output = Result<Response<Bytes>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let Poll::Ready(mut result) = future.poll(cx) else {
                        break;
                    };
                    let Some(request) = this.request.as_mut() else {
                        return Poll::Ready(result);
                    };
                    let Some(wait) = this.policy.retry(request, &mut result) else {
                        return Poll::Ready(result);
                    };
                    // Past the first attempt: from here on only the deadline bounds the call.
                    arm(this.deadline, *this.ends);
                    this.state.set(State::Waiting { wait });
                }
                StateProj::Waiting { wait } => {
                    if wait.as_mut().poll(cx).is_pending() {
                        break;
                    }
                    this.state.set(State::Retrying);
                }
                StateProj::Retrying => {
                    match this.service.poll_ready(cx) {
                        Poll::Pending => break,
                        Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                        Poll::Ready(Ok(())) => {}
                    }
                    let Some(request) = this.request.take() else {
                        // Not reached: a retry is only decided with a copy in hand.
                        return Poll::Ready(Err("retry without a request".into()));
                    };
                    *this.request = this.policy.clone_request(&request);
                    let future = this.service.call(request);
                    this.state.set(State::Called { future });
                }
            }
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(Elapsed::new().into()));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tower::ServiceExt;

    use super::*;
    use crate::middleware::circuit_breaker::{Breaker, BreakerConfig};
    use crate::middleware::outcome::BackendOutcome;
    use crate::middleware::retry::{RetryConfig, RetryMetrics};

    fn policy(max_attempts: u32, wait: Duration) -> RetryPolicy {
        let config = RetryConfig {
            max_attempts,
            base: wait,
            max: wait,
            jitter: false,
        };
        let breaker = Arc::new(Breaker::new(BreakerConfig::default()));
        RetryPolicy::new(config, 100, 100.0, RetryMetrics::default(), breaker)
    }

    /// A backend whose every attempt answers 503 after `answer_after`, counting attempts.
    fn failing(
        answer_after: Duration,
        attempts: Arc<AtomicU32>,
    ) -> impl Service<
        Request<Bytes>,
        Response = Response<Bytes>,
        Error = BoxError,
        Future = impl Future<Output = Result<Response<Bytes>, BoxError>> + Send,
    > + Clone {
        tower::service_fn(move |_request: Request<Bytes>| {
            attempts.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::time::sleep(answer_after).await;
                let mut response = Response::new(Bytes::new());
                *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                Ok::<_, BoxError>(response)
            }
        })
    }

    fn get() -> Request<Bytes> {
        Request::get("/data").body(Bytes::new()).expect("a request")
    }

    fn is_deadline(result: &Result<Response<Bytes>, BoxError>) -> bool {
        matches!(
            BackendOutcome::of(result.as_ref()),
            BackendOutcome::Deadline
        )
    }

    /// One call through `layer` to a backend failing each attempt after `answer_after`: its
    /// result, how long it took (paused time) and the attempts made.
    async fn call(
        layer: RetryWithinLayer,
        answer_after: Duration,
    ) -> (Result<Response<Bytes>, BoxError>, Duration, u32) {
        let attempts = Arc::new(AtomicU32::new(0));
        let service = layer.layer(failing(answer_after, Arc::clone(&attempts)));
        let started = Instant::now();
        let result = service.oneshot(get()).await;
        (result, started.elapsed(), attempts.load(Ordering::Relaxed))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_past_the_first_attempt_are_cut_at_the_deadline() {
        // Each attempt fails after 400 ms and each wait is 300 ms: attempts start at 0, 0.7,
        // 1.4 and 2.1 s, so a 2 s deadline ends the call during the wait after the third.
        let layer = RetryWithinLayer::new(
            policy(10, Duration::from_millis(300)),
            Duration::from_secs(2),
            Duration::from_secs(1),
        );
        let (result, took, attempts) = call(layer, Duration::from_millis(400)).await;
        assert!(is_deadline(&result), "{:?}", result.map(|r| r.status()));
        assert_eq!(took, Duration::from_secs(2));
        assert_eq!(attempts, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_attempt_longer_than_the_deadline_is_cut_at_the_deadline() {
        // No attempt timeout below shorter than the deadline: the deadline is armed at once.
        let layer = RetryWithinLayer::new(
            policy(3, Duration::ZERO),
            Duration::from_secs(2),
            Duration::from_secs(10),
        );
        let (result, took, attempts) = call(layer, Duration::from_secs(60)).await;
        assert!(is_deadline(&result), "{:?}", result.map(|r| r.status()));
        assert_eq!(took, Duration::from_secs(2));
        assert_eq!(attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_within_the_deadline_ends_with_its_last_answer() {
        // The defaults' shape: an attempt timeout (3 s) shorter than the deadline (5 s).
        let layer = RetryWithinLayer::new(
            policy(3, Duration::from_millis(100)),
            Duration::from_secs(5),
            Duration::from_secs(3),
        );
        let (result, _, attempts) = call(layer, Duration::from_millis(10)).await;
        let status = result.expect("an answer").status();
        assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(attempts, 3);
    }
}

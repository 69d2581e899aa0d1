//! The [`tower::Service`] that guards an inner service with a [`Breaker`].

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{BoxError, Service};

use super::classify::Classify;
use super::future::ResponseFuture;
use super::state::Breaker;

/// Refuses calls at once while the shared [`Breaker`] is open, and records the outcome of
/// the calls it lets through, as the classifier `C` judges them.
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S, C> {
    inner: S,
    breaker: Arc<Breaker>,
    classifier: C,
}

impl<S, C> CircuitBreaker<S, C> {
    /// Guards `inner` with `breaker`; clones share the breaker.
    pub fn new(inner: S, breaker: Arc<Breaker>, classifier: C) -> Self {
        Self {
            inner,
            breaker,
            classifier,
        }
    }

    /// The shared state.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    /// The inner service's readiness only: an open circuit is not an unready service (see
    /// the module docs, "Why reject in call, not in poll_ready").
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let now = Instant::now();
        match self.breaker.try_acquire(now) {
            Ok(permit) => ResponseFuture::called(
                self.inner.call(request),
                permit,
                now,
                self.classifier.clone(),
            ),
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http::{Response, StatusCode};
    use tower::{Layer, ServiceExt, service_fn};

    use super::*;
    use crate::middleware::circuit_breaker::{
        BreakerConfig, CircuitBreakerLayer, CircuitOpen, HttpClassifier, Outcome, State,
    };

    type Backend = tower::util::BoxCloneService<(), Response<()>, Infallible>;

    /// A backend answering `status` after `delay`, counting the calls it receives.
    fn backend(status: StatusCode, delay: Duration, calls: &Arc<AtomicUsize>) -> Backend {
        let calls = Arc::clone(calls);
        tower::util::BoxCloneService::new(service_fn(move |()| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(delay).await;
                let response = Response::builder()
                    .status(status)
                    .body(())
                    .expect("valid status");
                Ok::<_, Infallible>(response)
            }
        }))
    }

    fn guard(
        status: StatusCode,
        delay: Duration,
        config: BreakerConfig,
    ) -> (CircuitBreaker<Backend, HttpClassifier>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::new(Arc::new(Breaker::new(config)), HttpClassifier);
        (layer.layer(backend(status, delay, &calls)), calls)
    }

    async fn fetch(
        service: &CircuitBreaker<Backend, HttpClassifier>,
    ) -> Result<StatusCode, BoxError> {
        service
            .clone()
            .oneshot(())
            .await
            .map(|response| response.status())
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_fails_the_call_at_once_without_calling_the_inner_service() {
        let (service, calls) = guard(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_millis(100),
            BreakerConfig::default(),
        );
        for _ in 0..3 {
            assert_eq!(
                fetch(&service).await.ok(),
                Some(StatusCode::SERVICE_UNAVAILABLE)
            );
        }
        assert_eq!(service.breaker().state(), State::Open);

        let started = Instant::now();
        let error = fetch(&service).await.expect_err("refused");
        assert!(error.downcast_ref::<CircuitOpen>().is_some(), "{error}");
        assert_eq!(started.elapsed(), Duration::ZERO, "no wait at all");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "the backend never saw it");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_still_reports_ready() {
        let (mut service, _calls) = guard(
            StatusCode::INTERNAL_SERVER_ERROR,
            Duration::ZERO,
            BreakerConfig::default(),
        );
        for _ in 0..3 {
            let _ = fetch(&service).await;
        }
        assert_eq!(service.breaker().state(), State::Open);
        let ready = service.ready().await.map(|_| ());
        assert!(ready.is_ok(), "poll_ready follows the inner service only");
    }

    #[tokio::test(start_paused = true)]
    async fn the_state_is_shared_across_clones() {
        let (service, _calls) = guard(
            StatusCode::BAD_GATEWAY,
            Duration::ZERO,
            BreakerConfig::default(),
        );
        let clones = [service.clone(), service.clone(), service.clone()];
        for clone in &clones {
            let _ = fetch(clone).await;
        }
        assert_eq!(service.breaker().state(), State::Open);
        assert!(fetch(&service).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_never_open_the_circuit() {
        let (service, calls) = guard(
            StatusCode::NOT_FOUND,
            Duration::ZERO,
            BreakerConfig::default(),
        );
        for _ in 0..50 {
            assert_eq!(fetch(&service).await.ok(), Some(StatusCode::NOT_FOUND));
        }
        assert_eq!(service.breaker().state(), State::Closed);
        assert_eq!(calls.load(Ordering::SeqCst), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn the_elapsed_time_of_the_inner_call_makes_it_slow() {
        let config = BreakerConfig {
            slow_call_rate: 0.5,
            ..BreakerConfig::default()
        };
        let (service, _calls) = guard(StatusCode::OK, Duration::from_secs(3), config);
        for _ in 0..10 {
            assert_eq!(fetch(&service).await.ok(), Some(StatusCode::OK));
        }
        assert_eq!(service.breaker().state(), State::Open);
        assert_eq!(service.breaker().snapshot().window_slow_rate, 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn after_open_for_a_trial_call_reaches_the_backend_and_closes_the_circuit() {
        let calls = Arc::new(AtomicUsize::new(0));
        let breaker = Arc::new(Breaker::new(BreakerConfig::default()));
        let layer = CircuitBreakerLayer::new(Arc::clone(&breaker), HttpClassifier);
        let failing = layer.layer(backend(
            StatusCode::INTERNAL_SERVER_ERROR,
            Duration::ZERO,
            &calls,
        ));
        for _ in 0..3 {
            let _ = fetch(&failing).await;
        }
        // The backend recovers; a new service from the same layer shares the state.
        let healthy = layer.layer(backend(StatusCode::OK, Duration::ZERO, &calls));
        assert!(fetch(&healthy).await.is_err(), "still open");

        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(fetch(&healthy).await.ok(), Some(StatusCode::OK));
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_response_future_releases_the_half_open_slot() {
        // Each call takes a second, so the trial below is still in flight after one poll.
        let (service, calls) = guard(
            StatusCode::INTERNAL_SERVER_ERROR,
            Duration::from_secs(1),
            BreakerConfig::default(),
        );
        for _ in 0..3 {
            let _ = fetch(&service).await;
        }
        tokio::time::advance(Duration::from_secs(15)).await;

        // A trial call cancelled by its caller (a total deadline, a client gone away).
        let mut trial = Box::pin(service.clone().oneshot(()));
        let pending = std::future::poll_fn(|cx| Poll::Ready(trial.as_mut().poll(cx).is_pending()));
        assert!(pending.await, "the trial is in flight");
        assert_eq!(service.breaker().state(), State::HalfOpen);
        assert!(fetch(&service).await.is_err(), "the only slot is taken");
        drop(trial);

        assert_eq!(
            fetch(&service).await.ok(),
            Some(StatusCode::INTERNAL_SERVER_ERROR),
            "the slot is free again"
        );
        assert_eq!(
            service.breaker().state(),
            State::Open,
            "and the trial failed"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn inner_errors_are_boxed_and_count_as_failures() {
        let breaker = Arc::new(Breaker::new(BreakerConfig::default()));
        let classifier = |result: Result<&(), &BoxError>| {
            if result.is_ok() {
                Outcome::Success
            } else {
                Outcome::Failure
            }
        };
        let inner = service_fn(|()| async { Err::<(), _>(std::io::Error::other("refused")) });
        let service = CircuitBreakerLayer::new(Arc::clone(&breaker), classifier).layer(inner);
        for _ in 0..3 {
            let error = service.clone().oneshot(()).await.expect_err("inner error");
            assert_eq!(error.to_string(), "refused");
        }
        assert_eq!(breaker.state(), State::Open);
    }
}

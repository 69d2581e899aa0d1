//! [`OpenGate`]: refuses attempts while the circuit is open, recording nothing.
//!
//! The breaker judges calls once, outside the retry (see `backend::stack`), so it cannot
//! stop the retries of a call it has already admitted. This gate sits inside the retry and
//! fails an attempt at once with [`CircuitOpen`] while the shared breaker is open: a retry
//! woken from its backoff by the circuit opening ends there, and the retry policy never
//! retries a [`CircuitOpen`]. It decides nothing about the circuit: the call's outcome is
//! the breaker's to record, once.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use tower::{BoxError, Layer, Service};

use super::error::CircuitOpen;
use super::state::{Breaker, State};

/// Wraps a service in an [`OpenGate`].
#[derive(Debug, Clone)]
pub struct OpenGateLayer {
    breaker: Arc<Breaker>,
}

impl OpenGateLayer {
    /// A gate on `breaker`'s state.
    pub fn new(breaker: Arc<Breaker>) -> Self {
        Self { breaker }
    }
}

impl<S> Layer<S> for OpenGateLayer {
    type Service = OpenGate<S>;

    fn layer(&self, inner: S) -> OpenGate<S> {
        OpenGate {
            inner,
            breaker: Arc::clone(&self.breaker),
        }
    }
}

/// Calls the inner service unless the circuit is open.
#[derive(Debug, Clone)]
pub struct OpenGate<S> {
    inner: S,
    breaker: Arc<Breaker>,
}

impl<S, Req> Service<Req> for OpenGate<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Either<
        futures_util::future::MapErr<S::Future, fn(S::Error) -> BoxError>,
        Ready<Result<S::Response, BoxError>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        use futures_util::TryFutureExt;
        if self.breaker.state() == State::Open {
            return Either::Right(ready(Err(Box::new(CircuitOpen))));
        }
        Either::Left(
            self.inner
                .call(request)
                .map_err(Into::into as fn(S::Error) -> BoxError),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::time::Instant;
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::middleware::circuit_breaker::{BreakerConfig, Outcome};

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_stops_the_attempt_before_the_backend_and_records_nothing() {
        let breaker = Arc::new(Breaker::new(BreakerConfig::default()));
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let gate = OpenGateLayer::new(Arc::clone(&breaker)).layer(service_fn(move |()| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(()) }
        }));

        assert!(gate.clone().oneshot(()).await.is_ok(), "closed: passes");
        for _ in 0..3 {
            let now = Instant::now();
            breaker
                .try_acquire(now)
                .expect("closed")
                .record(Outcome::Failure, Duration::ZERO, now);
        }
        let refused = gate.clone().oneshot(()).await.expect_err("open: refused");

        assert!(refused.is::<CircuitOpen>());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            breaker.snapshot().transitions,
            1,
            "the gate decides nothing"
        );
    }
}

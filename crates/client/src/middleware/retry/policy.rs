//! [`RetryPolicy`]: which failures are retried, how long to wait, and the shared budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tower::BoxError;

use super::budget::RetryBudget;
use crate::middleware::circuit_breaker::{Breaker, State};
use crate::middleware::outcome::BackendOutcome;

/// Retry settings.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Backoff base.
    pub base: Duration,
    /// Longest wait, also the cap on `Retry-After`.
    pub max: Duration,
    /// Randomise waits (off only in tests, for determinism).
    pub jitter: bool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Retry counters, by reason.
#[derive(Clone, Default)]
pub struct RetryMetrics {
    retries: Family<ReasonLabel, Counter>,
    budget_exhausted: Counter,
}

impl RetryMetrics {
    /// Creates and registers the counters.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "client_retries",
            "Retries of backend calls, by reason",
            metrics.retries.clone(),
        );
        registry.register(
            "client_retry_budget_exhausted",
            "Retries refused because the retry budget was spent",
            metrics.budget_exhausted.clone(),
        );
        metrics
    }
}

/// The policy; tower clones it for every request, so `attempt` is per request while the
/// budget and the breaker are shared.
#[derive(Clone)]
pub struct RetryPolicy {
    config: Arc<RetryConfig>,
    budget: Arc<RetryBudget>,
    breaker: Arc<Breaker>,
    metrics: RetryMetrics,
    attempt: u32,
}

/// The wait before a retry: the backoff, cut short when the circuit opens.
pub type RetryWait = Pin<Box<dyn Future<Output = ()> + Send>>;

impl RetryPolicy {
    /// A policy with a budget of `min_per_sec` retries per second plus `percent` % of the
    /// requests, plus what successful retries earn (see [`RetryBudget`]); `breaker` is the
    /// circuit the calls go through, whose opening stops retries in flight.
    pub fn new(
        config: RetryConfig,
        min_per_sec: u32,
        percent: f32,
        metrics: RetryMetrics,
        breaker: Arc<Breaker>,
    ) -> Self {
        Self {
            config: Arc::new(config),
            budget: Arc::new(RetryBudget::new(min_per_sec, percent)),
            breaker,
            metrics,
            attempt: 0,
        }
    }

    /// The shared budget.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }

    /// The wait before retry number `retry` (0-based), or what the server asked for.
    pub fn wait(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.config.max);
        }
        let ceiling = self
            .config
            .base
            .saturating_mul(1_u32 << retry.min(20))
            .min(self.config.max);
        if self.config.jitter {
            ceiling.mul_f64(fastrand::f64())
        } else {
            ceiling
        }
    }
}

/// True when sending `request` twice cannot write twice.
pub fn is_retry_safe<B>(request: &Request<B>) -> bool {
    match *request.method() {
        Method::GET
        | Method::HEAD
        | Method::OPTIONS
        | Method::PUT
        | Method::DELETE
        | Method::TRACE => true,
        Method::POST | Method::PATCH => request.headers().contains_key("idempotency-key"),
        _ => false,
    }
}

/// Sleeps `wait`, or less if the circuit opens meanwhile: the retry then meets the
/// [`OpenGate`](crate::middleware::circuit_breaker::OpenGate), which refuses it, instead of
/// calling a backend the breaker has given up on.
fn wait_unless_opened(breaker: &Breaker, wait: Duration) -> RetryWait {
    let state = breaker.subscribe();
    Box::pin(async move {
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        tokio::select! {
            () = &mut sleep => {}
            watched = opened(state) => {
                // The breaker outlives every policy; should its sender be gone, just wait.
                if !watched {
                    sleep.await;
                }
            }
        }
    })
}

/// Resolves to true once the circuit is open, or to false if the breaker is gone.
async fn opened(mut state: tokio::sync::watch::Receiver<State>) -> bool {
    loop {
        if *state.borrow_and_update() == State::Open {
            return true;
        }
        if state.changed().await.is_err() {
            return false;
        }
    }
}

impl tower::retry::Policy<Request<Bytes>, Response<Bytes>, BoxError> for RetryPolicy {
    type Future = RetryWait;

    fn retry(
        &mut self,
        request: &mut Request<Bytes>,
        result: &mut Result<Response<Bytes>, BoxError>,
    ) -> Option<Self::Future> {
        if self.attempt == 0 {
            // One deposit per request: retries may add a share of the requests made.
            self.budget.deposit();
        }
        let outcome = BackendOutcome::of(result.as_ref());
        if self.attempt > 0 && outcome.is_success() {
            // This retry saved its call: what makes retrying worth its price.
            self.budget.earn();
        }
        if !outcome.is_retryable()
            || !is_retry_safe(request)
            || self.attempt + 1 >= self.config.max_attempts
        {
            return None;
        }
        if self.breaker.state() == State::Open {
            // Every call now fails at once; this one would only add load to a backend the
            // breaker has given up on.
            return None;
        }
        if !self.budget.withdraw() {
            self.metrics.budget_exhausted.inc();
            return None;
        }
        let wait = self.wait(self.attempt, outcome.retry_after());
        let reason = outcome.label();
        self.attempt += 1;
        self.metrics
            .retries
            .get_or_create(&ReasonLabel { reason })
            .inc();
        tracing::debug!(
            reason,
            attempt = self.attempt,
            wait_ms = wait.as_millis(),
            "retrying a backend call"
        );
        Some(wait_unless_opened(&self.breaker, wait))
    }

    fn clone_request(&mut self, request: &Request<Bytes>) -> Option<Request<Bytes>> {
        // Bodies are buffered Bytes, so a clone is cheap; extensions are not needed below.
        let mut clone = Request::new(request.body().clone());
        *clone.method_mut() = request.method().clone();
        *clone.uri_mut() = request.uri().clone();
        *clone.headers_mut() = request.headers().clone();
        Some(clone)
    }
}

#[cfg(test)]
mod tests;

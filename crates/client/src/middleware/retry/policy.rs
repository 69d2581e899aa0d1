//! [`RetryPolicy`]: which failures are retried, how long to wait, and the shared budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tower::BoxError;

use super::budget::RetryBudget;
use crate::middleware::circuit_breaker::{
    Breaker, CircuitOpen, Classify, HttpClassifier, Outcome, State,
};

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

/// Why a result may be retried; `None` when it must not be.
fn transient<B>(
    result: &Result<Response<B>, BoxError>,
) -> Option<(&'static str, Option<Duration>)> {
    match result {
        Ok(response) => {
            let reason = match response.status() {
                StatusCode::TOO_MANY_REQUESTS => "status_429",
                // A 500 is retried too (as Envoy's `5xx` and Polly's transient-error rule do):
                // seed 002's fault injection answers 500, and an idempotent request that met a
                // passing fault deserves a second try. A 500 that is a deterministic bug cannot
                // run up the load: its retries never succeed, so they earn no budget and stay
                // within the flat allowance.
                StatusCode::INTERNAL_SERVER_ERROR => "status_500",
                StatusCode::BAD_GATEWAY => "status_502",
                StatusCode::SERVICE_UNAVAILABLE => "status_503",
                StatusCode::GATEWAY_TIMEOUT => "status_504",
                _ => return None,
            };
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(parse_retry_after);
            Some((reason, retry_after))
        }
        Err(err) if err.is::<CircuitOpen>() => None,
        Err(err) if err.is::<tower::timeout::error::Elapsed>() => Some(("timeout", None)),
        Err(err) => match err.downcast_ref::<reqwest::Error>() {
            Some(err) if err.is_connect() => Some(("connect", None)),
            Some(err) if err.is_timeout() => Some(("timeout", None)),
            _ => Some(("transport", None)),
        },
    }
}

/// `Retry-After` in seconds (HTTP dates are not worth their parsing here).
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    value
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
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
        } else if HttpClassifier.classify(result.as_ref()) == Outcome::Success {
            // This retry saved its call: what makes retrying worth its price.
            self.budget.earn();
        }
        let (reason, retry_after) = transient(result)?;
        if !is_retry_safe(request) || self.attempt + 1 >= self.config.max_attempts {
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
        let wait = self.wait(self.attempt, retry_after);
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
mod tests {
    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        let config = RetryConfig {
            max_attempts,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter: false,
        };
        RetryPolicy::new(config, 10, 20.0, RetryMetrics::default(), closed_breaker())
    }

    fn closed_breaker() -> Arc<Breaker> {
        Arc::new(Breaker::new(
            crate::middleware::circuit_breaker::BreakerConfig::default(),
        ))
    }

    /// Opens `breaker` with the seed's three consecutive failures.
    fn open(breaker: &Arc<Breaker>) {
        for _ in 0..3 {
            let now = tokio::time::Instant::now();
            breaker
                .try_acquire(now)
                .expect("closed")
                .record(Outcome::Failure, Duration::ZERO, now);
        }
        assert_eq!(breaker.state(), State::Open);
    }

    fn get() -> Request<Bytes> {
        Request::get("/data").body(Bytes::new()).expect("request")
    }

    fn answer(status: u16) -> Result<Response<Bytes>, BoxError> {
        Ok(Response::builder()
            .status(status)
            .body(Bytes::new())
            .expect("response"))
    }

    #[test]
    fn waits_double_up_to_the_cap_without_jitter() {
        let policy = policy(5);
        let waits: Vec<u128> = (0..5).map(|n| policy.wait(n, None).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1_000]);
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        let policy = policy(5);
        assert_eq!(
            policy.wait(0, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
        assert_eq!(
            policy.wait(0, Some(Duration::from_secs(60))),
            Duration::from_secs(1)
        );
    }

    #[tokio::test]
    async fn transient_statuses_are_retried_and_other_4xx_are_not() {
        use tower::retry::Policy;
        for (status, retried) in [
            (503, true),
            (502, true),
            (504, true),
            (429, true),
            (500, true),
            (501, false),
            (404, false),
            (400, false),
            (200, false),
        ] {
            let mut policy = policy(3);
            let mut result = answer(status);
            assert_eq!(
                policy.retry(&mut get(), &mut result).is_some(),
                retried,
                "{status}"
            );
        }
    }

    #[tokio::test]
    async fn a_post_is_retried_only_with_an_idempotency_key() {
        use tower::retry::Policy;
        let mut bare = Request::post("/api/messages")
            .body(Bytes::new())
            .expect("request");
        let mut keyed = Request::post("/api/messages")
            .header("idempotency-key", "k")
            .body(Bytes::new())
            .expect("request");
        assert!(policy(3).retry(&mut bare, &mut answer(503)).is_none());
        assert!(policy(3).retry(&mut keyed, &mut answer(503)).is_some());
    }

    #[tokio::test]
    async fn attempts_stop_at_the_maximum() {
        use tower::retry::Policy;
        let mut policy = policy(3);
        assert!(policy.retry(&mut get(), &mut answer(503)).is_some());
        assert!(policy.retry(&mut get(), &mut answer(503)).is_some());
        assert!(
            policy.retry(&mut get(), &mut answer(503)).is_none(),
            "three attempts in all"
        );
    }

    #[tokio::test]
    async fn an_open_circuit_is_never_retried() {
        use tower::retry::Policy;
        let mut result: Result<Response<Bytes>, BoxError> = Err(Box::new(CircuitOpen));
        assert!(policy(3).retry(&mut get(), &mut result).is_none());
    }

    #[tokio::test]
    async fn the_budget_caps_retries_across_requests() {
        use tower::retry::Policy;
        // 0 per second and 0 %: nothing to spend once the initial reserve is gone.
        let config = RetryConfig {
            max_attempts: 10,
            base: Duration::ZERO,
            max: Duration::ZERO,
            jitter: false,
        };
        let shared = RetryPolicy::new(config, 0, 0.0, RetryMetrics::default(), closed_breaker());
        let retried = (0..100)
            .filter(|_| shared.clone().retry(&mut get(), &mut answer(503)).is_some())
            .count();
        assert_eq!(retried, 0, "an empty budget refuses every retry");
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_retry_earns_budget_and_a_failed_one_does_not() {
        use tower::retry::Policy;
        let config = RetryConfig {
            max_attempts: 10,
            base: Duration::ZERO,
            max: Duration::ZERO,
            jitter: false,
        };
        let shared = RetryPolicy::new(config, 0, 0.0, RetryMetrics::default(), closed_breaker());
        // A first attempt that succeeds earns nothing; a retry that succeeds does.
        assert!(shared.clone().retry(&mut get(), &mut answer(200)).is_none());
        assert_eq!(shared.budget().spent().succeeded, 0);
        let mut saved = shared.clone();
        saved.attempt = 1;
        assert!(saved.retry(&mut get(), &mut answer(200)).is_none());
        let mut failed = shared.clone();
        failed.attempt = 1;
        // A retry that failed earns nothing (it may spend what the other earned).
        let _ = failed.retry(&mut get(), &mut answer(503));
        assert_eq!(shared.budget().spent().succeeded, 1);
        assert!(shared.clone().retry(&mut get(), &mut answer(503)).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_stops_further_retries() {
        use tower::retry::Policy;
        let breaker = closed_breaker();
        let config = RetryConfig {
            max_attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter: false,
        };
        let mut policy = RetryPolicy::new(
            config,
            100,
            100.0,
            RetryMetrics::default(),
            Arc::clone(&breaker),
        );
        assert!(policy.retry(&mut get(), &mut answer(503)).is_some());
        open(&breaker);
        assert!(policy.retry(&mut get(), &mut answer(503)).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleeping_retry_wakes_when_the_circuit_opens() {
        use tower::retry::Policy;
        let breaker = closed_breaker();
        let config = RetryConfig {
            max_attempts: 5,
            base: Duration::from_secs(10),
            max: Duration::from_secs(10),
            jitter: false,
        };
        let mut policy = RetryPolicy::new(
            config,
            100,
            100.0,
            RetryMetrics::default(),
            Arc::clone(&breaker),
        );
        let wait = policy.retry(&mut get(), &mut answer(503)).expect("retried");
        let started = tokio::time::Instant::now();
        let waiting = tokio::spawn(wait);
        tokio::time::advance(Duration::from_millis(50)).await;
        open(&breaker);
        waiting.await.expect("the wait ends");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woken by the circuit, not by its 10 s backoff"
        );
    }
}

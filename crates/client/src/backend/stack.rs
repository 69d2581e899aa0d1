//! The stack every backend call goes through, outermost first:
//!
//! 1. **circuit breaker**: judges *calls* as callers see them, after retries; once open,
//!    calls fail at once with `CircuitOpen` and no attempt reaches the backend;
//! 2. **total deadline** (`REQUEST_DEADLINE_MS`) and **retry** ([`RetryPolicy`]), one layer
//!    ([`RetryWithin`]): the deadline is the most a caller waits, retries included; the retries
//!    take safe requests, transient failures, jittered backoff, an earned budget; no retry
//!    once the circuit is open, and a sleeping one is woken. Inside the breaker, so a call
//!    cut off by the deadline counts as a failure: a backend that hangs opens the circuit
//!    like one that fails (outside it, the cut-off call would drop its permit and count as
//!    nothing). The deadline's timer is armed only once a call goes past its first attempt,
//!    which the per-attempt timeout bounds (see [`RetryWithin`]);
//! 3. **open gate** ([`OpenGateLayer`]): an attempt that would start while the circuit is open
//!    fails at once with `CircuitOpen` (how a woken retry ends without a backend call);
//! 4. **per-attempt timeout** (`BACKEND_TIMEOUT_MS`): one slow attempt cannot eat the deadline;
//! 5. **concurrency limit**: bounds the calls in flight to the backend (requests queue here,
//!    under the deadline, rather than opening unbounded connections). Its semaphore is
//!    shared with the live-update stream passthrough, which holds a permit while open;
//! 6. the backend service: reqwest, over pools whose connections have a bounded lifetime.
//!
//! # Why the breaker sits outside the retry
//! Polly and resilience4j often put the breaker inside the retry, so it counts attempts.
//! With seed 002's rule (open after 3 consecutive failures) that trips at any sizeable failure
//! rate: at 50 % failures three failed attempts in a row happen once in eight, and the circuit
//! would be open most of the time while retries could have served nearly every call.
//! Counting calls keeps the seed's meaning ("the backend is failing continuously") and lets
//! retries absorb what is transient. Retries cannot multiply load during an outage all the
//! same: the budget is earned by retries that succeed, so it shrinks to a small allowance
//! when none do, and an open circuit stops them altogether, those in flight included.
//! Unlike the seed, the deadline bounds the whole call, so a call cannot spend 15 s retrying.

use std::sync::Arc;
use std::time::Duration;

use guestbook_common::dependency::Wait;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower::limit::{ConcurrencyLimit, GlobalConcurrencyLimitLayer};
use tower::timeout::Timeout;

use crate::backend::BackendService;
use crate::middleware::circuit_breaker::{
    Breaker, CircuitBreaker, CircuitBreakerLayer, HttpClassifier, OpenGate, OpenGateLayer,
};
use crate::middleware::retry::{RetryPolicy, RetryWithin, RetryWithinLayer};

/// The assembled stack, cheap to clone (a few `Arc`s); a `Service<Request<Bytes>>` answering
/// `Response<Bytes>` or a `BoxError`.
///
/// Named in full rather than boxed (`BoxCloneSyncService`): every call clones the stack, and a
/// boxed one costs an allocation for the clone and another for the call's future (issue 17).
pub type BackendStack = Wait<
    CircuitBreaker<
        RetryWithin<OpenGate<Timeout<ConcurrencyLimit<BackendService>>>>,
        HttpClassifier,
    >,
>;

/// What the stack needs.
pub struct StackConfig {
    /// Total time a call may take, retries included.
    pub deadline: Duration,
    /// Time one attempt may take.
    pub attempt_timeout: Duration,
    /// Permits for calls in flight to the backend (`BACKEND_CONCURRENCY`), shared with the
    /// stream passthrough.
    pub concurrency: Arc<Semaphore>,
}

/// Builds the stack around `backend`.
pub fn build(
    backend: BackendService,
    breaker: Arc<Breaker>,
    retry: RetryPolicy,
    config: &StackConfig,
) -> BackendStack {
    ServiceBuilder::new()
        // Time inside counts as waiting on the backend, not as the client's own (readiness,
        // shedding, HPA); the first attempt's concurrency permit is taken in poll_ready,
        // outside it, and stays the client's own queueing. See guestbook_common::dependency.
        .layer(guestbook_common::dependency::WaitLayer)
        .layer(CircuitBreakerLayer::new(
            Arc::clone(&breaker),
            HttpClassifier,
        ))
        .layer(RetryWithinLayer::new(
            retry,
            config.deadline,
            config.attempt_timeout,
        ))
        .layer(OpenGateLayer::new(breaker))
        .timeout(config.attempt_timeout)
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(Arc::clone(
            &config.concurrency,
        )))
        .service(backend)
}

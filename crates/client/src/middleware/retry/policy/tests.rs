//! Unit tests of [`RetryPolicy`]: waits, what is retried, the budget and the open circuit.

use super::*;
use crate::middleware::circuit_breaker::{CircuitOpen, Outcome};

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

/// A policy of 10 attempts, no waits, and a budget of 0 per second and 0 %: nothing to
/// spend beyond the initial reserve and what successful retries earn.
fn unfunded_policy() -> RetryPolicy {
    let config = RetryConfig {
        max_attempts: 10,
        base: Duration::ZERO,
        max: Duration::ZERO,
        jitter: false,
    };
    RetryPolicy::new(config, 0, 0.0, RetryMetrics::default(), closed_breaker())
}

/// A policy of 5 attempts with a generous budget, and the breaker it watches.
fn watching_policy(base: Duration, max: Duration) -> (RetryPolicy, Arc<Breaker>) {
    let breaker = closed_breaker();
    let config = RetryConfig {
        max_attempts: 5,
        base,
        max,
        jitter: false,
    };
    let policy = RetryPolicy::new(
        config,
        100,
        100.0,
        RetryMetrics::default(),
        Arc::clone(&breaker),
    );
    (policy, breaker)
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
    let shared = unfunded_policy();
    let retried = (0..100)
        .filter(|_| shared.clone().retry(&mut get(), &mut answer(503)).is_some())
        .count();
    assert_eq!(retried, 0, "an empty budget refuses every retry");
}

#[tokio::test(start_paused = true)]
async fn a_successful_retry_earns_budget_and_a_failed_one_does_not() {
    use tower::retry::Policy;
    let shared = unfunded_policy();
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
    let (mut policy, breaker) = watching_policy(Duration::from_millis(100), Duration::from_secs(1));
    assert!(policy.retry(&mut get(), &mut answer(503)).is_some());
    open(&breaker);
    assert!(policy.retry(&mut get(), &mut answer(503)).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_sleeping_retry_wakes_when_the_circuit_opens() {
    use tower::retry::Policy;
    let (mut policy, breaker) = watching_policy(Duration::from_secs(10), Duration::from_secs(10));
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

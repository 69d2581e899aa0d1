//! The retries of the client's backend stack: [`RetryWithin`] runs a call's attempts by our
//! [`RetryPolicy`] within the call's total deadline.
//!
//! Seed 002 retried 5 times with 1–8 s waits, on every failure including 4xx, and retried
//! writes that carried no idempotency key. Here a request is retried only when:
//! 1. it is safe to send twice: an idempotent method, or a POST with an `Idempotency-Key`;
//! 2. the failure is transient: a connection error, a per-attempt timeout, or 500/502/503/504/429
//!    (never another 4xx, never "circuit open"), as
//!    [`BackendOutcome::is_retryable`](crate::middleware::outcome::BackendOutcome::is_retryable) says;
//! 3. attempts remain (`RETRY_MAX_ATTEMPTS` counts the first try);
//! 4. the circuit is not open: once the breaker has given up on the backend, retries already
//!    in flight stop too (a sleeping one is woken, and the gate below the retry refuses it);
//! 5. the retry budget allows it.
//!
//! # Why a budget, and why one that is earned
//! With N attempts, an outage multiplies the load on the failing backend by N exactly when
//! it can least take it, so retries need a budget. A flat one (a share of the requests) is
//! either too small to ride out a partial failure or too large for an outage. This budget
//! ([`RetryBudget`]) is paid for by retries that succeed: retries flow while they help and
//! shrink to a small flat allowance when they do not.
//!
//! Waits: "full jitter" exponential backoff, `uniform(0, min(RETRY_MAX_MS, RETRY_BASE_MS·2^n))`,
//! or the server's `Retry-After` when it sends one (capped at `RETRY_MAX_MS`). Tests switch the
//! jitter off, so waits are exactly the ceiling.

mod budget;
mod policy;
mod within;

pub use budget::{RETRIES_PER_SUCCESS, RetryBudget, Spent, WINDOW as BUDGET_WINDOW};
pub use policy::{RetryConfig, RetryMetrics, RetryPolicy, RetryWait, is_retry_safe};
pub use within::{RetryCall, RetryWithin, RetryWithinLayer};

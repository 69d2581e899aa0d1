//! The retry policy of the client's backend stack (`tower::retry` with our [`RetryPolicy`]).
//!
//! Seed 002 retried 5 times with 1–8 s waits, on every failure including 4xx, and retried
//! writes that carried no idempotency key. Here a request is retried only when:
//! 1. it is safe to send twice: an idempotent method, or a POST with an `Idempotency-Key`;
//! 2. the failure is transient: a connection error, a per-attempt timeout, or 502/503/504/429
//!    (never another 4xx, never "circuit open");
//! 3. attempts remain (`RETRY_MAX_ATTEMPTS` counts the first try);
//! 4. the retry budget allows it.
//!
//! # Why a budget and not only max attempts
//! With N attempts, an outage multiplies the load on the failing backend by N exactly when
//! it can least take it. A budget (Linkerd's: retries may add 20 % to the requests of the
//! last 10 s, plus 10 per second) caps the extra load whatever the attempts setting; during
//! a full outage the breaker and the budget together keep the backend's load near the
//! client's own request rate.
//!
//! Waits: "full jitter" exponential backoff, `uniform(0, min(RETRY_MAX_MS, RETRY_BASE_MS·2^n))`,
//! or the server's `Retry-After` when it sends one (capped at `RETRY_MAX_MS`). Tests switch the
//! jitter off, so waits are exactly the ceiling.

mod policy;

pub use policy::{RetryConfig, RetryMetrics, RetryPolicy, is_retry_safe};

//! `guestbook-client`: serves the browser UI, answers `/fetch`, and proxies `/api/*` to the
//! backend, every backend call going through one resilient tower stack.
//!
//! - [`middleware`]: the circuit breaker (tower has none) and the retry policy.

pub mod middleware;

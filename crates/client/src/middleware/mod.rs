//! Tower middleware of the client's backend stack.
//!
//! - [`circuit_breaker`]: Closed / Open / HalfOpen, shared across clones, tripping on
//!   consecutive failures or on a failure or slow-call rate over a count-based window.
//! - [`retry`]: the retry policy: safe requests, transient failures, jittered backoff, a budget.

pub mod circuit_breaker;
pub mod retry;

//! Tower middleware of the client's backend stack.
//!
//! - [`circuit_breaker`]: Closed / Open / HalfOpen, shared across clones, tripping on
//!   consecutive failures or on a failure or slow-call rate over a count-based window.
//! - [`outcome`]: [`BackendOutcome`](outcome::BackendOutcome), the one judgement of what a backend
//!   call gave, asked by the breaker, the retry, `/fetch`, the proxy and the metrics. It lives here,
//!   below both middlewares, so that they never import the backend module that stacks them.
//! - [`retry`]: the retry policy: safe requests, transient failures, jittered backoff, a budget.

pub mod circuit_breaker;
pub mod outcome;
pub mod retry;

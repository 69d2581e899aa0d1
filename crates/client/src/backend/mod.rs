//! The backend as a tower `Service`: hyper-util's pool underneath, `http::Request<Bytes>` in and
//! `http::Response<Bytes>` out, so tower's middleware (timeout, retry, the circuit breaker)
//! can wrap it, and a retried request can be cloned cheaply.
//!
//! - `http`: the TLS transport; `pools`: connections with a bounded lifetime;
//!   `service`: one call; `stack`: the layers around it, in order.

mod http;
mod pools;
mod service;
mod stack;

pub use crate::middleware::outcome::{BackendOutcome, Transport as TransportFailure};
pub use http::{BackendClient, Transport};
pub use pools::{MakeClient, POOLS, RotatingPools};
pub use service::{AttemptMetrics, BackendService, MAX_RESPONSE_BYTES};
pub use stack::{BackendStack, StackConfig, build};

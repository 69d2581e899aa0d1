//! Service plumbing shared by `guestbook-backend` and `guestbook-client`.
//!
//! - [`cli`]: parses settings once at start; a bad setting is one line on stderr and exit code 2.
//! - [`telemetry`]: `tracing` set up for JSON or human logs, and the request-id / trace layers.
//! - [`lifecycle`]: the process's shutting-down state and the signal that starts it.
//! - [`service`]: the skeleton both services share: `ServiceArgs` (logging, shutdown,
//!   connections, pressure), the bound `Listener`, the one middleware order and `main`.
//! - [`server`]: serves a router with header-read and idle timeouts and a connection cap, until
//!   shutdown: unready at once, keep serving for a delay, drain (the accept loop and its
//!   overflow lane in `server::accept`, the idle clock in `server::activity`).
//! - [`probes`]: shallow `/liveness` and `/readiness` that never look at a dependency.
//! - [`metrics`]: the Prometheus registry, the per-route HTTP histogram and `/metrics`.
//! - [`window`]: the sliding-window latency estimator (p50/p99/p99.9).
//! - [`dependency`]: the time a request waits on its dependencies, so the rest is the pod's own.
//! - [`pressure`]: readiness and load shedding driven by the pod's own latency, its refusals and
//!   runtime signals.
//! - [`error_body`]: every error answer: the shared `{error, code}` body, its status and
//!   `Retry-After`.
//! - [`openapi`]: the parts of both OpenAPI documents they share (the admin bearer scheme among
//!   them), and `/openapi.json`.
//! - [`client_addr`]: who one client is for per-client limits (an IPv4 address, an IPv6 /64).
//! - [`rate_limit`]: per-client token buckets on writes (429 with `Retry-After`).
//! - [`same_origin`]: refuses cross-site state changes (`Origin`, `Sec-Fetch-Site`) with 403.
//! - [`stream_limit`]: caps on concurrent live-update streams, global (bounded by the cgroup
//!   memory limit) and per client.
//! - [`limits`]: the request header size limit (431).
//! - [`redact`]: passwords out of URLs before they are logged or shown.
//! - [`bulkhead`]: bounded capacity with a predicted queue wait, refused at once when too long.

pub mod bulkhead;
pub mod cli;
pub mod client_addr;
pub mod dependency;
pub mod error_body;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod pressure;
pub mod probes;
pub mod rate_limit;
pub mod redact;
pub mod same_origin;
pub mod server;
pub mod service;
pub mod stream_limit;
pub mod telemetry;
pub mod window;

pub use lifecycle::{Lifecycle, ShutdownArgs};
pub use metrics::Metrics;
pub use server::ConnectionArgs;
pub use service::ServiceArgs;

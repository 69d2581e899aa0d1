//! A circuit breaker as a tower middleware: while a backend is failing, calls fail at once
//! instead of piling onto it, and a few trial calls find out when it has recovered.
//!
//! tower has no circuit breaker. This one follows tower's layout (a layer, a service, a
//! response future, an error) and linkerd2-proxy's ideas: the state machine ([`Breaker`])
//! does no I/O and takes the time as an argument, and each way of tripping lives in its own
//! file (`consecutive.rs`, `rate.rs`). Nothing in it is random, so tests with paused tokio
//! time replay exactly.
//!
//! ```text
//! let breaker = Arc::new(Breaker::new(BreakerConfig::default()));
//! let service = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(Arc::clone(&breaker), HttpClassifier))
//!     .service(backend);
//! ```
//!
//! # States
//! The classic three, with resilience4j's semantics:
//! - **Closed**: every call goes through and its outcome is recorded. The circuit opens when
//!   `failure_threshold` calls in a row have failed (seed 002's rule), or when the last
//!   `window` calls hold at least `min_calls` and their share of failures reaches
//!   `failure_rate`, or their share of slow calls (longer than `slow_call_duration`)
//!   reaches `slow_call_rate`. A slow failure counts as both.
//! - **Open**: every call fails at once with [`CircuitOpen`], without reaching the backend,
//!   for `open_for`. The first call after that turns the circuit half-open (as resilience4j
//!   by default, nothing happens without traffic).
//! - **HalfOpen**: up to `half_open_calls` trial calls go through; the rest fail at once.
//!   One failed trial (or a slow one, when the slow-call rule is on) reopens the circuit
//!   for a new `open_for`; once `half_open_calls` trials have succeeded it closes, with
//!   empty counters.
//!
//! What counts as a failure is the classifier's call ([`Classify`]): [`HttpClassifier`] asks
//! [`BackendOutcome::is_failure`](crate::middleware::outcome::BackendOutcome::is_failure), which counts
//! 5xx, 429 and transport errors and ignores other 4xx (the caller's fault, not the
//! backend's) and a 503 or 429 with `Retry-After` (a live backend asking to come back). A call cancelled before it finished (its future dropped) is ignored too.
//! Ignored calls count neither way, so they can neither trip the circuit nor dilute a
//! failure rate; an ignored trial only gives its half-open slot back.
//!
//! # Why count-based windows
//! A time-based window (failures in the last N seconds) judges a rate from however many
//! calls happened to arrive: at the seed's one call per second, two failures out of three
//! calls would be "67 %". A count-based window always judges the same number of calls, with
//! `min_calls` as the floor, and needs no clock to age its buckets: one ring buffer of the
//! last `window` outcomes with running counts, O(1) per call and a few bytes per slot. The
//! consecutive rule covers what a window is slow at, a backend that is simply down.
//!
//! # Why reject in `call`, not in `poll_ready`
//! tower's contract for `poll_ready` is that an error means the service is broken for good:
//! callers drop it, and a `Buffer` or a balancer would fail every later request too. An open
//! circuit is a temporary, per-call decision, so [`CircuitBreaker`] stays as ready as its
//! inner service and refuses in `call`, returning a future that resolves at once to
//! `Err(CircuitOpen)`. The inner service's readiness (a concurrency permit, for instance) is
//! then reserved but unused; it is used by the clone's next call or given back when the clone
//! is dropped, as `ServiceExt::oneshot` does. Pending in `poll_ready` instead would make
//! callers wait for the circuit to close, the opposite of failing fast.

mod classify;
mod config;
mod consecutive;
mod error;
mod future;
mod gate;
mod layer;
mod rate;
mod service;
mod state;

pub use classify::{Classify, HttpClassifier};
pub use config::BreakerConfig;
pub use error::CircuitOpen;
pub use future::ResponseFuture;
pub use gate::{OpenGate, OpenGateLayer};
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
pub use state::{Breaker, BreakerSnapshot, Listener, Outcome, Permit, State};

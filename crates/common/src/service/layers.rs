//! The one middleware order both services wrap their routes in.
//!
//! Outermost first:
//! 1. set a request id (`x-request-id`, kept when the caller sent one), put it on the answer,
//!    and make it, the method and the route template the context of every log line written
//!    while the request is served;
//! 2. trace: tower-http's request and response events at `DEBUG` (skipped when the log filter
//!    would record neither);
//! 3. the service's `edge` layer (the client's security headers; nothing in the backend): it
//!    sees every answer, the refusals below included;
//! 4. metrics: the HTTP histogram (`http_requests`) counts every answer the service gives;
//! 5. pressure: readiness and load shedding;
//! 6. header limit (431);
//! 7. the service's routes with their own layers (body limit, rate limit, same-origin).
//!
//! Why this order: the two services used to differ in where the 431 sat (the backend inside
//! metrics and pressure, the client outside both), so one oversized request was counted by one
//! and not the other. Now the histogram sees every answer, refusals included, as it sees a 429
//! or a 413: an operator counting bad requests finds them all in one metric. Pressure comes
//! before the header check because under overload the cheapest answer is the shed, given before
//! any other work; and the edge layer is outside metrics so that a refusal from any layer below
//! still carries the security headers.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::Route;
use tower::{Layer, Service, ServiceBuilder};

use crate::limits::{HeaderLimit, HeaderLimitLayer};
use crate::metrics::{Metrics, Track, TrackLayer};
use crate::pressure::{Guard, GuardLayer, Pressure};
use crate::telemetry;

/// What the `edge` layer wraps: metrics, pressure and the header limit around a route.
pub type Inner = Track<Guard<HeaderLimit<Route>>>;

/// Wraps `routes` in the fixed order above, with `edge` as step 3 (`tower::layer::util::Identity`
/// for none).
///
/// The steps are one tower stack given to `Router::layer` once: each `Router::layer` call adds
/// a route level that clones a boxed service and boxes a future on every request, and each
/// `from_fn` middleware another of each. With seven such levels they were the largest cost of
/// the client's `/fetch` beyond a bare proxy (issue 17).
pub fn wrap<S, L>(
    routes: Router<S>,
    metrics: Metrics,
    pressure: Arc<Pressure>,
    edge: L,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    L: Layer<Inner> + Clone + Send + Sync + 'static,
    L::Service:
        Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request>>::Future: Send + 'static,
{
    routes.layer(
        ServiceBuilder::new()
            .layer(telemetry::request_id_layer())
            .layer(telemetry::trace_if_enabled_layer())
            .layer(edge)
            .layer(TrackLayer::new(metrics))
            .layer(GuardLayer::new(pressure))
            .layer(HeaderLimitLayer),
    )
}

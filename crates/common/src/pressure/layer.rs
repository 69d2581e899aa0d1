//! The guard in front of every route: asks [`Pressure`] whether to admit a request, refuses the
//! excess with 503 while overloaded, and otherwise runs the request inside its own
//! [`DependencyClock`] and records what it cost.
//!
//! A plain tower layer with its own future rather than `axum::middleware::from_fn`: that one
//! boxes a future and clones the inner route on every request, a visible share of `/fetch`'s
//! CPU (issue 17).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::{EXEMPT, Pressure};
use crate::dependency::DependencyClock;
use crate::error_body::{ErrorBody, ErrorCode, respond_retry_after};

/// A request was refused to protect the service: for its own capacity, never because a
/// dependency failed. Put in a response's extensions, it tells [`Guard`] to count the answer as
/// refused (and not to record its latency).
#[derive(Debug, Clone, Copy)]
pub struct Shed(pub &'static str);

impl IntoResponse for Shed {
    fn into_response(self) -> Response {
        let body =
            ErrorBody::new(ErrorCode::Overloaded, "overloaded, retry later").with_reason(self.0);
        let mut response = respond_retry_after(StatusCode::SERVICE_UNAVAILABLE, body, 1);
        response.extensions_mut().insert(self);
        response
    }
}

/// Keeps the in-flight count right when a request future is dropped.
pub(super) struct InFlight(Option<Arc<Pressure>>);

impl InFlight {
    pub(super) fn enter(pressure: &Arc<Pressure>) -> Self {
        let now = pressure.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        pressure.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(Some(Arc::clone(pressure)))
    }

    /// Out of flight now; the pressure it counted in, to record the request.
    fn leave(mut self) -> Option<Arc<Pressure>> {
        let pressure = self.0.take();
        if let Some(pressure) = &pressure {
            pressure.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        pressure
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(pressure) = &self.0 {
            pressure.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Layer: sheds the excess while overloaded; records each served request's latency and the
/// part of it spent waiting on dependencies (the request runs inside its own
/// [`DependencyClock`]), and counts refusals for local capacity.
#[derive(Clone)]
pub struct GuardLayer(Arc<Pressure>);

impl GuardLayer {
    /// The guard of `pressure`.
    pub fn new(pressure: Arc<Pressure>) -> Self {
        Self(pressure)
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            pressure: Arc::clone(&self.0),
        }
    }
}

/// The service [`GuardLayer`] makes.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    pressure: Arc<Pressure>,
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if EXEMPT.contains(&request.uri().path()) {
            return GuardFuture::Exempt {
                inner: self.inner.call(request),
            };
        }
        if let Some(reason) = self.pressure.admit() {
            self.pressure.count_shed(reason.as_str());
            self.pressure.record_refused();
            return GuardFuture::Shed {
                response: Some(Shed(reason.as_str()).into_response()),
            };
        }
        let started = Instant::now();
        let clock = DependencyClock::new();
        let in_flight = InFlight::enter(&self.pressure);
        GuardFuture::Served {
            inner: clock.clone().scoped(self.inner.call(request)),
            clock,
            started,
            in_flight: Some(in_flight),
        }
    }
}

pin_project_lite::pin_project! {
    /// An exempt request's answer, the shed, or a served request measured.
    #[project = GuardProj]
    pub enum GuardFuture<F> {
        /// Probes and `/metrics`: neither judged nor measured.
        Exempt { #[pin] inner: F },
        /// Refused for local capacity, taken once.
        Shed { response: Option<Response> },
        /// Admitted: run in its own clock, counted in flight until it ends or is dropped.
        Served {
            #[pin] inner: TaskLocalFuture<DependencyClock, F>,
            clock: DependencyClock,
            started: Instant,
            in_flight: Option<InFlight>,
        },
    }
}

impl<F> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardProj::Exempt { inner } => inner.poll(cx),
            GuardProj::Shed { response } => Poll::Ready(Ok(response
                .take()
                // Polled after it completed (a caller bug): the same answer, never a panic.
                .unwrap_or_else(|| Shed("queue").into_response()))),
            GuardProj::Served {
                inner,
                clock,
                started,
                in_flight,
            } => {
                let Poll::Ready(Ok(response)) = inner.poll(cx) else {
                    return Poll::Pending;
                };
                // Out of flight first, then recorded, as the request leaves.
                if let Some(pressure) = in_flight.take().and_then(InFlight::leave) {
                    // A handler's own fast refusal is not a served request: it would dilute
                    // the window.
                    if response.extensions().get::<Shed>().is_some() {
                        pressure.record_refused();
                    } else {
                        pressure.record(started.elapsed(), clock.waited());
                    }
                }
                Poll::Ready(Ok(response))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use prometheus_client::registry::Registry;
    use tower::ServiceExt;

    use super::*;
    use crate::lifecycle::Lifecycle;
    use crate::pressure::settings::tests::args;

    fn hanging(pressure: &Arc<Pressure>) -> Router {
        Router::new()
            .route("/hang", get(std::future::pending::<&'static str>))
            .route("/ok", get(|| async { "ok" }))
            .route(
                "/wait",
                get(|| async {
                    crate::dependency::timed(tokio::time::sleep(Duration::from_millis(50))).await;
                    "waited"
                }),
            )
            .layer(GuardLayer::new(Arc::clone(pressure)))
    }

    fn get_request(path: &str) -> Request {
        Request::get(path)
            .body(Body::empty())
            .expect("a static request is valid")
    }

    #[tokio::test]
    async fn a_served_request_is_in_flight_until_it_ends_or_is_dropped() {
        let pressure = Pressure::new(args(), Lifecycle::new(), &mut Registry::default());
        let mut call = Box::pin(hanging(&pressure).oneshot(get_request("/hang")));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending());
        assert_eq!(pressure.in_flight.load(Ordering::Relaxed), 1);
        drop(call);
        assert_eq!(pressure.in_flight.load(Ordering::Relaxed), 0);

        let _ = hanging(&pressure).oneshot(get_request("/ok")).await;
        assert_eq!(pressure.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(pressure.peak_in_flight.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_served_request_runs_inside_the_dependency_clock_it_is_recorded_with() {
        let pressure = Pressure::new(args(), Lifecycle::new(), &mut Registry::default());
        let Ok(response) = hanging(&pressure).oneshot(get_request("/wait")).await;
        assert_eq!(response.status(), StatusCode::OK);
        pressure.tick();
        // The 50 ms the handler spent in `timed` were seen by the clock the guard recorded.
        let waits = pressure.dependency_waits();
        assert_eq!(waits.samples, 1);
        assert!(waits.p99 >= 0.049, "{waits:?}");
    }

    #[tokio::test]
    async fn a_shed_answer_is_overloaded_with_its_reason_and_retry_after() {
        let response = Shed("queue").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "1");
        assert!(response.extensions().get::<Shed>().is_some());
        let body = crate::error_body::read(response).await;
        assert_eq!(body.code, ErrorCode::Overloaded);
        assert_eq!(body.error, "overloaded, retry later");
        assert_eq!(body.reason.as_deref(), Some("queue"));
    }
}

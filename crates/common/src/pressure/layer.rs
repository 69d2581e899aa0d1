//! The axum guard in front of every route: asks [`Pressure`] whether to admit a request,
//! refuses the excess with 503 while overloaded, and otherwise runs the request inside its own
//! [`DependencyClock`] and records what it cost.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::{EXEMPT, Pressure};
use crate::dependency::DependencyClock;
use crate::error_body::{ErrorBody, ErrorCode, respond_retry_after};

/// A request was refused to protect the service: for its own capacity, never because a
/// dependency failed. Put in a response's extensions, it tells [`guard`] to count the answer as
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
pub(super) struct InFlight<'a>(&'a Pressure);

impl<'a> InFlight<'a> {
    pub(super) fn enter(pressure: &'a Pressure) -> Self {
        let now = pressure.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        pressure.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(pressure)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Middleware: sheds the excess while overloaded; records each served request's latency and
/// the part of it spent waiting on dependencies (the request runs inside its own
/// [`DependencyClock`]), and counts refusals for local capacity.
pub async fn guard(
    State(pressure): State<Arc<Pressure>>,
    request: Request,
    next: Next,
) -> Response {
    if EXEMPT.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    if let Some(reason) = pressure.admit() {
        pressure.count_shed(reason.as_str());
        pressure.record_refused();
        return Shed(reason.as_str()).into_response();
    }
    let started = Instant::now();
    let clock = DependencyClock::new();
    let response = {
        let _in_flight = InFlight::enter(&pressure);
        clock.clone().scope(next.run(request)).await
    };
    // A handler's own fast refusal is not a served request: it would dilute the window.
    if response.extensions().get::<Shed>().is_some() {
        pressure.record_refused();
    } else {
        pressure.record(started.elapsed(), clock.waited());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

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

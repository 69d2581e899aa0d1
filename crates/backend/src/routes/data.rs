//! `GET /data`: seed 002's endpoint, subject to the injected failure and latency.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use guestbook_common::error_body::{ErrorBody, ErrorCode, respond};

use crate::app::AppState;

/// `/data`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/data", get(data))
}

/// `GET /data`'s healthy answer (seed 002's shape).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DataAnswer {
    /// `OK`.
    pub message: String,
    /// `BackendService healthy`.
    pub note: String,
}

/// Seed 002's endpoint.
#[utoipa::path(
    get,
    path = "/data",
    tag = "seed",
    responses(
        (status = 200, description = "Healthy", body = DataAnswer),
        (status = "4XX", description = "An injected failure (POST /config/failure): `{\"error\": \"Injected failure\", \"code\": \"injected-failure\"}`", body = guestbook_common::openapi::ErrorBody),
        (status = "5XX", description = "An injected failure (POST /config/failure)", body = guestbook_common::openapi::ErrorBody),
    )
)]
pub(crate) async fn data(State(app): State<AppState>) -> Response {
    let faults = app.faults.http();
    if faults.delay_ms > 0 && fastrand::f64() < faults.delay_rate {
        tracing::debug!(delay_ms = faults.delay_ms, "injecting latency");
        tokio::time::sleep(Duration::from_millis(faults.delay_ms)).await;
    }
    if faults.failure_rate > 0.0 && fastrand::f64() < faults.failure_rate {
        tracing::debug!(status = faults.status_code, "injecting a failure");
        let status =
            StatusCode::from_u16(faults.status_code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return respond(
            status,
            ErrorBody::new(ErrorCode::InjectedFailure, "Injected failure"),
        );
    }
    Json(DataAnswer {
        message: "OK".to_owned(),
        note: "BackendService healthy".to_owned(),
    })
    .into_response()
}

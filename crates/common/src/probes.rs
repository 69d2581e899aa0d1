//! Shallow probes (seed 004): they answer from the process's own state and never call a
//! dependency, so one failing dependency cannot take every replica out of its Service.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::pressure::Pressure;

/// `/liveness` and `/readiness`.
pub fn routes<S>() -> Router<S>
where
    Arc<Pressure>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/liveness", get(liveness))
        .route("/readiness", get(readiness))
}

/// 200 while the process can answer at all.
#[utoipa::path(
    get,
    path = "/liveness",
    tag = "probes",
    responses((status = 200, description = "The process serves; never looks at a dependency", body = String, content_type = "text/plain", example = "OK"))
)]
pub(crate) async fn liveness() -> &'static str {
    "OK"
}

/// 200 while the process itself keeps up: its own windowed p99.9 (waits on dependencies
/// excluded) is under `READINESS_P999_MS` or the recent seconds show no pressure, it refuses
/// no more than `READINESS_SHED_RATIO` of its requests for its own capacity, and it is not
/// shutting down; otherwise 503 with the reason and the figures.
#[utoipa::path(
    get,
    path = "/readiness",
    tag = "probes",
    responses(
        (status = 200, description = "Ready: the process's own latency and refused share are under their thresholds; dependencies are never looked at", body = crate::openapi::Readiness),
        (status = 503, description = "Unready: `reason` is `latency` or `shedding` (with the figures) or `shutting_down`", body = crate::openapi::Readiness),
    )
)]
pub(crate) async fn readiness(State(pressure): State<Arc<Pressure>>) -> Response {
    match pressure.readiness() {
        Ok(body) => Json(body).into_response(),
        Err(body) => (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response(),
    }
}

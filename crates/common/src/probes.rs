//! Shallow probes (seed 004): they answer from the process's own state and never call a
//! dependency, so one failing dependency cannot take every replica out of its Service.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

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

/// `/readiness`' body, ready or not.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unready`.
    #[schema(pattern = "^(ready|unready)$")]
    pub status: String,
    /// Why unready: `latency` (the process's own p99.9), `shedding` (the share it refuses for
    /// its own capacity) or `shutting_down`. Never a dependency.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
    /// The windowed p99.9 of the time requests spent in this process, waits on dependencies
    /// excluded, in milliseconds (absent while shutting down).
    #[schema(nullable = false)]
    pub p999_ms: Option<f64>,
    /// `READINESS_P999_MS` (absent while shutting down).
    #[schema(nullable = false)]
    pub threshold_ms: Option<u64>,
    /// Samples in the window (absent while shutting down).
    #[schema(nullable = false)]
    pub samples: Option<u64>,
    /// Share of the requests of the last `READINESS_RECENT_SECS` refused for the process's own
    /// capacity, 0-1 (absent while shutting down).
    #[schema(nullable = false)]
    pub shed_ratio: Option<f64>,
    /// `READINESS_SHED_RATIO` (absent while shutting down).
    #[schema(nullable = false)]
    pub shed_ratio_threshold: Option<f64>,
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
        (status = 200, description = "Ready: the process's own latency and refused share are under their thresholds; dependencies are never looked at", body = Readiness),
        (status = 503, description = "Unready: `reason` is `latency` or `shedding` (with the figures) or `shutting_down`", body = Readiness),
    )
)]
pub(crate) async fn readiness(State(pressure): State<Arc<Pressure>>) -> Response {
    match pressure.readiness() {
        Ok(body) => Json(body).into_response(),
        Err(body) => (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response(),
    }
}

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
async fn liveness() -> &'static str {
    "OK"
}

/// 200 while the windowed p99.9 is under `READINESS_P999_MS` and the process is not shutting
/// down; otherwise 503 with the reason and the measured figure.
async fn readiness(State(pressure): State<Arc<Pressure>>) -> Response {
    match pressure.readiness() {
        Ok(body) => Json(body).into_response(),
        Err(body) => (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response(),
    }
}

//! Shallow probes (seed 004): they answer from the process's own state and never call a
//! dependency, so one failing dependency cannot take every replica out of its Service.

use axum::Json;
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::lifecycle::Lifecycle;

/// `/liveness` and `/readiness`.
pub fn routes<S>() -> Router<S>
where
    Lifecycle: FromRef<S>,
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

/// 200 while serving; 503 with a JSON reason once shutdown has started.
async fn readiness(State(lifecycle): State<Lifecycle>) -> Response {
    if lifecycle.is_shutting_down() {
        let body = json!({"status": "unready", "reason": "shutting_down"});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    } else {
        Json(json!({"status": "ready"})).into_response()
    }
}

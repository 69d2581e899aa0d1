//! `GET /slow`: seed 001's endpoint. Each call holds one of `SLOW_WORKERS` permits for
//! `SLOW_MS`, like a worker pool or a connection pool of fixed size: latency really grows
//! with load once the permits are taken (an async sleep alone would never saturate).
//! Calls whose predicted queueing exceeds `SLOW_MAX_WAIT_MS` are refused at once with 503.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use guestbook_common::pressure::Shed;
use serde_json::json;

use crate::app::AppState;

/// `/slow`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/slow", get(slow))
}

async fn slow(State(app): State<AppState>) -> Response {
    let hold = app.slow_hold;
    match app.slow.run(|| tokio::time::sleep(hold)).await {
        Ok(()) => Json(json!({"message": "OK", "held_ms": hold.as_millis()})).into_response(),
        Err(full) => {
            tracing::debug!(
                predicted_ms = full.predicted.as_millis(),
                "slow: bulkhead full"
            );
            app.pressure.count_shed("queue");
            Shed("queue").into_response()
        }
    }
}

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

use crate::app::AppState;

/// `/slow`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/slow", get(slow))
}

/// `GET /slow`'s answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SlowAnswer {
    /// `OK`.
    pub message: String,
    /// How long the permit was held, in milliseconds (`SLOW_MS`).
    pub held_ms: u64,
}

/// Seed 001's bounded-capacity work.
#[utoipa::path(
    get,
    path = "/slow",
    tag = "seed",
    responses(
        (status = 200, description = "Held one of SLOW_WORKERS permits for SLOW_MS", body = SlowAnswer),
        (status = 503, description = "The predicted queueing exceeds SLOW_MAX_WAIT_MS, or load shedding: `{\"error\", \"reason\"}`", body = guestbook_common::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn slow(State(app): State<AppState>) -> Response {
    let hold = app.slow_hold;
    match app.slow.run(|| tokio::time::sleep(hold)).await {
        Ok(()) => Json(SlowAnswer {
            message: "OK".to_owned(),
            held_ms: u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
        })
        .into_response(),
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

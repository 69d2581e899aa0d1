//! `GET /status`: the circuit's state (seed 002's `circuit_state`), its counts and the
//! settings that shape the stack.

use axum::Json;
use axum::extract::State;
use serde_json::Value;

use crate::app::AppState;

/// `/status`'s body.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct StatusAnswer {
    /// The circuit: `closed`, `open` or `half_open` (seed 002's field).
    #[schema(pattern = "^(closed|open|half_open)$")]
    pub circuit_state: String,
    /// The backend's base URL (any password replaced by `***`).
    pub backend_url: String,
    /// The breaker's counts: `state`, `consecutive_failures`, `window_calls`, ...
    #[schema(value_type = Object)]
    pub breaker: Value,
    /// The retry settings.
    #[schema(value_type = Object)]
    pub retry: Value,
    /// `BACKEND_CONCURRENCY`'s slots: `limit`, and `in_use` by calls and open live-update
    /// streams.
    #[schema(value_type = Object)]
    pub backend_slots: Value,
    /// The load generator: `running`, `sent`, `ok`.
    #[schema(value_type = Object)]
    pub load: Value,
}

/// The circuit's state, its counts and the stack's settings.
#[utoipa::path(
    get,
    path = "/status",
    tag = "seed",
    responses((status = 200, description = "The circuit and the stack", body = StatusAnswer))
)]
pub(crate) async fn status(State(app): State<AppState>) -> Json<StatusAnswer> {
    let breaker = app.breaker.snapshot();
    Json(StatusAnswer {
        circuit_state: app.breaker.state().as_str().to_owned(),
        backend_url: app.backend_url_shown.clone(),
        breaker: serde_json::to_value(breaker).unwrap_or(Value::Null),
        retry: app.retry_summary.clone(),
        backend_slots: serde_json::json!({
            "limit": app.backend_concurrency,
            "in_use": app.backend_concurrency.saturating_sub(app.backend_slots.available_permits()),
        }),
        load: app.load.summary(),
    })
}

//! `GET /status`: the circuit's state (seed 002's `circuit_state`), its counts and the
//! settings that shape the stack.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::app::AppState;

pub(crate) async fn status(State(app): State<AppState>) -> Json<Value> {
    let breaker = app.breaker.snapshot();
    Json(json!({
        "circuit_state": app.breaker.state().as_str(),
        "backend_url": app.backend_url,
        "breaker": breaker,
        "retry": app.retry_summary,
        "load": app.load.summary(),
    }))
}

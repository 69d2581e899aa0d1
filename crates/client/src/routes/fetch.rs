//! `GET /fetch`: seed 002's endpoint. The backend's `/data` through the stack; on failure a
//! fallback answer, at once when the circuit is open, or (with `FALLBACK_CACHE_SECS`) the
//! last good answer marked stale.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tower::{BoxError, ServiceExt};

use crate::app::AppState;
use crate::middleware::circuit_breaker::CircuitOpen;

/// Why a backend call produced no usable answer, as `/fetch` reports it.
pub fn failure_message(result: &Result<http::Response<Bytes>, BoxError>) -> String {
    match result {
        Ok(response) => format!("backend answered {}", response.status().as_u16()),
        Err(err) if err.is::<CircuitOpen>() => "circuit-open".to_owned(),
        Err(err) if err.is::<tower::timeout::error::Elapsed>() => "timeout".to_owned(),
        Err(err) => format!("backend unreachable: {err}"),
    }
}

/// `/fetch`'s body: `ok` with `data`, `stale` with `data`, `age_ms` and `message`, or
/// `fallback` with `message`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct FetchAnswer {
    /// `ok`, `stale` or `fallback`.
    #[schema(pattern = "^(ok|stale|fallback)$")]
    pub status: String,
    /// The backend's `/data` body (`ok` and `stale`).
    #[schema(value_type = Object, nullable = false)]
    pub data: Option<Value>,
    /// Age of a stale answer, in milliseconds.
    #[schema(nullable = false)]
    pub age_ms: Option<u64>,
    /// Why the backend gave no fresh answer: `backend answered N`, `timeout`, `circuit-open`,
    /// `backend unreachable: ...`.
    #[schema(nullable = false)]
    pub message: Option<String>,
}

/// Seed 002's endpoint: the backend's `/data` through the stack.
#[utoipa::path(
    get,
    path = "/fetch",
    tag = "seed",
    responses(
        (status = 200, description = "`{\"status\": \"ok\", \"data\"}`, or with FALLBACK_CACHE_SECS a `stale` answer", body = FetchAnswer),
        (status = 503, description = "`{\"status\": \"fallback\", \"message\"}` after the attempts failed or at once while the circuit is open", body = FetchAnswer),
    )
)]
pub(crate) async fn fetch(State(app): State<AppState>) -> Response {
    let request = http::Request::get("/data")
        .body(Bytes::new())
        .expect("a static request is valid");
    let result = app.stack.clone().oneshot(request).await;
    if let Ok(response) = &result
        && response.status().is_success()
        && let Ok(data) = serde_json::from_slice::<Value>(response.body())
    {
        app.remember(&data);
        return Json(json!({"status": "ok", "data": data})).into_response();
    }
    let message = failure_message(&result);
    app.count_fallback(if message == "circuit-open" {
        "circuit_open"
    } else {
        "failed"
    });
    if let Some((data, age)) = app.stale() {
        return Json(
            json!({"status": "stale", "data": data, "age_ms": age.as_millis(), "message": message}),
        )
        .into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "fallback", "message": message})),
    )
        .into_response()
}

/// When the last good `/data` answer arrived.
pub type Remembered = Option<(Instant, Value)>;

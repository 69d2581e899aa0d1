//! `/api/*`: the guestbook API, proxied to the backend through the stack. A POST is retried
//! only when it carries an `Idempotency-Key` (the UI always sends one). The live-update stream
//! is passed through as it arrives: a stream cannot be retried or buffered.

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use serde_json::json;
use tower::ServiceExt;

use crate::app::AppState;
use crate::routes::fetch::failure_message;

/// Largest body forwarded (the backend refuses over 16 KiB; a little slack for its 413).
const MAX_BODY: usize = 64 * 1024;
/// Request headers a caller may send through.
const FORWARDED: [&str; 5] = [
    "content-type",
    "idempotency-key",
    "authorization",
    "accept",
    "x-request-id",
];

pub(crate) async fn proxy(State(app): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(json!({"error": "request body too large"})),
            )
                .into_response();
        }
    };
    let mut forward = http::Request::new(body);
    *forward.method_mut() = parts.method;
    *forward.uri_mut() = parts.uri.path_and_query().map_or_else(
        || "/".parse().expect("static"),
        |p| {
            p.as_str()
                .parse()
                .unwrap_or_else(|_| "/".parse().expect("static"))
        },
    );
    for name in FORWARDED {
        if let Some(value) = parts.headers.get(name) {
            forward.headers_mut().insert(name, value.clone());
        }
    }
    let result = app.stack.clone().oneshot(forward).await;
    match result {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, Body::from(body))
        }
        Err(_) => {
            let message = failure_message(&result);
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": message})),
            )
                .into_response();
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            response
        }
    }
}

/// `/api/messages/stream`, passed through unbuffered.
pub(crate) async fn stream(State(app): State<AppState>, request: Request) -> Response {
    let query = request
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut upstream = app
        .streaming
        .get(format!("{}/api/messages/stream{query}", app.backend_url));
    if let Some(last) = request.headers().get("last-event-id") {
        upstream = upstream.header("last-event-id", last.clone());
    }
    match upstream.send().await {
        Ok(answer) => {
            let status = answer.status();
            let content_type = answer.headers().get(http::header::CONTENT_TYPE).cloned();
            let body = Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other));
            let mut response = Response::new(body);
            *response.status_mut() = status;
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_TYPE, content_type);
            }
            response.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-cache"),
            );
            response
        }
        Err(err) => {
            tracing::warn!(error = %err, "live-update stream: backend unreachable");
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "backend unreachable"})),
            )
                .into_response();
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            response
        }
    }
}

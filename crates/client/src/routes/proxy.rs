//! The buffered guestbook operations, proxied to the backend through the stack by exact
//! route: `GET /api/messages` (with its query, re-encoded), `POST /api/messages` and
//! `DELETE /api/messages`. The backend path is a constant, never the request's path (see
//! [`crate::routes::api_paths`]). A POST is retried only when it carries an `Idempotency-Key`
//! (the UI always sends one); the live-update stream has a route of its own
//! ([`crate::routes::stream`]) and never comes through here.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use guestbook_common::error_body::{ErrorBody, ErrorCode, respond, respond_retry_after};
use tower::ServiceExt;

use crate::app::AppState;
use crate::backend::BackendOutcome;
use crate::routes::api_paths::reencode_query;

/// The one backend path these operations reach.
const MESSAGES: &str = "/api/messages";
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

/// `GET /api/messages`: a page of messages.
pub(crate) async fn list(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let target = match reencode_query(query.as_deref()) {
        Some(query) => format!("{MESSAGES}?{query}"),
        None => MESSAGES.to_owned(),
    };
    forward(&app, Method::GET, &target, &headers, Bytes::new()).await
}

/// `POST /api/messages`: appends a message.
pub(crate) async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorBody::new(
                    ErrorCode::TooLarge,
                    format!("the request body is over {} KiB", MAX_BODY / 1024),
                ),
            );
        }
    };
    forward(&app, Method::POST, MESSAGES, &headers, body).await
}

/// `DELETE /api/messages`: the backend's admin clear (it checks the bearer token).
pub(crate) async fn clear(State(app): State<AppState>, headers: HeaderMap) -> Response {
    forward(&app, Method::DELETE, MESSAGES, &headers, Bytes::new()).await
}

/// One call through the stack to `target` (a constant path, and a re-encoded query).
async fn forward(
    app: &AppState,
    method: Method,
    target: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let uri = match target.parse::<http::Uri>() {
        Ok(uri) => uri,
        Err(_) => {
            return respond(
                StatusCode::BAD_REQUEST,
                ErrorBody::new(ErrorCode::BadRequest, "the query cannot be forwarded"),
            );
        }
    };
    let mut request = http::Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    for name in FORWARDED {
        if let Some(value) = headers.get(name) {
            request.headers_mut().insert(name, value.clone());
        }
    }
    match app.stack.clone().oneshot(request).await {
        // The backend's answer, error bodies included, passes through unchanged.
        Ok(response) => {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, Body::from(body))
        }
        Err(error) => {
            let outcome = BackendOutcome::of_error(error.as_ref());
            respond_retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorBody::new(outcome.error_code(), outcome.message()),
                1,
            )
        }
    }
}

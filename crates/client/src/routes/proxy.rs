//! The buffered guestbook operations, proxied to the backend through the stack by exact
//! route: `GET /api/messages` (with its query, re-encoded), `POST /api/messages` and
//! `DELETE /api/messages`, and the same three on `/api/books/{book}/messages`. The backend
//! path is a constant, or built from a validated book name ([`Book`]), never the request's
//! path (see [`crate::routes::api_paths`]). A POST is retried only when it carries an `Idempotency-Key`
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
use crate::routes::book::Book;

/// The backend path of the default book's operations.
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
    list_at(&app, MESSAGES, query.as_deref(), &headers).await
}

/// `GET /api/books/{book}/messages`: a page of that book's messages.
pub(crate) async fn book_list(
    State(app): State<AppState>,
    book: Book,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    list_at(&app, &book.messages_path(), query.as_deref(), &headers).await
}

/// `POST /api/messages`: appends a message.
pub(crate) async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    create_at(&app, MESSAGES, &headers, body).await
}

/// `POST /api/books/{book}/messages`: appends a message to that book. The name is checked
/// (the extractor) before the body is read.
pub(crate) async fn book_create(
    State(app): State<AppState>,
    book: Book,
    headers: HeaderMap,
    body: Body,
) -> Response {
    create_at(&app, &book.messages_path(), &headers, body).await
}

/// `DELETE /api/messages`: the backend's admin clear (it checks the bearer token).
pub(crate) async fn clear(State(app): State<AppState>, headers: HeaderMap) -> Response {
    forward(&app, Method::DELETE, MESSAGES, &headers, Bytes::new()).await
}

/// `DELETE /api/books/{book}/messages`: the backend's admin clear of that book.
pub(crate) async fn book_clear(
    State(app): State<AppState>,
    book: Book,
    headers: HeaderMap,
) -> Response {
    forward(
        &app,
        Method::DELETE,
        &book.messages_path(),
        &headers,
        Bytes::new(),
    )
    .await
}

/// A GET of `path` (a backend messages path) with `query` re-encoded.
async fn list_at(app: &AppState, path: &str, query: Option<&str>, headers: &HeaderMap) -> Response {
    let target = match reencode_query(query) {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    forward(app, Method::GET, &target, headers, Bytes::new()).await
}

/// A POST of `body` (bounded by [`MAX_BODY`]) to `path` (a backend messages path).
async fn create_at(app: &AppState, path: &str, headers: &HeaderMap, body: Body) -> Response {
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
    forward(app, Method::POST, path, headers, body).await
}

/// One call through the stack to `target` (a constant path or one built from a [`Book`], and
/// a re-encoded query).
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

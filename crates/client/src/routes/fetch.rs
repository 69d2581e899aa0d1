//! `GET /fetch`: seed 002's endpoint. The backend's `/data` through the stack; on failure a
//! fallback answer, at once when the circuit is open, or (with `FALLBACK_CACHE_SECS`) the
//! last good answer marked stale.

use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use guestbook_api::ErrorCode;
use serde_json::Value;
use tower::ServiceExt;

use crate::app::AppState;
use crate::backend::BackendOutcome;

/// `/fetch`'s body: `ok` with `data`, `stale` with `data`, `age_ms`, `message` and `code`, or
/// `fallback` with `message` and `code`.
#[derive(Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct FetchAnswer {
    /// `ok`, `stale` or `fallback`.
    #[schema(pattern = "^(ok|stale|fallback)$")]
    pub status: &'static str,
    /// The backend's `/data` body (`ok` and `stale`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, nullable = false)]
    pub data: Option<Value>,
    /// Age of a stale answer, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub age_ms: Option<u64>,
    /// Why the backend gave no fresh answer, in seed 002's words: `backend answered N`,
    /// `timeout`, `circuit-open`, `backend unreachable: ...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub message: Option<String>,
    /// The same, for programs (`stale` and `fallback`): `circuit-open`, `deadline`,
    /// `unavailable` or `backend-unreachable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub code: Option<ErrorCode>,
}

/// Seed 002's endpoint: the backend's `/data` through the stack.
#[utoipa::path(
    get,
    path = "/fetch",
    tag = "seed",
    responses(
        (status = 200, description = "`{\"status\": \"ok\", \"data\"}`, or with FALLBACK_CACHE_SECS a `stale` answer", body = FetchAnswer),
        (status = 503, description = "`{\"status\": \"fallback\", \"message\", \"code\"}` after the attempts failed or at once while the circuit is open", body = FetchAnswer),
    )
)]
pub(crate) async fn fetch(State(app): State<AppState>) -> Response {
    // A GET by default; a static URI is not parsed again per request as a builder's is.
    let mut request = http::Request::new(Bytes::new());
    *request.uri_mut() = http::Uri::from_static("/data");
    let result = app.stack.clone().oneshot(request).await;
    if let Ok(response) = &result
        && response.status().is_success()
        && let Ok(data) = serde_json::from_slice::<Value>(response.body())
    {
        app.remember(&data);
        return json(
            StatusCode::OK,
            FetchAnswer {
                status: "ok",
                data: Some(data),
                ..FetchAnswer::default()
            },
        );
    }
    let outcome = BackendOutcome::of(result.as_ref());
    app.count_fallback(outcome.fallback_label());
    let failed = FetchAnswer {
        message: Some(outcome.fetch_message().into_owned()),
        code: Some(outcome.error_code()),
        ..FetchAnswer::default()
    };
    if let Some((data, age)) = app.stale() {
        return json(
            StatusCode::OK,
            FetchAnswer {
                status: "stale",
                data: Some(data),
                age_ms: Some(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
                ..failed
            },
        );
    }
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        FetchAnswer {
            status: "fallback",
            ..failed
        },
    )
}

/// Headers an answer's map has room for from the start: its content type, then the five
/// security headers and the `x-request-id` that the outer layers add.
const ANSWER_HEADERS: usize = 8;

/// `answer` with `status`, as `axum::Json` makes it (the same body and content type), in a
/// header map sized for [`ANSWER_HEADERS`]: axum's map has six usable slots, so the seventh
/// header (the request id) reallocated it on every call (~1,500 instructions, issue 17).
fn json(status: StatusCode, answer: FetchAnswer) -> Response {
    // 128 bytes to start, as axum does.
    let mut body = BytesMut::with_capacity(128).writer();
    if serde_json::to_writer(&mut body, &answer).is_err() {
        // Not expected for these fields; if it happens, axum's own answer to it (a 500 with
        // the error), with the status this answer had otherwise, as before.
        let failed = Json(answer).into_response();
        return if status == StatusCode::OK {
            failed
        } else {
            (status, failed).into_response()
        };
    }
    let mut headers = HeaderMap::with_capacity(ANSWER_HEADERS);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let mut response = Response::new(Body::from(body.into_inner().freeze()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// When the last good `/data` answer arrived.
pub type Remembered = Option<(Instant, Value)>;

//! The one error type at the HTTP edge.
//!
//! 4xx answers carry a message for the caller and are not logged; 5xx answers are opaque to
//! the caller and logged once here with their cause chain. Transient store failures become
//! 503 with `Retry-After`: with an idempotency key the retry is always safe. A failed append
//! says when it may have been stored all the same (a timeout after the script ran, replicas
//! that did not confirm in time): a retry without the same key could then store it twice.

use std::error::Error as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use guestbook_common::error_body::{ErrorBody, ErrorCode, respond, respond_retry_after};
use guestbook_common::stream_limit::StreamRefused;

use crate::domain::InputError;
use crate::guestbook::{PostError, TooManyBooks};
use crate::store::StoreError;

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Everything a handler can answer with instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be parsed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: a bearer token is required and was missing or wrong.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 404.
    #[error("not found")]
    NotFound,
    /// 413: the body is over the limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 415: JSON was required.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// 422: well-formed but invalid.
    #[error("{0}")]
    Unprocessable(String),
    /// 422: an `Idempotency-Key` reused with another body.
    #[error("this Idempotency-Key was already used with a different body")]
    IdempotencyConflict,
    /// 429 or 503 + Retry-After: over a cap on live-update streams (per client, or in all).
    #[error(transparent)]
    Streams(#[from] StreamRefused),
    /// 503 + Retry-After: live updates are followed on as many books as allowed.
    #[error(transparent)]
    LiveBooks(#[from] TooManyBooks),
    /// 503 + Retry-After, or 500 for a non-transient store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 503 + Retry-After: an append failed in a way that may have stored it all the same.
    #[error(transparent)]
    AppendUncertain(StoreError),
}

impl From<PostError> for ApiError {
    fn from(err: PostError) -> Self {
        match err {
            PostError::OutcomeUnknown(err) => Self::AppendUncertain(err),
            PostError::Failed(err) => Self::Store(err),
        }
    }
}

impl From<InputError> for ApiError {
    fn from(err: InputError) -> Self {
        match err {
            InputError::Malformed(message) => Self::BadRequest(message),
            InputError::Invalid(message) => Self::Unprocessable(message),
        }
    }
}

impl ApiError {
    /// The status and the code of this answer.
    fn classify(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            Self::NotFound => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
            ),
            Self::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::Invalid),
            Self::IdempotencyConflict => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::IdempotencyConflict,
            ),
            Self::Streams(refused) => (refused.status(), ErrorCode::TooManyStreams),
            Self::LiveBooks(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::TooManyStreams),
            Self::Store(err) if err.is_transient() => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable)
            }
            Self::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
            Self::AppendUncertain(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::OutcomeUnknown)
            }
        }
    }

    /// The text for people, logging what the caller does not see.
    fn message(&self, status: StatusCode) -> String {
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, cause = %cause_chain(self), "request failed");
            return "internal error".to_owned();
        }
        match self {
            Self::Store(err) => {
                tracing::warn!(error = %err, cause = %cause_chain(self), "store unavailable");
                // The reason (timeout, contention, ...) helps operators and leaks nothing.
                format!("temporarily unavailable: {}", err.reason())
            }
            Self::AppendUncertain(err) => {
                tracing::warn!(error = %err, cause = %cause_chain(self), "append outcome unknown");
                format!(
                    "temporarily unavailable: {}; the message may have been written: \
                     retry only with the same Idempotency-Key",
                    err.label()
                )
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Streams(refused) = self {
            // Its own Retry-After and shedding mark: a slot frees only when some stream ends.
            return refused.into_response();
        }
        let (status, code) = self.classify();
        let body = ErrorBody::new(code, self.message(status));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return respond_retry_after(status, body, RETRY_AFTER_SECS);
        }
        let mut response = respond(status, body);
        if let Self::Unauthorized = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn cause_chain(err: &ApiError) -> String {
    let mut chain = String::new();
    let mut source = err.source();
    while let Some(cause) = source {
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

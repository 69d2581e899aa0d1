//! The one error type at the HTTP edge.
//!
//! 4xx answers carry a message for the caller and are not logged; 5xx answers are opaque to
//! the caller and logged once here with their cause chain. Transient store failures become
//! 503 with `Retry-After`: with an idempotency key the retry is always safe. A failed append
//! says when it may have been stored all the same (a timeout after the script ran, replicas
//! that did not confirm in time): a retry without the same key could then store it twice.

use std::error::Error as _;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use guestbook_common::stream_limit::StreamRefused;

use crate::domain::InputError;
use crate::store::StoreError;

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

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
    /// 503 + Retry-After: a local capacity limit.
    #[error("{0}")]
    Busy(&'static str),
    /// 429 or 503 + Retry-After: over a cap on live-update streams (per client, or in all).
    #[error(transparent)]
    Streams(#[from] StreamRefused),
    /// 503 + Retry-After, or 500 for a non-transient store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 503 + Retry-After: an append failed in a way that may have stored it all the same.
    #[error(transparent)]
    AppendUncertain(StoreError),
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
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Streams(refused) => refused.status(),
            Self::Store(err) if err.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::AppendUncertain(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Streams(refused) = self {
            // Its own Retry-After: a slot frees only when some stream ends.
            return refused.into_response();
        }
        let status = self.status();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, cause = %cause_chain(&self), "request failed");
            "internal error".to_owned()
        } else if let Self::Store(err) = &self {
            tracing::warn!(error = %err, cause = %cause_chain(&self), "store unavailable");
            // The reason (timeout, contention, ...) helps operators and leaks nothing.
            format!("temporarily unavailable: {}", err.label())
        } else if let Self::AppendUncertain(err) = &self {
            tracing::warn!(error = %err, cause = %cause_chain(&self), "append outcome unknown");
            format!(
                "temporarily unavailable: {}; the message may have been written: \
                 retry only with the same Idempotency-Key",
                err.label()
            )
        } else {
            self.to_string()
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        match &self {
            Self::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            _ => {}
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

//! Request parsing shared by the handlers, with our error format instead of axum's plain-text
//! rejections.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use bytes::BytesMut;
use futures_util::StreamExt;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;
use crate::store::Book;

/// Largest accepted request body (the contract: over 16 KiB is 413).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A body of at most [`MAX_BODY_BYTES`].
///
/// It enforces the limit itself, as `DefaultBodyLimit` would through axum's `Bytes`, so the
/// routes that take it need no such layer: the layer inserts an extension into every request,
/// which grows the request's extension map past its first allocation (a rehash and a box,
/// paid again when the map is dropped).
pub struct LimitedBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        let mut frames = request.into_body().into_data_stream();
        // A body in one frame (the usual case) is kept as it came, without a copy.
        let mut first = Bytes::new();
        let mut joined: Option<BytesMut> = None;
        while let Some(frame) = frames.next().await {
            // Worded as axum's `Bytes` rejection words it.
            let data = frame.map_err(|err| {
                ApiError::BadRequest(format!("Failed to buffer the request body: {err}"))
            })?;
            let so_far = joined.as_ref().map_or(first.len(), BytesMut::len);
            if data.len() > MAX_BODY_BYTES - so_far {
                return Err(ApiError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                });
            }
            if let Some(joined) = &mut joined {
                joined.extend_from_slice(&data);
            } else if first.is_empty() {
                first = data;
            } else if !data.is_empty() {
                let mut both = BytesMut::with_capacity(first.len() + data.len());
                both.extend_from_slice(&first);
                both.extend_from_slice(&data);
                joined = Some(both);
            }
        }
        Ok(Self(joined.map_or(first, BytesMut::freeze)))
    }
}

/// Requires a JSON content type (with or without parameters such as `charset`).
///
/// Requiring it is a CSRF defence: a cross-site HTML form can only send form or plain-text
/// bodies, and a browser preflights anything else, which our closed CORS refuses.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType);
    };
    // The type every client sends, exactly: no need to split, trim or fold case.
    if value.as_bytes() == b"application/json" {
        return Ok(());
    }
    let is_json = Some(value)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json")
                || (mime.len() > 5
                    && mime[..mime.len() - 5].starts_with("application/")
                    && mime.ends_with("+json"))
        });
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Query parameters parsed into `T`, answering 400 with our JSON error on bad input.
pub struct ValidQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ValidQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// The book a `/api/books/{book}/...` path names, validated (400 with the rule otherwise).
pub struct InBook(pub Arc<Book>);

impl FromRequestParts<AppState> for InBook {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadRequest(guestbook_api::BOOK_NAME_RULE.into()))?;
        state
            .guestbook
            .book(&name)
            .map(Self)
            .ok_or_else(|| ApiError::BadRequest(guestbook_api::BOOK_NAME_RULE.into()))
    }
}

/// The largest message id: Redis counters (`INCR`) are signed 64-bit integers, and the
/// OpenAPI documents give ids as `int64`.
pub const MAX_ID: u64 = i64::MAX as u64;

/// Refuses an id above [`MAX_ID`] with 400: no message can have it, and the documents say so.
pub fn check_id(name: &str, id: Option<u64>) -> Result<Option<u64>, ApiError> {
    match id {
        Some(id) if id > MAX_ID => Err(ApiError::BadRequest(format!(
            "{name} must be a message id, at most {MAX_ID}"
        ))),
        other => Ok(other),
    }
}

/// Checks `Authorization: Bearer <token>` against `expected` in constant time.
pub fn require_bearer(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    // ct_eq on unequal lengths returns early on length only, which reveals nothing useful.
    if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_content_types_are_recognised() {
        let mut headers = HeaderMap::new();
        assert!(require_json(&headers).is_err());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(require_json(&headers).is_ok());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(require_json(&headers).is_err());
    }

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let mut headers = HeaderMap::new();
        assert!(require_bearer(&headers, "secret-token-0123").is_err());
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret-token-0123"),
        );
        assert!(require_bearer(&headers, "secret-token-0123").is_ok());
        assert!(require_bearer(&headers, "secret-token-0124").is_err());
    }
}

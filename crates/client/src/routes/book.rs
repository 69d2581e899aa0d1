//! `{book}` in `/api/books/{book}/messages` and `/api/books/{book}/messages/stream`: a
//! guestbook name, checked before the backend is asked anything.
//!
//! The name becomes part of the backend path, and the backend turns it into Redis keys, so
//! the [`Book`] extractor admits only what `guestbook_api::is_valid_book_name` admits and the
//! upstream paths are built from that name alone, never from the request's path. The check
//! runs on the raw (still percent-encoded) segment: a valid name has nothing to encode, so an
//! encoded spelling (`%41`) is refused rather than decoded, and what was checked is exactly
//! what is forwarded. A dot-segment or an encoded separator anywhere in the path is refused
//! first, with the same 400 as any other path under `/api/` ([`crate::routes::api_paths`]).

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use guestbook_api::{BOOK_NAME_RULE, is_valid_book_name};
use guestbook_common::error_body::{ErrorBody, ErrorCode, respond};

use crate::routes::api_paths::{is_traversal, traversal_refused};

/// What comes before the name in every book route (`crate::app` routes
/// `/api/books/{book}/...`); a path without it gets the name rule's 400.
const PREFIX: &str = "/api/books/";

/// A valid book name taken from the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Book(String);

/// Why a book route refused its request, before the backend was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A dot-segment or an encoded or doubled separator in the path.
    Traversal,
    /// A name outside `guestbook_api::is_valid_book_name`.
    Rule,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Traversal => traversal_refused(),
            Self::Rule => respond(
                StatusCode::BAD_REQUEST,
                ErrorBody::new(ErrorCode::BadRequest, BOOK_NAME_RULE),
            ),
        }
    }
}

impl Book {
    /// The book named by `segment` (raw, as in the path) of `path`.
    fn from_path(path: &str, segment: &str) -> Result<Self, Refused> {
        if is_traversal(path) {
            return Err(Refused::Traversal);
        }
        if !is_valid_book_name(segment) {
            return Err(Refused::Rule);
        }
        Ok(Self(segment.to_owned()))
    }

    /// The backend's path for this book's messages.
    pub(crate) fn messages_path(&self) -> String {
        format!("/api/books/{}/messages", self.0)
    }

    /// The backend's path for this book's live updates.
    pub(crate) fn stream_path(&self) -> String {
        format!("/api/books/{}/messages/stream", self.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Book {
    type Rejection = Refused;

    /// The segment after [`PREFIX`], taken from the raw path: axum's own path extractors
    /// percent-decode (and answer a plain-text 400 for a segment that is not UTF-8 once
    /// decoded), and what is checked must be what is forwarded.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Refused> {
        let path = parts.uri.path();
        let segment = path
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        Self::from_path(path, segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn refusal(path: &str, segment: &str) -> (StatusCode, ErrorBody) {
        let answer = Book::from_path(path, segment)
            .expect_err("refused")
            .into_response();
        let status = answer.status();
        let body = axum::body::to_bytes(answer.into_body(), 64 * 1024)
            .await
            .expect("a small body");
        (
            status,
            serde_json::from_slice(&body).expect("an error body"),
        )
    }

    #[test]
    fn a_valid_name_gives_the_backends_paths_for_that_name() {
        let book = Book::from_path("/api/books/Party-2026_b/messages", "Party-2026_b")
            .expect("a valid name");

        assert_eq!(book.messages_path(), "/api/books/Party-2026_b/messages");
        assert_eq!(
            book.stream_path(),
            "/api/books/Party-2026_b/messages/stream"
        );
    }

    #[tokio::test]
    async fn names_outside_the_rule_get_400_with_the_rule() {
        let long = "x".repeat(guestbook_api::MAX_BOOK_NAME + 1);
        for segment in ["a:b", long.as_str(), "{x}", "%7Bx%7D", "%41", "a*", "a%20b"] {
            let path = format!("/api/books/{segment}/messages");

            let (status, body) = refusal(&path, segment).await;

            assert_eq!(status, StatusCode::BAD_REQUEST, "{segment}");
            assert_eq!(body.code, ErrorCode::BadRequest, "{segment}");
            assert_eq!(body.error, BOOK_NAME_RULE, "{segment}");
        }
    }

    #[tokio::test]
    async fn dot_segments_and_encoded_separators_get_the_traversal_400() {
        for segment in ["..", ".", "%2e%2e", "%2E%2e", ".%2e", "a%2fb", "a%5cb"] {
            let path = format!("/api/books/{segment}/messages");

            let (status, body) = refusal(&path, segment).await;

            assert_eq!(status, StatusCode::BAD_REQUEST, "{segment}");
            assert_eq!(body.code, ErrorCode::BadRequest, "{segment}");
            assert!(
                body.error.starts_with("path refused"),
                "{segment}: {body:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_extractor_checks_the_raw_segment_not_its_decoding() {
        use tower::ServiceExt;
        let router = axum::Router::new().route(
            "/api/books/{book}/messages",
            axum::routing::get(|book: Book| async move { book.messages_path() }),
        );
        let call = |uri: &'static str| {
            let router = router.clone();
            async move {
                let request = axum::http::Request::get(uri)
                    .body(axum::body::Body::empty())
                    .expect("a valid request");
                let answer = router.oneshot(request).await.expect("infallible");
                let status = answer.status();
                let body = axum::body::to_bytes(answer.into_body(), 64 * 1024)
                    .await
                    .expect("a small body");
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };

        let plain = call("/api/books/A/messages").await;
        let encoded = call("/api/books/%41/messages").await;
        let not_utf8 = call("/api/books/%FF/messages").await;

        assert_eq!(plain, (StatusCode::OK, "/api/books/A/messages".to_owned()));
        assert_eq!(encoded.0, StatusCode::BAD_REQUEST, "{}", encoded.1);
        assert!(encoded.1.contains(BOOK_NAME_RULE), "{}", encoded.1);
        assert_eq!(not_utf8.0, StatusCode::BAD_REQUEST, "{}", not_utf8.1);
        assert!(not_utf8.1.contains(BOOK_NAME_RULE), "{}", not_utf8.1);
    }
}

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

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use guestbook_api::{BOOK_NAME_RULE, is_valid_book_name};
use guestbook_common::error_body::{ErrorBody, ErrorCode, respond};

use crate::routes::api_paths::{is_traversal, traversal_refused};

/// The route parameter that names the book.
const PARAM: &str = "book";

/// A valid book name taken from the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Book(String);

impl Book {
    /// The book named by `segment` (raw, as in the path) of `path`, or the 400 to answer.
    fn from_path(path: &str, segment: &str) -> Result<Self, Response> {
        if is_traversal(path) {
            return Err(traversal_refused());
        }
        if !is_valid_book_name(segment) {
            return Err(respond(
                StatusCode::BAD_REQUEST,
                ErrorBody::new(ErrorCode::BadRequest, BOOK_NAME_RULE),
            ));
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
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        // Only the book routes take this extractor, and each has the parameter; a route
        // without it is a wiring mistake, answered as the server's fault.
        let Some(segment) = params
            .iter()
            .find_map(|(name, value)| (name == PARAM).then_some(value))
        else {
            tracing::error!("a book route without a {{{PARAM}}} parameter");
            return Err(respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorBody::new(ErrorCode::Internal, "internal error"),
            ));
        };
        Self::from_path(parts.uri.path(), segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn refusal(path: &str, segment: &str) -> (StatusCode, ErrorBody) {
        let answer = Book::from_path(path, segment).expect_err("refused");
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
}

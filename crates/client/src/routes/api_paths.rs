//! What may pass under `/api/`: only the routes in [`crate::app`], matched exactly on the raw
//! path. Everything else under `/api/` is answered here and reaches nothing. The book routes'
//! `{book}` segment can hold a dot-segment too; their extractor ([`crate::routes::book`])
//! asks [`is_traversal`] first and answers the same 400.
//!
//! The backend's URL is built with the `url` crate, which resolves dot-segments, `%2e` among
//! them (WHATWG URL). So a raw path such as `/api/../config/failure` forwarded as given would
//! reach `/config/failure`, and `/api/./messages/stream` would put a never-ending stream
//! through the buffered, retried stack. The proxy therefore never forwards the request's path
//! (its upstream paths are constants), and this module answers the rest: a path with a
//! dot-segment or an encoded or doubled separator gets 400, any other 404.
//!
//! Queries are forwarded only re-encoded ([`reencode_query`]): parsed as
//! `application/x-www-form-urlencoded` and written back canonically, so what reaches the
//! backend is exactly the parameters the caller meant, however oddly spelled.

use axum::http::{StatusCode, Uri};
use axum::response::Response;
use guestbook_common::error_body::{ErrorBody, ErrorCode, respond};

/// `/api` itself, `/api/` and any path under it that no exact route took.
pub(crate) async fn refuse(uri: Uri) -> Response {
    if is_traversal(uri.path()) {
        traversal_refused()
    } else {
        respond(
            StatusCode::NOT_FOUND,
            ErrorBody::new(ErrorCode::NotFound, "not found"),
        )
    }
}

/// The 400 for a path [`is_traversal`] holds; exact routes with a path parameter
/// ([`crate::routes::book`]) answer it too, as a `..` can fill their parameter.
pub(crate) fn traversal_refused() -> Response {
    respond(
        StatusCode::BAD_REQUEST,
        ErrorBody::new(
            ErrorCode::BadRequest,
            "path refused: dot-segments and encoded or doubled separators are not accepted under /api/",
        ),
    )
}

/// Whether `path` holds a dot-segment (`.`, `..`, in any spelling), an encoded `/` or `\`, a
/// `\`, or an empty segment (`//`): anything a URL parser or a server might resolve into
/// another path.
pub(crate) fn is_traversal(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "\\", "//"]
        .iter()
        .any(|needle| lower.contains(needle))
    {
        return true;
    }
    lower
        .split('/')
        .any(|segment| segment == "." || segment == "..")
}

/// `query` decoded as form parameters and encoded again; `None` when nothing is left.
pub(crate) fn reencode_query(query: Option<&str>) -> Option<String> {
    let query = query.filter(|query| !query.is_empty())?;
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form_urlencoded::parse(query.as_bytes()))
        .finish();
    (!encoded.is_empty()).then_some(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_dot_segment_or_separator_is_traversal() {
        for path in [
            "/api/../config",
            "/api/./messages",
            "/api/..",
            "/api/%2e%2e/config",
            "/api/%2E%2E/config",
            "/api/.%2e/config",
            "/api/%2e/messages",
            "/api/..%2fconfig",
            "/api/..%2Fconfig",
            "/api/..%5cconfig",
            "/api/..\\config",
            "/api//messages",
        ] {
            assert!(is_traversal(path), "{path}");
        }
    }

    #[test]
    fn plain_paths_are_not_traversal() {
        for path in [
            "/api/messages",
            "/api/messages/stream",
            "/api/books/x.y",
            "/api",
        ] {
            assert!(!is_traversal(path), "{path}");
        }
    }

    #[test]
    fn queries_are_re_encoded_with_their_meaning_kept() {
        assert_eq!(reencode_query(None), None);
        assert_eq!(reencode_query(Some("")), None);
        assert_eq!(
            reencode_query(Some("after=%31&order=desc")).as_deref(),
            Some("after=1&order=desc")
        );
        assert_eq!(
            reencode_query(Some("limit=1%26after%3D0")).as_deref(),
            Some("limit=1%26after%3D0")
        );
        assert_eq!(
            reencode_query(Some("a=/../x#y")).as_deref(),
            Some("a=%2F..%2Fx%23y")
        );
    }
}

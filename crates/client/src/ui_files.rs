//! The browser UI's static files: embedded in the binary at build time (`build.rs` reads the
//! repository's `frontend/`), so the client serves `/` from whatever directory it is started
//! in. `FRONTEND_DIR` serves a directory instead, for editing the UI without a rebuild.

use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tower_http::services::ServeDir;

include!(concat!(env!("OUT_DIR"), "/frontend_files.rs"));

/// Where the UI's files come from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// The copy built into the binary.
    Embedded,
    /// A directory read at request time (`FRONTEND_DIR`).
    Directory(&'a Path),
}

impl<'a> Source<'a> {
    /// `FRONTEND_DIR` when set, the embedded copy otherwise.
    pub fn from_setting(dir: Option<&'a Path>) -> Self {
        dir.map_or(Self::Embedded, Self::Directory)
    }

    /// A line for the start-up log; a directory without `index.html` is named as the reason
    /// `/` will answer 404 (before, the client said nothing and served 404s).
    pub fn describe(&self) -> Result<String, String> {
        match self {
            Self::Embedded => Ok(format!("embedded ({} files)", FILES.len())),
            Self::Directory(dir) if dir.join("index.html").is_file() => {
                Ok(format!("FRONTEND_DIR={}", dir.display()))
            }
            Self::Directory(dir) => Err(format!(
                "FRONTEND_DIR={} has no index.html: / will answer 404 (unset FRONTEND_DIR to serve the embedded UI)",
                dir.display()
            )),
        }
    }
}

/// The router's fallback: the UI's files, GET and HEAD only.
pub fn fallback<S>(router: Router<S>, source: Source<'_>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    match source {
        Source::Directory(dir) => router.fallback_service(ServeDir::new(dir)),
        Source::Embedded => router.fallback(embedded),
    }
}

/// The embedded file at `uri`'s path, answering as `ServeDir` does: `index.html` for a
/// directory, 404 for a missing file, 405 for other methods.
async fn embedded(method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let Some((content_type, bytes)) = lookup(uri.path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    response
}

/// The file for a request path; `None` when there is none.
fn lookup(path: &str) -> Option<(&'static str, &'static [u8])> {
    let relative = path.trim_start_matches('/');
    let relative = if relative.is_empty() || relative.ends_with('/') {
        format!("{relative}index.html")
    } else {
        relative.to_owned()
    };
    FILES
        .iter()
        .find(|(name, _, _)| *name == relative)
        .map(|(_, content_type, bytes)| (*content_type, *bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_the_embedded_index_page() {
        let (content_type, bytes) = lookup("/").expect("index.html is embedded");
        assert!(content_type.starts_with("text/html"));
        assert_eq!(bytes, include_bytes!("../../../frontend/index.html"));
    }

    #[test]
    fn nested_files_and_missing_ones() {
        assert!(lookup("/js/main.js").is_some_and(|(ct, _)| ct.starts_with("text/javascript")));
        assert!(lookup("/css/app.css").is_some_and(|(ct, _)| ct.starts_with("text/css")));
        assert!(lookup("/nope.js").is_none());
        assert!(lookup("/../Cargo.toml").is_none());
    }
}

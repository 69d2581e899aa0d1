//! Refusing cross-site state changes (CSRF) on endpoints that accept bodies a web page can
//! send without asking (`text/plain`, forms): a page on any site can make a browser POST
//! there, and closed CORS only stops it from *reading* the answer, not the change.
//!
//! A request that changes state (any method but GET, HEAD and OPTIONS) is refused with 403
//! `{"error": "cross-site request refused", "code": "cross-site"}` when the browser says it is cross-site:
//! - `Sec-Fetch-Site: cross-site`;
//! - an `Origin` that is not this service: `null` (sandboxed frames, some redirects), or a
//!   host and port other than the request's `Host`. The scheme is not compared (behind a TLS
//!   terminator the service cannot know it), only host and port, with the scheme's default
//!   port when the origin names none.
//!
//! A request with neither header is not from a browser page (curl, scripts, seed 002's
//! `curl -X POST .../config/failure -d '...'`) and passes: this defends browsers' users, and
//! the bearer token, where set, defends the rest. Behind a proxy that rewrites `Host`, a
//! browser's same-origin request would look cross-site: such a proxy must keep `Host`.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::error_body::{ErrorBody, ErrorCode, respond};

/// The body's message.
pub const REFUSED: &str = "cross-site request refused";

/// The 403's description in the OpenAPI documents.
pub const DOCUMENTED: &str = "A cross-site request from a browser (`Origin` not this service's host and port, `Origin: null`, or `Sec-Fetch-Site: cross-site`): `cross-site request refused`";

/// Middleware: refuses a cross-site state-changing request with 403 before it reaches the
/// handler; every other request passes untouched.
pub async fn guard(request: Request, next: Next) -> Response {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe && is_cross_site(request.headers(), request.uri().authority()) {
        tracing::info!(
            method = %request.method(),
            path = request.uri().path(),
            origin = ?request.headers().get(header::ORIGIN),
            "cross-site request refused"
        );
        return refused();
    }
    next.run(request).await
}

/// The 403 answer.
fn refused() -> Response {
    respond(
        StatusCode::FORBIDDEN,
        ErrorBody::new(ErrorCode::CrossSite, REFUSED),
    )
}

/// Whether the browser marked the request as coming from another site. `uri_authority` is the
/// request target's authority, used when there is no `Host` header.
pub fn is_cross_site(headers: &HeaderMap, uri_authority: Option<&http::uri::Authority>) -> bool {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| uri_authority.map(http::uri::Authority::as_str));
    match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => !same_host(origin, host),
        // An unreadable Origin, or nothing to compare it with: not shown to be same-origin.
        _ => true,
    }
}

/// Whether `origin` (`scheme://host[:port]`) names `host` (`host[:port]`, from `Host`).
fn same_host(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        // `null`, or not an origin at all.
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let (origin_host, origin_port) = split_port(authority, default_port);
    let (host, port) = split_port(host, default_port);
    !origin_host.is_empty() && origin_host.eq_ignore_ascii_case(host) && origin_port == port
}

/// `host[:port]` (or `[v6]:port`) into host and port, the default when none is given.
fn split_port<'a>(authority: &'a str, default_port: &'a str) -> (&'a str, &'a str) {
    let authority = authority.trim();
    match authority.rsplit_once(':') {
        // A colon inside an unbracketed or bracketed IPv6 address is not a port separator.
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']')) =>
        {
            (host, port)
        }
        _ => (authority, default_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn cross(pairs: &[(&'static str, &'static str)]) -> bool {
        is_cross_site(&headers(pairs), None)
    }

    #[test]
    fn no_browser_headers_is_not_cross_site() {
        assert!(!cross(&[("host", "localhost:8080")]));
    }

    #[test]
    fn the_services_own_origin_is_same_site() {
        for (host, origin) in [
            ("localhost:8080", "http://localhost:8080"),
            ("Guestbook.Example", "https://guestbook.example"),
            ("guestbook.example:443", "https://guestbook.example"),
            ("[::1]:8081", "http://[::1]:8081"),
        ] {
            assert!(!cross(&[("host", host), ("origin", origin)]), "{origin}");
        }
        assert!(!cross(&[
            ("host", "localhost:8080"),
            ("origin", "http://localhost:8080"),
            ("sec-fetch-site", "same-origin")
        ]));
    }

    #[test]
    fn another_host_port_or_null_origin_is_cross_site() {
        for (host, origin) in [
            ("localhost:8080", "http://evil.example"),
            ("localhost:8080", "http://localhost:8081"),
            ("localhost:8080", "null"),
            ("guestbook.example", "http://guestbook.example.evil.example"),
        ] {
            assert!(cross(&[("host", host), ("origin", origin)]), "{origin}");
        }
        assert!(cross(&[("origin", "http://localhost:8080")]), "no Host");
    }

    #[tokio::test]
    async fn the_refusal_is_a_403_with_its_code() {
        let response = refused();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = crate::error_body::read(response).await;
        assert_eq!(body.code, ErrorCode::CrossSite);
        assert_eq!(body.error, REFUSED);
    }

    #[test]
    fn sec_fetch_site_cross_site_is_cross_site_whatever_the_origin() {
        assert!(cross(&[("sec-fetch-site", "cross-site")]));
        assert!(cross(&[
            ("host", "localhost:8080"),
            ("origin", "http://localhost:8080"),
            ("sec-fetch-site", "cross-site")
        ]));
    }
}

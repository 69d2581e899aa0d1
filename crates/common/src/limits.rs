//! Request header limits, in both services.
//!
//! hyper already refuses a request head over about 400 KiB or with more than 100 headers
//! (its defaults; axum::serve does not expose them). This tighter limit on the headers' total
//! size answers 431 with our JSON error: no client of these APIs needs more than a few KiB,
//! and every byte of a header is held for the request's lifetime.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::error_body::{ErrorBody, ErrorCode, respond};

/// Largest accepted total of header names and values, in bytes (as nginx's default
/// `large_client_header_buffers`, 4 × 8 KiB, would allow per line, halved).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Middleware: 431 when the request's headers add up to more than [`MAX_HEADER_BYTES`].
pub async fn headers(request: Request, next: Next) -> Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if size > MAX_HEADER_BYTES {
        return too_large();
    }
    next.run(request).await
}

/// The 431 answer.
fn too_large() -> Response {
    respond(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ErrorBody::new(
            ErrorCode::HeadersTooLarge,
            format!("request headers are larger than {MAX_HEADER_BYTES} bytes"),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_answer_names_the_limit_and_its_code() {
        let response = too_large();
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let body = crate::error_body::read(response).await;
        assert_eq!(body.code, ErrorCode::HeadersTooLarge);
        assert_eq!(body.error, "request headers are larger than 16384 bytes");
    }
}

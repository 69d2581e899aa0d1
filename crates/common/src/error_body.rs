//! Error answers as HTTP responses: the one [`ErrorBody`] with its status and, where the caller
//! should come back, `Retry-After`.
//!
//! Every error either service writes goes through [`respond`], so the body's shape, its content
//! type and the header are the same whichever layer refused the request.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub use guestbook_api::{ErrorBody, ErrorCode};

/// `status` with `body` as JSON.
pub fn respond(status: StatusCode, body: ErrorBody) -> Response {
    (status, Json(body)).into_response()
}

/// `status` with `body` as JSON and `Retry-After: retry_after_secs`.
pub fn respond_retry_after(status: StatusCode, body: ErrorBody, retry_after_secs: u64) -> Response {
    let mut response = respond(status, body);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

/// The body of an error answer, for the unit tests of the layers that write one.
#[cfg(test)]
pub(crate) async fn read(response: Response) -> ErrorBody {
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .expect("a small body");
    serde_json::from_slice(&body).expect("an error body")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refusal_carries_its_code_and_when_to_return() {
        let response = respond_retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorBody::new(ErrorCode::Overloaded, "overloaded, retry later").with_reason("queue"),
            2,
        );
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = read(response).await;
        assert_eq!(body.code, ErrorCode::Overloaded);
        assert_eq!(body.reason.as_deref(), Some("queue"));
    }
}

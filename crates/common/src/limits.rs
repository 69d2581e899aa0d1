//! Request header limits, in both services.
//!
//! hyper already refuses a request head over about 400 KiB or with more than 100 headers
//! (its defaults; axum::serve does not expose them). This tighter limit on the headers' total
//! size answers 431 with our JSON error: no client of these APIs needs more than a few KiB,
//! and every byte of a header is held for the request's lifetime.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use tower::{Layer, Service};

use crate::error_body::{ErrorBody, ErrorCode, respond};

/// Largest accepted total of header names and values, in bytes (as nginx's default
/// `large_client_header_buffers`, 4 × 8 KiB, would allow per line, halved).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Layer: 431 when the request's headers add up to more than [`MAX_HEADER_BYTES`].
///
/// A plain tower layer rather than `axum::middleware::from_fn`: that one boxes a future and
/// clones the inner route on every request, a visible share of `/fetch`'s CPU (issue 17).
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderLimitLayer;

impl<S> Layer<S> for HeaderLimitLayer {
    type Service = HeaderLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HeaderLimit(inner)
    }
}

/// The service [`HeaderLimitLayer`] makes.
#[derive(Debug, Clone)]
pub struct HeaderLimit<S>(S);

impl<S> Service<Request> for HeaderLimit<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = HeaderLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let size: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if size > MAX_HEADER_BYTES {
            return HeaderLimitFuture::Refused {
                response: Some(too_large()),
            };
        }
        HeaderLimitFuture::Passed {
            inner: self.0.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer, or the 431.
    #[project = HeaderLimitProj]
    pub enum HeaderLimitFuture<F> {
        /// Within the limit: the inner service answers.
        Passed { #[pin] inner: F },
        /// Over it: the 431, taken once.
        Refused { response: Option<Response> },
    }
}

impl<F> Future for HeaderLimitFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            HeaderLimitProj::Passed { inner } => inner.poll(cx),
            HeaderLimitProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after it completed: a caller bug, but never a panic on the
                // request path; the same answer again.
                None => Poll::Ready(Ok(too_large())),
            },
        }
    }
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

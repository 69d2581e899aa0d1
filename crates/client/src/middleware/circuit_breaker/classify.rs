//! Classifiers: what counts as a failure of the backend, as opposed to a refusal of the
//! caller's request.
//!
//! A breaker that counted 404s or 400s as failures would open because clients send bad
//! requests, and shut everyone else out of a healthy backend.

use tower::BoxError;

use super::error::CircuitOpen;
use super::state::Outcome;

/// Decides the [`Outcome`] of a completed call from its result.
pub trait Classify<Res> {
    /// The outcome of one call; `result` is the inner service's answer or error.
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome;
}

impl<F, Res> Classify<Res> for F
where
    F: Fn(Result<&Res, &BoxError>) -> Outcome + Clone,
{
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome {
        self(result)
    }
}

/// The classifier for HTTP answers: 5xx and 429 are failures, other 4xx are the caller's
/// fault and ignored, everything else succeeds. Errors (connect, timeout) are failures,
/// except a [`CircuitOpen`] from a breaker further in, which says nothing new.
///
/// A 503 or 429 that carries `Retry-After` is ignored too. It is a live backend saying when to
/// come back: its Redis is slow or down, or it sheds its own overload, and it answers at once
/// (readiness measures the pod, not its dependencies). Counting it would let a Redis blip open
/// the one circuit every backend call shares, so `/fetch`, which needs no Redis, would fail
/// with it, and the circuit would stay open `BREAKER_RESET_SECS` after Redis healed. A backend
/// that is down, hangs or fails without saying when to return still opens the circuit.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassifier;

impl HttpClassifier {
    /// The outcome of an answer with `status` and `headers`, for callers that hold no
    /// `http::Response` (the stream passthrough judges its backend answer by its head alone).
    pub fn answer(status: http::StatusCode, headers: &http::HeaderMap) -> Outcome {
        let come_back_later = matches!(
            status,
            http::StatusCode::SERVICE_UNAVAILABLE | http::StatusCode::TOO_MANY_REQUESTS
        ) && headers.contains_key(http::header::RETRY_AFTER);
        if come_back_later {
            Outcome::Ignored
        } else if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
            Outcome::Failure
        } else if status.is_client_error() {
            Outcome::Ignored
        } else {
            Outcome::Success
        }
    }
}

impl<B> Classify<http::Response<B>> for HttpClassifier {
    fn classify(&self, result: Result<&http::Response<B>, &BoxError>) -> Outcome {
        match result {
            Ok(response) => Self::answer(response.status(), response.headers()),
            Err(error) if is_circuit_open(error.as_ref()) => Outcome::Ignored,
            Err(_) => Outcome::Failure,
        }
    }
}

/// Whether `error`, or any error in its source chain, is a [`CircuitOpen`].
fn is_circuit_open(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |error| error.source())
        .any(|error| error.downcast_ref::<CircuitOpen>().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Outcome {
        let response = http::Response::builder()
            .status(code)
            .body(())
            .expect("valid status");
        HttpClassifier.classify(Ok(&response))
    }

    #[test]
    fn a_live_backend_asking_to_come_back_later_is_neither_failure_nor_success() {
        for code in [503, 429] {
            let response = http::Response::builder()
                .status(code)
                .header(http::header::RETRY_AFTER, "1")
                .body(())
                .expect("valid status");
            assert_eq!(
                HttpClassifier.classify(Ok(&response)),
                Outcome::Ignored,
                "{code}"
            );
        }
        let failing = http::Response::builder()
            .status(500)
            .header(http::header::RETRY_AFTER, "1")
            .body(())
            .expect("valid status");
        assert_eq!(HttpClassifier.classify(Ok(&failing)), Outcome::Failure);
    }

    #[test]
    fn server_errors_and_too_many_requests_are_failures() {
        for code in [500, 502, 503, 504, 429] {
            assert_eq!(status(code), Outcome::Failure, "{code}");
        }
    }

    #[test]
    fn other_client_errors_are_ignored() {
        for code in [400, 401, 404, 409, 422] {
            assert_eq!(status(code), Outcome::Ignored, "{code}");
        }
    }

    #[test]
    fn other_answers_are_successes() {
        for code in [200, 201, 204, 304] {
            assert_eq!(status(code), Outcome::Success, "{code}");
        }
    }

    #[test]
    fn errors_are_failures_except_an_open_circuit() {
        let classify = |error: BoxError| {
            <HttpClassifier as Classify<http::Response<()>>>::classify(&HttpClassifier, Err(&error))
        };
        assert_eq!(classify("connection refused".into()), Outcome::Failure);
        assert_eq!(classify(Box::new(CircuitOpen)), Outcome::Ignored);
    }

    #[test]
    fn a_closure_is_a_classifier() {
        let classifier = |result: Result<&u16, &BoxError>| match result {
            Ok(&code) if code < 500 => Outcome::Success,
            _ => Outcome::Failure,
        };
        assert_eq!(classifier.classify(Ok(&200)), Outcome::Success);
        assert_eq!(classifier.classify(Ok(&503)), Outcome::Failure);
    }
}

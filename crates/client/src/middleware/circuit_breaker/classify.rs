//! Classifiers: what counts as a failure of the backend, as opposed to a refusal of the
//! caller's request.
//!
//! A breaker that counted 404s or 400s as failures would open because clients send bad
//! requests, and shut everyone else out of a healthy backend.

use tower::BoxError;

use super::state::Outcome;
use crate::middleware::outcome::BackendOutcome;

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

/// The classifier for HTTP answers: a failure is what [`BackendOutcome::is_failure`] says
/// (5xx, 429 without `Retry-After`, errors other than [`CircuitOpen`](super::CircuitOpen)),
/// other 4xx are the caller's fault and ignored, everything else succeeds.
///
/// A 503 or 429 that carries `Retry-After` is ignored too. It is a live backend saying when to
/// come back: its Redis is slow or down, or it sheds its own overload, and it answers at once
/// (readiness measures the pod, not its dependencies). Counting it would let a Redis blip open
/// the one circuit every backend call shares, so `/fetch`, which needs no Redis, would fail
/// with it, and the circuit would stay open `BREAKER_RESET_SECS` after Redis healed. A backend
/// that is down, hangs or fails without saying when to return still opens the circuit.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassifier;

impl<B> Classify<http::Response<B>> for HttpClassifier {
    fn classify(&self, result: Result<&http::Response<B>, &BoxError>) -> Outcome {
        BackendOutcome::of(result).breaker_outcome()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The table of statuses and errors is `BackendOutcome`'s (middleware/outcome/tests.rs).
    #[test]
    fn the_http_classifier_asks_the_backend_outcome() {
        let response = http::Response::builder()
            .status(503)
            .body(())
            .expect("valid status");
        assert_eq!(HttpClassifier.classify(Ok(&response)), Outcome::Failure);
        let open: BoxError = Box::new(super::super::CircuitOpen);
        assert_eq!(
            <HttpClassifier as Classify<http::Response<()>>>::classify(&HttpClassifier, Err(&open)),
            Outcome::Ignored
        );
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

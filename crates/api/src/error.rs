//! The one error body of both services: `{"error": "...", "code": "..."}`.
//!
//! `error` is for people and may change wording; `code` is for programs and is one of a
//! closed set, so a caller (the browser UI, a script, the load tool) branches on `code`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error answer of the backend and the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people; opaque (`internal error`) on a 500.
    pub error: String,
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// On load-shedding answers, which signal refused it: `latency`, `runtime`, `memory`,
    /// `queue`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
}

impl ErrorBody {
    /// An error body with no load-shedding reason.
    pub fn new(code: ErrorCode, error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            code,
            reason: None,
        }
    }

    /// The same body, naming the load-shedding signal that refused the request.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Why a request failed, for programs. The HTTP status says how to react (retry or not); the
/// code says which of the service's rules or conditions answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// 400: the request cannot be parsed (not JSON, a bad query, a malformed header).
    BadRequest,
    /// 401: a bearer token is required and was missing or wrong.
    Unauthorized,
    /// 403: a cross-site state change was refused.
    CrossSite,
    /// 404: no such route or resource.
    NotFound,
    /// 413: the body is over the limit.
    TooLarge,
    /// 415: JSON was required.
    UnsupportedMediaType,
    /// 422: well-formed but invalid values.
    Invalid,
    /// 422: an `Idempotency-Key` reused with another body.
    IdempotencyConflict,
    /// 429: over the per-client write rate.
    RateLimited,
    /// 429 or 503: over a cap on live-update streams.
    TooManyStreams,
    /// 431: the request headers are over the limit.
    HeadersTooLarge,
    /// 503: the connection cap is reached.
    TooManyConnections,
    /// 503: load shedding; `reason` names the signal.
    Overloaded,
    /// 503: a dependency (Redis, the backend) is unavailable, slow or contended.
    Unavailable,
    /// 503: an append failed in a way that may have stored it all the same; retry only with the
    /// same `Idempotency-Key`.
    OutcomeUnknown,
    /// 503 (client): the circuit to the backend is open; no call was made.
    CircuitOpen,
    /// 503 or 504 (client): the backend did not answer within the deadline.
    Deadline,
    /// 502 or 503 (client): the backend could not be reached or answered with nothing usable.
    BackendUnreachable,
    /// 4xx or 5xx (backend): a failure injected on purpose (`POST /config/failure`).
    InjectedFailure,
    /// 500: a fault of this program or of data it did not write; details are in its log.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::CrossSite => "cross-site",
            Self::NotFound => "not-found",
            Self::TooLarge => "too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::Invalid => "invalid",
            Self::IdempotencyConflict => "idempotency-conflict",
            Self::RateLimited => "rate-limited",
            Self::TooManyStreams => "too-many-streams",
            Self::HeadersTooLarge => "headers-too-large",
            Self::TooManyConnections => "too-many-connections",
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
            Self::OutcomeUnknown => "outcome-unknown",
            Self::CircuitOpen => "circuit-open",
            Self::Deadline => "deadline",
            Self::BackendUnreachable => "backend-unreachable",
            Self::InjectedFailure => "injected-failure",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_name_is_the_display_name() {
        for code in [
            ErrorCode::CircuitOpen,
            ErrorCode::OutcomeUnknown,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::Internal,
        ] {
            let wire = serde_json::to_value(code).expect("a code serialises");
            assert_eq!(wire, code.as_str());
        }
    }

    #[test]
    fn an_error_body_without_a_reason_has_two_fields() {
        let body = ErrorBody::new(ErrorCode::CircuitOpen, "the circuit to the backend is open");
        let json = serde_json::to_string(&body).expect("serialises");
        assert_eq!(
            json,
            r#"{"error":"the circuit to the backend is open","code":"circuit-open"}"#
        );
    }
}

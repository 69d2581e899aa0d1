//! [`BackendOutcome`]: the one classification of what a backend call gave.
//!
//! The circuit breaker, the retry policy, `/fetch`, the proxy, the stream passthrough and the
//! metric labels all ask this type, so "what counts as a failure", "what is worth a retry",
//! "what the caller is told" and "how it is counted" cannot drift apart: each is one match over
//! the same variants.

use std::borrow::Cow;
use std::time::Duration;

use guestbook_api::ErrorCode;
use http::{HeaderMap, HeaderValue, StatusCode};
use tower::BoxError;

use crate::middleware::circuit_breaker::{CircuitOpen, Outcome};

/// What a backend call gave, as every part of the client judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendOutcome {
    /// A 1xx, 2xx or 3xx answer.
    Answered(StatusCode),
    /// A 4xx other than 429: the caller's request was refused, the backend is fine.
    Rejected(StatusCode),
    /// A 503 or 429 with `Retry-After`: a live backend asking to come back later (its Redis is
    /// slow, or it sheds its own overload). Neither a success nor a failure of the backend.
    Busy {
        /// 503 or 429.
        status: StatusCode,
        /// The wait asked for, when given in seconds.
        retry_after: Option<Duration>,
    },
    /// A 5xx, or a 429 without `Retry-After`: the backend failing.
    Failed {
        /// The status answered.
        status: StatusCode,
        /// The wait asked for, when given in seconds (honoured by a retry).
        retry_after: Option<Duration>,
    },
    /// The circuit is open: no call was made.
    CircuitOpen,
    /// No answer within the time allowed (an attempt's timeout or the call's deadline).
    Deadline,
    /// No answer at all: the connection or the transfer failed.
    Unreachable {
        /// How it failed.
        cause: Transport,
        /// The error, for people.
        detail: String,
    },
}

/// How a transfer to the backend failed, for the retry metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The connection could not be made.
    Connect,
    /// No connection within the connect timeout.
    Timeout,
    /// Anything else: a reset, a body over the limit, a TLS failure.
    Other,
}

impl BackendOutcome {
    /// The outcome of a call's result, as a tower service returns it.
    pub fn of<B>(result: Result<&http::Response<B>, &BoxError>) -> Self {
        match result {
            Ok(response) => Self::of_answer(response.status(), response.headers()),
            Err(error) => Self::of_error(error.as_ref()),
        }
    }

    /// The outcome of an answer with `status` and `headers` (the stream passthrough holds no
    /// `http::Response`, only reqwest's head).
    pub fn of_answer(status: StatusCode, headers: &HeaderMap) -> Self {
        let retry_after = headers.get(http::header::RETRY_AFTER);
        let come_back_later = matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) && retry_after.is_some();
        let retry_after = retry_after.and_then(parse_retry_after);
        if come_back_later {
            Self::Busy {
                status,
                retry_after,
            }
        } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Self::Failed {
                status,
                retry_after,
            }
        } else if status.is_client_error() {
            Self::Rejected(status)
        } else {
            Self::Answered(status)
        }
    }

    /// The outcome of an error: an open circuit anywhere in its source chain, a timeout, or a
    /// transport failure.
    pub fn of_error(error: &(dyn std::error::Error + 'static)) -> Self {
        let chain = || std::iter::successors(Some(error), |error| error.source());
        if chain().any(|error| error.is::<CircuitOpen>()) {
            return Self::CircuitOpen;
        }
        if chain().any(|error| error.is::<tower::timeout::error::Elapsed>()) {
            return Self::Deadline;
        }
        // The backend calls fail with hyper-util's error, the stream passthrough with reqwest's.
        let timed_out = chain().any(|error| {
            error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|error| error.kind() == std::io::ErrorKind::TimedOut)
        });
        let cause = if let Some(error) = error.downcast_ref::<reqwest::Error>() {
            if error.is_connect() {
                Transport::Connect
            } else if error.is_timeout() {
                Transport::Timeout
            } else {
                Transport::Other
            }
        } else if let Some(error) = error.downcast_ref::<hyper_util::client::legacy::Error>() {
            match (error.is_connect(), timed_out) {
                (true, false) => Transport::Connect,
                (true, true) => Transport::Timeout,
                (false, _) => Transport::Other,
            }
        } else {
            Transport::Other
        };
        // hyper-util's own text names only the kind ("client error (Connect)"): the causes
        // below it say what happened.
        let detail = chain()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        Self::Unreachable { cause, detail }
    }

    /// A usable answer: what makes a retry worth its price.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Answered(_))
    }

    /// A failure of the backend, which the breaker counts: 5xx, 429 without `Retry-After`, no
    /// answer in time, no answer at all. A refused request, a backend asking to come back later
    /// and an open circuit (which says nothing new) are not.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Self::Failed { .. } | Self::Deadline | Self::Unreachable { .. }
        )
    }

    /// Transient, so worth another attempt of a safe request: 429, 500, 502, 503, 504, a
    /// timeout or a transport failure. Never another 4xx or 5xx, never an open circuit.
    ///
    /// A 500 is retried too (as Envoy's `5xx` and Polly's transient-error rule do): seed 002's
    /// fault injection answers 500, and an idempotent request that met a passing fault deserves
    /// a second try. A 500 that is a deterministic bug cannot run up the load: its retries
    /// never succeed, so they earn no budget and stay within the flat allowance.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Busy { .. } | Self::Deadline | Self::Unreachable { .. } => true,
            Self::Failed { status, .. } => matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504),
            Self::Answered(_) | Self::Rejected(_) | Self::CircuitOpen => false,
        }
    }

    /// The wait the backend asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Busy { retry_after, .. } | Self::Failed { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The breaker's view: a failure, a success, or neither.
    pub fn breaker_outcome(&self) -> Outcome {
        if self.is_failure() {
            Outcome::Failure
        } else if self.is_success() {
            Outcome::Success
        } else {
            Outcome::Ignored
        }
    }

    /// The metric label (`client_retries_total{reason}`): `status_429` … `status_504` for the
    /// retried statuses, `status_2xx` and the like for the others, `timeout`, `connect`,
    /// `transport`, `circuit_open`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Answered(status)
            | Self::Rejected(status)
            | Self::Busy { status, .. }
            | Self::Failed { status, .. } => status_label(*status),
            Self::CircuitOpen => "circuit_open",
            Self::Deadline
            | Self::Unreachable {
                cause: Transport::Timeout,
                ..
            } => "timeout",
            Self::Unreachable {
                cause: Transport::Connect,
                ..
            } => "connect",
            Self::Unreachable {
                cause: Transport::Other,
                ..
            } => "transport",
        }
    }

    /// The `/fetch` fallback metric's label (`client_fetch_fallbacks_total{reason}`):
    /// `circuit_open`, or `failed` for every other way of getting no usable answer.
    pub fn fallback_label(&self) -> &'static str {
        match self {
            Self::CircuitOpen => "circuit_open",
            _ => "failed",
        }
    }

    /// The code of an error answer (or of a `/fetch` fallback) caused by this outcome.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::CircuitOpen => ErrorCode::CircuitOpen,
            Self::Deadline => ErrorCode::Deadline,
            Self::Busy { .. } | Self::Failed { .. } => ErrorCode::Unavailable,
            // An answer that was not usable, or none at all.
            Self::Answered(_) | Self::Rejected(_) | Self::Unreachable { .. } => {
                ErrorCode::BackendUnreachable
            }
        }
    }

    /// What happened, for people (an error body's `error`).
    pub fn message(&self) -> Cow<'static, str> {
        match self {
            Self::CircuitOpen => {
                Cow::Borrowed("the circuit to the backend is open: the backend has been failing")
            }
            Self::Deadline => Cow::Borrowed("the backend did not answer in time"),
            // The transport's error names the backend's address: for the log, not for callers.
            Self::Unreachable { .. } => Cow::Borrowed("the backend could not be reached"),
            _ => self.fetch_message(),
        }
    }

    /// `/fetch`'s `message`, in seed 002's wording, which callers of that endpoint match on:
    /// `circuit-open`, `timeout`, `backend answered N`, `backend unreachable: ...`.
    pub fn fetch_message(&self) -> Cow<'static, str> {
        match self {
            Self::Answered(status)
            | Self::Rejected(status)
            | Self::Busy { status, .. }
            | Self::Failed { status, .. } => {
                Cow::Owned(format!("backend answered {}", status.as_u16()))
            }
            Self::CircuitOpen => Cow::Borrowed("circuit-open"),
            Self::Deadline => Cow::Borrowed("timeout"),
            Self::Unreachable { detail, .. } => {
                Cow::Owned(format!("backend unreachable: {detail}"))
            }
        }
    }
}

/// `status_NNN` for the statuses retried, the class (`status_4xx`) for the others.
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "status_429",
        500 => "status_500",
        502 => "status_502",
        503 => "status_503",
        504 => "status_504",
        100..=199 => "status_1xx",
        200..=299 => "status_2xx",
        300..=399 => "status_3xx",
        400..=499 => "status_4xx",
        _ => "status_5xx",
    }
}

/// `Retry-After` in seconds (HTTP dates are not worth their parsing here).
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    value
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests;

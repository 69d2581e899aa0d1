//! Logging and request tracing.
//!
//! Logs are JSON when stdout is not a terminal (a container, a file) and human-readable when
//! it is; `RUST_LOG` overrides the level. Every request gets an `x-request-id` (kept when the
//! caller sends one) that is echoed in the response and carried by the request span, so every
//! log line written while serving it names it.

use std::io::IsTerminal;

use axum::extract::MatchedPath;
use http::{HeaderName, HeaderValue, Request};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnRequest, DefaultOnResponse, HttpMakeClassifier,
    TraceLayer,
};
use tracing::Level;
use tracing_subscriber::EnvFilter;

/// The header that carries the request id in both directions.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON unless stdout is a terminal.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable, coloured.
    Pretty,
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second init (tests start several apps in one process) is harmless, hence `try_init`.
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// Assigns an `x-request-id` to requests that lack one.
pub fn set_request_id_layer() -> SetRequestIdLayer<MakeUuid> {
    SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeUuid)
}

/// A random (v4) UUID per request, as tower-http's `MakeRequestUuid` makes, written into a
/// buffer on the stack: that one formats a `String` and parses it again, an allocation and
/// two passes per request on every route (issue 17).
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeUuid;

impl MakeRequestId for MakeUuid {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let mut buffer = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
        HeaderValue::from_str(id).ok().map(RequestId::new)
    }
}

/// Copies the request's `x-request-id` onto the response.
pub fn propagate_request_id_layer() -> PropagateRequestIdLayer {
    PropagateRequestIdLayer::new(REQUEST_ID_HEADER)
}

/// The function that opens one span per request.
pub type MakeSpan = fn(&Request<axum::body::Body>) -> tracing::Span;

/// The request tracing layer's full type.
pub type Trace = TraceLayer<
    HttpMakeClassifier,
    MakeSpan,
    DefaultOnRequest,
    DefaultOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    (),
>;

/// A span per request named by route template (never the raw path) and request id.
///
/// Failures are not logged here: the services' error types log each 5xx once, with its
/// cause chain, and a second generic line per failed request would double an outage's logs.
pub fn trace_layer() -> Trace {
    TraceLayer::new_for_http()
        .make_span_with(request_span as MakeSpan)
        .on_response(DefaultOnResponse::new().level(Level::DEBUG))
        .on_failure(())
}

fn request_span(request: &Request<axum::body::Body>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), route, request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_a_lowercase_v4_uuid_and_new_each_time() {
        let request = Request::new(());
        let mut make = MakeUuid;
        let first = make.make_request_id(&request).expect("an id");
        let second = make.make_request_id(&request).expect("an id");
        let text = first.header_value().to_str().expect("ASCII");
        let parsed = uuid::Uuid::parse_str(text).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(text, parsed.hyphenated().to_string());
        assert_ne!(first.header_value(), second.header_value());
    }
}

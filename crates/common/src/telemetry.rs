//! Logging and request tracing.
//!
//! Logs are JSON when stdout is not a terminal (a container, a file) and human-readable when
//! it is; `RUST_LOG` overrides the level. Every request gets an `x-request-id` (kept when the
//! caller sends one) that is echoed in the response and set as the request's context, so every
//! log line written while serving it names it, with the method and route (see
//! [`request_context`]).

pub mod request_context;

use std::io::IsTerminal;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::MatchedPath;

use http::{HeaderName, HeaderValue, Request, Response};
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnRequest, DefaultOnResponse, HttpMakeClassifier,
    TraceLayer,
};
use tracing::Level;
use tracing_subscriber::EnvFilter;

use request_context::{RequestContext, WithRequest};

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
            .event_format(request_context::json_lines())
            .try_init()
    } else {
        builder
            .event_format(WithRequest::text(tracing_subscriber::fmt::format()))
            .try_init()
    };
}

/// Assigns an `x-request-id` to requests that lack one.
pub fn set_request_id_layer() -> SetRequestIdLayer<MakeUuid> {
    SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeUuid)
}

/// A random (v4) UUID per request, as tower-http's `MakeRequestUuid` makes, written into a
/// buffer on the stack: that one formats a `String` and parses it again, an allocation and
/// two passes per request on every route (issue 17).
///
/// The buffer itself becomes the value's storage (`Bytes::from_owner`): one allocation, and
/// a clone (the id goes on the request and on the answer) only counts a reference. A value
/// copied from a `&str` needs a second allocation the first time it is cloned.
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeUuid;

impl MakeRequestId for MakeUuid {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let mut id = [0_u8; uuid::fmt::Hyphenated::LENGTH];
        uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id);
        HeaderValue::from_maybe_shared(Bytes::from_owner(id))
            .ok()
            .map(RequestId::new)
    }
}

/// Gives every request an `x-request-id` (kept when the caller sent one, else a new
/// [`MakeUuid`] id) and puts the same id on its answer unless the answer carries one already:
/// [`set_request_id_layer`] and [`propagate_request_id_layer`] in one layer.
///
/// Those two also store the id in the request's and in the answer's extensions, which
/// nothing here reads: two extension maps allocated per request, and a future level more
/// (issue 17).
pub fn request_id_layer() -> RequestIdLayer {
    RequestIdLayer
}

/// See [`request_id_layer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIds<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIds(inner)
    }
}

/// The service [`RequestIdLayer`] makes.
#[derive(Debug, Clone)]
pub struct RequestIds<S>(S);

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestIds<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let id = match request.headers().get(REQUEST_ID_HEADER) {
            Some(id) => Some(id.clone()),
            None => {
                let id = MakeUuid
                    .make_request_id(&request)
                    .map(RequestId::into_header_value);
                if let Some(id) = &id {
                    request.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
                }
                id
            }
        };
        let context = RequestContext::new(
            request.method().clone(),
            request.extensions().get::<MatchedPath>().cloned(),
            id.clone(),
        );
        RequestIdFuture {
            inner: context.scope(self.0.call(request)),
            id,
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer, with the request's id unless it has one; the request's context is current
    /// while the inner future runs.
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: TaskLocalFuture<RequestContext, F>,
        id: Option<HeaderValue>,
    }
}

impl<F, B, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(id) = this.id.take() {
            response
                .headers_mut()
                .entry(REQUEST_ID_HEADER)
                .or_insert(id);
        }
        Poll::Ready(Ok(response))
    }
}

/// Copies the request's `x-request-id` onto the response.
pub fn propagate_request_id_layer() -> PropagateRequestIdLayer {
    PropagateRequestIdLayer::new(REQUEST_ID_HEADER)
}

/// The function that gives tower-http's trace layer its span: none, as the request's context
/// labels its lines (see [`request_context`]).
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

/// tower-http's request and response events (`DEBUG`), with no span of their own: they are
/// written inside the request's context, which names the request.
///
/// Failures are not logged here: the services' error types log each 5xx once, with its
/// cause chain, and a second generic line per failed request would double an outage's logs.
pub fn trace_layer() -> Trace {
    TraceLayer::new_for_http()
        .make_span_with(no_span as MakeSpan)
        .on_response(DefaultOnResponse::new().level(Level::DEBUG))
        .on_failure(())
}

/// [`trace_layer`], taken by a request only when the subscriber would record something of it.
///
/// # Why
/// With tower-http's events filtered out (the default `info`), the trace layer
/// still reads the clock twice, wraps the response body (boxed again by axum) and polls
/// through the wrapper: a few thousand instructions per request that record nothing
/// (issue 17). The check is per request, so a filter changed at run time is followed.
pub fn trace_if_enabled_layer() -> TraceIfEnabledLayer {
    TraceIfEnabledLayer(trace_layer())
}

/// True when one of the events tower-http's trace layer writes (at their default `DEBUG`,
/// with their module as target) would be recorded.
fn tracing_wanted() -> bool {
    tracing::event_enabled!(target: "tower_http::trace::on_request", Level::DEBUG)
        || tracing::event_enabled!(target: "tower_http::trace::on_response", Level::DEBUG)
        || tracing::event_enabled!(target: "tower_http::trace::on_eos", Level::DEBUG)
}

/// See [`trace_if_enabled_layer`].
#[derive(Clone)]
pub struct TraceIfEnabledLayer(Trace);

impl<S> Layer<S> for TraceIfEnabledLayer {
    type Service = TraceIfEnabled<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceIfEnabled(self.0.layer(inner))
    }
}

/// The service [`TraceIfEnabledLayer`] makes.
#[derive(Clone)]
pub struct TraceIfEnabled<S>(<Trace as Layer<S>>::Service);

impl<S> Service<Request<Body>> for TraceIfEnabled<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = TraceIfEnabledFuture<
        <<Trace as Layer<S>>::Service as Service<Request<Body>>>::Future,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if tracing_wanted() {
            TraceIfEnabledFuture::Traced {
                inner: self.0.call(request),
            }
        } else {
            TraceIfEnabledFuture::Plain {
                inner: self.0.get_mut().call(request),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer, traced or not, with one body type.
    #[project = TraceIfEnabledProj]
    pub enum TraceIfEnabledFuture<Traced, Plain> {
        /// Through tower-http's trace layer.
        Traced { #[pin] inner: Traced },
        /// Straight from the service inside.
        Plain { #[pin] inner: Plain },
    }
}

impl<Traced, Plain, B> Future for TraceIfEnabledFuture<Traced, Plain>
where
    Traced: Future<Output = Result<Response<B>, Infallible>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
    Plain: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TraceIfEnabledProj::Traced { inner } => inner
                .poll(cx)
                .map(|answer| answer.map(|response| response.map(Body::new))),
            TraceIfEnabledProj::Plain { inner } => inner.poll(cx),
        }
    }
}

fn no_span(_request: &Request<axum::body::Body>) -> tracing::Span {
    tracing::Span::none()
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

    fn subscriber(filter: &str) -> impl tracing::Subscriber + Send + Sync {
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(filter))
            .with_writer(std::io::sink)
            .finish()
    }

    #[test]
    fn a_request_is_traced_only_when_the_filter_records_something_of_it() {
        let wanted =
            |filter: &str| tracing::subscriber::with_default(subscriber(filter), tracing_wanted);
        assert!(!wanted("warn"));
        assert!(!wanted("info"));
        assert!(wanted("warn,tower_http=debug"));
        assert!(!wanted("warn,tower_http=info"));
    }

    #[tokio::test]
    async fn the_answer_is_the_same_traced_or_not() {
        let service = tower::service_fn(|_request: Request<Body>| async {
            let mut response = Response::new(Body::from("hello"));
            *response.status_mut() = http::StatusCode::ACCEPTED;
            Ok::<_, Infallible>(response)
        });
        let layered = trace_if_enabled_layer().layer(service);
        for filter in ["warn", "debug"] {
            let _default = tracing::subscriber::set_default(subscriber(filter));
            let response = tower::ServiceExt::oneshot(layered.clone(), Request::new(Body::empty()))
                .await
                .expect("infallible");
            assert_eq!(response.status(), http::StatusCode::ACCEPTED, "{filter}");
            let body = axum::body::to_bytes(response.into_body(), 64)
                .await
                .expect("a small body");
            assert_eq!(&body[..], b"hello", "{filter}");
        }
    }

    #[tokio::test]
    async fn a_request_id_is_made_or_kept_and_echoed_unless_the_answer_has_one() {
        let echo = tower::service_fn(|request: Request<Body>| async move {
            let mut response = Response::new(Body::empty());
            let seen = request.headers().get(REQUEST_ID_HEADER).cloned();
            if let Some(seen) = seen {
                response.extensions_mut().insert(seen);
            }
            if request.uri().path() == "/own" {
                response.headers_mut().insert(
                    REQUEST_ID_HEADER,
                    HeaderValue::from_static("from-the-answer"),
                );
            }
            Ok::<_, Infallible>(response)
        });
        let service = request_id_layer().layer(echo);
        let call = |request: Request<Body>| tower::ServiceExt::oneshot(service.clone(), request);

        let made = call(Request::new(Body::empty())).await.expect("infallible");
        let id = made.headers()[REQUEST_ID_HEADER].clone();
        assert!(uuid::Uuid::parse_str(id.to_str().expect("ASCII")).is_ok());
        assert_eq!(
            made.extensions().get::<HeaderValue>(),
            Some(&id),
            "the handler saw it"
        );

        let kept = Request::get("/")
            .header(REQUEST_ID_HEADER, "abc-123")
            .body(Body::empty())
            .expect("a valid request");
        let kept = call(kept).await.expect("infallible");
        assert_eq!(kept.headers()[REQUEST_ID_HEADER], "abc-123");

        let own = Request::get("/own")
            .header(REQUEST_ID_HEADER, "abc-123")
            .body(Body::empty())
            .expect("a valid request");
        let own = call(own).await.expect("infallible");
        assert_eq!(own.headers()[REQUEST_ID_HEADER], "from-the-answer");
    }
}

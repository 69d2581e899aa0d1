//! Prometheus metrics: the shared registry, the HTTP request histogram and `/metrics`.
//!
//! Requests are labelled by route template (`MatchedPath`), never the raw URI: a raw path
//! would let any caller create unbounded label sets. `track`: the layer that records them.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod track;

pub use track::{Track, TrackFuture, TrackLayer};

/// Latency buckets in seconds: dense between 50 ms and 2 s, where the HPA (300 ms),
/// readiness (400 ms) and shedding (800 ms) thresholds of seed 001 sit.
pub const LATENCY_BUCKETS: [f64; 22] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4,
    0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 5.0,
];

/// Labels of one HTTP request observation.
///
/// The values are shared, not copied: a `String` per label per request was a visible share
/// of `/fetch`'s CPU (issue 17), while the family only needs owned labels for a new series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// HTTP method.
    pub method: MethodLabel,
    /// Route template, or `unmatched`.
    pub route: RouteLabel,
    /// Response status code.
    pub status: u16,
}

/// A request's method as a label value (a standard method is copied without allocating).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct MethodLabel(pub Method);

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

/// A request's route template as a label value: the router's own shared string, never the raw
/// path (which would let any caller create unbounded label sets).
#[derive(Debug, Clone)]
pub enum RouteLabel {
    /// The template of the route that matched.
    Template(MatchedPath),
    /// No route matched.
    Unmatched,
}

impl RouteLabel {
    /// The template of `request`'s route, or `unmatched`.
    pub fn of(request: &Request) -> Self {
        request
            .extensions()
            .get::<MatchedPath>()
            .map_or(Self::Unmatched, |path| Self::Template(path.clone()))
    }

    /// The label value.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Template(path) => path.as_str(),
            Self::Unmatched => "unmatched",
        }
    }
}

impl PartialEq for RouteLabel {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RouteLabel {}

impl Hash for RouteLabel {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// The registry plus the HTTP metrics every service records.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    http: Arc<HttpMetrics>,
    connections: ConnectionMetrics,
}

/// What [`TrackLayer`] records, shared by every request future.
struct HttpMetrics {
    requests: Family<HttpLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
}

/// Labels of a connection refused at the cap.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    /// `overflow` (served on the overflow lane: probes answered, the rest 503) or `closed`.
    how: &'static str,
}

/// The server's connection counts (see [`crate::server`]).
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    open: Gauge,
    refused: Family<RefusedLabels, Counter>,
}

impl ConnectionMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "server_connections_open",
            "Connections open under MAX_CONNECTIONS",
            metrics.open.clone(),
        );
        registry.register(
            "server_connections_refused",
            "Connections accepted past MAX_CONNECTIONS: how=overflow served on the overflow \
             lane (probes and /metrics answered, the rest 503), how=closed closed at once",
            metrics.refused.clone(),
        );
        metrics
    }

    /// Counts one connection open until the guard is dropped.
    pub fn open(&self) -> OpenConnection {
        self.open.inc();
        OpenConnection(self.open.clone())
    }

    /// Counts a connection refused at the cap, `how` being `overflow` or `closed`.
    pub fn refused(&self, how: &'static str) {
        self.refused.get_or_create(&RefusedLabels { how }).inc();
    }
}

/// One open connection in `server_connections_open`, for as long as it lives.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Adds the HTTP metrics to `registry` (which already holds the service's own) and freezes it.
    pub fn new(mut registry: Registry) -> Self {
        let requests = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request duration by method, route template and status",
            requests.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being served",
            in_flight.clone(),
        );
        let connections = ConnectionMetrics::register(&mut registry);
        Self {
            registry: Arc::new(registry),
            http: Arc::new(HttpMetrics {
                requests,
                in_flight,
            }),
            connections,
        }
    }

    /// The server's connection counts, registered here.
    pub fn connections(&self) -> ConnectionMetrics {
        self.connections.clone()
    }

    /// Renders the registry in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A histogram with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// `/metrics`.
pub fn routes<S>() -> Router<S>
where
    Metrics: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new().route("/metrics", get(render))
}

/// The registry in the OpenMetrics text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "probes",
    responses(
        (status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text"),
        (status = 500, description = "The registry could not be encoded (logged); empty body"),
    )
)]
pub(crate) async fn render(State(metrics): State<Metrics>) -> Response {
    match metrics.encode() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            body,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "metrics encoding failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

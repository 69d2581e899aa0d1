//! [`BackendService`]: one HTTP call to the backend, its body read in full (bounded).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use guestbook_common::metrics::latency_histogram;
use http::{HeaderName, Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tower::{BoxError, Service};

use super::pools::RotatingPools;

/// Largest backend response body accepted (a page of 1,000 messages is about 250 KiB).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Headers that belong to one hop (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 6] = [
    http::header::CONNECTION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::HOST,
];

/// Labels of one attempt's duration.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    /// `2xx`, `4xx`, `5xx` or `error`.
    outcome: &'static str,
}

/// Duration of every attempt (this service sits inside the retry layer), by outcome.
#[derive(Clone)]
pub struct AttemptMetrics(Family<AttemptLabels, Histogram, fn() -> Histogram>);

impl AttemptMetrics {
    /// Creates and registers the histogram.
    pub fn register(registry: &mut Registry) -> Self {
        let family = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "client_backend_attempt_duration_seconds",
            "Duration of each backend attempt, by outcome",
            family.clone(),
        );
        Self(family)
    }

    fn observe(&self, outcome: &'static str, started: Instant) {
        self.0
            .get_or_create(&AttemptLabels { outcome })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Calls the backend at `base` (e.g. `http://backend:8080`) with the request's path and query.
#[derive(Clone)]
pub struct BackendService {
    /// Connections with a bounded lifetime, so that new replicas get calls (see `pools`).
    clients: Arc<RotatingPools>,
    // Parsed once: parsing a URL string per call (host, IDNA) was a visible share of the
    // client's CPU in a profile; cloning and setting the path is cheap.
    base: reqwest::Url,
    metrics: AttemptMetrics,
}

impl BackendService {
    /// A service for `base`, an absolute `http(s)` URL whose path is ignored.
    pub fn new(
        clients: Arc<RotatingPools>,
        base: &str,
        metrics: AttemptMetrics,
    ) -> Result<Self, BoxError> {
        Ok(Self {
            clients,
            base: reqwest::Url::parse(base)?,
            metrics,
        })
    }

    /// The URL this request goes to: the base's scheme, host and port with its path and query.
    fn url_for(&self, request: &Request<Bytes>) -> reqwest::Url {
        let mut url = self.base.clone();
        url.set_path(request.uri().path());
        url.set_query(request.uri().query());
        url
    }
}

impl Service<Request<Bytes>> for BackendService {
    type Response = Response<Bytes>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // reqwest's pool queues internally; concurrency is bounded by a layer above.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let client = self.clients.pick();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let url = self.url_for(&request);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let mut headers = parts.headers;
            for name in &HOP_BY_HOP {
                headers.remove(name);
            }
            let sent = client
                .request(parts.method, url)
                .headers(headers)
                .body(body)
                .send()
                .await;
            let mut response = match sent {
                Ok(response) => response,
                Err(err) => {
                    metrics.observe("error", started);
                    return Err(err.into());
                }
            };
            let status = response.status();
            // Taken, not cloned: the body is read by its own length, never by these headers.
            let mut headers = std::mem::take(response.headers_mut());
            for name in &HOP_BY_HOP {
                headers.remove(name);
            }
            headers.remove(http::header::CONTENT_LENGTH);
            let body = read_bounded(response).await;
            metrics.observe(
                match (&body, status.as_u16()) {
                    (Err(_), _) => "error",
                    (Ok(_), 200..=299) => "2xx",
                    (Ok(_), 400..=499) => "4xx",
                    (Ok(_), _) => "5xx",
                },
                started,
            );
            let body = body?;
            let mut answer = Response::new(body);
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            Ok(answer)
        })
    }
}

/// The response body, refusing more than [`MAX_RESPONSE_BYTES`].
async fn read_bounded(mut response: reqwest::Response) -> Result<Bytes, BoxError> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_RESPONSE_BYTES as u64)
    {
        return Err("backend response over the size limit".into());
    }
    // A small answer arrives as one chunk: it is returned as it is, and only a second chunk
    // starts a buffer (a copy and an allocation per call saved on the common path).
    let Some(first) = response.chunk().await? else {
        return Ok(Bytes::new());
    };
    if first.len() > MAX_RESPONSE_BYTES {
        return Err("backend response over the size limit".into());
    }
    let Some(second) = response.chunk().await? else {
        return Ok(first);
    };
    let mut body = BytesMut::from(&first[..]);
    let mut next = Some(second);
    while let Some(chunk) = next {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err("backend response over the size limit".into());
        }
        body.extend_from_slice(&chunk);
        next = response.chunk().await?;
    }
    Ok(body.freeze())
}

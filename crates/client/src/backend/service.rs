//! [`BackendService`]: one HTTP call to the backend, its body read in full (bounded).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
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

/// The outcomes an attempt is labelled with, in the order of [`AttemptMetrics`]'s cache.
const OUTCOMES: [&str; 4] = ["2xx", "4xx", "5xx", "error"];

/// Duration of every attempt (this service sits inside the retry layer), by outcome.
///
/// Each outcome's histogram is looked up in the family once and then kept: a family lookup
/// hashes the labels (SipHash) under a lock on every attempt (issue 17). A histogram is a
/// handle on shared state, so the kept one and the family's are the same series; it is only
/// created, and so only exported, once an attempt has that outcome, as before.
#[derive(Clone)]
pub struct AttemptMetrics(Arc<AttemptSeries>);

struct AttemptSeries {
    family: Family<AttemptLabels, Histogram, fn() -> Histogram>,
    by_outcome: [OnceLock<Histogram>; OUTCOMES.len()],
}

impl AttemptMetrics {
    /// Creates and registers the histogram.
    pub fn register(registry: &mut Registry) -> Self {
        let family = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "client_backend_attempt_duration_seconds",
            "Duration of each backend attempt, by outcome",
            family.clone(),
        );
        Self(Arc::new(AttemptSeries {
            family,
            by_outcome: Default::default(),
        }))
    }

    fn observe(&self, outcome: &'static str, started: Instant) {
        let seconds = started.elapsed().as_secs_f64();
        match OUTCOMES.iter().position(|known| *known == outcome) {
            Some(index) => self.0.by_outcome[index]
                .get_or_init(|| {
                    self.0
                        .family
                        .get_or_create_owned(&AttemptLabels { outcome })
                })
                .observe(seconds),
            None => self
                .0
                .family
                .get_or_create(&AttemptLabels { outcome })
                .observe(seconds),
        }
    }
}

/// Calls the backend at `base` (e.g. `http://backend:8080`) with the request's path and query.
#[derive(Clone)]
pub struct BackendService {
    /// Connections with a bounded lifetime, so that new replicas get calls (see `pools`).
    clients: Arc<RotatingPools>,
    // Parsed once: parsing a URL string per call (host, IDNA) was a visible share of the
    // client's CPU in a profile. Behind an `Arc` because the stack clones this service twice
    // per call (the caller's `oneshot` and tower's retry), and a `Url` clone copies its string.
    urls: Arc<Urls>,
    metrics: AttemptMetrics,
}

/// The backend's base URL, and the URL of `/fetch`'s call ready made.
struct Urls {
    base: reqwest::Url,
    /// `base` with [`DATA_PATH`]: `/fetch` calls it on every request, and setting a path
    /// re-parses it (a few thousand instructions a call, issue 17).
    data: reqwest::Url,
}

/// The backend path `/fetch` calls.
const DATA_PATH: &str = "/data";

impl BackendService {
    /// A service for `base`, an absolute `http(s)` URL whose path is ignored.
    pub fn new(
        clients: Arc<RotatingPools>,
        base: &str,
        metrics: AttemptMetrics,
    ) -> Result<Self, BoxError> {
        let base = reqwest::Url::parse(base)?;
        let mut data = base.clone();
        data.set_path(DATA_PATH);
        data.set_query(None);
        Ok(Self {
            clients,
            urls: Arc::new(Urls { base, data }),
            metrics,
        })
    }

    /// The URL this request goes to: the base's scheme, host and port with its path and query.
    fn url_for(&self, request: &Request<Bytes>) -> reqwest::Url {
        let uri = request.uri();
        if uri.path() == DATA_PATH && uri.query().is_none() {
            return self.urls.data.clone();
        }
        let mut url = self.urls.base.clone();
        url.set_path(uri.path());
        url.set_query(uri.query());
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
            strip_hop_by_hop(&mut headers);
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
            strip_hop_by_hop(&mut headers);
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

/// Removes the [`HOP_BY_HOP`] headers. A map rarely holds any (a `/fetch` call's request has
/// no header at all), so the names present are scanned first: comparing standard names is
/// cheap, while each `remove` hashes its name, seven lookups per call for nothing (issue 17).
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    if headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn service(base: &str) -> BackendService {
        let transport = crate::backend::Transport::for_url(base).expect("plain transport");
        let pools =
            RotatingPools::new(Box::new(move || transport.builder().build()), None).expect("pools");
        let metrics = AttemptMetrics::register(&mut Registry::default());
        BackendService::new(Arc::new(pools), base, metrics).expect("service")
    }

    fn request(target: &str) -> Request<Bytes> {
        Request::get(target)
            .body(Bytes::new())
            .expect("a valid request")
    }

    #[test]
    fn every_path_and_query_goes_to_the_base_host() {
        let backend = service("http://127.0.0.1:8080/ignored?x=1");
        for (target, expected) in [
            ("/data", "http://127.0.0.1:8080/data"),
            ("/data?page=2", "http://127.0.0.1:8080/data?page=2"),
            ("/api/messages", "http://127.0.0.1:8080/api/messages"),
            (
                "/api/messages?limit=5",
                "http://127.0.0.1:8080/api/messages?limit=5",
            ),
        ] {
            assert_eq!(backend.url_for(&request(target)).as_str(), expected);
        }
    }

    #[test]
    fn hop_by_hop_headers_are_removed_and_the_rest_kept() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONNECTION, "close".parse().expect("value"));
        headers.insert(http::header::HOST, "elsewhere".parse().expect("value"));
        headers.insert(
            http::header::CONTENT_TYPE,
            "text/plain".parse().expect("value"),
        );
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[http::header::CONTENT_TYPE], "text/plain");

        let mut plain = http::HeaderMap::new();
        plain.insert(http::header::ACCEPT, "*/*".parse().expect("value"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn a_kept_attempt_histogram_is_the_exported_series() {
        let mut registry = Registry::default();
        let metrics = AttemptMetrics::register(&mut registry);
        let started = Instant::now();
        metrics.observe("2xx", started);
        metrics.observe("2xx", started);
        metrics.observe("error", started);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains("client_backend_attempt_duration_seconds_count{outcome=\"2xx\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("client_backend_attempt_duration_seconds_count{outcome=\"error\"} 1"),
            "{text}"
        );
        assert!(!text.contains("outcome=\"5xx\""), "{text}");
    }
}

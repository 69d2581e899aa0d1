//! [`BackendService`]: one HTTP call to the backend, its body read in full (bounded).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use guestbook_common::metrics::latency_histogram;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
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
    // Parsed once, behind an `Arc` because the stack clones this service twice per call (the
    // caller's `oneshot` and tower's retry).
    target: Arc<Target>,
    metrics: AttemptMetrics,
}

/// Where the calls go: `BACKEND_URL`'s scheme and host, `/fetch`'s URI ready made, and the
/// credentials the URL carried.
struct Target {
    scheme: Scheme,
    authority: Authority,
    /// The absolute URI of [`DATA_PATH`]: `/fetch` calls it on every request, and a clone of
    /// a parsed URI is a few reference counts where building one parses it again.
    data: Uri,
    /// `Basic` credentials from `BACKEND_URL`'s `user:password@`, sent with every call (as
    /// reqwest sent them); the URI itself never carries them.
    authorization: Option<HeaderValue>,
}

/// The backend path `/fetch` calls.
const DATA_PATH: &str = "/data";

impl Target {
    fn parse(base: &str) -> Result<Self, BoxError> {
        let url = reqwest::Url::parse(base)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{} is not http:// or https://", url.scheme()).into());
        }
        let authorization = basic_credentials(&url)?;
        // Only the scheme, host and port are kept: the path and query are each call's own.
        let origin: Uri = url.origin().ascii_serialization().parse()?;
        let (Some(scheme), Some(authority)) = (origin.scheme(), origin.authority()) else {
            return Err("BACKEND_URL has no host".into());
        };
        let data = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query(DATA_PATH)
            .build()?;
        Ok(Self {
            scheme: scheme.clone(),
            authority: authority.clone(),
            data,
            authorization,
        })
    }

    /// The URI this request goes to: the base's scheme, host and port with the request's path
    /// and query, taken as they are (the routes build them from checked parts).
    fn uri_for(&self, uri: &Uri) -> Result<Uri, http::Error> {
        if uri.path() == DATA_PATH && uri.query().is_none() {
            return Ok(self.data.clone());
        }
        let path_and_query = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}

/// `Authorization: Basic ...` for a URL's percent-decoded `user:password`, if it has either.
fn basic_credentials(url: &reqwest::Url) -> Result<Option<HeaderValue>, BoxError> {
    use base64::Engine;
    if url.username().is_empty() && url.password().is_none() {
        return Ok(None);
    }
    let decode = |part: &str| -> Result<String, BoxError> {
        Ok(percent_encoding::percent_decode_str(part)
            .decode_utf8()?
            .into_owned())
    };
    let user = decode(url.username())?;
    let password = decode(url.password().unwrap_or_default())?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))?;
    value.set_sensitive(true);
    Ok(Some(value))
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
            target: Arc::new(Target::parse(base)?),
            metrics,
        })
    }
}

impl Service<Request<Bytes>> for BackendService {
    type Response = Response<Bytes>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // hyper-util's pool queues internally; concurrency is bounded by a layer above.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let client = self.clients.pick();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let target = Arc::clone(&self.target);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let uri = match target.uri_for(&parts.uri) {
                Ok(uri) => uri,
                Err(err) => {
                    metrics.observe("error", started);
                    return Err(err.into());
                }
            };
            // A fresh request: HTTP/1.1 whatever the caller's version, no extensions carried.
            let mut outgoing = Request::new(Full::new(body));
            *outgoing.method_mut() = parts.method;
            *outgoing.uri_mut() = uri;
            *outgoing.headers_mut() = parts.headers;
            strip_hop_by_hop(outgoing.headers_mut());
            if let Some(credentials) = &target.authorization {
                outgoing
                    .headers_mut()
                    .entry(http::header::AUTHORIZATION)
                    .or_insert_with(|| credentials.clone());
            }
            let response = match client.request(outgoing).await {
                Ok(response) => response,
                Err(err) => {
                    metrics.observe("error", started);
                    return Err(err.into());
                }
            };
            let (head, body) = response.into_parts();
            let mut headers = head.headers;
            let length = content_length(&headers);
            strip_hop_by_hop(&mut headers);
            // The body is read by its own framing; the answer's length is set anew by whoever
            // sends it on.
            headers.remove(http::header::CONTENT_LENGTH);
            let body = read_bounded(body, length).await;
            metrics.observe(
                match (&body, head.status.as_u16()) {
                    (Err(_), _) => "error",
                    (Ok(_), 200..=299) => "2xx",
                    (Ok(_), 400..=499) => "4xx",
                    (Ok(_), _) => "5xx",
                },
                started,
            );
            let body = body?;
            let mut answer = Response::new(body);
            *answer.status_mut() = head.status;
            *answer.headers_mut() = headers;
            Ok(answer)
        })
    }
}

/// The `Content-Length` an answer declares, if it is a number.
fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
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

/// The response body, refusing more than [`MAX_RESPONSE_BYTES`] (declared or sent).
async fn read_bounded(mut body: Incoming, length: Option<u64>) -> Result<Bytes, BoxError> {
    if length.is_some_and(|len| len > MAX_RESPONSE_BYTES as u64) {
        return Err("backend response over the size limit".into());
    }
    // A small answer arrives as one chunk: it is returned as it is, and only a second chunk
    // starts a buffer (a copy and an allocation per call saved on the common path).
    let Some(first) = next_chunk(&mut body).await? else {
        return Ok(Bytes::new());
    };
    if first.len() > MAX_RESPONSE_BYTES {
        return Err("backend response over the size limit".into());
    }
    let Some(second) = next_chunk(&mut body).await? else {
        return Ok(first);
    };
    let mut collected = BytesMut::from(&first[..]);
    let mut next = Some(second);
    while let Some(chunk) = next {
        if collected.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err("backend response over the size limit".into());
        }
        collected.extend_from_slice(&chunk);
        next = next_chunk(&mut body).await?;
    }
    Ok(collected.freeze())
}

/// The body's next chunk of data; trailers are skipped.
async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, BoxError> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(base: &str) -> BackendService {
        let transport = crate::backend::Transport::for_url(base).expect("plain transport");
        let pools = RotatingPools::new(
            Box::new(move || transport.client(std::time::Duration::from_secs(1), 4)),
            None,
        );
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
            let uri = backend
                .target
                .uri_for(request(target).uri())
                .expect("a valid URI");
            assert_eq!(uri.to_string(), expected);
        }
    }

    #[test]
    fn credentials_in_the_url_are_sent_as_basic_authorization_never_in_the_uri() {
        let backend = service("http://guest%40home:pa%3Ass@127.0.0.1:8080/");
        let uri = backend
            .target
            .uri_for(request("/api/messages").uri())
            .expect("a valid URI");
        assert_eq!(uri.to_string(), "http://127.0.0.1:8080/api/messages");
        assert_eq!(
            backend.target.data.to_string(),
            "http://127.0.0.1:8080/data"
        );
        // base64("guest@home:pa:ss"), decoded as reqwest decoded it.
        let credentials = backend.target.authorization.as_ref().expect("credentials");
        assert_eq!(credentials, "Basic Z3Vlc3RAaG9tZTpwYTpzcw==");
        assert!(credentials.is_sensitive());
        assert!(
            service("http://127.0.0.1:8080")
                .target
                .authorization
                .is_none()
        );
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

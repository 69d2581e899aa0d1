//! [`TrackLayer`]: every request's duration in `http_request_duration_seconds`, and the
//! requests being served in `http_requests_in_flight`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use prometheus_client::metrics::histogram::Histogram;

use super::{HttpLabels, HttpMetrics, MethodLabel, Metrics, RouteLabel};

/// Layer recording every request's duration and the requests in flight; add it with
/// `Router::layer` so the route template is known.
///
/// A plain tower layer with its own future rather than `axum::middleware::from_fn`: that one
/// boxes a future and clones the inner route on every request, a visible share of `/fetch`'s
/// CPU (issue 17).
#[derive(Clone)]
pub struct TrackLayer(Arc<HttpMetrics>);

impl TrackLayer {
    /// The layer recording into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self(metrics.http)
    }
}

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Track {
            inner,
            http: Arc::clone(&self.0),
            hot: Arc::default(),
        }
    }
}

/// The series of a route's successful GETs (method `GET`, status 200), kept once looked up.
///
/// `Router::layer` gives each route a `Track` of its own, and nearly all of a busy route's
/// answers are GET 200: keeping that one series spares the family lookup (the labels hashed
/// with SipHash under a lock) on the common path (issue 17). The route is kept with it and
/// compared, so a `Track` that sees several routes still records each in its own series.
type HotSeries = Arc<OnceLock<(RouteLabel, Histogram)>>;

/// The service [`TrackLayer`] makes.
#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    http: Arc<HttpMetrics>,
    hot: HotSeries,
}

impl<S> tower::Service<Request> for Track<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let method = MethodLabel(request.method().clone());
        let route = RouteLabel::of(&request);
        let in_flight = InFlight::enter(&self.http);
        TrackFuture {
            inner: self.inner.call(request),
            started,
            labels: Some((method, route)),
            in_flight: Some(in_flight),
            hot: Arc::clone(&self.hot),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner answer, observed when it is ready.
    pub struct TrackFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        labels: Option<(MethodLabel, RouteLabel)>,
        in_flight: Option<InFlight>,
        hot: HotSeries,
    }
}

impl<F> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(response)) = this.inner.poll(cx) else {
            return Poll::Pending;
        };
        // Out of flight first, then observed, as the request leaves.
        if let (Some(http), Some((method, route))) = (
            this.in_flight.take().and_then(InFlight::leave),
            this.labels.take(),
        ) {
            let seconds = this.started.elapsed().as_secs_f64();
            let status = response.status().as_u16();
            let hot = method.0 == Method::GET && status == 200;
            match this.hot.get() {
                Some((kept, series)) if hot && kept.as_str() == route.as_str() => {
                    series.observe(seconds);
                }
                _ => {
                    let labels = HttpLabels {
                        method,
                        route,
                        status,
                    };
                    if hot {
                        let series = http.requests.get_or_create_owned(&labels);
                        series.observe(seconds);
                        // Only the first route seen is kept; a racing second set is dropped.
                        let _ = this.hot.set((labels.route, series));
                    } else {
                        http.requests.get_or_create(&labels).observe(seconds);
                    }
                }
            }
        }
        Poll::Ready(Ok(response))
    }
}

/// Keeps the in-flight gauge right when a request future is dropped (client gone).
struct InFlight(Option<Arc<HttpMetrics>>);

impl InFlight {
    fn enter(http: &Arc<HttpMetrics>) -> Self {
        http.in_flight.inc();
        Self(Some(Arc::clone(http)))
    }

    /// Out of flight now; the metrics it counted in, to record the request.
    fn leave(mut self) -> Option<Arc<HttpMetrics>> {
        let http = self.0.take();
        if let Some(http) = &http {
            http.in_flight.dec();
        }
        http
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(http) = &self.0 {
            http.in_flight.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use prometheus_client::registry::Registry;
    use tower::ServiceExt;

    use super::*;

    fn app(metrics: &Metrics) -> Router {
        Router::new()
            .route("/items/{id}", get(|| async { "ok" }))
            .route("/hang", get(std::future::pending::<&'static str>))
            .layer(TrackLayer::new(metrics.clone()))
    }

    fn get_request(path: &str) -> Request {
        Request::get(path)
            .body(Body::empty())
            .expect("a static request is valid")
    }

    #[tokio::test]
    async fn each_answer_is_counted_by_method_route_template_and_status() {
        let metrics = Metrics::new(Registry::default());
        for path in ["/items/1", "/items/2", "/nowhere"] {
            let _ = app(&metrics).oneshot(get_request(path)).await;
        }
        let text = metrics.encode().expect("the registry encodes");
        let count = "http_request_duration_seconds_count";
        assert!(
            text.contains(&format!(
                "{count}{{method=\"GET\",route=\"/items/{{id}}\",status=\"200\"}} 2"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{count}{{method=\"GET\",route=\"unmatched\",status=\"404\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains("http_requests_in_flight 0"), "{text}");
    }

    #[tokio::test]
    async fn a_request_dropped_before_its_answer_leaves_the_in_flight_gauge() {
        let metrics = Metrics::new(Registry::default());
        let mut call = Box::pin(app(&metrics).oneshot(get_request("/hang")));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending());
        assert_eq!(metrics.http.in_flight.get(), 1);
        // The caller leaves: no answer, so nothing observed, and no longer in flight.
        drop(call);
        assert_eq!(metrics.http.in_flight.get(), 0);
        let text = metrics.encode().expect("the registry encodes");
        assert!(!text.contains("route=\"/hang\""), "{text}");
    }

    #[tokio::test]
    async fn a_kept_series_is_the_exported_one_and_stays_with_its_route() {
        let metrics = Metrics::new(Registry::default());
        let app = Router::new()
            .route("/items/{id}", get(|| async { "ok" }))
            .route("/other", get(|| async { "ok" }))
            .layer(TrackLayer::new(metrics.clone()));
        for path in ["/items/1", "/items/2", "/other", "/items/3", "/other"] {
            let _ = app.clone().oneshot(get_request(path)).await;
        }
        let text = metrics.encode().expect("the registry encodes");
        let count = "http_request_duration_seconds_count";
        for (route, n) in [("/items/{id}", 3), ("/other", 2)] {
            assert!(
                text.contains(&format!(
                    "{count}{{method=\"GET\",route=\"{route}\",status=\"200\"}} {n}"
                )),
                "{text}"
            );
        }
    }
}

//! [`TrackLayer`]: every request's duration in `http_request_duration_seconds`, and the
//! requests being served in `http_requests_in_flight`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;

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
        }
    }
}

/// The service [`TrackLayer`] makes.
#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    http: Arc<HttpMetrics>,
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
            let labels = HttpLabels {
                method,
                route,
                status: response.status().as_u16(),
            };
            http.requests
                .get_or_create(&labels)
                .observe(this.started.elapsed().as_secs_f64());
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
}

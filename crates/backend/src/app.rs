//! Building and running the backend: state, router, background tasks.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::response::IntoResponse;
use guestbook_common::bulkhead::Bulkhead;
use guestbook_common::pressure::Pressure;
use guestbook_common::rate_limit::{self, RateLimiter};
use guestbook_common::same_origin;
use guestbook_common::service::{self, Bound, Listener, Service, ServiceArgs};
use guestbook_common::stream_limit::StreamLimit;
use guestbook_common::{Lifecycle, Metrics, metrics, probes};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tower::layer::util::Identity;

use crate::error::ApiError;
use crate::faults::Faults;
use crate::guestbook::Guestbook;
use crate::routes;
use crate::routes::extract::MAX_BODY_BYTES;
use crate::settings::Settings;
use crate::store::feed::Feeds;
use crate::store::{Store, StoreMetrics};

/// What every handler can reach. One `Arc`, because axum clones the state for every request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct Shared {
    /// The guestbook's storage.
    pub store: Store,
    /// This process's tails of the books' logs.
    pub feeds: Feeds,
    /// The use cases the guestbook's handlers call.
    pub guestbook: Guestbook,
    /// Live fault configuration.
    pub faults: Arc<Faults>,
    /// Whether `/config/*` exists.
    pub fault_injection: bool,
    /// The admin bearer token, when set.
    pub admin_token: Option<Arc<str>>,
    /// Serving or shutting down.
    pub lifecycle: Lifecycle,
    /// The Prometheus registry.
    pub metrics: Metrics,
    /// Bounds concurrent live-update connections, in all and per client address.
    pub streams: Arc<StreamLimit>,
    /// Interval of a live-update stream's keep-alive comments.
    pub stream_keep_alive: std::time::Duration,
    /// Readiness and load shedding.
    pub pressure: Arc<Pressure>,
    /// The bounded resource behind `/slow`.
    pub slow: Arc<Bulkhead>,
    /// How long `/slow` holds its permit.
    pub slow_hold: std::time::Duration,
    /// Per-client limit on `POST /api/messages`, when `RATE_LIMIT_WRITES_PER_SEC` is above 0.
    pub write_limiter: Option<Arc<RateLimiter>>,
}

impl FromRef<AppState> for Lifecycle {
    fn from_ref(state: &AppState) -> Self {
        state.lifecycle.clone()
    }
}

impl FromRef<AppState> for Arc<Pressure> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.pressure)
    }
}

impl FromRef<AppState> for Metrics {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

impl AppState {
    /// State for `settings`; connects to Redis lazily.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let mut registry = Registry::default();
        let store_metrics = StoreMetrics::register(&mut registry);
        let faults = Arc::new(Faults::default());
        let store = Store::new(&settings.redis, Arc::clone(&faults), store_metrics)?;
        let lifecycle = Lifecycle::new();
        let pressure = Pressure::new(
            settings.service.pressure.clone(),
            lifecycle.clone(),
            &mut registry,
        );
        let slow_hold = std::time::Duration::from_millis(settings.slow_ms);
        let slow_max_wait = (settings.service.pressure.shedding && settings.slow_max_wait_ms > 0)
            .then(|| std::time::Duration::from_millis(settings.slow_max_wait_ms));
        let streams = StreamLimit::new(
            settings.stream_cap(),
            settings.max_streams_per_client,
            &mut registry,
        );
        let feeds = Feeds::new(store.clone());
        Ok(Self(Arc::new(Shared {
            guestbook: Guestbook::new(store.clone(), feeds.clone()),
            store,
            feeds,
            faults,
            fault_injection: settings.fault_injection,
            admin_token: settings.admin_token.as_deref().map(Arc::from),
            lifecycle,
            metrics: Metrics::new(registry),
            streams,
            stream_keep_alive: std::time::Duration::from_secs(settings.stream_keep_alive_secs),
            pressure,
            slow: Arc::new(Bulkhead::new(
                settings.slow_workers,
                slow_hold,
                slow_max_wait,
            )),
            slow_hold,
            write_limiter: RateLimiter::new(
                settings.rate_limit_writes_per_sec,
                settings.rate_limit_writes_burst,
            ),
        })))
    }
}

/// The whole HTTP surface, so tests can drive it without a socket.
pub fn app(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    let shedder = Arc::clone(&state.pressure);
    let mut messages = routes::messages::routes();
    if let Some(limiter) = state.write_limiter.clone() {
        messages = messages.route_layer(axum::middleware::from_fn_with_state(
            limiter,
            rate_limit::guard,
        ));
    }
    let mut faults = routes::faults::routes();
    if state.fault_injection {
        // Their bodies need no JSON content type (seed 002's curl sends none), so a web page
        // elsewhere could post them through a visitor's browser. Only where they exist: with
        // fault injection off they stay a plain 404.
        faults = faults.route_layer(axum::middleware::from_fn(same_origin::guard));
    }
    // The body limit is a layer on every route but the messages', whose bodies come through
    // `LimitedBody`, which enforces the same limit without the layer's per-request extension.
    let routes = Router::new()
        .merge(routes::data::routes())
        .merge(routes::slow::routes())
        .merge(faults)
        .merge(routes::health::routes())
        .merge(probes::routes())
        .merge(metrics::routes())
        .merge(guestbook_common::openapi::routes(Arc::from(
            crate::openapi::json(),
        )))
        .fallback(|| async { ApiError::NotFound.into_response() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .merge(messages);
    service::wrap(routes, metrics, shedder, Identity::new()).with_state(state)
}

/// A bound, not yet serving backend.
pub struct Application(Bound<AppState, Settings>);

impl Application {
    /// The state, for tests that inspect it.
    pub fn state(&self) -> &AppState {
        &self.0.state
    }
}

impl Service for Application {
    type Settings = Settings;
    type Error = anyhow::Error;

    fn service_args(settings: &Settings) -> &ServiceArgs {
        &settings.service
    }

    async fn build(settings: Settings) -> anyhow::Result<Self> {
        let state = AppState::new(&settings)?;
        Ok(Self(
            Bound::bind(settings.listen_addr, state, settings).await?,
        ))
    }

    async fn run_until_stopped<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Bound {
            listener,
            state,
            settings,
        } = self.0;
        let stop_tail = CancellationToken::new();
        let tail = tokio::spawn(state.feeds.clone().run(stop_tail.clone()));
        let refresh = tokio::spawn(Arc::clone(&state.pressure).run(stop_tail.clone()));
        let sentinels = {
            let store = state.store.clone();
            let stop = stop_tail.clone();
            tokio::spawn(async move { store.follow_sentinels(stop).await })
        };
        tracing::info!(
            addr = %listener.local_addr()?,
            strategy = state.store.strategy().as_str(),
            fault_injection = settings.fault_injection,
            "guestbook-backend serving"
        );
        let lifecycle = state.lifecycle.clone();
        let metrics = state.metrics.clone();
        let served = listener
            .serve(app(state), lifecycle, &settings.service, &metrics, shutdown)
            .await;
        stop_tail.cancel();
        let _ = tail.await;
        let _ = refresh.await;
        let _ = sentinels.await;
        served
    }

    fn listener(&self) -> &Listener {
        &self.0.listener
    }
}

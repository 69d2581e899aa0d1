//! Building and running the backend: state, router, background tasks.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::response::IntoResponse;
use guestbook_common::{Lifecycle, Metrics, metrics, probes, server, telemetry};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::faults::Faults;
use crate::routes;
use crate::routes::extract::MAX_BODY_BYTES;
use crate::settings::Settings;
use crate::store::feed::Feed;
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
    /// This process's tail of the message log.
    pub feed: Feed,
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
    /// Bounds concurrent live-update connections.
    pub stream_permits: Arc<Semaphore>,
}

impl FromRef<AppState> for Lifecycle {
    fn from_ref(state: &AppState) -> Self {
        state.lifecycle.clone()
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
        let store = Store::new(settings, Arc::clone(&faults), store_metrics)?;
        Ok(Self(Arc::new(Shared {
            store,
            feed: Feed::new(),
            faults,
            fault_injection: settings.fault_injection,
            admin_token: settings.admin_token.as_deref().map(Arc::from),
            lifecycle: Lifecycle::new(),
            metrics: Metrics::new(registry),
            stream_permits: Arc::new(Semaphore::new(settings.max_stream_clients)),
        })))
    }
}

/// The whole HTTP surface, so tests can drive it without a socket.
pub fn app(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .merge(routes::messages::routes())
        .merge(routes::data::routes())
        .merge(routes::faults::routes())
        .merge(routes::health::routes())
        .merge(probes::routes())
        .merge(metrics::routes())
        .fallback(|| async { ApiError::NotFound.into_response() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .layer(telemetry::trace_layer())
        .layer(telemetry::propagate_request_id_layer())
        .layer(telemetry::set_request_id_layer())
        .with_state(state)
}

/// A bound, not yet serving backend.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    settings: Settings,
}

impl Application {
    /// Binds the listener (port 0 picks a free port) and prepares the state.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let state = AppState::new(&settings)?;
        let listener = TcpListener::bind(settings.listen_addr).await?;
        Ok(Self {
            listener,
            state,
            settings,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().map_or(0, |addr| addr.port())
    }

    /// The state, for tests that inspect it.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then shuts down gracefully.
    pub async fn run_until_stopped<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Self {
            listener,
            state,
            settings,
        } = self;
        let stop_tail = CancellationToken::new();
        let tail = tokio::spawn(
            state
                .feed
                .clone()
                .run(state.store.clone(), stop_tail.clone()),
        );
        tracing::info!(
            addr = %listener.local_addr()?,
            strategy = state.store.strategy().as_str(),
            fault_injection = settings.fault_injection,
            "guestbook-backend serving"
        );
        let lifecycle = state.lifecycle.clone();
        let served = server::serve(
            listener,
            app(state),
            lifecycle,
            &settings.shutdown,
            shutdown,
        )
        .await;
        stop_tail.cancel();
        let _ = tail.await;
        served
    }
}

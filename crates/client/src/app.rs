//! Building and running the client: state, the backend stack, the router.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::FromRef;
use axum::routing::{MethodRouter, any, delete, get, post};
use guestbook_common::pressure::Pressure;
use guestbook_common::rate_limit::{self, RateLimiter};
use guestbook_common::service::{self, Bound, Listener, Service, ServiceArgs};
use guestbook_common::stream_limit::StreamLimit;
use guestbook_common::{Lifecycle, Metrics, metrics, probes};
use guestbook_common::{redact, same_origin};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::backend::{self, AttemptMetrics, BackendService, BackendStack, StackConfig};
use crate::middleware::circuit_breaker::{Breaker, State as CircuitState};
use crate::middleware::retry::{RetryConfig, RetryMetrics, RetryPolicy};
use crate::routes::fetch::Remembered;
use crate::routes::load::LoadGenerator;
use crate::routes::{api_paths, fetch, load, proxy, security_headers, status, stream};
use crate::settings::Settings;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: &'static str,
    to: &'static str,
}

/// What every handler can reach; one `Arc`, cloned per request.
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
    /// Every backend call goes through this.
    pub stack: BackendStack,
    /// The circuit breaker inside the stack; the stream passthrough asks it too.
    pub breaker: Arc<Breaker>,
    /// `BACKEND_CONCURRENCY`'s permits: the stack's calls and the open streams share them.
    pub backend_slots: Arc<Semaphore>,
    /// `BACKEND_CONCURRENCY`: how many permits `backend_slots` started with.
    pub backend_concurrency: usize,
    /// The same with any password replaced, for logs and `/status`.
    pub backend_url_shown: String,
    /// Per-client limit on `POST /api/*`, when `RATE_LIMIT_WRITES_PER_SEC` is above 0.
    pub write_limiter: Option<Arc<RateLimiter>>,
    /// Retry settings, as `/status` shows them.
    pub retry_summary: Value,
    /// The background load generator.
    pub load: LoadGenerator,
    /// Longest load run.
    pub load_max: Duration,
    /// A client for the unbuffered live-update stream (no overall timeout).
    pub streaming: reqwest::Client,
    /// Longest wait for the backend's answer (its headers) to a stream request.
    pub stream_answer_timeout: Duration,
    /// The backend's live-update stream: a fixed path on `BACKEND_URL`'s scheme, host and port.
    pub stream_url: reqwest::Url,
    /// Bounds the streams passed through, in all and per browser address.
    pub streams: Arc<StreamLimit>,
    /// Serving or shutting down.
    pub lifecycle: Lifecycle,
    /// The Prometheus registry.
    pub metrics: Metrics,
    /// The client's own readiness and shedding (never the backend's health: seed 004).
    pub pressure: Arc<Pressure>,
    remembered: Mutex<Remembered>,
    fallback_cache: Duration,
    fallbacks: Family<ReasonLabel, Counter>,
    tasks: CancellationToken,
}

impl Shared {
    /// Keeps a good `/data` answer for stale fallbacks.
    pub fn remember(&self, data: &Value) {
        if !self.fallback_cache.is_zero() {
            *self
                .remembered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((Instant::now(), data.clone()));
        }
    }

    /// The last good answer and its age, if younger than `FALLBACK_CACHE_SECS`.
    pub fn stale(&self) -> Option<(Value, Duration)> {
        let remembered = self
            .remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (at, data) = remembered.as_ref()?;
        let age = at.elapsed();
        (age <= self.fallback_cache).then(|| (data.clone(), age))
    }

    /// Counts a `/fetch` fallback.
    pub fn count_fallback(&self, reason: &'static str) {
        self.fallbacks.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A token cancelled when the server stops (for background work).
    pub fn lifecycle_child(&self) -> CancellationToken {
        self.tasks.child_token()
    }
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

impl FromRef<AppState> for Arc<Pressure> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.pressure)
    }
}

fn state_value(state: CircuitState) -> i64 {
    match state {
        CircuitState::Closed => 0,
        CircuitState::HalfOpen => 1,
        CircuitState::Open => 2,
    }
}

impl AppState {
    /// State for `settings`.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let mut registry = Registry::default();
        let circuit = Gauge::<i64>::default();
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "client_circuit_state",
            "Circuit state: 0 closed, 1 half-open, 2 open",
            circuit.clone(),
        );
        registry.register(
            "client_circuit_transitions",
            "Circuit state changes",
            transitions.clone(),
        );
        let fallbacks = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "client_fetch_fallbacks",
            "/fetch answers not from a fresh backend answer, by reason",
            fallbacks.clone(),
        );
        let listener: Arc<dyn Fn(CircuitState, CircuitState) + Send + Sync> =
            Arc::new(move |from, to| {
                circuit.set(state_value(to));
                transitions
                    .get_or_create(&TransitionLabels {
                        from: from.as_str(),
                        to: to.as_str(),
                    })
                    .inc();
            });
        let breaker_config = settings.breaker_config();
        breaker_config.validate().map_err(anyhow::Error::msg)?;
        let breaker = Arc::new(Breaker::with_listener(breaker_config, listener));
        let retry_config = RetryConfig {
            max_attempts: settings.retry_max_attempts,
            base: Duration::from_millis(settings.retry_base_ms),
            max: Duration::from_millis(settings.retry_max_ms),
            jitter: true,
        };
        let retry = RetryPolicy::new(
            retry_config,
            settings.retry_budget_min_per_sec,
            settings.retry_budget_percent,
            RetryMetrics::register(&mut registry),
            Arc::clone(&breaker),
        );
        let transport =
            backend::Transport::for_url(&settings.backend_url).map_err(anyhow::Error::msg)?;
        let make_client: backend::MakeClient = {
            let transport = transport.clone();
            let connect_timeout = settings.attempt_timeout();
            let idle_per_pool = settings.backend_concurrency.div_ceil(backend::POOLS);
            Box::new(move || transport.client(connect_timeout, idle_per_pool))
        };
        let pools = backend::RotatingPools::new(make_client, settings.connection_max_age());
        let backend = BackendService::new(
            Arc::new(pools),
            &settings.backend_url,
            AttemptMetrics::register(&mut registry),
        )
        .map_err(|err| anyhow::anyhow!("BACKEND_URL: {err}"))?;
        let backend_slots = Arc::new(Semaphore::new(settings.backend_concurrency));
        let stack_config = StackConfig {
            deadline: Duration::from_millis(settings.request_deadline_ms),
            attempt_timeout: settings.attempt_timeout(),
            concurrency: Arc::clone(&backend_slots),
        };
        let stack = backend::build(backend, Arc::clone(&breaker), retry, &stack_config);
        let streams = StreamLimit::new(
            settings.max_stream_clients,
            settings.max_streams_per_client,
            &mut registry,
        );
        let lifecycle = Lifecycle::new();
        let pressure = Pressure::new(
            settings.service.pressure.clone(),
            lifecycle.clone(),
            &mut registry,
        );
        Ok(Self(Arc::new(Shared {
            stack,
            breaker,
            backend_slots,
            backend_concurrency: settings.backend_concurrency,
            backend_url_shown: redact::url(settings.backend_url.trim_end_matches('/')),
            write_limiter: RateLimiter::new(
                settings.rate_limit_writes_per_sec,
                settings.rate_limit_writes_burst,
            ),
            retry_summary: json!({
                "max_attempts": settings.retry_max_attempts,
                "base_ms": settings.retry_base_ms,
                "max_ms": settings.retry_max_ms,
                "budget_percent": settings.retry_budget_percent,
                "budget_min_per_sec": settings.retry_budget_min_per_sec,
                "budget_per_success": crate::middleware::retry::RETRIES_PER_SUCCESS,
                "attempt_timeout_ms": settings.backend_timeout_ms,
                "deadline_ms": settings.request_deadline_ms,
            }),
            load: LoadGenerator::default(),
            load_max: Duration::from_secs(settings.load_max_secs),
            streaming: transport
                .builder()
                .connect_timeout(settings.attempt_timeout())
                .build()?,
            stream_answer_timeout: settings.attempt_timeout(),
            stream_url: stream::upstream_url(&settings.backend_url)
                .map_err(|err| anyhow::anyhow!("BACKEND_URL: {err}"))?,
            streams,
            lifecycle,
            metrics: Metrics::new(registry),
            pressure,
            remembered: Mutex::new(None),
            fallback_cache: Duration::from_secs(settings.fallback_cache_secs),
            fallbacks,
            tasks: CancellationToken::new(),
        })))
    }
}

/// The whole HTTP surface.
pub fn app(state: AppState, frontend: crate::ui_files::Source<'_>) -> Router {
    let metrics = state.metrics.clone();
    let shedder = Arc::clone(&state.pressure);
    let router = Router::new()
        .route("/fetch", get(fetch::fetch))
        .route("/status", get(status::status))
        .merge(load_routes())
        .merge(api(&state))
        .merge(probes::routes())
        .merge(metrics::routes())
        .merge(guestbook_common::openapi::routes(Arc::from(
            crate::openapi::json(),
        )));
    service::wrap(
        crate::ui_files::fallback(router, frontend),
        metrics,
        shedder,
        security_headers::SecurityHeadersLayer,
    )
    .with_state(state)
}

/// The load generator's controls. They take any body (seed 002's curl sends no content type),
/// so cross-site requests are refused: a page elsewhere could otherwise start a load against
/// the backend through a visitor's browser.
fn load_routes() -> Router<AppState> {
    Router::new()
        .route("/start-load", post(load::start))
        .route("/stop-load", post(load::stop))
        .route_layer(axum::middleware::from_fn(same_origin::guard))
}

/// `/api/*`: the guestbook operations by exact route (matched on the raw path, so no spelling
/// of `..` can select another), for the default book and for `/api/books/{book}`, and a
/// refusal for every other path under `/api/`.
fn api(state: &AppState) -> Router<AppState> {
    let messages = guarded(
        state,
        get(proxy::list).post(proxy::create),
        delete(proxy::clear),
    );
    let book_messages = guarded(
        state,
        get(proxy::book_list).post(proxy::book_create),
        delete(proxy::book_clear),
    );
    Router::new()
        .route("/api/messages", messages)
        .route("/api/messages/stream", get(stream::stream))
        .route("/api/books/{book}/messages", book_messages)
        .route(
            "/api/books/{book}/messages/stream",
            get(stream::book_stream),
        )
        .route("/api", any(api_paths::refuse))
        .route("/api/", any(api_paths::refuse))
        .route("/api/{*rest}", any(api_paths::refuse))
}

/// `read_write` and the admin `clear` as one route, with the write rate limit when set.
fn guarded(
    state: &AppState,
    read_write: MethodRouter<AppState>,
    clear: MethodRouter<AppState>,
) -> MethodRouter<AppState> {
    let mut route = read_write.merge(
        // The admin clear needs the backend's bearer token as well; refusing cross-site
        // requests here costs nothing and keeps a page elsewhere from even trying.
        clear.route_layer(axum::middleware::from_fn(same_origin::guard)),
    );
    if let Some(limiter) = state.write_limiter.clone() {
        route = route.route_layer(axum::middleware::from_fn_with_state(
            limiter,
            rate_limit::guard,
        ));
    }
    route
}

/// A bound, not yet serving client.
pub struct Application(Bound<AppState, Settings>);

impl Application {
    /// The state, for tests.
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
        let refresh = tokio::spawn(Arc::clone(&state.pressure).run(state.tasks.clone()));
        tracing::info!(addr = %listener.local_addr()?, backend = %state.backend_url_shown, "guestbook-client serving");
        let lifecycle = state.lifecycle.clone();
        let tasks = state.tasks.clone();
        let metrics = state.metrics.clone();
        let frontend = crate::ui_files::Source::from_setting(settings.frontend_dir.as_deref());
        match frontend.describe() {
            Ok(shown) => tracing::info!(frontend = %shown, "serving the browser UI"),
            Err(problem) => tracing::warn!("{problem}"),
        }
        let router = app(state, frontend);
        let served = listener
            .serve(router, lifecycle, &settings.service, &metrics, shutdown)
            .await;
        tasks.cancel();
        let _ = refresh.await;
        served
    }

    fn listener(&self) -> &Listener {
        &self.0.listener
    }
}

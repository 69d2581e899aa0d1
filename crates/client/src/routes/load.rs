//! `POST /start-load` and `POST /stop-load`: seed 002's background load, bounded. It calls
//! the backend's `/data` through the same stack at `rate` per second (default 1, as in the
//! seed) for at most `duration_secs` (capped by `LOAD_MAX_SECS`), one call in flight at most.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use guestbook_common::error_body::{ErrorBody, ErrorCode, respond};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::app::AppState;
use crate::backend::BackendStack;

/// The longest `duration_secs` accepted: a day (runs are cut to `LOAD_MAX_SECS` anyway).
const MAX_DURATION_SECS: u64 = 86_400;

/// The generator's state: at most one run at a time.
#[derive(Default)]
pub struct LoadGenerator {
    running: std::sync::Mutex<Option<CancellationToken>>,
    sent: Arc<AtomicU64>,
    ok: Arc<AtomicU64>,
}

impl LoadGenerator {
    /// Counts for `/status`.
    pub fn summary(&self) -> Value {
        let running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|t| !t.is_cancelled());
        json!({"running": running, "sent": self.sent.load(Ordering::Relaxed), "ok": self.ok.load(Ordering::Relaxed)})
    }
}

/// `POST /start-load`'s optional body; `null` fields take their defaults.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartLoad {
    /// Calls per second, above 0 and at most 1000 (default 1).
    #[schema(exclusive_minimum = 0.0, maximum = 1000.0)]
    rate: Option<f64>,
    /// Length of the run in seconds, at most 86400, and cut to LOAD_MAX_SECS (default:
    /// LOAD_MAX_SECS).
    #[schema(maximum = 86_400)]
    duration_secs: Option<u64>,
}

/// The load generator's answers: `status` is `started` (with `rate` and `duration_secs`),
/// `already-running`, `stopped` or `not-running`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LoadAnswer {
    /// `started`, `already-running`, `stopped` or `not-running`.
    #[schema(pattern = "^(started|already-running|stopped|not-running)$")]
    pub status: String,
    /// Calls per second (`started`).
    #[schema(nullable = false)]
    pub rate: Option<f64>,
    /// Length of the run (`started`).
    #[schema(nullable = false)]
    pub duration_secs: Option<u64>,
}

/// Starts seed 002's background load on the backend's `/data`, bounded.
#[utoipa::path(
    post,
    path = "/start-load",
    tag = "seed",
    request_body(content = Option<StartLoad>, description = "Optional; any content type", content_type = "application/json"),
    responses(
        (status = 200, description = "`started`, or `already-running`", body = LoadAnswer),
        (status = 403, description = guestbook_common::same_origin::DOCUMENTED, body = guestbook_common::openapi::ErrorBody),
        (status = 422, description = "A bad body or rate", body = guestbook_common::openapi::ErrorBody),
    )
)]
pub(crate) async fn start(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, Response> {
    let bad = |message: &str| {
        respond(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorBody::new(ErrorCode::Invalid, message),
        )
    };
    // No body, or JSON `null`, means every default (the document's body is optional). A body
    // of only whitespace is not JSON (schemathesis sent one): it is refused like any other.
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    // serde would also take `[rate, duration]`; only an object, `null` or nothing is meant.
    let options: StartLoad = if body.is_empty() {
        StartLoad::default()
    } else if first.is_none() {
        return Err(bad(
            "the body is blank: send a JSON object, null, or nothing",
        ));
    } else if !matches!(first, Some(b'{' | b'n')) {
        return Err(bad("the body must be a JSON object"));
    } else {
        serde_json::from_slice::<Option<StartLoad>>(&body)
            .map_err(|err| bad(&format!("invalid body: {err}")))?
            .unwrap_or_default()
    };
    if options
        .duration_secs
        .is_some_and(|secs| secs > MAX_DURATION_SECS)
    {
        return Err(bad("duration_secs must be at most 86400"));
    }
    let rate = options.rate.unwrap_or(1.0);
    if !(rate.is_finite() && rate > 0.0 && rate <= 1_000.0) {
        return Err(bad("rate must be above 0 and at most 1000 per second"));
    }
    let limit = app.load_max;
    let duration = options
        .duration_secs
        .map_or(limit, Duration::from_secs)
        .min(limit);
    let mut running = app
        .load
        .running
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if running.as_ref().is_some_and(|token| !token.is_cancelled()) {
        return Ok(Json(json!({"status": "already-running"})));
    }
    let token = app.lifecycle_child();
    *running = Some(token.clone());
    let stack = app.stack.clone();
    let (sent, ok) = (Arc::clone(&app.load.sent), Arc::clone(&app.load.ok));
    tokio::spawn(run(stack, rate, duration, token, sent, ok));
    tracing::info!(
        rate,
        duration_secs = duration.as_secs(),
        "load generator started"
    );
    Ok(Json(
        json!({"status": "started", "rate": rate, "duration_secs": duration.as_secs()}),
    ))
}

/// Stops the background load.
#[utoipa::path(
    post,
    path = "/stop-load",
    tag = "seed",
    responses(
        (status = 200, description = "`stopped`, or `not-running`", body = LoadAnswer),
        (status = 403, description = guestbook_common::same_origin::DOCUMENTED, body = guestbook_common::openapi::ErrorBody),
    )
)]
pub(crate) async fn stop(State(app): State<AppState>) -> Json<Value> {
    let mut running = app
        .load
        .running
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match running.take() {
        Some(token) if !token.is_cancelled() => {
            token.cancel();
            tracing::info!("load generator stopped");
            Json(json!({"status": "stopped"}))
        }
        _ => Json(json!({"status": "not-running"})),
    }
}

async fn run(
    stack: BackendStack,
    rate: f64,
    duration: Duration,
    stop: CancellationToken,
    sent: Arc<AtomicU64>,
    ok: Arc<AtomicU64>,
) {
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let finished = tokio::time::sleep(duration);
    tokio::pin!(finished);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = &mut finished => break,
            _ = interval.tick() => {
                let request = http::Request::get("/data").body(Bytes::new()).expect("a static request is valid");
                sent.fetch_add(1, Ordering::Relaxed);
                if let Ok(response) = stack.clone().oneshot(request).await
                    && response.status().is_success()
                {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    stop.cancel();
}

//! `/config/*`: the fault-injection controls. They exist only with `FAULT_INJECTION=true`,
//! and require the bearer token when `ADMIN_TOKEN` is set. Bodies are accepted with or
//! without a JSON content type, because seed 002's curl commands send none.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::domain::InputError;
use crate::error::ApiError;
use crate::faults::RedisFaults;
use crate::routes::extract::{LimitedBody, require_bearer};

/// The longest injectable delay: ten minutes.
const MAX_DELAY_MS: u64 = 600_000;

/// `/config/failure`, `/config/latency`, `/config/redis`, `/config/get`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/config/failure", post(set_failure))
        .route("/config/latency", post(set_latency))
        .route("/config/redis", post(set_redis))
        .route("/config/get", get(current))
}

fn authorise(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if !app.fault_injection {
        return Err(ApiError::NotFound);
    }
    match app.admin_token.as_deref() {
        Some(token) => require_bearer(headers, token),
        None => Ok(()),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| InputError::from_json(&err).into())
}

fn check_rate(name: &str, rate: f64) -> Result<f64, ApiError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(ApiError::Unprocessable(format!(
            "{name} must be between 0 and 1"
        )))
    }
}

fn check_delay(delay_ms: u64) -> Result<u64, ApiError> {
    if delay_ms <= MAX_DELAY_MS {
        Ok(delay_ms)
    } else {
        Err(ApiError::Unprocessable(format!(
            "delay_ms must be at most {MAX_DELAY_MS}"
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailureChange {
    failure_rate: Option<f64>,
    status_code: Option<u16>,
}

async fn set_failure(
    State(app): State<AppState>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers)?;
    let change: FailureChange = parse(&body)?;
    let rate = change
        .failure_rate
        .map(|rate| check_rate("failure_rate", rate))
        .transpose()?;
    if let Some(code) = change.status_code
        && !(400..=599).contains(&code)
    {
        return Err(ApiError::Unprocessable(
            "status_code must be between 400 and 599".into(),
        ));
    }
    app.faults.update_http(|faults| {
        if let Some(rate) = rate {
            faults.failure_rate = rate;
        }
        if let Some(code) = change.status_code {
            faults.status_code = code;
        }
    });
    tracing::info!(failure = ?app.faults.http(), "failure injection changed");
    Ok(Json(json!({"result": "ok", "config": snapshot(&app)})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyChange {
    delay_ms: Option<u64>,
    delay_rate: Option<f64>,
}

async fn set_latency(
    State(app): State<AppState>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers)?;
    let change: LatencyChange = parse(&body)?;
    let delay = change.delay_ms.map(check_delay).transpose()?;
    let rate = change
        .delay_rate
        .map(|rate| check_rate("delay_rate", rate))
        .transpose()?;
    app.faults.update_http(|faults| {
        if let Some(delay) = delay {
            faults.delay_ms = delay;
        }
        if let Some(rate) = rate {
            faults.delay_rate = rate;
        }
    });
    tracing::info!(latency = ?app.faults.http(), "latency injection changed");
    Ok(Json(json!({"result": "ok", "config": snapshot(&app)})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisChange {
    delay_ms: Option<u64>,
    failure_rate: Option<f64>,
}

async fn set_redis(
    State(app): State<AppState>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers)?;
    let change: RedisChange = parse(&body)?;
    let current = app.faults.redis();
    let faults = RedisFaults {
        delay_ms: change
            .delay_ms
            .map(check_delay)
            .transpose()?
            .unwrap_or(current.delay_ms),
        failure_rate: change
            .failure_rate
            .map(|rate| check_rate("failure_rate", rate))
            .transpose()?
            .unwrap_or(current.failure_rate),
    };
    app.faults.set_redis(faults);
    tracing::info!(redis = ?faults, "Redis fault injection changed");
    Ok(Json(json!({"result": "ok", "config": snapshot(&app)})))
}

async fn current(State(app): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers)?;
    Ok(Json(snapshot(&app)))
}

/// Seed 002's flat shape, plus the Redis faults.
fn snapshot(app: &AppState) -> Value {
    let http = app.faults.http();
    json!({
        "failure_rate": http.failure_rate,
        "status_code": http.status_code,
        "delay_ms": http.delay_ms,
        "delay_rate": http.delay_rate,
        "redis": app.faults.redis(),
    })
}

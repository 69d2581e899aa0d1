//! `/config/*`: the fault-injection controls. They exist only with `FAULT_INJECTION=true`,
//! and require the bearer token when `ADMIN_TOKEN` is set. Bodies are accepted with or
//! without a JSON content type, because seed 002's curl commands send none.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use guestbook_common::openapi::ErrorBody;
use serde::Deserialize;

use crate::app::AppState;
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
    Ok(crate::domain::message::from_json_object(body)?)
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

/// `POST /config/failure`: either field, or both; a missing or `null` field stays as it is.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailureChange {
    /// Share of `/data` calls that fail, 0-1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    failure_rate: Option<f64>,
    /// The status a failed call answers, 400-599.
    #[schema(minimum = 400, maximum = 599)]
    status_code: Option<u16>,
}

#[utoipa::path(
    post,
    path = "/config/failure",
    tag = "faults",
    security((), ("bearer" = [])),
    request_body(content = FailureChange, description = "Failure injection for /data; accepted with or without a JSON content type (seed 002's curl sends none)", content_type = "application/json"),
    responses(ChangeAnswers)
)]
pub(crate) async fn set_failure(
    State(app): State<AppState>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Json<FaultChanged>, ApiError> {
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
    Ok(changed(&app))
}

/// `POST /config/latency`: either field, or both; a missing or `null` field stays as it is.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LatencyChange {
    /// Injected delay of `/data`, in milliseconds (at most 600000).
    #[schema(maximum = 600_000)]
    delay_ms: Option<u64>,
    /// Share of `/data` calls delayed, 0-1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    delay_rate: Option<f64>,
}

#[utoipa::path(
    post,
    path = "/config/latency",
    tag = "faults",
    security((), ("bearer" = [])),
    request_body(content = LatencyChange, description = "Latency injection for /data; accepted with or without a JSON content type (seed 002's curl sends none)", content_type = "application/json"),
    responses(ChangeAnswers)
)]
pub(crate) async fn set_latency(
    State(app): State<AppState>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Json<FaultChanged>, ApiError> {
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
    Ok(changed(&app))
}

/// `POST /config/redis`: either field, or both; a missing or `null` field stays as it is.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedisChange {
    /// Delay before each Redis call made for a request, in milliseconds (at most 600000).
    #[schema(maximum = 600_000)]
    delay_ms: Option<u64>,
    /// Share of those Redis calls failed without sending anything, 0-1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    failure_rate: Option<f64>,
}

/// The current faults (seed 002's flat shape plus the Redis faults).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct FaultConfig {
    /// Share of `/data` calls that fail.
    pub failure_rate: f64,
    /// The status they answer.
    pub status_code: u16,
    /// Injected delay of `/data`, in milliseconds.
    pub delay_ms: u64,
    /// Share of `/data` calls delayed.
    pub delay_rate: f64,
    /// Faults on the Redis hop.
    pub redis: RedisFaults,
}

/// What every `POST /config/*` answers, documented once for the three of them.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Never built: the handlers answer `FaultChanged` or an `ApiError`.
enum ChangeAnswers {
    #[response(status = 200, description = "Changed")]
    Changed(FaultChanged),
    #[response(status = 400, description = "The body is not JSON")]
    NotJson(ErrorBody),
    #[response(
        status = 401,
        description = "ADMIN_TOKEN is set and the bearer token is missing or wrong",
        headers(("WWW-Authenticate" = String, description = "`Bearer`"))
    )]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = guestbook_common::same_origin::DOCUMENTED)]
    CrossSite(ErrorBody),
    #[response(
        status = 404,
        description = "FAULT_INJECTION is off: the endpoint does not exist"
    )]
    Off(ErrorBody),
    #[response(status = 413, description = "The body is over 16 KiB")]
    TooLarge(ErrorBody),
    #[response(
        status = 422,
        description = "An unknown field or an out-of-range value"
    )]
    Invalid(ErrorBody),
}

/// The answer to a change: `{"result": "ok", "config": {...}}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct FaultChanged {
    /// `ok`.
    pub result: String,
    /// The faults now in force.
    pub config: FaultConfig,
}

#[utoipa::path(
    post,
    path = "/config/redis",
    tag = "faults",
    security((), ("bearer" = [])),
    request_body(content = RedisChange, description = "Faults on the Redis hop; accepted with or without a JSON content type (seed 002's curl sends none)", content_type = "application/json"),
    responses(ChangeAnswers)
)]
pub(crate) async fn set_redis(
    State(app): State<AppState>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Json<FaultChanged>, ApiError> {
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
    Ok(changed(&app))
}

/// The current fault configuration.
#[utoipa::path(
    get,
    path = "/config/get",
    tag = "faults",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The faults in force", body = FaultConfig),
        (status = 401, description = "ADMIN_TOKEN is set and the bearer token is missing or wrong", body = guestbook_common::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "FAULT_INJECTION is off: the endpoint does not exist", body = guestbook_common::openapi::ErrorBody),
    )
)]
pub(crate) async fn current(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<FaultConfig>, ApiError> {
    authorise(&app, &headers)?;
    Ok(Json(snapshot(&app)))
}

/// Seed 002's flat shape, plus the Redis faults.
fn snapshot(app: &AppState) -> FaultConfig {
    let http = app.faults.http();
    FaultConfig {
        failure_rate: http.failure_rate,
        status_code: http.status_code,
        delay_ms: http.delay_ms,
        delay_rate: http.delay_rate,
        redis: app.faults.redis(),
    }
}

fn changed(app: &AppState) -> Json<FaultChanged> {
    Json(FaultChanged {
        result: "ok".to_owned(),
        config: snapshot(app),
    })
}

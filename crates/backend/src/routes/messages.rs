//! `POST /api/messages` and `GET /api/messages`.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::app::AppState;
use crate::domain::{IdempotencyKey, NewMessage, StoredMessage};
use crate::error::ApiError;
use crate::routes::extract::{LimitedBody, ValidQuery, require_json};
use crate::routes::{admin, stream};
use crate::store::{AppendOutcome, MAX_PAGE, Page, StoreError};

/// The request header naming one logical write.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header marking a replayed answer.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Page size when `limit` is not given.
pub const DEFAULT_PAGE: usize = 100;

/// The guestbook API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/messages", get(list).post(create).delete(admin::clear))
        .route("/api/messages/stream", get(stream::stream))
}

async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .map(|value| IdempotencyKey::parse(value.as_bytes()))
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let message = NewMessage::from_json(&body)?;
    match app.store.append(&message, key.as_ref()).await? {
        AppendOutcome::Created(created) => {
            Ok((StatusCode::CREATED, json(created.json)).into_response())
        }
        AppendOutcome::Existing(existing) => {
            let stored = StoredMessage::from_json(&existing.json)
                .map_err(|err| StoreError::Corrupt(format!("idempotency record: {err}")))?;
            if !message.same_content_as(&stored) {
                return Err(ApiError::Unprocessable(
                    "this Idempotency-Key was already used with a different body".into(),
                ));
            }
            let mut response = (StatusCode::OK, json(existing.json)).into_response();
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            Ok(response)
        }
    }
}

/// `?after=ID&before=ID&order=asc|desc&limit=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    after: Option<u64>,
    before: Option<u64>,
    order: Option<Order>,
    limit: Option<usize>,
}

/// Oldest first (the default: how followers catch up) or newest first (how people read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Order {
    Asc,
    Desc,
}

async fn list(
    State(app): State<AppState>,
    ValidQuery(query): ValidQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let page = Page {
        after: query.after.unwrap_or(0),
        before: query.before,
        limit,
        newest_first: query.order == Some(Order::Desc),
    };
    let messages = app.store.list(page).await?;
    // The stored JSON is spliced in as is: no decode and re-encode per message.
    let mut body =
        String::with_capacity(16 + messages.iter().map(|m| m.json.len() + 1).sum::<usize>());
    body.push_str("{\"messages\":[");
    for (index, message) in messages.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        body.push_str(&message.json);
    }
    body.push_str("]}");
    Ok(json(body).into_response())
}

/// A pre-encoded JSON body.
pub fn json(body: String) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
}

//! `POST /api/messages` and `GET /api/messages`, on the default book, and the same on any book
//! as `/api/books/{book}/messages`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::app::AppState;
use guestbook_api::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, MessagePage, Order};

use crate::domain::{IdempotencyKey, NewMessage};
use crate::error::ApiError;
use crate::guestbook::Posted;
use crate::routes::extract::{InBook, LimitedBody, ValidQuery, check_id, require_json};
use crate::routes::{admin, stream};
use crate::store::{Book, Page, RawMessage};

/// The request header naming one logical write.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header marking a replayed answer.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The guestbook API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/messages", get(list).post(create).delete(admin::clear))
        .route("/api/messages/stream", get(stream::stream))
        .route(
            "/api/books/{book}/messages",
            get(list_in).post(create_in).delete(admin::clear_in),
        )
        .route("/api/books/{book}/messages/stream", get(stream::stream_in))
}

/// The path parameter of the book routes, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct BookParam {
    /// The book (guestbook): 1-64 characters of `A-Z`, `a-z`, `0-9`, `-` and `_`. A book
    /// exists once written to; `/api/messages` is the book `GUESTBOOK_NAME`.
    #[param(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    book: String,
}

/// Appends a message, exactly once per `Idempotency-Key`.
#[utoipa::path(
    post,
    path = "/api/messages",
    tag = "messages",
    request_body(content = guestbook_api::NewMessageBody, content_type = "application/json"),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, description = "Names one logical write: 1-255 visible ASCII characters. A retry with the same key and body answers the first message (200); with another body, 422.", min_length = 1, max_length = 255, pattern = "^[!-~]+$"),
    ),
    responses(
        (status = 201, description = "Created", body = guestbook_api::Message),
        (status = 200, description = "An idempotent replay: the message first created with this key", body = guestbook_api::Message,
            headers(("Idempotent-Replayed" = String, description = "Always `true`"))),
        (status = 400, description = "The body is not JSON, or a malformed Idempotency-Key", body = guestbook_common::openapi::ErrorBody),
        (status = 413, description = "The body is over 16 KiB", body = guestbook_common::openapi::ErrorBody),
        (status = 415, description = "No JSON content type", body = guestbook_common::openapi::ErrorBody),
        (status = 422, description = "Wrong shape or invalid values, or an Idempotency-Key reused with another body", body = guestbook_common::openapi::ErrorBody),
        (status = 429, description = "Over the per-client write rate (RATE_LIMIT_WRITES_PER_SEC)", body = guestbook_common::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Redis holds data this program did not write; `internal error`", body = guestbook_common::openapi::ErrorBody),
        (status = 503, description = "Redis unavailable, slow or contended. The message may have been written (the answer was lost or came too late, or replicas did not confirm it in time): retry only with the same Idempotency-Key, which never writes twice; a retry without one may store the message twice", body = guestbook_common::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn create(
    State(app): State<AppState>,
    headers: PostHeaders,
    body: LimitedBody,
) -> Result<Response, ApiError> {
    let book = app.guestbook.default_book();
    post(&app, &book, headers, body).await
}

/// Appends a message to a book, exactly once per `Idempotency-Key` (keys are the book's own).
#[utoipa::path(
    post,
    path = "/api/books/{book}/messages",
    tag = "books",
    params(BookParam,
        ("Idempotency-Key" = Option<String>, Header, nullable = false, description = "Names one logical write in this book: 1-255 visible ASCII characters", min_length = 1, max_length = 255, pattern = "^[!-~]+$"),
    ),
    request_body(content = guestbook_api::NewMessageBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = guestbook_api::Message),
        (status = 200, description = "An idempotent replay", body = guestbook_api::Message,
            headers(("Idempotent-Replayed" = String, description = "Always `true`"))),
        (status = 400, description = "A bad book name, a body that is not JSON, or a malformed Idempotency-Key", body = guestbook_common::openapi::ErrorBody),
        (status = 413, description = "The body is over 16 KiB", body = guestbook_common::openapi::ErrorBody),
        (status = 415, description = "No JSON content type", body = guestbook_common::openapi::ErrorBody),
        (status = 422, description = "Invalid values, or an Idempotency-Key reused with another body", body = guestbook_common::openapi::ErrorBody),
        (status = 429, description = "Over the per-client write rate", body = guestbook_common::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Redis holds data this program did not write", body = guestbook_common::openapi::ErrorBody),
        (status = 503, description = "Redis unavailable, slow or contended; as for `POST /api/messages`", body = guestbook_common::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn create_in(
    State(app): State<AppState>,
    InBook(book): InBook,
    headers: PostHeaders,
    body: LimitedBody,
) -> Result<Response, ApiError> {
    post(&app, &book, headers, body).await
}

/// What a post needs of its headers, read where they are instead of from a copy of them all
/// (axum's `HeaderMap` extractor clones the map). Never refuses: [`post`] answers the
/// problems in the order it always has, after the body's own.
pub(crate) struct PostHeaders {
    json: Result<(), ApiError>,
    key: Option<Result<IdempotencyKey, String>>,
}

impl<S: Send + Sync> FromRequestParts<S> for PostHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            json: require_json(&parts.headers),
            key: parts
                .headers
                .get(IDEMPOTENCY_KEY)
                .map(|value| IdempotencyKey::parse(value.as_bytes())),
        })
    }
}

async fn post(
    app: &AppState,
    book: &Arc<Book>,
    headers: PostHeaders,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    headers.json?;
    let key = headers.key.transpose().map_err(ApiError::BadRequest)?;
    let message = NewMessage::from_json(&body)?;
    match app.guestbook.post(book, &message, key.as_ref()).await? {
        Posted::Created(created) => Ok((StatusCode::CREATED, json(created.json)).into_response()),
        Posted::Replayed(first) => {
            let mut response = (StatusCode::OK, json(first.json)).into_response();
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            Ok(response)
        }
        Posted::Conflict => Err(ApiError::IdempotencyConflict),
    }
}

/// `?after=ID&before=ID&order=asc|desc&limit=N`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only messages with ids above this (default 0).
    after: Option<u64>,
    /// Only messages with ids below this (default: no bound).
    before: Option<u64>,
    /// `asc` (oldest first, the default) or `desc` (newest first).
    #[param(inline)]
    order: Option<Order>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// One page of messages.
#[utoipa::path(
    get,
    path = "/api/messages",
    tag = "messages",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of messages, ascending by id unless `order=desc`", body = MessagePage),
        (status = 400, description = "A bad query: unknown parameter, non-numeric id, `limit` outside 1-1000, bad `order`", body = guestbook_common::openapi::ErrorBody),
        (status = 500, description = "Redis holds data this program did not write", body = guestbook_common::openapi::ErrorBody),
    )
)]
pub(crate) async fn list(
    State(app): State<AppState>,
    query: ValidQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let book = app.guestbook.default_book();
    page(&app, &book, query).await
}

/// One page of a book's messages.
#[utoipa::path(
    get,
    path = "/api/books/{book}/messages",
    tag = "books",
    params(BookParam, ListQuery),
    responses(
        (status = 200, description = "A page of the book's messages (empty for a book never written to)", body = MessagePage),
        (status = 400, description = "A bad book name or query", body = guestbook_common::openapi::ErrorBody),
        (status = 500, description = "Redis holds data this program did not write", body = guestbook_common::openapi::ErrorBody),
    )
)]
pub(crate) async fn list_in(
    State(app): State<AppState>,
    InBook(book): InBook,
    query: ValidQuery<ListQuery>,
) -> Result<Response, ApiError> {
    page(&app, &book, query).await
}

async fn page(
    app: &AppState,
    book: &Book,
    ValidQuery(query): ValidQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE_LIMIT}"
        )));
    }
    let page = Page {
        after: check_id("after", query.after)?.unwrap_or(0),
        before: check_id("before", query.before)?,
        limit,
        newest_first: query.order == Some(Order::Desc),
    };
    let messages = app.guestbook.page(book, page).await?;
    Ok(json(page_json(&messages)).into_response())
}

/// A [`MessagePage`] of stored messages: their JSON is spliced in as is, with no decode and
/// re-encode per message.
fn page_json(messages: &[RawMessage]) -> String {
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
    body
}

/// A pre-encoded JSON body.
///
/// Built directly rather than as `([(CONTENT_TYPE, ..)], body)`: a `String`'s own response
/// carries a `text/plain` content type, which the tuple's header then replaces, two header
/// writes per answer for one header.
pub fn json(body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

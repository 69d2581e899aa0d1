//! `GET /api/messages/stream` (and `/api/books/{book}/messages/stream`): Server-Sent Events,
//! one `message` event per new message of the book.
//!
//! Streams are capped in all (`MAX_STREAM_CLIENTS`, 503) and per client address
//! (`MAX_STREAMS_PER_CLIENT`, 429), so one address cannot take every slot; the slot is held by
//! the response's body and freed when the body is dropped (the stream ends or the peer goes).
//!
//! A subscriber resumes from `Last-Event-ID` (sent by browsers on reconnect) or `?after=ID`
//! (for the first connection); [`crate::guestbook::Guestbook::follow`] does the rest.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use futures_util::StreamExt;
use guestbook_common::stream_limit::Peer;
use serde::Deserialize;

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::extract::{InBook, ValidQuery, check_id};
use crate::store::Book;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamQuery {
    /// On a first connection, start after this id (Last-Event-ID wins when both are sent).
    after: Option<u64>,
}

/// Live updates as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/api/messages/stream",
    tag = "messages",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, description = "Resume after this message id (browsers send it on reconnect)"),
    ),
    responses(
        (status = 200, description = "An endless `text/event-stream`: one `message` event per new message, `id:` the message id, `data:` the message JSON; a keep-alive comment every 15 s", body = String, content_type = "text/event-stream"),
        (status = 400, description = "A bad query or Last-Event-ID", body = guestbook_common::openapi::ErrorBody),
        (status = 429, description = "This client address already has MAX_STREAMS_PER_CLIENT streams open", body = guestbook_common::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "MAX_STREAM_CLIENTS streams are already open, or load shedding", body = guestbook_common::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn stream(
    State(app): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    query: ValidQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    let book = app.guestbook.default_book();
    follow(&app, &book, peer, &headers, query)
}

/// Live updates of a book as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/api/books/{book}/messages/stream",
    tag = "books",
    params(
        crate::routes::messages::BookParam,
        StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, description = "Resume after this message id (browsers send it on reconnect)"),
    ),
    responses(
        (status = 200, description = "As `GET /api/messages/stream`, for this book", body = String, content_type = "text/event-stream"),
        (status = 400, description = "A bad book name, query or Last-Event-ID", body = guestbook_common::openapi::ErrorBody),
        (status = 429, description = "This client address already has MAX_STREAMS_PER_CLIENT streams open", body = guestbook_common::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "MAX_STREAM_CLIENTS streams are already open, live updates are followed on 256 other books already, or load shedding", body = guestbook_common::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn stream_in(
    State(app): State<AppState>,
    InBook(book): InBook,
    peer: Peer,
    headers: HeaderMap,
    query: ValidQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    follow(&app, &book, peer, &headers, query)
}

fn follow(
    app: &AppState,
    book: &Arc<Book>,
    Peer(client): Peer,
    headers: &HeaderMap,
    ValidQuery(query): ValidQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    let slot = app.streams.try_acquire(client)?;
    let last_event_id = headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|value| value.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be a message id".into()))
        })
        .transpose()?;
    let resume_after =
        check_id("Last-Event-ID", last_event_id)?.or(check_id("after", query.after)?);
    // The frames come encoded (see `Guestbook::follow`): the body writes them as they are.
    let frames = app.guestbook.follow(
        book,
        resume_after,
        app.lifecycle.draining(),
        slot,
        app.stream_keep_alive,
    )?;
    let mut response = Response::new(Body::from_stream(frames.map(Ok::<_, Infallible>)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

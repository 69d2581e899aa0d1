//! `GET /api/messages/stream`: Server-Sent Events, one `message` event per new message.
//!
//! Streams are capped in all (`MAX_STREAM_CLIENTS`, 503) and per client address
//! (`MAX_STREAMS_PER_CLIENT`, 429), so one address cannot take every slot; the slot is held by
//! the subscriber's pump and freed when it ends.
//!
//! A subscriber resumes from `Last-Event-ID` (sent by browsers on reconnect) or `?after=ID`
//! (for the first connection); [`crate::guestbook::Guestbook::follow`] does the rest.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use guestbook_common::stream_limit::Peer;
use serde::Deserialize;

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::extract::{ValidQuery, check_id};

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
    Peer(client): Peer,
    headers: HeaderMap,
    ValidQuery(query): ValidQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
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
    let messages = app
        .guestbook
        .follow(resume_after, app.lifecycle.draining(), slot);
    let events = messages.map(|message| {
        Ok(Event::default()
            .event("message")
            .id(message.id.to_string())
            .data(&message.json))
    });
    // The comments also keep the connection under the server's idle timeout.
    let keep_alive = KeepAlive::new().interval(app.stream_keep_alive);
    Ok(Sse::new(events).keep_alive(keep_alive))
}

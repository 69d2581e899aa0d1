//! `GET /api/messages/stream`: Server-Sent Events, one `message` event per new message.
//!
//! Streams are capped in all (`MAX_STREAM_CLIENTS`, 503) and per client address
//! (`MAX_STREAMS_PER_CLIENT`, 429), so one address cannot take every slot; the slot is held by
//! the subscriber's pump and freed when it ends.
//!
//! A subscriber resumes from `Last-Event-ID` (sent by browsers on reconnect) or `?after=ID`
//! (for the first connection). It first subscribes to the process's [`Feed`], then replays
//! what it missed from Redis, then forwards live messages, skipping any id it already sent:
//! subscribing before replaying leaves no gap, and the id check leaves no duplicate. A
//! subscriber that falls behind the feed's buffer catches up from Redis the same way.
//!
//! A catch-up reads no further than the feed's ceiling (what the tail has passed on): with
//! `REDIS_MIN_REPLICAS_ACK` that keeps unconfirmed appends out of every stream.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use guestbook_common::stream_limit::{Peer, StreamSlot};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::extract::{ValidQuery, check_id};
use crate::store::feed::Feed;
use crate::store::{MAX_PAGE, Page, RawMessage, Store};

/// Events buffered per subscriber before back-pressure reaches the pump.
const SUBSCRIBER_BUFFER: usize = 64;

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
    let last_event_id = check_id("Last-Event-ID", last_event_id)?;
    let after = check_id("after", query.after)?;
    let (feed, newest) = app.feed.subscribe();
    let resume_after = last_event_id.or(after);
    let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
    let gone = sender.clone();
    let pump = Pump {
        store: app.store.clone(),
        feed: app.feed.clone(),
        sender,
        _slot: slot,
    };
    let draining = app.lifecycle.draining();
    tokio::spawn(async move {
        tokio::select! {
            () = draining => {}
            () = gone.closed() => {}
            () = pump.run(feed, resume_after, newest) => {}
        }
    });
    // The comments also keep the connection under the server's idle timeout.
    let keep_alive = KeepAlive::new().interval(app.stream_keep_alive);
    Ok(Sse::new(ReceiverStream::new(receiver)).keep_alive(keep_alive))
}

/// Moves messages from Redis and the feed to one subscriber.
struct Pump {
    store: Store,
    feed: Feed,
    sender: mpsc::Sender<Result<Event, Infallible>>,
    /// Held for the subscriber's lifetime: bounds concurrent streams.
    _slot: StreamSlot,
}

impl Pump {
    async fn run(
        self,
        mut feed: broadcast::Receiver<Arc<RawMessage>>,
        resume_after: Option<u64>,
        newest: u64,
    ) {
        // Without a resume point, start at what the feed had already passed on.
        let mut last_sent = match resume_after {
            Some(after) => match self.catch_up(after).await {
                Some(last) => last,
                None => return,
            },
            None => newest,
        };
        loop {
            match feed.recv().await {
                Ok(message) => {
                    if message.id > last_sent {
                        if !self.send(&message).await {
                            return;
                        }
                        last_sent = message.id;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(
                        skipped,
                        "live-update subscriber lagged; catching up from Redis"
                    );
                    match self.catch_up(last_sent).await {
                        Some(last) => last_sent = last,
                        None => return,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Sends what the feed has passed on after `after`, from Redis; returns the last id sent,
    /// or `None` when the subscriber is gone or Redis failed (the client reconnects with
    /// `Last-Event-ID`). Nothing beyond the feed's ceiling: that arrives through the channel.
    async fn catch_up(&self, mut after: u64) -> Option<u64> {
        let ceiling = self.feed.ceiling().await;
        loop {
            if after >= ceiling {
                return Some(after);
            }
            let page = Page {
                before: Some(ceiling.saturating_add(1)),
                ..Page::after(after, MAX_PAGE)
            };
            let page = match self.store.list_from_primary(page).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(error = %err, "live-update catch-up failed; ending the stream");
                    return None;
                }
            };
            let full = page.len() == MAX_PAGE;
            for message in &page {
                if !self.send(message).await {
                    return None;
                }
                after = message.id;
            }
            if !full {
                return Some(after);
            }
        }
    }

    async fn send(&self, message: &RawMessage) -> bool {
        let event = Event::default()
            .event("message")
            .id(message.id.to_string())
            .data(&message.json);
        self.sender.send(Ok(event)).await.is_ok()
    }
}

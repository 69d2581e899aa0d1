//! `GET /api/messages/stream` and `GET /api/books/{book}/messages/stream`: the backend's live
//! updates, passed through as they arrive. A stream can be neither buffered nor retried, so it
//! never goes through the stack: it has a client of its own with no overall timeout, and a
//! fixed upstream path (or one built from a validated book name, [`Book`]).
//!
//! Streams are capped in all (`MAX_STREAM_CLIENTS`, 503) and per browser address
//! (`MAX_STREAMS_PER_CLIENT`, 429) before the backend is asked for one: at the backend every
//! browser arrives from this client's address, so only here can one browser be told apart
//! from another.
//!
//! It still answers to the stack's two guards, by hand (issue 14):
//! - the **circuit breaker** admits it like any call: while the circuit is open the answer
//!   is a prompt 503 with `Retry-After` and the backend is not asked; once admitted, the
//!   backend's answer (its status, or no answer) is the call's outcome, judged when the
//!   headers arrive, since a stream's end says nothing about the backend's health;
//! - the **concurrency limit** (`BACKEND_CONCURRENCY`) counts it from connecting until it
//!   ends: a stream is a backend connection like a call's. No permit free: 503 at once, as
//!   waiting in line for a slot that open streams may hold for hours would only hang.
//!
//! The slots travel with the response body and are freed when the browser goes away (hyper
//! drops the body) or the backend ends the stream.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use guestbook_common::client_addr::ClientKey;
use guestbook_common::error_body::{ErrorBody, ErrorCode, respond_retry_after};
use guestbook_common::stream_limit::Peer;
use tokio::time::Instant;

use crate::app::AppState;
use crate::backend::BackendOutcome;
use crate::routes::api_paths::reencode_query;
use crate::routes::book::Book;

/// The backend path of the default book's stream.
const STREAM: &str = "/api/messages/stream";
/// Answer headers passed back to the browser.
const PASSED_BACK: [header::HeaderName; 2] = [header::CONTENT_TYPE, header::RETRY_AFTER];

/// The backend's stream URL: `base`'s scheme, host and port with the fixed path.
pub fn upstream_url(base: &str) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(base).map_err(|err| err.to_string())?;
    url.set_path(STREAM);
    url.set_query(None);
    Ok(url)
}

/// The live-update stream, passed through unbuffered.
pub(crate) async fn stream(
    State(app): State<AppState>,
    Peer(browser): Peer,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    pass_through(&app, browser, None, query.as_deref(), &headers).await
}

/// A book's live-update stream, passed through unbuffered. The name is checked (the
/// extractor) before any cap, slot or backend is asked.
pub(crate) async fn book_stream(
    State(app): State<AppState>,
    book: Book,
    Peer(browser): Peer,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    pass_through(&app, browser, Some(&book), query.as_deref(), &headers).await
}

/// The default book's stream (`book` `None`) or `book`'s, for `browser`.
async fn pass_through(
    app: &AppState,
    browser: ClientKey,
    book: Option<&Book>,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let slot = match app.streams.try_acquire(browser) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let started = Instant::now();
    let Ok(call) = app.breaker.try_acquire(started) else {
        let wait_secs = app
            .breaker
            .snapshot()
            .opened_for_remaining_ms
            .map_or(1, |ms| ms.div_ceil(1_000).max(1));
        return refused(&BackendOutcome::CircuitOpen, wait_secs);
    };
    let Ok(backend_slot) = std::sync::Arc::clone(&app.backend_slots).try_acquire_owned() else {
        // The breaker's permit is dropped unrecorded: the backend was not asked.
        return respond_retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorBody::new(ErrorCode::Unavailable, "backend concurrency limit reached"),
            1,
        );
    };
    let mut url = app.stream_url.clone();
    if let Some(book) = book {
        url.set_path(&book.stream_path());
    }
    url.set_query(reencode_query(query).as_deref());
    let mut upstream = app.streaming.get(url);
    if let Some(last) = headers.get("last-event-id") {
        upstream = upstream.header("last-event-id", last.clone());
    }
    // Waiting for the backend's answer is the backend's time, not this pod's (readiness).
    let answered = guestbook_common::dependency::timed(tokio::time::timeout(
        app.stream_answer_timeout,
        upstream.send(),
    ))
    .await;
    let outcome = match &answered {
        Ok(Ok(answer)) => BackendOutcome::of_answer(answer.status(), answer.headers()),
        Ok(Err(err)) => BackendOutcome::of_error(err),
        Err(_) => BackendOutcome::Deadline,
    };
    call.record(outcome.breaker_outcome(), started.elapsed(), Instant::now());
    match answered {
        Ok(Ok(answer)) => {
            let status = answer.status();
            let passed: Vec<_> = PASSED_BACK
                .iter()
                .filter_map(|name| Some((name.clone(), answer.headers().get(name)?.clone())))
                .collect();
            let body =
                Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other).map_ok(
                    move |chunk| {
                        // Moved in, so both slots live exactly as long as the body.
                        let _held = (&slot, &backend_slot);
                        chunk
                    },
                ));
            let mut response = Response::new(body);
            *response.status_mut() = status;
            response.headers_mut().extend(passed);
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-cache"),
            );
            response
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "live-update stream: backend unreachable");
            refused(&outcome, 1)
        }
        Err(_) => {
            tracing::warn!("live-update stream: the backend did not answer in time");
            refused(&outcome, 1)
        }
    }
}

/// 503 with `outcome`'s code and text, and `Retry-After: wait_secs`.
fn refused(outcome: &BackendOutcome, wait_secs: u64) -> Response {
    let error = format!("{}; retry after {wait_secs} s", outcome.message());
    respond_retry_after(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorBody::new(outcome.error_code(), error),
        wait_secs,
    )
}

//! `GET /api/messages/stream`: the backend's live updates, passed through as they arrive.
//! A stream can be neither buffered nor retried, so it never goes through the stack: it has
//! a client of its own with no overall timeout, and a fixed upstream path.
//!
//! Streams are capped in all (`MAX_STREAM_CLIENTS`, 503) and per browser address
//! (`MAX_STREAMS_PER_CLIENT`, 429) before the backend is asked for one: at the backend every
//! browser arrives from this client's address, so only here can one browser be told apart
//! from another. The slot travels with the response body and is freed when the browser goes
//! away (hyper drops the body) or the backend ends the stream.

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use guestbook_common::stream_limit::Peer;
use serde_json::json;

use crate::app::AppState;
use crate::routes::api_paths::reencode_query;

/// The one backend path this route reaches.
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
    let slot = match app.streams.try_acquire(browser) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let mut url = app.stream_url.clone();
    url.set_query(reencode_query(query.as_deref()).as_deref());
    let mut upstream = app.streaming.get(url);
    if let Some(last) = headers.get("last-event-id") {
        upstream = upstream.header("last-event-id", last.clone());
    }
    // Waiting for the backend's answer is the backend's time, not this pod's (readiness).
    match guestbook_common::dependency::timed(upstream.send()).await {
        Ok(answer) => {
            let status = answer.status();
            let passed: Vec<_> = PASSED_BACK
                .iter()
                .filter_map(|name| Some((name.clone(), answer.headers().get(name)?.clone())))
                .collect();
            let body =
                Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other).map_ok(
                    move |chunk| {
                        // Moved in, so the slot lives exactly as long as the body.
                        let _held = &slot;
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
        Err(err) => {
            tracing::warn!(error = %err, "live-update stream: backend unreachable");
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "backend unreachable"})),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            response
        }
    }
}

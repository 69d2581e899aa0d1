//! The request a log line was written for: its id, method and route on every line written while
//! serving it, without a `tracing` span per request.
//!
//! # Why not a span
//! A span per request is what tower-http's trace layer offers, and what these services had.
//! At the default level (`info`) the JSON formatter serialises each new span's fields into a
//! string (a map, serde, an allocation) and the registry stores and frees it, although almost
//! no request writes a line: about 13,000 instructions per request on the client's `/fetch`,
//! an eighth of all its work, paid to label lines that are never written (issue 17). Here
//! the request is a task-local value set around the request's future (swapped in and out on
//! each poll: about 220 instructions a request), and the formatter reads it only when a line
//! is written.
//!
//! What a span gave that this does not: lines written by another task (a spawned task does not
//! inherit the value; it did not inherit a span either), and lines written while the answer's
//! body is streamed, after the handler returned (the live-update streams).

use std::fmt;
use std::future::Future;

use axum::extract::MatchedPath;
use http::{HeaderValue, Method};
use serde::Serialize;
use tokio::task::futures::TaskLocalFuture;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

tokio::task_local! {
    static REQUEST: RequestContext;
}

/// What every log line written while serving a request says about it.
#[derive(Debug, Clone)]
pub struct RequestContext {
    method: Method,
    /// The route template (`/api/books/{book}`), never the raw path: a path can carry a
    /// caller's text, a template cannot.
    route: Option<MatchedPath>,
    request_id: Option<HeaderValue>,
}

impl RequestContext {
    /// The context of a request with this method, matched route and `x-request-id`.
    pub fn new(
        method: Method,
        route: Option<MatchedPath>,
        request_id: Option<HeaderValue>,
    ) -> Self {
        Self {
            method,
            route,
            request_id,
        }
    }

    /// `future`, with this context current whenever it is polled.
    pub fn scope<F: Future>(self, future: F) -> TaskLocalFuture<Self, F> {
        REQUEST.scope(self, future)
    }

    fn route(&self) -> &str {
        self.route.as_ref().map_or("unmatched", MatchedPath::as_str)
    }

    /// The id as text; `-` for none, or for one that is not visible ASCII (a caller's).
    fn request_id(&self) -> &str {
        self.request_id
            .as_ref()
            .and_then(|id| id.to_str().ok())
            .unwrap_or("-")
    }

    /// The context as the members a JSON line ends with: `"request_id":..,"method":..,"route":..`.
    fn json_members(&self) -> Result<String, fmt::Error> {
        #[derive(Serialize)]
        struct Members<'a> {
            request_id: &'a str,
            method: &'a str,
            route: &'a str,
        }
        let object = serde_json::to_string(&Members {
            request_id: self.request_id(),
            method: self.method.as_str(),
            route: self.route(),
        })
        .map_err(|_| fmt::Error)?;
        // `{...}` less its braces, to go inside the line's own object.
        Ok(object
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap_or_default()
            .to_owned())
    }
}

/// The current request's context, if a request is being served on this task.
pub fn current() -> Option<RequestContext> {
    REQUEST.try_with(Clone::clone).ok()
}

/// An event formatter that adds the current request (if any) to each line `inner` writes.
///
/// JSON lines gain `request_id`, `method` and `route` members at the top level, where log
/// stores index them; human-readable lines start with `[METHOD ROUTE request_id=ID]`.
#[derive(Debug, Clone)]
pub struct WithRequest<F> {
    inner: F,
    json: bool,
}

/// The services' JSON lines: tracing-subscriber's JSON format (the current span, if any, but
/// no span list) with the request's members.
pub fn json_lines() -> WithRequest<Format<Json>> {
    WithRequest::json(
        tracing_subscriber::fmt::format()
            .json()
            .with_current_span(true)
            .with_span_list(false),
    )
}

impl<F> WithRequest<F> {
    /// Around a JSON formatter, whose lines are one object each.
    pub fn json(inner: F) -> Self {
        Self { inner, json: true }
    }

    /// Around a human-readable formatter.
    pub fn text(inner: F) -> Self {
        Self { inner, json: false }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithRequest<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(request) = current() else {
            return self.inner.format_event(ctx, writer, event);
        };
        if !self.json {
            write!(
                writer,
                "[{} {} request_id={}] ",
                request.method,
                request.route(),
                request.request_id().escape_debug()
            )?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_suffix("}\n") {
            Some(open) => {
                writer.write_str(open)?;
                writer.write_char(',')?;
                writer.write_str(&request.json_members()?)?;
                writer.write_str("}\n")
            }
            // Not one object per line after all: written as it came.
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8_lossy(
                &self
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            )
            .into_owned()
        }
    }

    /// The services' JSON subscriber, writing into `lines`.
    fn json_subscriber(lines: &Lines) -> impl Subscriber + Send + Sync + use<> {
        let writer = lines.clone();
        tracing_subscriber::fmt()
            .json()
            .event_format(json_lines())
            .with_writer(move || writer.clone())
            .finish()
    }

    fn context(id: &'static str) -> RequestContext {
        RequestContext::new(Method::POST, None, Some(HeaderValue::from_static(id)))
    }

    #[tokio::test]
    async fn a_json_line_written_while_serving_a_request_names_it_and_others_do_not() {
        let lines = Lines::default();
        let _default = tracing::subscriber::set_default(json_subscriber(&lines));

        tracing::warn!("before");
        context("abc-123\"quoted")
            .scope(async {
                tokio::task::yield_now().await;
                tracing::warn!(code = 7, "inside");
            })
            .await;
        tracing::warn!("after");

        let text = lines.text();
        let parsed: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
            .collect();
        assert_eq!(parsed.len(), 3, "{text}");
        let inside = &parsed[1];
        assert_eq!(inside["fields"]["message"], "inside", "{text}");
        assert_eq!(inside["fields"]["code"], 7, "{text}");
        assert_eq!(inside["request_id"], "abc-123\"quoted", "{text}");
        assert_eq!(inside["method"], "POST", "{text}");
        assert_eq!(inside["route"], "unmatched", "{text}");
        for outside in [&parsed[0], &parsed[2]] {
            assert!(outside.get("request_id").is_none(), "{text}");
        }
    }

    #[tokio::test]
    async fn a_line_a_handler_writes_names_the_request_the_id_layer_saw() {
        use tower::{Layer as _, ServiceExt as _};

        let lines = Lines::default();
        let _default = tracing::subscriber::set_default(json_subscriber(&lines));
        let handler = tower::service_fn(|_request: http::Request<()>| async {
            tokio::task::yield_now().await;
            tracing::warn!("from the handler");
            Ok::<_, std::convert::Infallible>(http::Response::new(()))
        });
        let request = http::Request::delete("/anything")
            .header(super::super::REQUEST_ID_HEADER, "caller-id-9")
            .body(())
            .expect("a valid request");
        super::super::request_id_layer()
            .layer(handler)
            .oneshot(request)
            .await
            .expect("infallible");

        let text = lines.text();
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).expect("one JSON line");
        assert_eq!(line["fields"]["message"], "from the handler", "{text}");
        assert_eq!(line["request_id"], "caller-id-9", "{text}");
        assert_eq!(line["method"], "DELETE", "{text}");
    }

    #[tokio::test]
    async fn a_text_line_written_while_serving_a_request_starts_with_it() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(WithRequest::text(tracing_subscriber::fmt::format()))
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);

        context("id-1")
            .scope(async { tracing::warn!("inside") })
            .await;
        tracing::warn!("after");

        let text = lines.text();
        let mut each = text.lines();
        let inside = each.next().expect("a first line");
        assert!(
            inside.starts_with("[POST unmatched request_id=id-1] "),
            "{text}"
        );
        assert!(inside.ends_with("inside"), "{text}");
        assert!(
            !each.next().expect("a second line").contains("request_id"),
            "{text}"
        );
    }
}

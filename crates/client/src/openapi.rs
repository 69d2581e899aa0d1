//! The client's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! attributes and served at `GET /openapi.json`. `openapi/client.json` is the checked-in copy;
//! `make openapi` rewrites it and a test fails when it differs from this.
//!
//! The proxied `/api/*` operations are the backend's: their schemas are the shared wire types
//! of `guestbook-api`, and a test compares the operations with the backend's document so
//! they cannot drift.

use guestbook_api::{Deleted, Message, MessagePage, NewMessageBody, Order};
use guestbook_common::openapi::{BearerAuth, ErrorBody};
use utoipa::{IntoParams, OpenApi};

use crate::routes::{fetch, load, status};

/// `?after=ID&before=ID&order=asc|desc&limit=N`, passed to the backend.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documents the backend's query.
pub struct ListQuery {
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

/// `{book}` in `/api/books/{book}/...`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documents the path.
pub struct BookPath {
    /// The guestbook: 1-64 characters of `A-Z`, `a-z`, `0-9`, `-` and `_`, not
    /// percent-encoded. `/api/messages` is the backend's `GUESTBOOK_NAME` book (`default`).
    #[param(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    book: String,
}

/// The end of a book route's 400 description.
const BAD_BOOK: &str = "or a book name outside the rule (`error` states it) or a dot-segment or encoded separator in the path, and then the backend is not asked";

/// The answer when the stack gives none (circuit open, deadline, backend unreachable).
const NO_ANSWER: &str = "The stack gave no answer (circuit open, deadline, backend unreachable), or load shedding; `Retry-After: 1`";

/// Lists messages (proxied to the backend).
#[utoipa::path(
    get,
    path = "/api/messages",
    tag = "messages",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of messages, ascending by id unless `order=desc`", body = MessagePage),
        (status = 400, description = "A bad query: unknown parameter, non-numeric id, `limit` outside 1-1000, bad `order`", body = ErrorBody),
        (status = 500, description = "The backend's Redis holds data it did not write", body = ErrorBody),
        (status = 503, description = NO_ANSWER, body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[allow(dead_code)]
fn list_messages() {}

/// Appends a message (proxied; retried only with an `Idempotency-Key`).
#[utoipa::path(
    post,
    path = "/api/messages",
    tag = "messages",
    request_body(content = NewMessageBody, content_type = "application/json"),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, description = "Names one logical write: 1-255 visible ASCII characters. A retry with the same key and body answers the first message (200); with another body, 422. With it the client may retry the POST.", min_length = 1, max_length = 255, pattern = "^[!-~]+$"),
    ),
    responses(
        (status = 201, description = "Created", body = Message),
        (status = 200, description = "An idempotent replay: the message first created with this key", body = Message,
            headers(("Idempotent-Replayed" = String, description = "Always `true`"))),
        (status = 400, description = "The body is not JSON, or a malformed Idempotency-Key", body = ErrorBody),
        (status = 413, description = "The body is over the backend's 16 KiB (or the client's 64 KiB)", body = ErrorBody),
        (status = 415, description = "No JSON content type", body = ErrorBody),
        (status = 422, description = "Wrong shape or invalid values, or an Idempotency-Key reused with another body", body = ErrorBody),
        (status = 429, description = "Over the per-client write rate (RATE_LIMIT_WRITES_PER_SEC)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "The backend's Redis holds data it did not write", body = ErrorBody),
        (status = 503, description = NO_ANSWER, body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[allow(dead_code)]
fn create_message() {}

/// Clears the guestbook (admin; proxied with the `Authorization` header; cross-site requests
/// are refused).
#[utoipa::path(
    delete,
    path = "/api/messages",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every message and idempotency record deleted", body = Deleted),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = guestbook_common::same_origin::DOCUMENTED, body = ErrorBody),
        (status = 404, description = "The backend's ADMIN_TOKEN is not set", body = ErrorBody),
        (status = 500, description = "Unexpected Redis error", body = ErrorBody),
        (status = 503, description = NO_ANSWER, body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[allow(dead_code)]
fn clear_messages() {}

/// Live updates, passed through unbuffered (never retried), admitted by the circuit breaker,
/// holding a BACKEND_CONCURRENCY slot while open, capped in all and per browser address.
#[utoipa::path(
    get,
    path = "/api/messages/stream",
    tag = "messages",
    params(
        ("after" = Option<u64>, Query, nullable = false, description = "On a first connection, start after this id"),
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, description = "Resume after this message id"),
    ),
    responses(
        (status = 200, description = "An endless `text/event-stream`, as the backend sends it", body = String, content_type = "text/event-stream"),
        (status = 400, description = "A bad query or Last-Event-ID", body = ErrorBody),
        (status = 429, description = "This browser address already has the client's MAX_STREAMS_PER_CLIENT streams open (or, passed through, the client's address has the backend's)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The client has its MAX_STREAM_CLIENTS streams open, the circuit is open, every BACKEND_CONCURRENCY slot is taken, the backend cannot be reached or does not answer within BACKEND_TIMEOUT_MS, or it has its MAX_STREAM_CLIENTS streams open", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[allow(dead_code)]
fn stream_messages() {}

/// Lists one book's messages (proxied to the backend).
#[utoipa::path(
    get,
    path = "/api/books/{book}/messages",
    tag = "books",
    params(BookPath, ListQuery),
    responses(
        (status = 200, description = "A page of the book's messages, ascending by id unless `order=desc`; an unknown book is an empty one", body = MessagePage),
        (status = 400, description = format!("A bad query: unknown parameter, non-numeric id, `limit` outside 1-1000, bad `order`; {BAD_BOOK}"), body = ErrorBody),
        (status = 500, description = "The backend's Redis holds data it did not write", body = ErrorBody),
        (status = 503, description = NO_ANSWER, body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[allow(dead_code)]
fn list_book_messages() {}

/// Appends a message to one book (proxied; retried only with an `Idempotency-Key`).
#[utoipa::path(
    post,
    path = "/api/books/{book}/messages",
    tag = "books",
    request_body(content = NewMessageBody, content_type = "application/json"),
    params(
        BookPath,
        ("Idempotency-Key" = Option<String>, Header, nullable = false, description = "Names one logical write in this book (the same key on two books names two writes): 1-255 visible ASCII characters. A retry with the same key and body answers the first message (200); with another body, 422. With it the client may retry the POST.", min_length = 1, max_length = 255, pattern = "^[!-~]+$"),
    ),
    responses(
        (status = 201, description = "Created", body = Message),
        (status = 200, description = "An idempotent replay: the message first created in this book with this key", body = Message,
            headers(("Idempotent-Replayed" = String, description = "Always `true`"))),
        (status = 400, description = format!("The body is not JSON, or a malformed Idempotency-Key; {BAD_BOOK}"), body = ErrorBody),
        (status = 413, description = "The body is over the backend's 16 KiB (or the client's 64 KiB)", body = ErrorBody),
        (status = 415, description = "No JSON content type", body = ErrorBody),
        (status = 422, description = "Wrong shape or invalid values, or an Idempotency-Key reused with another body", body = ErrorBody),
        (status = 429, description = "Over the per-client write rate (RATE_LIMIT_WRITES_PER_SEC, shared by every book)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "The backend's Redis holds data it did not write", body = ErrorBody),
        (status = 503, description = NO_ANSWER, body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[allow(dead_code)]
fn create_book_message() {}

/// Clears one book (admin; proxied with the `Authorization` header; cross-site requests are
/// refused).
#[utoipa::path(
    delete,
    path = "/api/books/{book}/messages",
    tag = "admin",
    params(BookPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every message and idempotency record of the book deleted", body = Deleted),
        (status = 400, description = format!("A bad book name: {BAD_BOOK}"), body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = guestbook_common::same_origin::DOCUMENTED, body = ErrorBody),
        (status = 404, description = "The backend's ADMIN_TOKEN is not set", body = ErrorBody),
        (status = 500, description = "Unexpected Redis error", body = ErrorBody),
        (status = 503, description = NO_ANSWER, body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[allow(dead_code)]
fn clear_book_messages() {}

/// One book's live updates, passed through as `/api/messages/stream` is (unbuffered, never
/// retried, admitted by the circuit breaker, holding a BACKEND_CONCURRENCY slot while open,
/// under the same caps: a browser's streams count against them whatever their book).
#[utoipa::path(
    get,
    path = "/api/books/{book}/messages/stream",
    tag = "books",
    params(
        BookPath,
        ("after" = Option<u64>, Query, nullable = false, description = "On a first connection, start after this id"),
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, description = "Resume after this message id"),
    ),
    responses(
        (status = 200, description = "An endless `text/event-stream` of the book's messages, as the backend sends it", body = String, content_type = "text/event-stream"),
        (status = 400, description = format!("A bad query or Last-Event-ID; {BAD_BOOK}"), body = ErrorBody),
        (status = 429, description = "This browser address already has the client's MAX_STREAMS_PER_CLIENT streams open (or, passed through, the client's address has the backend's)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The client has its MAX_STREAM_CLIENTS streams open, the circuit is open, every BACKEND_CONCURRENCY slot is taken, the backend cannot be reached or does not answer within BACKEND_TIMEOUT_MS, or it has its MAX_STREAM_CLIENTS streams open or follows its most books already", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[allow(dead_code)]
fn stream_book_messages() {}

/// The browser UI.
#[utoipa::path(
    get,
    path = "/",
    tag = "ui",
    responses(
        (status = 200, description = "The guestbook page; other paths serve the UI's static files (built into the binary, or FRONTEND_DIR's when set)", body = String, content_type = "text/html"),
        (status = 404, description = "No such file (or FRONTEND_DIR is set and has no index.html)"),
    )
)]
#[allow(dead_code)]
fn index() {}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "probes",
    responses((status = 200, description = "This OpenAPI 3.1 document", body = Object))
)]
#[allow(dead_code)]
fn openapi_json() {}

/// The document's paths and schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "guestbook-client",
        description = "The guestbook client: seed 002's /fetch, /status and load generator, the \
                       backend's guestbook operations (/api/messages and \
                       /api/books/{book}/messages, by exact route) through one \
                       resilient tower stack (circuit breaker, deadline, retry budget), its \
                       live-update stream passed through, the browser UI, and probes. Every error body \
                       is `{\"error\": \"...\", \"code\": \"...\"}`: `error` for people, `code` \
                       for programs.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        fetch::fetch,
        status::status,
        load::start,
        load::stop,
        list_messages,
        create_message,
        clear_messages,
        stream_messages,
        list_book_messages,
        create_book_message,
        clear_book_messages,
        stream_book_messages,
        index,
        openapi_json,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "seed", description = "Seed 002's endpoints"),
        (name = "messages", description = "The backend's guestbook, proxied"),
        (name = "books", description = "The backend's other guestbooks (`/api/books/{book}/...`), proxied"),
        (name = "admin", description = "The backend's admin endpoints, proxied"),
        (name = "ui", description = "The browser UI"),
        (name = "probes", description = "Probes, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// The whole document: this crate's paths, the shared probes, the shedder's 503 and the
/// header limit's 431.
pub fn document() -> utoipa::openapi::OpenApi {
    guestbook_common::openapi::complete(ApiDoc::openapi())
}

/// [`document`] as pretty JSON, as served and checked in.
pub fn json() -> String {
    guestbook_common::openapi::render(&document())
}

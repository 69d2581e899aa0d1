//! The backend's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! attributes and served at `GET /openapi.json`. `openapi/backend.json` is the checked-in
//! copy; `make openapi` rewrites it and a test fails when it differs from this.

use guestbook_common::openapi::BearerAuth;
use utoipa::OpenApi;

use crate::routes::{admin, data, faults, health, messages, slow, stream};

/// The document's paths and schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "guestbook-backend",
        description = "The guestbook API over Redis: exactly-once appends with Idempotency-Key, \
                       paging, live updates (Server-Sent Events), seed endpoints, fault \
                       injection (only with FAULT_INJECTION=true) and probes. Every error body \
                       is `{\"error\": \"...\", \"code\": \"...\"}`: `code` is for programs.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        messages::create,
        messages::list,
        admin::clear,
        stream::stream,
        messages::create_in,
        messages::list_in,
        admin::clear_in,
        stream::stream_in,
        data::data,
        slow::slow,
        faults::set_failure,
        faults::set_latency,
        faults::set_redis,
        faults::current,
        health::dependencies,
        openapi_json,
    ),
    components(schemas(guestbook_api::MessagePage, guestbook_api::Deleted, faults::FaultChanged)),
    modifiers(&BearerAuth),
    tags(
        (name = "messages", description = "The guestbook (the default book, GUESTBOOK_NAME)"),
        (name = "books", description = "Any guestbook by name, each its own ids, retention, idempotency keys and Redis Cluster slot"),
        (name = "admin", description = "Only when ADMIN_TOKEN is set"),
        (name = "faults", description = "Only when FAULT_INJECTION=true; the bearer token when ADMIN_TOKEN is set"),
        (name = "seed", description = "The seeds' endpoints"),
        (name = "probes", description = "Probes, diagnostics, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "probes",
    responses((status = 200, description = "This OpenAPI 3.1 document", body = Object))
)]
#[allow(dead_code)] // Documents the route that `guestbook_common::openapi::routes` serves.
fn openapi_json() {}

/// The whole document: this crate's paths, the shared probes, the shedder's 503 and the
/// header limit's 431.
pub fn document() -> utoipa::openapi::OpenApi {
    guestbook_common::openapi::complete(ApiDoc::openapi())
}

/// [`document`] as pretty JSON, as served and checked in.
pub fn json() -> String {
    guestbook_common::openapi::render(&document())
}

//! What both services' OpenAPI documents share: the probes and `/metrics`, the error body,
//! the admin bearer scheme, the load-shedding answer every other operation may give, the header limit's 431, and the JSON rendering that is
//! served at `/openapi.json` and checked into `openapi/`.
//!
//! The documents are generated from the handlers' `#[utoipa::path]` attributes, so a route
//! whose documented shape changes changes the document; a test in each service compares the
//! generated JSON with the checked-in file, so neither can drift silently.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr, Response as ApiResponse};
use utoipa::{Modify, OpenApi};

use crate::pressure::EXEMPT;
use crate::probes::Readiness;
use crate::{metrics, probes};

pub use guestbook_api::{ErrorBody, ErrorCode};

/// The probes and `/metrics`, merged into each service's document.
#[derive(OpenApi)]
#[openapi(
    paths(probes::liveness, probes::readiness, metrics::render),
    components(schemas(ErrorBody, ErrorCode, Readiness))
)]
pub struct CommonApi;

/// The `bearer` security scheme (the backend's `ADMIN_TOKEN`), which both documents' admin
/// operations name.
pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut Document) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
    }
}

/// Adds the load shedder's 503 (with `Retry-After`) to every operation it can answer for:
/// everything except the probes and `/metrics`.
pub struct Shedding;

impl Modify for Shedding {
    fn modify(&self, openapi: &mut Document) {
        let shed = error_response(
            utoipa::openapi::ResponseBuilder::new()
                .description(
                    "Overloaded (load shedding) or temporarily unavailable: `{\"error\": \"...\"}`, \
                     retry after `Retry-After` seconds",
                )
                .header(
                    "Retry-After",
                    utoipa::openapi::HeaderBuilder::new()
                        .schema(
                            utoipa::openapi::ObjectBuilder::new()
                                .schema_type(utoipa::openapi::schema::Type::Integer),
                        )
                        .description(Some("Seconds to wait before retrying"))
                        .build(),
                ),
        );
        add_to_every_operation(openapi, "503", &shed, |path| EXEMPT.contains(&path));
    }
}

/// Adds the header limit's 431 to every operation: every request passes that check.
pub struct HeaderLimit;

impl Modify for HeaderLimit {
    fn modify(&self, openapi: &mut Document) {
        let too_large = error_response(
            utoipa::openapi::ResponseBuilder::new()
                .description("The request headers add up to more than 16 KiB"),
        );
        add_to_every_operation(openapi, "431", &too_large, |_| false);
    }
}

/// `response` with an [`ErrorBody`] as its JSON content.
fn error_response(response: utoipa::openapi::ResponseBuilder) -> RefOr<ApiResponse> {
    response
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// Documents `response` as `status` on every operation of every path but those `skip`ped,
/// unless the operation documents that status itself.
fn add_to_every_operation(
    openapi: &mut Document,
    status: &str,
    response: &RefOr<ApiResponse>,
    skip: impl Fn(&str) -> bool,
) {
    for (path, item) in &mut openapi.paths.paths {
        if skip(path) {
            continue;
        }
        let operations: [&mut Option<Operation>; 5] = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| response.clone());
        }
    }
}

/// A service's whole document: its own paths (`own`), the shared probes and `/metrics`, the
/// shedder's 503 and the header limit's 431, the same way for both services.
pub fn complete(mut own: Document) -> Document {
    own.merge(CommonApi::openapi());
    Shedding.modify(&mut own);
    HeaderLimit.modify(&mut own);
    own
}

/// The document as served and checked in: pretty JSON with a final newline.
pub fn render(document: &Document) -> String {
    let mut json = document
        .to_pretty_json()
        .expect("an OpenAPI document always serialises");
    json.push('\n');
    json
}

/// `GET /openapi.json`, serving `json` (rendered once at start).
pub fn routes<S>(json: Arc<str>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new().route(
        "/openapi.json",
        get(move || {
            let json = Arc::clone(&json);
            async move { serve(&json) }
        }),
    )
}

fn serve(json: &str) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json.to_owned(),
    )
        .into_response()
}

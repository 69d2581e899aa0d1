//! `DELETE /api/messages` (and `/api/books/{book}/messages`): clears a guestbook. Exists only when `ADMIN_TOKEN` is set, and
//! then requires it.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use guestbook_api::Deleted;

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::extract::{InBook, require_bearer};
use crate::store::Book;

/// Clears the guestbook (admin).
#[utoipa::path(
    delete,
    path = "/api/messages",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every message and idempotency record deleted; ids are not reset", body = Deleted),
        (status = 401, description = "Missing or wrong bearer token", body = guestbook_common::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "ADMIN_TOKEN is not set: the endpoint does not exist", body = guestbook_common::openapi::ErrorBody),
        (status = 500, description = "Unexpected Redis error", body = guestbook_common::openapi::ErrorBody),
    )
)]
pub(crate) async fn clear(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Deleted>, ApiError> {
    let book = app.guestbook.default_book();
    clear_book(&app, &book, &headers).await
}

/// Clears a book (admin).
#[utoipa::path(
    delete,
    path = "/api/books/{book}/messages",
    tag = "admin",
    params(crate::routes::messages::BookParam),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every message and idempotency record of the book deleted; ids are not reset", body = Deleted),
        (status = 400, description = "A bad book name", body = guestbook_common::openapi::ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = guestbook_common::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "ADMIN_TOKEN is not set: the endpoint does not exist", body = guestbook_common::openapi::ErrorBody),
        (status = 500, description = "Unexpected Redis error", body = guestbook_common::openapi::ErrorBody),
    )
)]
pub(crate) async fn clear_in(
    State(app): State<AppState>,
    InBook(book): InBook,
    headers: HeaderMap,
) -> Result<Json<Deleted>, ApiError> {
    clear_book(&app, &book, &headers).await
}

async fn clear_book(
    app: &AppState,
    book: &Book,
    headers: &HeaderMap,
) -> Result<Json<Deleted>, ApiError> {
    let Some(token) = app.admin_token.as_deref() else {
        return Err(ApiError::NotFound);
    };
    require_bearer(headers, token)?;
    let deleted = app.guestbook.clear(book).await?;
    tracing::info!(
        deleted,
        book = book.name(),
        "guestbook cleared by an administrator"
    );
    Ok(Json(Deleted { deleted }))
}

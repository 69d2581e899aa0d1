//! `DELETE /api/messages`: clears the guestbook. Exists only when `ADMIN_TOKEN` is set, and
//! then requires it.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::extract::require_bearer;

pub(crate) async fn clear(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let Some(token) = app.admin_token.as_deref() else {
        return Err(ApiError::NotFound);
    };
    require_bearer(&headers, token)?;
    let deleted = app.store.clear().await?;
    tracing::info!(deleted, "guestbook cleared by an administrator");
    Ok(Json(json!({ "deleted": deleted })))
}

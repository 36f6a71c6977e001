//! `/v2/queue`: apps with instances waiting for offers, and resetting an
//! app's launch delay.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};

use super::error::ApiError;
use super::params::{Params, segments};
use super::{Api, json};
use crate::app::AppId;
use crate::handle::ServiceError;

/// `GET /v2/queue[?embed=lastUnusedOffers]`: `{"queue": [...]}`.
pub(crate) async fn list(State(api): State<Api>, Query(pairs): Query<Vec<(String, String)>>) -> Response {
    let params = Params::new(pairs);
    let embed_offers = params.all("embed").any(|e| e == "lastUnusedOffers");
    Json(json::queue(&api.handle.queue().await, embed_offers)).into_response()
}

/// `DELETE /v2/queue/{id}/delay`: 204, or 404 when the app waits for nothing.
pub(crate) async fn reset_delay(
    State(api): State<Api>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    let parts = segments(&path);
    let Some((&"delay", id_parts)) = parts.split_last() else {
        return Err(ApiError::not_found("URI not found"));
    };
    let raw = format!("/{}", id_parts.join("/"));
    let missing = || ApiError::not_found(format!("Application {raw} not found in tasks queue."));
    let id = AppId::parse(&raw).map_err(|_| missing())?;
    match api.handle.reset_delay(&id).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(ServiceError::NotFound(_)) => Err(missing()),
        Err(e) => Err(e.into()),
    }
}

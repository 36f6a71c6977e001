//! The Marathon-compatible REST API and its event stream.
//!
//! Routes (Marathon 1.x paths, fields and status codes):
//!
//! - `/v2/apps` (GET with `cmd`, `id`, `label`, `embed`; POST → 201 with
//!   `Location` and `Marathon-Deployment-Id`; PUT/PATCH of several apps),
//!   `/v2/apps/{id}` (GET, PUT, PATCH, DELETE), `/v2/apps/{id}/restart`,
//!   `/v2/apps/{id}/tasks` (GET, DELETE with `scale`/`wipe`/`host`),
//!   `/v2/apps/{id}/tasks/{task}` (DELETE), `/v2/apps/{id}/versions[/{v}]`;
//! - `/v2/tasks` (GET, JSON or `text/plain`), `/v2/tasks/delete` (POST);
//! - `/v2/deployments` (GET), `/v2/deployments/{id}` (DELETE, `force`);
//! - `/v2/groups[/{id}]` (GET, POST, PUT, DELETE): groups are derived from
//!   app ids (`/shop/web` lies in `/shop`);
//! - `/v2/queue`, `/v2/queue/{id}/delay` (DELETE);
//! - `/v2/info`, `/v2/leader`, `/ping`, `/metrics`, `/v2/events` (SSE).
//!
//! App ids in paths may start with a doubled slash (`/v2/apps//web`), as the
//! Python client builds them. Query booleans are case-insensitive. Changes
//! answer once the deployment is started, never after it finished.
//!
//! Architecture invariant: the API holds no state of its own; it reads and
//! changes the framework only through [`ServiceHandle`], and rendering
//! (the exact Marathon JSON shapes) lives in [`json`].

mod apps;
mod deployments;
mod error;
mod events;
mod groups;
pub mod json;
mod labels;
mod misc;
pub mod params;
mod queue;
mod tasks;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post};

pub use error::ApiError;

use crate::app::AppDefinition;
use crate::handle::{DeploymentRef, ServiceEvent, ServiceHandle};

/// The header naming the deployment a change started.
pub const DEPLOYMENT_HEADER: &str = "Marathon-Deployment-Id";

/// What every handler gets: the framework's handle.
#[derive(Clone)]
pub(crate) struct Api {
    handle: ServiceHandle,
}

impl Api {
    /// Publishes Marathon's `api_post_event` for a change made through the
    /// API, with the app as stored (its new version), or as posted if it is
    /// gone already.
    async fn posted(&self, uri: &Uri, app: &AppDefinition) {
        let app = match self.handle.app(&app.id).await {
            Ok(status) => status.app,
            Err(_) => app.clone(),
        };
        self.handle.publish(ServiceEvent::ApiPost {
            uri: uri.path().to_owned(),
            app,
            timestamp: jiff::Timestamp::now(),
        });
    }
}

/// Every Marathon route of the framework, answering through `handle`.
///
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so
/// `/v2/events` can name the client in `event_stream_attached`.
pub fn router(handle: ServiceHandle) -> Router {
    Router::new()
        .route(
            "/v2/apps",
            get(apps::list)
                .post(apps::create)
                .put(apps::put_many)
                .patch(apps::patch_many),
        )
        .route(
            "/v2/apps/{*path}",
            get(apps::get_path)
                .put(apps::put_path)
                .patch(apps::patch_path)
                .post(apps::post_path)
                .delete(apps::delete_path),
        )
        .route("/v2/tasks", get(tasks::list))
        .route("/v2/tasks/delete", post(tasks::kill))
        .route("/v2/deployments", get(deployments::list))
        .route("/v2/deployments/{id}", delete(deployments::cancel))
        .route(
            "/v2/groups",
            get(groups::get_root)
                .post(groups::create_root)
                .put(groups::put_root)
                .delete(groups::delete_root),
        )
        .route(
            "/v2/groups/{*path}",
            get(groups::get_path)
                .post(groups::create_path)
                .put(groups::put_path)
                .delete(groups::delete_path),
        )
        .route("/v2/queue", get(queue::list))
        .route("/v2/queue/{*path}", delete(queue::reset_delay))
        .route("/v2/info", get(misc::info))
        .route("/v2/leader", get(misc::leader))
        .route("/v2/events", get(events::stream))
        .route("/ping", get(misc::ping))
        .route("/metrics", get(misc::metrics))
        .fallback(unknown_uri)
        .with_state(Api { handle })
}

async fn unknown_uri() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"message": "URI not found"})),
    )
        .into_response()
}

/// A change's answer: `status`, `{"deploymentId", "version"}`, the
/// `Marathon-Deployment-Id` header, and `Location` when something was created.
fn deployment_response(status: StatusCode, deployment: &DeploymentRef, location: Option<&str>) -> Response {
    let mut response = (status, Json(json::deployment_result(deployment))).into_response();
    add_deployment_headers(response.headers_mut(), deployment, location);
    response
}

fn add_deployment_headers(headers: &mut HeaderMap, deployment: &DeploymentRef, location: Option<&str>) {
    if let Ok(value) = HeaderValue::from_str(deployment.id.as_str()) {
        headers.insert(DEPLOYMENT_HEADER, value);
    }
    if let Some(location) = location
        && let Ok(value) = HeaderValue::from_str(location)
    {
        headers.insert(header::LOCATION, value);
    }
}

/// The client's IP address, when the server records it.
fn client_address(extensions: &axum::http::Extensions) -> String {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// True when the request prefers `text/plain` to JSON (`Accept`).
fn wants_text(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    accept.contains("text/plain") && !accept.contains("application/json")
}

/// True when the request asks for JSON (`Accept: application/json`).
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

#[cfg(test)]
mod tests;

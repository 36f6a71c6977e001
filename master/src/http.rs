//! HTTP on the master's port: `/health`, `/state`, `/metrics`, and the
//! operator's role API:
//!
//! - `GET /quota`, `PUT /quota/{role}` (`{"guarantee": {"cpus": 2}, "limit": {"cpus": 4}}`),
//!   `DELETE /quota/{role}`;
//! - `GET /weights`, `PUT /weights/{role}` (`{"weight": 3}`);
//! - `GET /roles`.
//!
//! Roles may contain `/` (`/quota/eng/web`). Bad input gets 400 with
//! `{"message": "<field>: <problem>"}` and changes nothing.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, put};
use serde_json::json;

use crate::actor::{Command, MasterHandle};
use crate::cluster::{OperatorError, OperatorRequest};
use crate::metrics::Metrics;
use crate::quota::{BadRequest, check_role, parse_quota, parse_weight};

#[derive(Clone)]
struct AppState {
    handle: MasterHandle,
    metrics: Metrics,
}

/// The HTTP routes; gRPC services are added next to them by `serve`.
pub fn router(handle: MasterHandle, metrics: Metrics) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/state", get(state))
        .route("/metrics", get(metrics_text))
        .route("/quota", get(quotas))
        .route("/quota/{*role}", put(set_quota).delete(remove_quota))
        .route("/weights", get(weights))
        .route("/weights/{*role}", put(set_weight))
        .route("/roles", get(roles))
        .with_state(AppState { handle, metrics })
}

async fn health() -> &'static str {
    "ok"
}

/// The master's state as JSON; the shape is documented on
/// `Master::state_json`.
async fn state(State(app): State<AppState>) -> Response {
    match app.handle.ask(|reply| Command::State { reply }).await {
        Ok(value) => Json(value).into_response(),
        Err(status) => (StatusCode::SERVICE_UNAVAILABLE, status.message().to_owned()).into_response(),
    }
}

async fn metrics_text(State(app): State<AppState>) -> Response {
    if let Err(status) = app.handle.ask(|reply| Command::RefreshGauges { reply }).await {
        return (StatusCode::SERVICE_UNAVAILABLE, status.message().to_owned()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Runs an operator request on the actor and renders the answer.
async fn operator(app: &AppState, request: OperatorRequest) -> Response {
    match app.handle.ask(|reply| Command::Operator { request, reply }).await {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(OperatorError::BadRequest(e))) => bad_request(&e),
        Ok(Err(OperatorError::NotFound(message))) => {
            (StatusCode::NOT_FOUND, Json(json!({ "message": message }))).into_response()
        }
        Err(status) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "message": status.message() })),
        )
            .into_response(),
    }
}

fn bad_request(e: &BadRequest) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "message": e.to_string() }))).into_response()
}

/// `GET /quota`.
async fn quotas(State(app): State<AppState>) -> Response {
    operator(&app, OperatorRequest::Quotas).await
}

/// `PUT /quota/{role}`: sets (replaces) a role's quota; answers the stored quota.
async fn set_quota(State(app): State<AppState>, Path(role): Path<String>, body: Bytes) -> Response {
    let quota = match check_role(&role).and_then(|()| parse_quota(&body)) {
        Ok(q) => q,
        Err(e) => return bad_request(&e),
    };
    operator(&app, OperatorRequest::SetQuota { role, quota }).await
}

/// `DELETE /quota/{role}`.
async fn remove_quota(State(app): State<AppState>, Path(role): Path<String>) -> Response {
    if let Err(e) = check_role(&role) {
        return bad_request(&e);
    }
    operator(&app, OperatorRequest::RemoveQuota { role }).await
}

/// `GET /weights`.
async fn weights(State(app): State<AppState>) -> Response {
    operator(&app, OperatorRequest::Weights).await
}

/// `PUT /weights/{role}`: `{"weight": 3}`.
async fn set_weight(State(app): State<AppState>, Path(role): Path<String>, body: Bytes) -> Response {
    let weight = match check_role(&role).and_then(|()| parse_weight(&body)) {
        Ok(w) => w,
        Err(e) => return bad_request(&e),
    };
    operator(&app, OperatorRequest::SetWeight { role, weight }).await
}

/// `GET /roles`: shape documented on `Master::roles_json`.
async fn roles(State(app): State<AppState>) -> Response {
    operator(&app, OperatorRequest::Roles).await
}

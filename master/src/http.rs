//! HTTP on the master's port: `/health`, `/state` and `/metrics`.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use crate::actor::{Command, MasterHandle};
use crate::metrics::Metrics;

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

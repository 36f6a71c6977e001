//! The agent's HTTP endpoint: `/health`, `/state` and
//! `/tasks/{task_id}/sandbox`. Handlers ask the actor for a snapshot.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::{mpsc, oneshot};

use crate::agent::Command;

/// The HTTP routes, answering from the actor behind `actor`.
pub(crate) fn router(actor: mpsc::UnboundedSender<Command>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/state", get(state))
        .route("/tasks/{task_id}/sandbox", get(sandbox))
        .with_state(actor)
}

async fn snapshot(actor: &mpsc::UnboundedSender<Command>) -> Option<serde_json::Value> {
    let (reply, answer) = oneshot::channel();
    actor.send(Command::State(reply)).ok()?;
    answer.await.ok()
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "agent is stopping").into_response()
}

async fn state(State(actor): State<mpsc::UnboundedSender<Command>>) -> Response {
    match snapshot(&actor).await {
        Some(state) => Json(state).into_response(),
        None => unavailable(),
    }
}

/// The sandbox path of the task with this id (the first match across frameworks).
async fn sandbox(
    State(actor): State<mpsc::UnboundedSender<Command>>,
    Path(task_id): Path<String>,
) -> Response {
    let Some(state) = snapshot(&actor).await else {
        return unavailable();
    };
    let found = state["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["id"] == task_id.as_str()))
        .and_then(|t| t["sandbox"].as_str().map(str::to_owned));
    match found {
        Some(path) => path.into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no task {task_id:?} on this agent"),
        )
            .into_response(),
    }
}

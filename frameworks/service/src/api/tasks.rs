//! `/v2/tasks`: every task (JSON, or Marathon's `text/plain` endpoint list),
//! and `POST /v2/tasks/delete` to kill tasks by id.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use super::error::{ApiError, parse_json};
use super::params::Params;
use super::{Api, deployment_response, json, wants_text};
use crate::handle::{AppStatus, TaskView};

/// The task states `status=` selects (`running`, `staging`), any case.
fn state_filter(params: &Params) -> Vec<&'static str> {
    params
        .all("status")
        .chain(params.all("status[]"))
        .filter_map(|s| match s.to_ascii_lowercase().as_str() {
            "running" => Some("TASK_RUNNING"),
            "staging" => Some("TASK_STAGING"),
            _ => None,
        })
        .collect()
}

/// Marathon's plain-text endpoint list: per app and service port, a line
/// `<app id with / as _>\t<service port>\t<host:port>\t…`.
pub fn endpoints_text(apps: &[AppStatus]) -> String {
    let mut out = String::new();
    for status in apps {
        let name = status.app.id.safe_name();
        let service_ports = json::service_ports(&status.app);
        let running: Vec<&TaskView> = status
            .tasks
            .iter()
            .filter(|t| t.state == "TASK_RUNNING")
            .collect();
        if service_ports.is_empty() {
            out.push_str(&format!("{name}\t "));
            for task in &running {
                out.push_str(&format!("\t{}", task.host));
            }
            out.push('\n');
            continue;
        }
        for (index, service_port) in service_ports.iter().enumerate() {
            out.push_str(&format!("{name}\t{service_port}"));
            for task in &running {
                if let Some(port) = task.ports.get(index) {
                    out.push_str(&format!("\t{}:{port}", task.host));
                }
            }
            out.push('\n');
        }
    }
    out
}

/// `GET /v2/tasks[?status=running]`: `{"tasks": [...]}`, or the endpoint
/// list for `Accept: text/plain`.
pub(crate) async fn list(
    State(api): State<Api>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs);
    let apps = api.handle.apps().await;
    if wants_text(&headers) {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            endpoints_text(&apps),
        )
            .into_response());
    }
    let states = state_filter(&params);
    let tasks: Vec<Value> = apps
        .iter()
        .flat_map(|s| s.tasks.iter().map(move |t| (s, t)))
        .filter(|(_, t)| states.is_empty() || states.contains(&t.state.as_str()))
        .map(|(s, t)| json::task(t, Some(&s.app)))
        .collect();
    Ok(Json(json!({ "tasks": tasks })).into_response())
}

/// `POST /v2/tasks/delete?scale=&wipe=&force=` with `{"ids": [...]}`.
pub(crate) async fn kill(
    State(api): State<Api>,
    Query(pairs): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs);
    let scale = params.flag("scale", false)?;
    let wipe = params.flag("wipe", false)?;
    let force = params.flag("force", false)?;
    if scale && wipe {
        return Err(ApiError::BadRequest(
            "You cannot use scale and wipe at the same time.".to_owned(),
        ));
    }
    let body = parse_json(&body)?;
    let Some(raw_ids) = body.get("ids").and_then(Value::as_array) else {
        return Err(ApiError::BadRequest(
            "ids: expected a JSON array of task ids".to_owned(),
        ));
    };
    let mut ids = Vec::with_capacity(raw_ids.len());
    for raw in raw_ids {
        let text = raw.as_str().unwrap_or_default();
        let id = agora_proto::TaskId::parse(text)
            .map_err(|e| ApiError::BadRequest(format!("Invalid task id '{raw}'. [{e}]")))?;
        ids.push(id);
    }
    let outcome = api.handle.kill_tasks(ids, scale, wipe, force).await?;
    if let Some(deployment) = &outcome.deployment {
        return Ok(deployment_response(StatusCode::OK, deployment, None));
    }
    let tasks: Vec<Value> = outcome.killed.iter().map(|t| json::task(t, None)).collect();
    Ok(Json(json!({ "tasks": tasks })).into_response())
}

//! The Chronos-compatible REST API.
//!
//! Every Chronos route is served under both `/scheduler/…` and `/v1/scheduler/…` (the
//! chronos-python client uses `/v1` by default and no prefix with
//! `scheduler_api_version=None`):
//!
//! - `POST|PUT /scheduler/iso8601`, `POST|PUT /scheduler/dependency` — create or replace a
//!   scheduled / dependent job; 204. (PUT is what chronos-python sends for an update
//!   without the `/v1` prefix, as Chronos < 3 accepted.)
//! - `GET /scheduler/jobs` — every job (Chronos job JSON with its counters), by name.
//! - `GET /scheduler/jobs/search?name=&command=&any=&limit=&offset=` — Chronos' search:
//!   case-insensitive substrings; `name` and `command` must all match, else `any` may
//!   match either; `limit` defaults to 10 as in Chronos.
//! - `GET /scheduler/jobs/summary` — Chronos' summary (`{"jobs": [{name, status, state,
//!   schedule, parents, disabled}]}`) plus Agora's `nextRun` (RFC 3339, `""` when none).
//! - `GET /scheduler/job/{name}` — one job; `PUT` — run it now (204); `DELETE` — delete it
//!   and kill its tasks (204); its children are re-wired as Chronos does (see `delete_job`).
//! - `DELETE /scheduler/task/kill/{name}` — kill the job's running tasks (204).
//! - `GET /scheduler/job/stat/{name}` — `{"histogram": {…}, "taskStatHistory": […]}`.
//! - `GET /scheduler/stats/{99thPercentile|98thPercentile|95thPercentile|75thPercentile|median|mean}`
//!   — `[{"jobNameLabel", "time"}]`, run time in seconds, slowest first.
//! - `GET /scheduler/graph/csv`, `GET /scheduler/graph/dot` — the dependency graph.
//! - `GET /scheduler/job/{name}/runs` (Agora) — the run history, oldest first.
//! - `GET /leader` — `{"leader": "host:port"}`; `GET /ping` — `pong`; `GET /metrics` — Prometheus text.
//!
//! Errors are JSON in Chronos' shape, `{"status": "Bad Request", "message": "…"}` (the
//! status is the HTTP reason phrase, as Chronos writes it): 400 for bad input (the message
//! names the field), 404 for an unknown job or route, 503 while the framework cannot
//! answer, 500 for a fault inside it.

mod metrics;
mod stats;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::graph::{DependencyGraph, NodeStatus, RunningState, ToNodeStatus};
use crate::handle::{CronError, CronHandle, JobStatus};
use crate::job::{Job, JobError, JobKind, JobName};

pub use stats::{DurationHistogram, Percentile};

/// The API's routes, answering from `handle`.
pub fn router(handle: CronHandle) -> Router {
    let scheduler = Router::new()
        .route("/iso8601", post(put_scheduled).put(put_scheduled))
        .route("/dependency", post(put_dependent).put(put_dependent))
        .route("/jobs", get(list_jobs))
        .route("/jobs/search", get(search_jobs))
        .route("/jobs/summary", get(summarize_jobs))
        .route("/job/{name}", get(show_job).put(run_job).delete(delete_job))
        .route("/job/{name}/runs", get(job_runs))
        .route("/job/stat/{name}", get(job_stat))
        .route("/task/kill/{name}", delete(kill_tasks))
        .route("/stats/{percentile}", get(run_time_stats))
        .route("/graph/csv", get(graph_csv))
        .route("/graph/dot", get(graph_dot));
    Router::new()
        .nest("/scheduler", scheduler.clone())
        .nest("/v1/scheduler", scheduler)
        .route("/ping", get(ping))
        .route("/leader", get(leader))
        .route("/metrics", get(metrics_text))
        .fallback(no_route)
        .with_state(handle)
}

/// An error answer: the HTTP status and a message, rendered as Chronos' `ApiResult`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong (names the field for bad input).
    pub message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// The JSON body: `{"status": "<reason phrase>", "message": "…"}`.
    pub fn body(&self) -> Value {
        json!({
            "status": self.status.canonical_reason().unwrap_or("Error"),
            "message": self.message,
        })
    }
}

impl From<CronError> for ApiError {
    fn from(e: CronError) -> Self {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match e {
            CronError::Invalid(job_error) => job_error.message,
            other => other.to_string(),
        };
        ApiError { status, message }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        ApiError::bad_request(e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A job name from a path: bad names are 400 naming `name`.
fn job_name(raw: &str) -> ApiResult<JobName> {
    Ok(JobName::new(raw)?)
}

async fn put_scheduled(State(handle): State<CronHandle>, body: Bytes) -> ApiResult<StatusCode> {
    put_job(&handle, &body, JobKind::Scheduled).await
}

async fn put_dependent(State(handle): State<CronHandle>, body: Bytes) -> ApiResult<StatusCode> {
    put_job(&handle, &body, JobKind::Dependent).await
}

async fn put_job(handle: &CronHandle, body: &[u8], kind: JobKind) -> ApiResult<StatusCode> {
    let job = Job::from_json(body, kind)?;
    handle.put_job(job).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_jobs(State(handle): State<CronHandle>) -> ApiResult<Json<Vec<Value>>> {
    let jobs = handle.jobs().await?;
    Ok(Json(jobs.iter().map(|s| s.job.to_json(&s.stats)).collect()))
}

/// Query of `/scheduler/jobs/search`.
#[derive(Debug, Default, Deserialize)]
struct SearchQuery {
    name: Option<String>,
    command: Option<String>,
    any: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// Chronos' default page size for a search.
const SEARCH_LIMIT: usize = 10;

/// A search term, unless absent or empty.
fn non_empty(term: Option<&str>) -> Option<&str> {
    term.filter(|t| !t.is_empty())
}

/// Whether `job` matches a search, as Chronos decides: every non-empty `name`/`command`
/// term must be a case-insensitive substring; a job those terms miss still matches when a
/// non-empty `any` is found in its name or command. Unlike Chronos, `any` alone filters
/// too (Chronos then returned every job).
fn matches_search(job: &Job, name: Option<&str>, command: Option<&str>, any: Option<&str>) -> bool {
    let contains = |haystack: &str, needle: &str| haystack.to_lowercase().contains(&needle.to_lowercase());
    let (name, command, any) = (non_empty(name), non_empty(command), non_empty(any));
    let specific = name.is_some() || command.is_some();
    let specific_match = name.is_none_or(|n| contains(job.name.as_str(), n))
        && command.is_none_or(|c| contains(&job.command, c));
    match any {
        Some(any) => {
            (specific && specific_match) || contains(job.name.as_str(), any) || contains(&job.command, any)
        }
        None => specific_match,
    }
}

async fn search_jobs(
    State(handle): State<CronHandle>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Value>>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    let jobs = handle.jobs().await?;
    let found = jobs
        .iter()
        .filter(|s| {
            matches_search(
                &s.job,
                query.name.as_deref(),
                query.command.as_deref(),
                query.any.as_deref(),
            )
        })
        .skip(query.offset.unwrap_or(0))
        .take(query.limit.unwrap_or(SEARCH_LIMIT))
        .map(|s| s.job.to_json(&s.stats))
        .collect();
    Ok(Json(found))
}

/// Chronos' last state of a job: `fresh` (never ran), `success` or `failure` (whichever
/// happened last).
fn last_state(status: &JobStatus) -> &'static str {
    match (status.stats.last_success, status.stats.last_error) {
        (None, None) => "fresh",
        (Some(_), None) => "success",
        (None, Some(_)) => "failure",
        (Some(success), Some(error)) if success > error => "success",
        (Some(_), Some(_)) => "failure",
    }
}

/// Chronos' current state of a job: `idle`, or `N running`.
fn current_state(status: &JobStatus) -> String {
    if status.running == 0 {
        "idle".to_owned()
    } else {
        format!("{} running", status.running)
    }
}

/// One entry of `/scheduler/jobs/summary`.
fn summary(status: &JobStatus) -> Value {
    json!({
        "name": status.job.name,
        "status": current_state(status),
        "state": last_state(status),
        "schedule": status.job.schedule.clone().unwrap_or_default(),
        "parents": status.job.parents,
        "disabled": status.job.disabled,
        "nextRun": status.next_run.map(|t| t.to_string()).unwrap_or_default(),
    })
}

async fn summarize_jobs(State(handle): State<CronHandle>) -> ApiResult<Json<Value>> {
    let jobs = handle.jobs().await?;
    Ok(Json(
        json!({ "jobs": jobs.iter().map(summary).collect::<Vec<_>>() }),
    ))
}

async fn show_job(State(handle): State<CronHandle>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let status = handle.job(&job_name(&name)?).await?;
    Ok(Json(status.job.to_json(&status.stats)))
}

/// `PUT /scheduler/job/{name}`: a manual run. Chronos' `arguments` query is not supported
/// (a run uses the job's own arguments).
async fn run_job(State(handle): State<CronHandle>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    handle.run_now(&job_name(&name)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /scheduler/job/{name}`: deletes the job with its run history and kills its tasks;
/// 204, or 404 for an unknown job. A job with children can be deleted, and its children are
/// re-wired in the same stored change, as Chronos' `JobManagementResource.delete` does:
/// - the children of a dependent job get its parents in its place (`a → b → c`, delete `b`:
///   `a → c`);
/// - a child whose only parent was a scheduled job becomes a scheduled job with that job's
///   `schedule` and `scheduleTimeZone` (same instants, from now on);
/// - a child of a scheduled job that has other parents too just loses the deleted one (here
///   Agora departs from Chronos, which made such a child a scheduled job and dropped its
///   other parents).
///
/// No child is left dangling with a parent that does not exist.
async fn delete_job(State(handle): State<CronHandle>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    handle.delete_job(&job_name(&name)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn kill_tasks(State(handle): State<CronHandle>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    handle.kill_tasks(&job_name(&name)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn job_runs(State(handle): State<CronHandle>, Path(name): Path<String>) -> ApiResult<Response> {
    let runs = handle.runs(&job_name(&name)?).await?;
    Ok(Json(runs).into_response())
}

async fn job_stat(State(handle): State<CronHandle>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let name = job_name(&name)?;
    let runs = handle.runs(&name).await?;
    Ok(Json(stats::job_stat_json(&runs)))
}

async fn run_time_stats(
    State(handle): State<CronHandle>,
    Path(percentile): Path<String>,
) -> ApiResult<Json<Vec<Value>>> {
    let percentile = Percentile::parse(&percentile).ok_or_else(|| {
        ApiError::bad_request(format!(
            "percentile: '{percentile}' is not one of {}",
            Percentile::NAMES.join(", ")
        ))
    })?;
    let mut times = Vec::new();
    for status in handle.jobs().await? {
        let runs = match handle.runs(&status.job.name).await {
            Ok(runs) => runs,
            // Deleted since the listing: not part of the answer.
            Err(CronError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let millis = DurationHistogram::of_runs(&runs).value(percentile);
        times.push((status.job.name, millis / 1000.0));
    }
    times.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(Json(
        times
            .into_iter()
            .map(|(name, time)| json!({ "jobNameLabel": name, "time": time }))
            .collect(),
    ))
}

/// The graph of the current jobs and each job's status (last result, running or idle).
async fn graph_with_statuses(
    handle: &CronHandle,
) -> ApiResult<(DependencyGraph, BTreeMap<JobName, NodeStatus>)> {
    let jobs = handle.jobs().await?;
    let graph = DependencyGraph::new(jobs.iter().map(|s| &s.job));
    let statuses = jobs
        .iter()
        .map(|s| {
            let status = NodeStatus {
                last: last_state(s).to_node_status().last,
                state: if s.running > 0 {
                    RunningState::Running
                } else {
                    RunningState::Idle
                },
            };
            (s.job.name.clone(), status)
        })
        .collect();
    Ok((graph, statuses))
}

fn plain_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn graph_csv(State(handle): State<CronHandle>) -> ApiResult<Response> {
    let (graph, statuses) = graph_with_statuses(&handle).await?;
    Ok(plain_text(graph.to_csv(&statuses)))
}

async fn graph_dot(State(handle): State<CronHandle>) -> ApiResult<Response> {
    let (graph, statuses) = graph_with_statuses(&handle).await?;
    Ok(plain_text(graph.to_dot(&statuses)))
}

async fn ping() -> &'static str {
    "pong"
}

async fn leader(State(handle): State<CronHandle>) -> ApiResult<Json<Value>> {
    let info = handle.info().await?;
    Ok(Json(json!({ "leader": info.leader })))
}

async fn metrics_text(State(handle): State<CronHandle>) -> ApiResult<Response> {
    let snapshot = handle.metrics().await?;
    let text = metrics::render(&snapshot).map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("cannot render metrics: {e}"),
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn no_route() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such route".to_owned(),
    }
}

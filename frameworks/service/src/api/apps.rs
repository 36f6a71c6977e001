//! `/v2/apps`: list, create, show, update (partial, full, rollback), delete,
//! restart, tasks and versions of apps.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use super::error::{ApiError, app_not_found, parse_json};
use super::labels::LabelSelector;
use super::params::{Embed, Params, segments};
use super::{Api, deployment_response, json};
use crate::app::{AppDefinition, AppId, ValidationErrors, parse_timestamp, timestamp_string};
use crate::handle::ServiceError;

type Pairs = Query<Vec<(String, String)>>;

/// Fields of Marathon's app object that only the server writes; a client
/// that sends back an app it read (the Python client does) has them ignored.
const READ_ONLY_FIELDS: [&str; 10] = [
    "tasks",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
    "versionInfo",
];

/// Removes the fields of an app object that only the server writes.
pub(crate) fn strip_read_only(app: &mut serde_json::Map<String, Value>) {
    for field in READ_ONLY_FIELDS {
        app.remove(field);
    }
}

/// What a path under `/v2/apps/` names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AppPath {
    /// `/v2/apps/{id}`.
    App(String),
    /// `/v2/apps/{id}/restart`.
    Restart(String),
    /// `/v2/apps/{id}/tasks`.
    Tasks(String),
    /// `/v2/apps/{id}/tasks/{task}`.
    Task(String, String),
    /// `/v2/apps/{id}/versions`.
    Versions(String),
    /// `/v2/apps/{id}/versions/{version}`.
    Version(String, String),
}

/// Splits a path under `/v2/apps/` into the app id (`/`-prefixed) and what
/// follows it.
pub(crate) fn parse_app_path(path: &str) -> AppPath {
    let parts = segments(path);
    let id = |n: usize| format!("/{}", parts[..n].join("/"));
    let n = parts.len();
    match parts.as_slice() {
        [.., "restart"] if n >= 2 => AppPath::Restart(id(n - 1)),
        [.., "tasks"] if n >= 2 => AppPath::Tasks(id(n - 1)),
        [.., "tasks", task] if n >= 3 => AppPath::Task(id(n - 2), (*task).to_owned()),
        [.., "versions"] if n >= 2 => AppPath::Versions(id(n - 1)),
        [.., "versions", version] if n >= 3 => AppPath::Version(id(n - 2), (*version).to_owned()),
        _ => AppPath::App(id(n)),
    }
}

/// An app id from a URL; an invalid one names no app (404).
fn app_id(raw: &str) -> Result<AppId, ApiError> {
    AppId::parse(raw).map_err(|_| ApiError::unknown_app(raw))
}

fn method_not_allowed() -> Result<Response, ApiError> {
    Ok(StatusCode::METHOD_NOT_ALLOWED.into_response())
}

/// `GET /v2/apps?cmd=&id=&label=&embed=`: `{"apps": [...]}`.
pub(crate) async fn list(State(api): State<Api>, Query(pairs): Pairs) -> Result<Response, ApiError> {
    let params = Params::new(pairs);
    let embed = Embed::for_list(&params);
    let selector = match params.get("label") {
        Some(text) => Some(LabelSelector::parse(text).map_err(ApiError::BadRequest)?),
        None => None,
    };
    let cmd = params.get("cmd").map(str::to_lowercase);
    let id = params.get("id").map(str::to_lowercase);
    let now = jiff::Timestamp::now();
    let apps: Vec<Value> = api
        .handle
        .apps()
        .await
        .iter()
        .filter(|s| {
            cmd.as_ref()
                .is_none_or(|c| s.app.cmd.as_ref().is_some_and(|x| x.to_lowercase().contains(c)))
        })
        .filter(|s| {
            id.as_ref()
                .is_none_or(|i| s.app.id.as_str().to_lowercase().contains(i))
        })
        .filter(|s| selector.as_ref().is_none_or(|sel| sel.matches(&s.app.labels)))
        .map(|s| json::app(s, embed, now))
        .collect();
    Ok(Json(json!({ "apps": apps })).into_response())
}

/// `POST /v2/apps`: 201, the app, `Location` and `Marathon-Deployment-Id`.
pub(crate) async fn create(State(api): State<Api>, uri: Uri, body: Bytes) -> Result<Response, ApiError> {
    parse_json(&body)?;
    let app = AppDefinition::from_json(&body).map_err(ApiError::invalid)?;
    let deployment = api.handle.create_app(app.clone()).await?;
    api.posted(&uri, &app).await;
    let embed = Embed {
        counts: true,
        deployments: true,
        ..Embed::default()
    };
    let body = match api.handle.app(&app.id).await {
        Ok(status) => json::app(&status, embed, jiff::Timestamp::now()),
        // Gone already (deleted in between): answer with what was created.
        Err(_) => {
            let mut value = app.to_json();
            value["version"] = json!(timestamp_string(deployment.version));
            value["deployments"] = json!([{"id": deployment.id.as_str()}]);
            value
        }
    };
    let location = format!("/v2/apps{}", app.id);
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    super::add_deployment_headers(response.headers_mut(), &deployment, Some(&location));
    Ok(response)
}

/// `GET /v2/apps/{id}[/tasks|/versions[/{v}]]`.
pub(crate) async fn get_path(
    State(api): State<Api>,
    Path(path): Path<String>,
    Query(pairs): Pairs,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs);
    match parse_app_path(&path) {
        AppPath::App(raw) => {
            let id = app_id(&raw)?;
            let status = api.handle.app(&id).await.map_err(app_not_found(&id))?;
            let app = json::app(&status, Embed::for_one(&params), jiff::Timestamp::now());
            Ok(Json(json!({ "app": app })).into_response())
        }
        AppPath::Tasks(raw) => {
            let id = app_id(&raw)?;
            let status = api.handle.app(&id).await.map_err(app_not_found(&id))?;
            let tasks: Vec<Value> = status
                .tasks
                .iter()
                .map(|t| json::task(t, Some(&status.app)))
                .collect();
            Ok(Json(json!({ "tasks": tasks })).into_response())
        }
        AppPath::Versions(raw) => {
            let id = app_id(&raw)?;
            let versions = api.handle.app_versions(&id).await.map_err(app_not_found(&id))?;
            let versions: Vec<String> = versions.into_iter().map(timestamp_string).collect();
            Ok(Json(json!({ "versions": versions })).into_response())
        }
        AppPath::Version(raw, version) => {
            let id = app_id(&raw)?;
            let wanted = parse_timestamp(&version).map_err(|e| {
                ApiError::BadRequest(format!("version: '{version}' is not a timestamp ({e})"))
            })?;
            let app = find_version(&api, &id, wanted).await?;
            Ok(Json(app.to_json()).into_response())
        }
        AppPath::Restart(_) | AppPath::Task(..) => method_not_allowed(),
    }
}

/// The stored version `wanted` of an app, compared at Marathon's millisecond
/// precision (the precision versions are shown with).
async fn find_version(api: &Api, id: &AppId, wanted: jiff::Timestamp) -> Result<AppDefinition, ApiError> {
    let wanted_text = timestamp_string(wanted);
    let missing = || ApiError::not_found(format!("App '{id}' does not exist in version {wanted_text}"));
    let versions = api.handle.app_versions(id).await.map_err(app_not_found(id))?;
    let version = versions
        .into_iter()
        .find(|v| *v == wanted || timestamp_string(*v) == wanted_text)
        .ok_or_else(missing)?;
    api.handle.app_version(id, version).await.map_err(|e| match e {
        ServiceError::NotFound(_) => missing(),
        other => ApiError::Service(other),
    })
}

/// `POST /v2/apps/{id}/restart`.
pub(crate) async fn post_path(
    State(api): State<Api>,
    Path(path): Path<String>,
    Query(pairs): Pairs,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs);
    match parse_app_path(&path) {
        AppPath::Restart(raw) => {
            let id = app_id(&raw)?;
            let force = params.flag("force", false)?;
            let deployment = api
                .handle
                .restart_app(&id, force)
                .await
                .map_err(app_not_found(&id))?;
            Ok(deployment_response(StatusCode::OK, &deployment, None))
        }
        _ => method_not_allowed(),
    }
}

/// `PUT /v2/apps/{id}`: partial update (default), full replacement
/// (`partialUpdate=false`), creation, or rollback (`{"version": V}`).
pub(crate) async fn put_path(
    State(api): State<Api>,
    Path(path): Path<String>,
    Query(pairs): Pairs,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs);
    match parse_app_path(&path) {
        AppPath::App(raw) => {
            let partial = params.flag("partialUpdate", true)?;
            update_one(&api, &raw, &params, &uri, &body, partial, true).await
        }
        _ => method_not_allowed(),
    }
}

/// `PATCH /v2/apps/{id}`: a partial update of an existing app.
pub(crate) async fn patch_path(
    State(api): State<Api>,
    Path(path): Path<String>,
    Query(pairs): Pairs,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs);
    match parse_app_path(&path) {
        AppPath::App(raw) => update_one(&api, &raw, &params, &uri, &body, true, false).await,
        _ => method_not_allowed(),
    }
}

fn expect_object(value: Value, path: &str) -> Result<serde_json::Map<String, Value>, ApiError> {
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(ApiError::invalid(ValidationErrors::single(
            "Invalid JSON",
            path,
            "expected a JSON object",
        ))),
    }
}

/// The definition an update of app `id` with `body` produces: the rollback
/// target (`{"version": V}`), the current definition patched, or a new
/// definition (full replacement, or creation when allowed). The flag is
/// true when the app is created. Ids and read-only fields in the body are
/// ignored: the path names the app.
async fn updated_definition(
    api: &Api,
    id: &AppId,
    body: serde_json::Map<String, Value>,
    partial: bool,
    allow_create: bool,
) -> Result<(AppDefinition, bool), ApiError> {
    let body = Value::Object(body);
    if let Some(version) = AppDefinition::rollback_version(&body).map_err(ApiError::invalid)? {
        return Ok((find_version(api, id, version).await?, false));
    }
    let existing = match api.handle.app(id).await {
        Ok(status) => Some(status.app),
        Err(ServiceError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    match existing {
        Some(current) if partial => Ok((current.patched(&body).map_err(ApiError::invalid)?, false)),
        None if !allow_create => Err(ApiError::unknown_app(id.as_str())),
        existing => {
            let app = AppDefinition::from_value_with_id(&body, id).map_err(ApiError::invalid)?;
            Ok((app, existing.is_none()))
        }
    }
}

async fn update_one(
    api: &Api,
    raw: &str,
    params: &Params,
    uri: &Uri,
    body: &[u8],
    partial: bool,
    allow_create: bool,
) -> Result<Response, ApiError> {
    let id = app_id(raw)?;
    let force = params.flag("force", false)?;
    let object = expect_object(parse_json(body)?, "/")?;
    let (app, created) = updated_definition(api, &id, object, partial, allow_create).await?;
    let deployment = api.handle.update_apps(vec![app.clone()], force).await?;
    api.posted(uri, &app).await;
    if created {
        let location = format!("/v2/apps{id}");
        Ok(deployment_response(
            StatusCode::CREATED,
            &deployment,
            Some(&location),
        ))
    } else {
        Ok(deployment_response(StatusCode::OK, &deployment, None))
    }
}

/// `PUT /v2/apps`: create or update several apps in one deployment.
pub(crate) async fn put_many(
    State(api): State<Api>,
    Query(pairs): Pairs,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs);
    let partial = params.flag("partialUpdate", true)?;
    update_many(&api, &params, &uri, &body, partial, true).await
}

/// `PATCH /v2/apps`: partial updates of several existing apps.
pub(crate) async fn patch_many(
    State(api): State<Api>,
    Query(pairs): Pairs,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs);
    update_many(&api, &params, &uri, &body, true, false).await
}

/// Prefixes every error path with the array index (`/(1)/cpus`).
fn at_index(errors: ValidationErrors, index: usize) -> ValidationErrors {
    let mut out = ValidationErrors::new(errors.message.clone());
    for detail in errors.details {
        for error in detail.errors {
            out.add(format!("/({index}){}", detail.path), error);
        }
    }
    out
}

async fn update_many(
    api: &Api,
    params: &Params,
    uri: &Uri,
    body: &[u8],
    partial: bool,
    allow_create: bool,
) -> Result<Response, ApiError> {
    let force = params.flag("force", false)?;
    let Value::Array(items) = parse_json(body)? else {
        return Err(ApiError::invalid(ValidationErrors::single(
            "Invalid JSON",
            "/",
            "expected a JSON array of apps",
        )));
    };
    let mut apps = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let object = expect_object(item, &format!("/({index})"))?;
        let raw = object
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let id = AppId::parse(&raw).map_err(|e| {
            ApiError::invalid(ValidationErrors::single(
                "Object is not valid",
                format!("/({index})/id"),
                e.to_string(),
            ))
        })?;
        let (app, _) = updated_definition(api, &id, object, partial, allow_create)
            .await
            .map_err(|e| match e {
                ApiError::Service(ServiceError::Invalid(errors)) => {
                    ApiError::invalid(at_index(errors, index))
                }
                other => other,
            })?;
        apps.push(app);
    }
    let deployment = api.handle.update_apps(apps.clone(), force).await?;
    for app in &apps {
        api.posted(uri, app).await;
    }
    Ok(deployment_response(StatusCode::OK, &deployment, None))
}

/// `DELETE /v2/apps/{id}` (`force` defaults to true, as in Marathon),
/// `DELETE /v2/apps/{id}/tasks[?host=&scale=&wipe=]`,
/// `DELETE /v2/apps/{id}/tasks/{task}[?scale=&wipe=]`.
pub(crate) async fn delete_path(
    State(api): State<Api>,
    Path(path): Path<String>,
    Query(pairs): Pairs,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs);
    match parse_app_path(&path) {
        AppPath::App(raw) => {
            let id = app_id(&raw)?;
            let force = params.flag("force", true)?;
            let deployment = api
                .handle
                .delete_apps(vec![id.clone()], force)
                .await
                .map_err(app_not_found(&id))?;
            Ok(deployment_response(StatusCode::OK, &deployment, None))
        }
        AppPath::Tasks(raw) => {
            let id = app_id(&raw)?;
            let status = api.handle.app(&id).await.map_err(app_not_found(&id))?;
            let host = params.get("host");
            let ids = status
                .tasks
                .iter()
                .filter(|t| host.is_none_or(|h| h == "*" || t.host == h))
                .map(|t| t.id.clone())
                .collect();
            kill(&api, &params, ids, false).await
        }
        AppPath::Task(raw, task) => {
            let id = app_id(&raw)?;
            let status = api.handle.app(&id).await.map_err(app_not_found(&id))?;
            let Some(found) = status.tasks.iter().find(|t| t.id.as_str() == task) else {
                return Err(ApiError::not_found(format!("Task '{task}' does not exist")));
            };
            kill(&api, &params, vec![found.id.clone()], true).await
        }
        AppPath::Restart(_) | AppPath::Versions(_) | AppPath::Version(..) => method_not_allowed(),
    }
}

/// Kills tasks of one app and answers as Marathon: the deployment with
/// `scale`, else the killed tasks (`{"task": …}` for one, `{"tasks": […]}`).
async fn kill(
    api: &Api,
    params: &Params,
    ids: Vec<agora_proto::TaskId>,
    single: bool,
) -> Result<Response, ApiError> {
    let scale = params.flag("scale", false)?;
    let wipe = params.flag("wipe", false)?;
    let force = params.flag("force", false)?;
    if scale && wipe {
        return Err(ApiError::BadRequest(
            "You cannot use scale and wipe at the same time.".to_owned(),
        ));
    }
    let outcome = api.handle.kill_tasks(ids, scale, wipe, force).await?;
    if let Some(deployment) = &outcome.deployment {
        return Ok(deployment_response(StatusCode::OK, deployment, None));
    }
    let apps = api.handle.apps().await;
    let app_of = |t: &crate::handle::TaskView| apps.iter().find(|s| s.app.id == t.app_id).map(|s| &s.app);
    let tasks: Vec<Value> = outcome.killed.iter().map(|t| json::task(t, app_of(t))).collect();
    if single {
        match tasks.into_iter().next() {
            Some(task) => Ok(Json(json!({ "task": task })).into_response()),
            None => Err(ApiError::not_found("Task does not exist".to_owned())),
        }
    } else {
        Ok(Json(json!({ "tasks": tasks })).into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_paths_name_the_app_and_what_follows() {
        assert_eq!(parse_app_path("shop/web"), AppPath::App("/shop/web".into()));
        assert_eq!(parse_app_path("/shop/web"), AppPath::App("/shop/web".into()));
        assert_eq!(parse_app_path("web/restart"), AppPath::Restart("/web".into()));
        assert_eq!(parse_app_path("/web/tasks"), AppPath::Tasks("/web".into()));
        assert_eq!(
            parse_app_path("/shop/web/tasks/shop_web.1"),
            AppPath::Task("/shop/web".into(), "shop_web.1".into())
        );
        assert_eq!(parse_app_path("web/versions"), AppPath::Versions("/web".into()));
        assert_eq!(
            parse_app_path("web/versions/2026-01-01T00:00:00.000Z"),
            AppPath::Version("/web".into(), "2026-01-01T00:00:00.000Z".into())
        );
    }

    #[test]
    fn a_lone_reserved_word_is_an_app_path() {
        assert_eq!(parse_app_path("tasks"), AppPath::App("/tasks".into()));
    }

    #[test]
    fn errors_of_one_app_of_many_are_prefixed_with_its_index() {
        let errors = ValidationErrors::single("Object is not valid", "/cpus", "bad");
        let prefixed = at_index(errors, 2);
        assert_eq!(prefixed.at("/(2)/cpus"), ["bad"]);
    }
}

//! `/v2/groups`: groups derived from app ids (`/shop/web` lies in `/shop`).
//!
//! Agora keeps no group objects: a group exists while an app lies in it.
//! GET shows the tree; POST and PUT deploy the apps of a group body (nested
//! groups included, ids relative to the group) in one deployment; PUT with
//! `scaleBy` scales every app of the group; DELETE removes every app in it.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Map, Value};

use super::apps::strip_read_only;
use super::error::{ApiError, parse_json};
use super::params::{Params, segments};
use super::{Api, deployment_response, json};
use crate::app::{AppDefinition, AppId, ValidationErrors};

type Pairs = Query<Vec<(String, String)>>;

/// The group id a URL path names (`/` for the root); an invalid one is 404.
fn group_id(path: &str) -> Result<String, ApiError> {
    let parts = segments(path);
    if parts.is_empty() {
        return Ok("/".to_owned());
    }
    let raw = format!("/{}", parts.join("/"));
    AppId::parse(&raw)
        .map(|id| id.as_str().to_owned())
        .map_err(|_| unknown_group(&raw))
}

fn unknown_group(id: &str) -> ApiError {
    ApiError::not_found(format!("Group '{id}' does not exist"))
}

fn group_segments(id: &str) -> Vec<&str> {
    segments(id)
}

fn invalid(path: impl Into<String>, error: impl Into<String>) -> ApiError {
    ApiError::invalid(ValidationErrors::single("Object is not valid", path, error))
}

/// Resolves `raw` (absolute, or relative to group `base`) to an absolute id.
fn resolve(raw: &str, base: &str, path: &str) -> Result<AppId, ApiError> {
    AppId::parse_relative_to(raw, &group_segments(base)).map_err(|e| invalid(path, e.to_string()))
}

/// Collects the apps of a group body (and of its nested groups) with ids
/// made absolute; errors carry their JSON path (`/apps(0)/cpus`).
fn collect_apps(
    body: &Map<String, Value>,
    group: &str,
    prefix: &str,
    apps: &mut Vec<AppDefinition>,
    errors: &mut ValidationErrors,
) {
    for (index, item) in body
        .get("apps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("{prefix}/apps({index})");
        let Some(object) = item.as_object() else {
            errors.add(path, "expected a JSON object");
            continue;
        };
        let mut object = object.clone();
        strip_read_only(&mut object);
        object.remove("version");
        let raw = object
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match AppId::parse_relative_to(&raw, &group_segments(group)) {
            Ok(id) => {
                object.insert("id".into(), Value::String(id.as_str().to_owned()));
            }
            Err(e) => {
                errors.add(format!("{path}/id"), e.to_string());
                continue;
            }
        }
        let bytes = serde_json::to_vec(&Value::Object(object)).unwrap_or_default();
        match AppDefinition::from_json(&bytes) {
            Ok(app) => apps.push(app),
            Err(e) => {
                for detail in e.details {
                    for error in detail.errors {
                        errors.add(format!("{path}{}", detail.path), error);
                    }
                }
            }
        }
    }
    for (index, item) in body
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("{prefix}/groups({index})");
        let Some(object) = item.as_object() else {
            errors.add(path, "expected a JSON object");
            continue;
        };
        let raw = object.get("id").and_then(Value::as_str).unwrap_or_default();
        match AppId::parse_relative_to(raw, &group_segments(group)) {
            Ok(id) => collect_apps(object, id.as_str(), &path, apps, errors),
            Err(e) => errors.add(format!("{path}/id"), e.to_string()),
        }
    }
}

/// The apps a group body deploys into group `group`.
fn group_apps(body: &Map<String, Value>, group: &str) -> Result<Vec<AppDefinition>, ApiError> {
    let mut apps = Vec::new();
    let mut errors = ValidationErrors::new("Object is not valid");
    collect_apps(body, group, "", &mut apps, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    if apps.is_empty() {
        return Err(invalid(
            "/apps",
            "a group needs at least one app: Agora derives groups from app ids",
        ));
    }
    Ok(apps)
}

fn body_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match parse_json(body)? {
        Value::Object(object) => Ok(object),
        _ => Err(ApiError::invalid(ValidationErrors::single(
            "Invalid JSON",
            "/",
            "expected a JSON object",
        ))),
    }
}

async fn definitions(api: &Api) -> Vec<AppDefinition> {
    api.handle.apps().await.into_iter().map(|s| s.app).collect()
}

async fn show(api: &Api, id: &str) -> Result<Response, ApiError> {
    let apps = definitions(api).await;
    if !json::group_exists(&apps, id) {
        return Err(unknown_group(id));
    }
    Ok(Json(json::group(&apps, id, jiff::Timestamp::now())).into_response())
}

/// `GET /v2/groups`: the root group.
pub(crate) async fn get_root(State(api): State<Api>) -> Result<Response, ApiError> {
    show(&api, "/").await
}

/// `GET /v2/groups/{id}`.
pub(crate) async fn get_path(State(api): State<Api>, Path(path): Path<String>) -> Result<Response, ApiError> {
    show(&api, &group_id(&path)?).await
}

async fn create(
    api: &Api,
    base: &str,
    params: &Params,
    uri: &Uri,
    body: &[u8],
) -> Result<Response, ApiError> {
    let force = params.flag("force", false)?;
    let body = body_object(body)?;
    let Some(raw) = body.get("id").and_then(Value::as_str) else {
        return Err(invalid("/id", "must not be empty"));
    };
    let id = resolve(raw, base, "/id")?;
    let existing = definitions(api).await;
    if json::group_exists(&existing, id.as_str()) {
        return Err(ApiError::Service(crate::handle::ServiceError::Conflict {
            message: format!("Group {id} is already created. Use PUT to change this group."),
            deployments: Vec::new(),
        }));
    }
    let apps = group_apps(&body, id.as_str())?;
    let deployment = api.handle.update_apps(apps.clone(), force).await?;
    for app in &apps {
        api.posted(uri, app).await;
    }
    let location = format!("/v2/groups{id}");
    Ok(deployment_response(
        StatusCode::CREATED,
        &deployment,
        Some(&location),
    ))
}

/// `POST /v2/groups`: creates the group named by the body's `id`.
pub(crate) async fn create_root(
    State(api): State<Api>,
    Query(pairs): Pairs,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    create(&api, "/", &Params::new(pairs), &uri, &body).await
}

/// `POST /v2/groups/{id}`: creates a group inside `{id}`.
pub(crate) async fn create_path(
    State(api): State<Api>,
    Path(path): Path<String>,
    Query(pairs): Pairs,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let base = group_id(&path)?;
    create(&api, &base, &Params::new(pairs), &uri, &body).await
}

/// Every app in group `group`, instances scaled by `factor` (rounded up).
fn scaled(apps: Vec<AppDefinition>, group: &str, factor: f64) -> Vec<AppDefinition> {
    apps.into_iter()
        .filter(|a| json::in_group(&a.id, group))
        .map(|mut a| {
            let instances = (f64::from(a.instances) * factor).ceil();
            a.instances = if instances.is_finite() && instances > 0.0 {
                instances.min(f64::from(u32::MAX)) as u32
            } else {
                0
            };
            a
        })
        .collect()
}

async fn update(api: &Api, id: &str, params: &Params, uri: &Uri, body: &[u8]) -> Result<Response, ApiError> {
    let force = params.flag("force", false)?;
    let body = body_object(body)?;
    if body.get("version").is_some_and(|v| !v.is_null()) {
        return Err(invalid(
            "/version",
            "group versions are not kept: roll back each app with PUT /v2/apps/{id} {\"version\": …}",
        ));
    }
    let apps = if let Some(factor) = body.get("scaleBy").filter(|v| !v.is_null()) {
        let Some(factor) = factor.as_f64().filter(|f| f.is_finite() && *f >= 0.0) else {
            return Err(invalid("/scaleBy", "expected a number of 0 or more"));
        };
        let existing = definitions(api).await;
        if !json::group_exists(&existing, id) {
            return Err(unknown_group(id));
        }
        scaled(existing, id, factor)
    } else {
        group_apps(&body, id)?
    };
    let deployment = api.handle.update_apps(apps.clone(), force).await?;
    for app in &apps {
        api.posted(uri, app).await;
    }
    Ok(deployment_response(StatusCode::OK, &deployment, None))
}

/// `PUT /v2/groups`: deploys the apps of the body into the root group.
pub(crate) async fn put_root(
    State(api): State<Api>,
    Query(pairs): Pairs,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    update(&api, "/", &Params::new(pairs), &uri, &body).await
}

/// `PUT /v2/groups/{id}`: deploys the apps of the body into `{id}`, or
/// scales it (`{"scaleBy": 2}`).
pub(crate) async fn put_path(
    State(api): State<Api>,
    Path(path): Path<String>,
    Query(pairs): Pairs,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = group_id(&path)?;
    update(&api, &id, &Params::new(pairs), &uri, &body).await
}

async fn remove(api: &Api, id: &str, params: &Params) -> Result<Response, ApiError> {
    let force = params.flag("force", false)?;
    let ids: Vec<AppId> = definitions(api)
        .await
        .into_iter()
        .filter(|a| json::in_group(&a.id, id))
        .map(|a| a.id)
        .collect();
    if ids.is_empty() && id != "/" {
        return Err(unknown_group(id));
    }
    let deployment = api.handle.delete_apps(ids, force).await?;
    Ok(deployment_response(StatusCode::OK, &deployment, None))
}

/// `DELETE /v2/groups`: removes every app.
pub(crate) async fn delete_root(State(api): State<Api>, Query(pairs): Pairs) -> Result<Response, ApiError> {
    remove(&api, "/", &Params::new(pairs)).await
}

/// `DELETE /v2/groups/{id}`: removes every app in the group.
pub(crate) async fn delete_path(
    State(api): State<Api>,
    Path(path): Path<String>,
    Query(pairs): Pairs,
) -> Result<Response, ApiError> {
    let id = group_id(&path)?;
    remove(&api, &id, &Params::new(pairs)).await
}

//! `/v2/deployments`: running deployments, and cancelling one.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::Value;

use super::error::ApiError;
use super::params::Params;
use super::{Api, deployment_response, json};
use crate::handle::{DeploymentId, ServiceError};

/// `GET /v2/deployments`: a JSON array of deployments.
pub(crate) async fn list(State(api): State<Api>) -> Response {
    let deployments: Vec<Value> = api
        .handle
        .deployments()
        .await
        .iter()
        .map(json::deployment)
        .collect();
    Json(Value::Array(deployments)).into_response()
}

/// `DELETE /v2/deployments/{id}`: rolls the deployment back with a new one
/// (200 with its `{deploymentId, version}`), or with `force=true` just
/// stops it (202, empty body).
pub(crate) async fn cancel(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let force = Params::new(pairs).flag("force", false)?;
    let deployment_id = DeploymentId::new(id.clone());
    match api.handle.cancel_deployment(&deployment_id, force).await {
        Ok(Some(rollback)) => Ok(deployment_response(StatusCode::OK, &rollback, None)),
        Ok(None) => Ok(StatusCode::ACCEPTED.into_response()),
        Err(ServiceError::NotFound(_)) => {
            Err(ApiError::not_found(format!("DeploymentPlan {id} does not exist")))
        }
        Err(e) => Err(e.into()),
    }
}

//! Errors of the REST API, answered with Marathon's status codes and bodies:
//! `{"message": …}` (400, 404, 500, 503), `{"message": …, "deployments":
//! [{"id": …}]}` (409) and `{"message": …, "details": [{"path", "errors"}]}`
//! (422).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use crate::app::{AppId, ValidationErrors};
use crate::handle::ServiceError;

/// Why a request failed.
#[derive(Debug)]
pub enum ApiError {
    /// An error from the framework (404, 409, 422, 503, 500).
    Service(ServiceError),
    /// Malformed request: bad query parameter, unparsable body (400).
    BadRequest(String),
    /// A body that is not JSON at all (400, Marathon's `Invalid JSON`).
    InvalidJson(String),
}

impl ApiError {
    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::Service(ServiceError::NotFound(message.into()))
    }

    /// Marathon's 404 for an unknown app.
    pub fn unknown_app(id: &str) -> Self {
        Self::not_found(format!("App '{id}' does not exist"))
    }

    /// 422 with Marathon's validation body.
    pub fn invalid(errors: ValidationErrors) -> Self {
        Self::Service(ServiceError::Invalid(errors))
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Service(e) => {
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Self::BadRequest(_) | Self::InvalidJson(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> serde_json::Value {
        match self {
            Self::Service(ServiceError::Conflict { message, deployments }) => json!({
                "message": message,
                "deployments": deployments.iter().map(|d| json!({"id": d.as_str()})).collect::<Vec<_>>(),
            }),
            Self::Service(ServiceError::Invalid(errors)) => {
                serde_json::to_value(errors).unwrap_or_else(|_| json!({"message": errors.message}))
            }
            Self::Service(other) => json!({"message": other.to_string()}),
            Self::BadRequest(message) => json!({"message": message}),
            Self::InvalidJson(details) => json!({"message": "Invalid JSON", "details": details}),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        Self::Service(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}

/// Replaces the framework's 404 message for an app with Marathon's.
pub fn app_not_found(id: &AppId) -> impl FnOnce(ServiceError) -> ApiError + '_ {
    move |e| match e {
        ServiceError::NotFound(_) => ApiError::unknown_app(id.as_str()),
        other => ApiError::Service(other),
    }
}

/// Parses a request body as JSON; anything else is Marathon's 400 `Invalid JSON`.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidJson("the request body is empty".to_owned()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::DeploymentId;

    #[test]
    fn a_conflict_lists_the_deployments_in_the_way() {
        let e = ApiError::from(ServiceError::Conflict {
            message: "App is locked by one or more deployments.".into(),
            deployments: vec![DeploymentId::new("d-1")],
        });
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert_eq!(
            e.body(),
            json!({"message": "App is locked by one or more deployments.", "deployments": [{"id": "d-1"}]})
        );
    }

    #[test]
    fn an_unknown_app_has_marathons_message() {
        let e = ApiError::unknown_app("/x");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.body(), json!({"message": "App '/x' does not exist"}));
    }

    #[test]
    fn validation_errors_are_422_with_details() {
        let e = ApiError::invalid(ValidationErrors::single(
            "Object is not valid",
            "/cpus",
            "got -1.0, expected 0.0 or more",
        ));
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            e.body(),
            json!({"message": "Object is not valid",
                   "details": [{"path": "/cpus", "errors": ["got -1.0, expected 0.0 or more"]}]})
        );
    }

    #[test]
    fn framework_errors_keep_their_status() {
        assert_eq!(
            ApiError::from(ServiceError::Unavailable("x".into())).status(),
            503
        );
        assert_eq!(ApiError::from(ServiceError::Internal("x".into())).status(), 500);
    }

    #[test]
    fn a_body_that_is_not_json_is_400_invalid_json() {
        let e = parse_json(b"{nope").expect_err("not JSON");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.body()["message"], "Invalid JSON");
        assert!(parse_json(b"  ").is_err());
        assert_eq!(parse_json(br#"{"a":1}"#).unwrap(), json!({"a": 1}));
    }

    #[test]
    fn the_app_404_replaces_only_not_found() {
        let id = AppId::parse("/shop/web").unwrap();
        let e = app_not_found(&id)(ServiceError::NotFound("whatever".into()));
        assert_eq!(e.body(), json!({"message": "App '/shop/web' does not exist"}));
        let e = app_not_found(&id)(ServiceError::Unavailable("down".into()));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

//! The one listener of a master with `--zk`: every request goes through a
//! [`Switch`] that hands it to the current term's routes while this master
//! leads, and otherwise points the caller at the leader:
//!
//! - HTTP: 307 with `Location: http://LEADER{path and query}`, or 503 when
//!   no other master is known to lead;
//! - gRPC: UNAVAILABLE "not the leader; the leader is at HOST:PORT" with
//!   metadata `agora-leader: HOST:PORT`, or UNAVAILABLE without it.
//!
//! `GET /health` is always answered here: 200 with `{"leader": bool,
//! "leader_address": "HOST:PORT" | null, "status": "..."}`.

use std::future::poll_fn;

use agora_store::{LEADER_METADATA, LeaderInfo, Term};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::watch;
use tonic::Status;
use tonic::codegen::Service;
use tonic::metadata::MetadataValue;

/// What this master is doing now.
#[derive(Clone)]
pub enum Role {
    /// Campaigning (or stepping down): callers are sent to the leader.
    Standby,
    /// Elected but not serving yet (waiting for a quorum, loading the
    /// registry): callers get 503 / UNAVAILABLE saying why.
    Elected {
        /// Shown to callers and in `/health`.
        status: String,
    },
    /// Leading: requests go to this term's routes while the term lasts.
    Leading {
        /// The term the routes belong to.
        term: Term,
        /// The gRPC services and HTTP routes of this term's actor.
        routes: Router,
    },
}

/// Routes each request by the current [`Role`].
#[derive(Clone)]
pub struct Switch {
    role: watch::Receiver<Role>,
    /// The election's leader data as it changes (a [`LeaderInfo`]).
    leader: watch::Receiver<Option<Vec<u8>>>,
    /// `HOST:PORT` this master publishes when it campaigns.
    address: String,
}

impl Switch {
    /// A switch following `role`, sending callers to the leader `leader` names.
    pub fn new(
        role: watch::Receiver<Role>,
        leader: watch::Receiver<Option<Vec<u8>>>,
        address: String,
    ) -> Self {
        Self {
            role,
            leader,
            address,
        }
    }

    /// The routes to serve with, while this master leads a current term.
    fn leading(&self) -> Option<Router> {
        match &*self.role.borrow() {
            Role::Leading { term, routes } if term.is_current() => Some(routes.clone()),
            _ => None,
        }
    }

    /// Another master's address, if the election names one as leader.
    fn leader_elsewhere(&self) -> Option<String> {
        let bytes = self.leader.borrow().clone()?;
        let info = LeaderInfo::from_bytes(&bytes).ok()?;
        (info.address != self.address).then_some(info.address)
    }

    /// Why this master does not serve, when no other leader is known.
    fn no_leader_reason(&self) -> String {
        match &*self.role.borrow() {
            Role::Elected { status } => status.clone(),
            Role::Leading { .. } => "this master's leadership term has ended".to_owned(),
            Role::Standby => "no leader is elected yet".to_owned(),
        }
    }

    /// The answer to a caller this master does not serve.
    fn refuse(&self, request: &Request) -> Response {
        let grpc = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"));
        match (grpc, self.leader_elsewhere()) {
            (true, Some(leader)) => {
                let mut status = Status::unavailable(format!("not the leader; the leader is at {leader}"));
                if let Ok(value) = MetadataValue::try_from(leader.as_str()) {
                    status.metadata_mut().insert(LEADER_METADATA, value);
                }
                status.into_http()
            }
            (true, None) => {
                Status::unavailable(format!("not the leader; {}", self.no_leader_reason())).into_http()
            }
            (false, Some(leader)) => {
                let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
                let location = format!("http://{leader}{target}");
                let mut response = (
                    StatusCode::TEMPORARY_REDIRECT,
                    Json(json!({ "message": format!("not the leader; the leader is at {leader}") })),
                )
                    .into_response();
                match HeaderValue::try_from(location) {
                    Ok(value) => {
                        response.headers_mut().insert(header::LOCATION, value);
                        response
                    }
                    Err(_) => unavailable(format!("not the leader; the leader is at {leader}")),
                }
            }
            (false, None) => unavailable(format!("not the leader; {}", self.no_leader_reason())),
        }
    }
}

fn unavailable(message: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "message": message })),
    )
        .into_response()
}

/// The router of the master's one listener.
pub fn router(switch: Switch) -> Router {
    Router::new()
        .route("/health", get(health))
        .fallback(dispatch)
        .with_state(switch)
}

/// `GET /health`: whether this master leads, and who does.
async fn health(State(switch): State<Switch>) -> Json<serde_json::Value> {
    if switch.leading().is_some() {
        return Json(json!({
            "leader": true,
            "leader_address": switch.address,
            "status": "leading",
        }));
    }
    let leader = switch.leader_elsewhere();
    let status = match &leader {
        Some(_) => "standby".to_owned(),
        None => switch.no_leader_reason(),
    };
    Json(json!({ "leader": false, "leader_address": leader, "status": status }))
}

/// Every other request: served while leading, else refused (see the module docs).
async fn dispatch(State(switch): State<Switch>, request: Request) -> Response {
    let Some(mut routes) = switch.leading() else {
        return switch.refuse(&request);
    };
    // An axum router is always ready and never fails.
    match poll_fn(|cx| Service::<Request>::poll_ready(&mut routes, cx)).await {
        Ok(()) => {}
        Err(never) => match never {},
    }
    match routes.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use agora_store::{Election, MemoryElection};
    use axum::body::Body;
    use tonic::Code;

    use super::*;

    fn leader_data(address: &str) -> Option<Vec<u8>> {
        Some(LeaderInfo::new(address).to_bytes())
    }

    async fn send(router: &Router, request: Request) -> Response {
        let mut router = router.clone();
        router.call(request).await.unwrap_or_else(|never| match never {})
    }

    fn get_request(uri: &str) -> Request {
        Request::builder().uri(uri).body(Body::empty()).unwrap()
    }

    fn grpc_request() -> Request {
        Request::builder()
            .method("POST")
            .uri("/agora.v1.Scheduler/Subscribe")
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(Body::empty())
            .unwrap()
    }

    async fn json_body(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn standby(leader: Option<Vec<u8>>) -> (watch::Sender<Role>, watch::Sender<Option<Vec<u8>>>, Router) {
        let (role_tx, role) = watch::channel(Role::Standby);
        let (leader_tx, leader) = watch::channel(leader);
        let router = router(Switch::new(role, leader, "10.0.0.1:5050".into()));
        (role_tx, leader_tx, router)
    }

    #[tokio::test]
    async fn a_standby_redirects_http_to_the_leader_with_path_and_query() {
        let (_role, _leader, router) = standby(leader_data("10.0.0.2:5050"));
        let response = send(&router, get_request("/state?x=1")).await;
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            response.headers().get(header::LOCATION).unwrap(),
            "http://10.0.0.2:5050/state?x=1"
        );
    }

    #[tokio::test]
    async fn a_standby_answers_grpc_unavailable_naming_the_leader_in_metadata() {
        let (_role, _leader, router) = standby(leader_data("10.0.0.2:5050"));
        let response = send(&router, grpc_request()).await;
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "not the leader; the leader is at 10.0.0.2:5050");
        assert_eq!(status.metadata().get(LEADER_METADATA).unwrap(), "10.0.0.2:5050");
    }

    #[tokio::test]
    async fn without_a_known_leader_callers_get_503_and_unavailable_without_metadata() {
        let (_role, _leader, router) = standby(None);
        let response = send(&router, get_request("/state")).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let status = Status::from_header_map(send(&router, grpc_request()).await.headers()).unwrap();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.metadata().get(LEADER_METADATA).is_none());
    }

    #[tokio::test]
    async fn a_standby_never_redirects_to_its_own_address() {
        let (_role, _leader, router) = standby(leader_data("10.0.0.1:5050"));
        let response = send(&router, get_request("/state")).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn an_elected_master_waiting_to_serve_says_why() {
        let (role, _leader, router) = standby(leader_data("10.0.0.1:5050"));
        role.send_replace(Role::Elected {
            status: "waiting for 2 masters".into(),
        });
        let response = send(&router, get_request("/state")).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            json_body(response).await["message"]
                .as_str()
                .unwrap()
                .contains("waiting for 2 masters")
        );
        let health = json_body(send(&router, get_request("/health")).await).await;
        assert_eq!(health["leader"], false);
        assert_eq!(health["status"], "waiting for 2 masters");
    }

    #[tokio::test]
    async fn health_names_the_leader_from_a_standby() {
        let (_role, _leader, router) = standby(leader_data("10.0.0.2:5050"));
        let response = send(&router, get_request("/health")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let health = json_body(response).await;
        assert_eq!(health["leader"], false);
        assert_eq!(health["leader_address"], "10.0.0.2:5050");
    }

    #[tokio::test]
    async fn a_leader_serves_its_routes_only_while_its_term_lasts() {
        let (role, _leader, router) = standby(leader_data("10.0.0.1:5050"));
        let election = MemoryElection::new();
        let leadership = election.campaign(b"me".to_vec()).await.unwrap();
        let routes = Router::new().route("/state", get(|| async { "served" }));
        role.send_replace(Role::Leading {
            term: leadership.term(),
            routes,
        });
        let response = send(&router, get_request("/state")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let health = json_body(send(&router, get_request("/health")).await).await;
        assert_eq!(
            (health["leader"].clone(), health["leader_address"].clone()),
            (json!(true), json!("10.0.0.1:5050"))
        );

        // The term ends; the role has not been switched yet: nothing is served.
        election.depose();
        let response = send(&router, get_request("/state")).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let health = json_body(send(&router, get_request("/health")).await).await;
        assert_eq!(health["leader"], false);
    }
}

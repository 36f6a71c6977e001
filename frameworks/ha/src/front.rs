//! [`Front`]: the one HTTP server of an instance, for all its terms. While
//! the instance leads, calls go to the REST API of the current term; while it
//! stands by, they are forwarded to the leader. `/ping` is always answered
//! here.

use std::sync::Arc;
use std::time::Duration;

use agora_store::{LeaderInfo, Term};
use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::proxy::{self, FORWARDED_BY};

/// How long a standby waits to connect to the leader.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the instance does with a call.
#[derive(Clone)]
enum Role {
    /// Forward it to the leader.
    Standby,
    /// Answer it with this term's REST API, while the term lasts.
    Leading { api: Router, term: Term },
}

struct Shared {
    /// `HOST:PORT` this instance serves on (what it campaigns with).
    address: String,
    role: watch::Sender<Role>,
    /// The election's leader data as it changes.
    leader: watch::Receiver<Option<Vec<u8>>>,
    client: reqwest::Client,
    /// True once the instance shuts down: every streaming answer ends.
    closing: watch::Sender<bool>,
}

/// The HTTP face of one instance of a highly available framework (see the
/// module docs). Cheap to clone.
#[derive(Clone)]
pub struct Front {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("address", &self.shared.address)
            .field("leading", &self.is_leading())
            .finish()
    }
}

impl Front {
    /// A front for the instance serving at `address`, standing by; `leader`
    /// is the election's leader data ([`LeaderInfo`] bytes).
    pub fn new(address: String, leader: watch::Receiver<Option<Vec<u8>>>) -> Front {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot configure the forwarding client; using the defaults");
                reqwest::Client::new()
            });
        Front {
            shared: Arc::new(Shared {
                address,
                role: watch::channel(Role::Standby).0,
                leader,
                client,
                closing: watch::channel(false).0,
            }),
        }
    }

    /// From now on, answers calls with `api` while `term` lasts.
    pub fn lead(&self, api: Router, term: Term) {
        self.shared.role.send_replace(Role::Leading { api, term });
    }

    /// From now on, forwards calls to the leader. Answers being streamed
    /// from the term's API end when that term ends.
    pub fn stand_by(&self) {
        self.shared.role.send_replace(Role::Standby);
    }

    /// Whether calls are answered here (leading, and the term lasts).
    pub fn is_leading(&self) -> bool {
        match &*self.shared.role.borrow() {
            Role::Leading { term, .. } => term.is_current(),
            Role::Standby => false,
        }
    }

    /// Ends every streaming answer (the instance shuts down).
    pub fn close(&self) {
        self.shared.closing.send_replace(true);
    }

    /// The leader's address as the election last showed it.
    pub fn leader_address(&self) -> Option<String> {
        let data = self.shared.leader.borrow().clone()?;
        LeaderInfo::from_bytes(&data).ok().map(|info| info.address)
    }

    /// The instance's routes: `/ping` here, everything else by role.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/ping", get(ping))
            .fallback(dispatch)
            .with_state(self.clone())
    }
}

async fn ping() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "pong").into_response()
}

async fn dispatch(State(front): State<Front>, request: Request) -> Response {
    let role = front.shared.role.borrow().clone();
    if let Role::Leading { api, term } = role
        && term.is_current()
    {
        let response = match api.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        return front.until_term_ends(response, term);
    }
    if let Some(by) = request.headers().get(FORWARDED_BY) {
        let by = String::from_utf8_lossy(by.as_bytes()).into_owned();
        return proxy::message(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not the leader, and {by} forwarded this call here as if it were; retry"),
        );
    }
    match front.leader_address() {
        None => proxy::message(StatusCode::SERVICE_UNAVAILABLE, "no leader is elected yet; retry"),
        Some(leader) if leader == front.shared.address => proxy::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "this instance is changing its leadership; retry",
        ),
        Some(leader) => {
            let closing = front.shared.closing.subscribe();
            proxy::forward(
                &front.shared.client,
                &leader,
                &front.shared.address,
                request,
                closing,
            )
            .await
        }
    }
}

impl Front {
    /// A streaming answer (no exact length) of `term`'s API ends when the
    /// term ends or the instance shuts down; other answers pass as they are.
    fn until_term_ends(&self, response: Response, term: Term) -> Response {
        if response.body().size_hint().exact().is_some() {
            return response;
        }
        let mut closing = self.shared.closing.subscribe();
        let over = async move {
            tokio::select! {
                _ = term.lost() => {}
                _ = closing.wait_for(|c| *c) => {}
            }
        };
        let (parts, body) = response.into_parts();
        Response::from_parts(parts, Body::from_stream(body.into_data_stream().take_until(over)))
    }
}

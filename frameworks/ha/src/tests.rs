#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: panics are the failure report

use std::convert::Infallible;
use std::sync::Arc;

use agora_store::MemoryElection;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::{any, get};
use tokio::sync::{mpsc, oneshot};

use super::*;

const WAIT: Duration = Duration::from_secs(10);

/// Serves `router` on a free loopback port; its `HOST:PORT`.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    address
}

/// A stand-in leader that answers every call with what it received.
fn echo() -> Router {
    Router::new().fallback(any(
        |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            };
            let echoed = serde_json::json!({
                "method": method.as_str(),
                "uri": uri.to_string(),
                "custom": header("x-custom"),
                "contentType": header("content-type"),
                "forwardedBy": header(FORWARDED_BY),
                "body": String::from_utf8_lossy(&body),
            });
            (StatusCode::CREATED, [("x-answer", "yes")], axum::Json(echoed))
        },
    ))
}

/// Routes with an event stream that sends one event and then stays open.
fn streaming() -> Router {
    Router::new().route(
        "/events",
        get(|| async {
            let events = async_stream::stream! {
                yield Ok::<_, Infallible>(Bytes::from_static(b"data: one\n\n"));
                std::future::pending::<()>().await;
            };
            axum::body::Body::from_stream(events)
        }),
    )
}

/// An election in which `leader` leads (for as long as the returned term is kept).
async fn led_by(leader: &str) -> (MemoryElection, Leadership) {
    let election = MemoryElection::new();
    let term = election
        .campaign(LeaderInfo::new(leader).to_bytes())
        .await
        .unwrap();
    (election, term)
}

/// A standing-by front at a free address, serving; its address.
async fn standby(election: &MemoryElection) -> (Front, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let front = Front::new(address.clone(), election.watch_leader());
    let router = front.router();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    (front, address)
}

/// Reads the first chunk of a streaming answer.
async fn first_chunk(response: &mut reqwest::Response) -> String {
    let chunk = tokio::time::timeout(WAIT, response.chunk())
        .await
        .expect("a chunk in time");
    String::from_utf8(chunk.unwrap().expect("not the end").to_vec()).unwrap()
}

#[tokio::test]
async fn a_standby_forwards_method_path_query_headers_and_body_to_the_leader() {
    let leader = serve(echo()).await;
    let (election, _term) = led_by(&leader).await;
    let (_front, standby) = standby(&election).await;

    let response = reqwest::Client::new()
        .post(format!("http://{standby}/v2/apps?force=true&embed=apps.tasks"))
        .header("x-custom", "kept")
        .header("content-type", "application/json")
        .body(r#"{"id":"/web"}"#)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-answer"], "yes");
    let echoed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["uri"], "/v2/apps?force=true&embed=apps.tasks");
    assert_eq!(echoed["custom"], "kept");
    assert_eq!(echoed["contentType"], "application/json");
    assert_eq!(echoed["body"], r#"{"id":"/web"}"#);
    assert_eq!(echoed["forwardedBy"], standby.as_str());
}

#[tokio::test]
async fn a_standby_streams_the_leaders_answer_as_it_comes() {
    let leader = serve(streaming()).await;
    let (election, _term) = led_by(&leader).await;
    let (_front, standby) = standby(&election).await;

    let mut events = reqwest::get(format!("http://{standby}/events")).await.unwrap();

    assert_eq!(events.status(), StatusCode::OK);
    assert_eq!(first_chunk(&mut events).await, "data: one\n\n");
}

#[tokio::test]
async fn a_standby_that_knows_no_leader_answers_503_but_still_answers_ping() {
    let election = MemoryElection::new();
    let (_front, standby) = standby(&election).await;

    let apps = reqwest::get(format!("http://{standby}/v2/apps")).await.unwrap();
    let ping = reqwest::get(format!("http://{standby}/ping")).await.unwrap();

    assert_eq!(apps.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = apps.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("no leader"), "{body}");
    assert_eq!(ping.status(), StatusCode::OK);
    assert_eq!(ping.text().await.unwrap(), "pong");
}

#[tokio::test]
async fn a_standby_does_not_forward_a_call_that_was_forwarded_to_it() {
    let leader = serve(echo()).await;
    let (election, _term) = led_by(&leader).await;
    let (_front, standby) = standby(&election).await;

    let response = reqwest::Client::new()
        .get(format!("http://{standby}/v2/apps"))
        .header(FORWARDED_BY, "10.0.0.9:8080")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_standby_whose_leader_is_gone_answers_502() {
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let (election, _term) = led_by(&gone).await;
    let (_front, standby) = standby(&election).await;

    let response = reqwest::get(format!("http://{standby}/v2/apps")).await.unwrap();

    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn a_leader_answers_with_its_terms_api_and_ends_its_streams_with_the_term() {
    let election = MemoryElection::new();
    let (front, address) = standby(&election).await;
    let leadership = election
        .campaign(LeaderInfo::new(&address).to_bytes())
        .await
        .unwrap();
    front.lead(streaming(), leadership.term());
    assert!(front.is_leading());

    let mut events = reqwest::get(format!("http://{address}/events")).await.unwrap();
    assert_eq!(first_chunk(&mut events).await, "data: one\n\n");
    election.depose();

    let end = tokio::time::timeout(WAIT, events.chunk())
        .await
        .expect("the stream ends in time");
    assert!(matches!(end, Ok(None)), "{end:?}");
    assert!(
        !front.is_leading(),
        "a leader whose term ended answers nothing itself"
    );
    let after = reqwest::get(format!("http://{address}/events")).await.unwrap();
    assert_eq!(after.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn an_unspecified_listen_address_is_advertised_with_the_hostname() {
    let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
    let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    assert_eq!(advertised_address(any, "node-1"), "node-1:8080");
    assert_eq!(advertised_address(loopback, "node-1"), "127.0.0.1:8080");
}

#[tokio::test]
async fn on_zookeeper_campaigns_under_leader_and_fences_each_terms_state() {
    use agora_store::{Store, StoreError, Write, ZkOptions, ZkStore, ZkUrl};
    let server = agora_store::zk_server::ZkServer::launch().await.unwrap();
    let url = ZkUrl::parse(&server.url("/agora-fw")).unwrap();
    let (election, store_for_term) = on_zookeeper(&url, ZkOptions::default()).unwrap();

    let leadership = election
        .campaign(LeaderInfo::new("a:1").to_bytes())
        .await
        .unwrap();
    let store = store_for_term(&leadership).await.unwrap();
    store.write(vec![Write::put("/k", b"v".to_vec())]).await.unwrap();

    let leader = agora_store::current_leader(&url, ZkOptions::default())
        .await
        .unwrap();
    assert_eq!(
        leader,
        Some(LeaderInfo::new("a:1")),
        "the election is PATH/leader"
    );
    let state = ZkStore::connect(&url.child("state").unwrap(), ZkOptions::default())
        .await
        .unwrap();
    assert_eq!(
        state.get("/k").await.unwrap(),
        Some(b"v".to_vec()),
        "the state is under PATH/state"
    );
    leadership.resign().await;
    let late = store.write(vec![Write::put("/k", b"late".to_vec())]).await;
    assert!(matches!(late, Err(StoreError::Fenced(_))), "{late:?}");
    assert_eq!(state.get("/k").await.unwrap(), Some(b"v".to_vec()));
}

// ---------------------------------------------------------------------------
// run_elected, with a stand-in framework

#[derive(Debug, thiserror::Error)]
#[error("stand-in failure (fatal: {fatal})")]
struct Failure {
    fatal: bool,
}

/// A framework that logs what happens to it and fails when told to.
struct StandIn {
    name: String,
    log: mpsc::UnboundedSender<String>,
    fail: Option<oneshot::Receiver<Failure>>,
}

impl Elected for StandIn {
    type Error = Failure;

    fn api(&self) -> Router {
        let name = self.name.clone();
        Router::new().route("/who", get(move || async move { name }))
    }

    async fn stopped(&mut self) -> Result<(), Failure> {
        match self.fail.take() {
            Some(fail) => match fail.await {
                Ok(failure) => Err(failure),
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    async fn halt(self) {
        let _ = self.log.send(format!("halt {}", self.name));
    }

    async fn stop(self) -> Result<(), Failure> {
        let _ = self.log.send(format!("stop {}", self.name));
        Ok(())
    }

    fn is_fatal(error: &Failure) -> bool {
        error.fatal
    }
}

/// One instance under `run_elected`, with its log and a way to make its
/// current term's framework fail.
struct Instance {
    address: String,
    log: mpsc::UnboundedReceiver<String>,
    failures: mpsc::UnboundedReceiver<oneshot::Sender<Failure>>,
    shutdown: Option<oneshot::Sender<()>>,
    run: tokio::task::JoinHandle<Result<(), ElectedError<Failure>>>,
}

impl Instance {
    async fn start(election: &MemoryElection, label: &str) -> Instance {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (log_tx, log) = mpsc::unbounded_channel();
        let (failures_tx, failures) = mpsc::unbounded_channel();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let label = label.to_owned();
        let mut terms = 0;
        let start = move |leadership: &Leadership| {
            assert!(leadership.is_current());
            terms += 1;
            let name = format!("{label}{terms}");
            let (fail_tx, fail) = oneshot::channel();
            let _ = failures_tx.send(fail_tx);
            let _ = log_tx.send(format!("start {name}"));
            let log = log_tx.clone();
            async move {
                Ok(StandIn {
                    name,
                    log,
                    fail: Some(fail),
                })
            }
        };
        let election: SharedElection = Arc::new(election.clone());
        let run = tokio::spawn(run_elected(election, address.clone(), listener, start, async {
            let _ = stopped.await;
        }));
        Instance {
            address,
            log,
            failures,
            shutdown: Some(shutdown),
            run,
        }
    }

    async fn next_log(&mut self) -> String {
        tokio::time::timeout(WAIT, self.log.recv())
            .await
            .expect("a log entry in time")
            .expect("the instance runs")
    }

    /// Makes the framework of the current (latest) term stop with `failure`.
    async fn fail(&mut self, failure: Failure) {
        let mut latest = None;
        while let Ok(tx) = self.failures.try_recv() {
            latest = Some(tx);
        }
        latest.expect("a term started").send(failure).unwrap();
    }

    async fn who(&self) -> (StatusCode, String) {
        let response = reqwest::get(format!("http://{}/who", self.address))
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    async fn shut_down(&mut self) -> Result<(), ElectedError<Failure>> {
        let _ = self.shutdown.take().unwrap().send(());
        tokio::time::timeout(WAIT, &mut self.run)
            .await
            .expect("stops in time")
            .unwrap()
    }
}

#[tokio::test]
async fn the_elected_instance_answers_and_the_standby_forwards_to_it() {
    let election = MemoryElection::new();
    let mut a = Instance::start(&election, "a").await;
    assert_eq!(a.next_log().await, "start a1");
    let mut b = Instance::start(&election, "b").await;

    assert_eq!(a.who().await, (StatusCode::OK, "a1".to_owned()));
    assert_eq!(b.who().await, (StatusCode::OK, "a1".to_owned()));
    b.shut_down().await.unwrap();
    a.shut_down().await.unwrap();
}

#[tokio::test]
async fn when_its_term_ends_an_instance_halts_its_framework_and_campaigns_again() {
    let election = MemoryElection::new();
    let mut a = Instance::start(&election, "a").await;
    assert_eq!(a.next_log().await, "start a1");

    election.depose();

    assert_eq!(a.next_log().await, "halt a1");
    assert_eq!(
        a.next_log().await,
        "start a2",
        "alone in the election, it leads the next term on fresh state"
    );
    assert_eq!(a.who().await, (StatusCode::OK, "a2".to_owned()));
    a.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_leader_whose_framework_fails_resigns_and_the_standby_takes_over() {
    let election = MemoryElection::new();
    let mut a = Instance::start(&election, "a").await;
    assert_eq!(a.next_log().await, "start a1");
    let mut b = Instance::start(&election, "b").await;

    a.fail(Failure { fatal: false }).await;

    assert_eq!(a.next_log().await, "halt a1");
    assert_eq!(b.next_log().await, "start b1");
    assert_eq!(a.who().await, (StatusCode::OK, "b1".to_owned()));
    b.shut_down().await.unwrap();
    a.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_fatal_failure_stops_the_instance_and_frees_the_leadership() {
    let election = MemoryElection::new();
    let mut a = Instance::start(&election, "a").await;
    assert_eq!(a.next_log().await, "start a1");

    a.fail(Failure { fatal: true }).await;

    let ended = tokio::time::timeout(WAIT, &mut a.run)
        .await
        .expect("stops")
        .unwrap();
    assert!(
        matches!(ended, Err(ElectedError::Framework(Failure { fatal: true }))),
        "{ended:?}"
    );
    assert_eq!(a.next_log().await, "halt a1");
    assert_eq!(election.leader().await.unwrap(), None);
}

#[tokio::test]
async fn shutdown_stops_the_framework_cleanly_and_hands_the_leadership_over() {
    let election = MemoryElection::new();
    let mut a = Instance::start(&election, "a").await;
    assert_eq!(a.next_log().await, "start a1");
    let mut b = Instance::start(&election, "b").await;

    a.shut_down().await.unwrap();

    assert_eq!(a.next_log().await, "stop a1");
    assert_eq!(b.next_log().await, "start b1");
    b.shut_down().await.unwrap();
}

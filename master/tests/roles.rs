//! The role API on a real socket: quota and weights over HTTP (stored in
//! the registry, so they survive a restart), `/roles`, and dynamic
//! reservations made through ACCEPT that survive a restart too.
#![allow(clippy::unwrap_used)] // a test binary: unwrap is the assertion

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_master::{MasterConfig, serve};
use agora_proto::Resources;
use agora_proto::v1::{
    self, agent_link_client::AgentLinkClient, event, master_message, scheduler_client::SchedulerClient,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);

/// A master serving from `dir` until `stop`.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(dir: &Path) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = MasterConfig::new(addr, dir.to_path_buf());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            serve(config, listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Running { addr, stop, server }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.server).await.unwrap().unwrap();
    }
}

/// A minimal HTTP/1.1 request; returns the status code and the JSON body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let code: u16 = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (
        code,
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    )
}

async fn get(addr: SocketAddr, path: &str) -> Value {
    let (code, body) = http(addr, "GET", path, "").await;
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

fn role<'a>(roles: &'a Value, name: &str) -> &'a Value {
    roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == name)
        .unwrap_or_else(|| panic!("no role {name} in {roles}"))
}

#[tokio::test]
async fn quota_and_weights_round_trip_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("master");
    let master = Running::start(&work).await;
    let addr = master.addr;
    let quota = json!({"guarantee": {"cpus": 2.0, "mem": 1024.0}, "limit": {"cpus": 4.0}});
    let (code, body) = http(addr, "PUT", "/quota/eng/web", &quota.to_string()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["role"], "eng/web");
    assert_eq!(body["guarantee"], quota["guarantee"]);
    let (code, body) = http(addr, "PUT", "/weights/eng/web", r#"{"weight": 3}"#).await;
    assert_eq!(code, 200, "{body}");
    master.stop().await;

    let master = Running::start(&work).await;
    let addr = master.addr;
    let quotas = get(addr, "/quota").await;
    assert_eq!(
        quotas,
        json!({"quotas": [{"role": "eng/web", "guarantee": quota["guarantee"], "limit": quota["limit"]}]})
    );
    assert_eq!(
        get(addr, "/weights").await,
        json!({"weights": [{"role": "eng/web", "weight": 3.0}]})
    );
    let roles = get(addr, "/roles").await;
    let web = role(&roles, "eng/web");
    assert_eq!(web["weight"], 3.0);
    assert_eq!(web["guarantee"]["cpus"], 2.0);
    assert_eq!(web["limit"], json!({"cpus": 4.0}));

    let (code, _) = http(addr, "DELETE", "/quota/eng/web", "").await;
    assert_eq!(code, 200);
    assert_eq!(get(addr, "/quota").await, json!({"quotas": []}));
    let (code, body) = http(addr, "DELETE", "/quota/eng/web", "").await;
    assert_eq!(code, 404, "{body}");
    master.stop().await;

    let master = Running::start(&work).await;
    assert_eq!(get(master.addr, "/quota").await, json!({"quotas": []}));
    master.stop().await;
}

#[tokio::test]
async fn bad_quota_and_weight_requests_are_refused_naming_the_field_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let master = Running::start(&dir.path().join("master")).await;
    let cases: &[(&str, &str, &str)] = &[
        (
            "/quota/prod",
            r#"{"guarantee": {"cpus": 2"#,
            "body: malformed JSON",
        ),
        (
            "/quota/prod",
            r#"{"guarantee": {"cpu": 2}}"#,
            "guarantee.cpu: unknown resource",
        ),
        (
            "/quota/prod",
            r#"{"guarantee": {"cpus": -2}}"#,
            "guarantee.cpus: must not be negative",
        ),
        (
            "/quota/prod",
            r#"{"guarantee": {"cpus": 8}, "limit": {"cpus": 4}}"#,
            "guarantee.cpus: 8 exceeds limit.cpus 4",
        ),
        ("/quota/a//b", r#"{"guarantee": {"cpus": 1}}"#, "role:"),
        ("/quota/*", r#"{"guarantee": {"cpus": 1}}"#, "role:"),
        (
            "/weights/prod",
            r#"{"weight": -1}"#,
            "weight: must be a finite number > 0",
        ),
        ("/weights/prod", r#"{"weight": "heavy"}"#, "weight:"),
        ("/weights/prod", r#"{"wieght": 2}"#, "wieght: unknown field"),
    ];
    for (path, body, words) in cases {
        let (code, answer) = http(master.addr, "PUT", path, body).await;
        assert_eq!(code, 400, "{path} {body}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(words), "{path} {body}: {message}");
    }
    assert_eq!(get(master.addr, "/quota").await, json!({"quotas": []}));
    assert_eq!(get(master.addr, "/weights").await, json!({"weights": []}));
    master.stop().await;
}

struct FakeAgent {
    id: String,
    _up: mpsc::Sender<v1::AgentMessage>,
    _down: Streaming<v1::MasterMessage>,
}

impl FakeAgent {
    async fn register(addr: SocketAddr, id: &str) -> FakeAgent {
        let mut client = AgentLinkClient::connect(format!("http://{addr}")).await.unwrap();
        let (up, rx) = mpsc::channel(16);
        let register = v1::Register {
            agent: Some(v1::AgentInfo {
                id: id.into(),
                hostname: "fake-host".into(),
                resources: Resources::parse("cpus:4;mem:1024").unwrap().to_proto(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let message = v1::AgentMessage {
            message: Some(v1::agent_message::Message::Register(register)),
        };
        up.send(message).await.unwrap();
        let mut down = client.attach(ReceiverStream::new(rx)).await.unwrap().into_inner();
        let first = tokio::time::timeout(WAIT, down.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let id = match first.message.unwrap() {
            master_message::Message::Registered(r) => r.agent_id,
            other => panic!("expected REGISTERED, got {other:?}"),
        };
        FakeAgent {
            id,
            _up: up,
            _down: down,
        }
    }
}

async fn next_event(events: &mut Streaming<v1::Event>) -> event::Event {
    loop {
        let e = tokio::time::timeout(WAIT, events.message())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("stream open")
            .event
            .unwrap();
        if !matches!(e, event::Event::Heartbeat(_)) {
            return e;
        }
    }
}

/// Subscribes a framework in `role`; returns its client, caller, events and first offer.
async fn framework_with_offer(
    addr: SocketAddr,
    role: &str,
) -> (
    SchedulerClient<Channel>,
    v1::Caller,
    Streaming<v1::Event>,
    v1::Offer,
) {
    let mut client = SchedulerClient::connect(format!("http://{addr}")).await.unwrap();
    let req = v1::SubscribeRequest {
        framework: Some(v1::FrameworkInfo {
            name: "test".into(),
            roles: vec![role.into()],
            failover_timeout_seconds: 60.0,
            ..Default::default()
        }),
        suppressed_roles: vec![],
    };
    let mut events = client.subscribe(req).await.unwrap().into_inner();
    let caller = match next_event(&mut events).await {
        event::Event::Subscribed(s) => v1::Caller {
            framework_id: s.framework_id,
            stream_id: s.stream_id,
        },
        other => panic!("expected SUBSCRIBED, got {other:?}"),
    };
    let offer = match next_event(&mut events).await {
        event::Event::Offers(o) => o.offers.into_iter().next().unwrap(),
        other => panic!("expected OFFERS, got {other:?}"),
    };
    (client, caller, events, offer)
}

fn reserve(offer: &v1::Offer, caller: &v1::Caller, res: &str) -> v1::AcceptRequest {
    v1::AcceptRequest {
        caller: Some(caller.clone()),
        offer_ids: vec![offer.id.clone()],
        operations: vec![v1::Operation {
            operation: Some(v1::operation::Operation::Reserve(v1::Reserve {
                resources: Resources::parse(res).unwrap().to_proto(),
            })),
        }],
        filters: None,
    }
}

#[tokio::test]
async fn reservations_show_in_roles_and_survive_a_master_restart() {
    let dir = tempfile::tempdir().unwrap();
    let work: PathBuf = dir.path().join("master");
    let master = Running::start(&work).await;
    let agent = FakeAgent::register(master.addr, "").await;
    let (mut client, caller, _events, offer) = framework_with_offer(master.addr, "eng/web").await;
    assert_eq!(offer.allocation_role, "eng/web");
    assert_eq!(offer.agent_id, agent.id);

    let err = client
        .accept(reserve(&offer, &caller, "cpus(eng/web):9"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().starts_with("operations[0].reserve.resources[0]"),
        "{}",
        err.message()
    );
    client
        .accept(reserve(&offer, &caller, "cpus(eng/web):1;mem(eng/web):256"))
        .await
        .unwrap();
    let roles = get(master.addr, "/roles").await;
    let web = role(&roles, "eng/web");
    assert_eq!(web["reserved"]["cpus"], 1.0, "{roles}");
    assert_eq!(web["frameworks"], json!([caller.framework_id]));
    assert_eq!(
        role(&roles, "eng")["reserved"]["mem"],
        256.0,
        "parents aggregate: {roles}"
    );
    let state = get(master.addr, "/state").await;
    assert!(state["frameworks"][0]["dominant_share"].is_number(), "{state}");
    let (_, metrics) = http(master.addr, "GET", "/metrics", "").await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("agora_master_role_weighted_share{role=\"eng/web\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agora_master_framework_dominant_share{"),
        "{metrics}"
    );
    drop(agent);
    drop(client);
    master.stop().await;

    let master = Running::start(&work).await;
    let _agent = FakeAgent::register(master.addr, &offer.agent_id).await;
    let roles = get(master.addr, "/roles").await;
    assert_eq!(role(&roles, "eng/web")["reserved"]["cpus"], 1.0, "{roles}");
    let (_, _, _, dev_offer) = framework_with_offer(master.addr, "dev").await;
    assert_eq!(
        Resources::from_proto(&dev_offer.resources).unwrap(),
        Resources::parse("cpus:3;mem:768").unwrap(),
        "reserved resources are not offered to another role"
    );
    master.stop().await;
}

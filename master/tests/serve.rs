//! The master served on a real socket, driven with the generated tonic
//! clients: a fake agent on the real agent stream and a framework on the
//! real scheduler API.
#![allow(clippy::unwrap_used)] // a test binary: unwrap is the assertion

use std::net::SocketAddr;
use std::time::Duration;

use agora_master::{MasterConfig, serve};
use agora_proto::Resources;
use agora_proto::v1::{
    self, agent_link_client::AgentLinkClient, event, master_message, scheduler_client::SchedulerClient,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, &mut self.server)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
    }
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = MasterConfig::new(addr, dir.path().join("master"));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve(config, listener, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Running {
        addr,
        stop: Some(stop),
        server,
        _dir: dir,
    }
}

async fn scheduler(addr: SocketAddr) -> SchedulerClient<Channel> {
    SchedulerClient::connect(format!("http://{addr}")).await.unwrap()
}

struct FakeAgent {
    id: String,
    up: mpsc::Sender<v1::AgentMessage>,
    down: Streaming<v1::MasterMessage>,
}

impl FakeAgent {
    async fn register(addr: SocketAddr) -> FakeAgent {
        let mut client = AgentLinkClient::connect(format!("http://{addr}")).await.unwrap();
        let (up, rx) = mpsc::channel(16);
        let register = v1::Register {
            agent: Some(v1::AgentInfo {
                hostname: "fake-host".into(),
                resources: Resources::parse("cpus:2;mem:512;ports:[31000-31004]")
                    .unwrap()
                    .to_proto(),
                ..Default::default()
            }),
            ..Default::default()
        };
        up.send(msg(v1::agent_message::Message::Register(register)))
            .await
            .unwrap();
        let mut down = client.attach(ReceiverStream::new(rx)).await.unwrap().into_inner();
        let id = match next_down(&mut down).await {
            master_message::Message::Registered(r) => r.agent_id,
            other => panic!("expected REGISTERED, got {other:?}"),
        };
        FakeAgent { id, up, down }
    }

    async fn update(&self, framework_id: &str, task_id: &str, state: v1::TaskState, uuid: &[u8]) {
        let update = v1::StatusUpdate {
            framework_id: framework_id.into(),
            latest_state: state as i32,
            status: Some(v1::TaskStatus {
                task_id: task_id.into(),
                state: state as i32,
                source: v1::StatusSource::Agent as i32,
                agent_id: self.id.clone(),
                uuid: uuid.to_vec(),
                ..Default::default()
            }),
        };
        self.up
            .send(msg(v1::agent_message::Message::StatusUpdate(update)))
            .await
            .unwrap();
    }
}

fn msg(m: v1::agent_message::Message) -> v1::AgentMessage {
    v1::AgentMessage { message: Some(m) }
}

async fn next_down(down: &mut Streaming<v1::MasterMessage>) -> master_message::Message {
    tokio::time::timeout(WAIT, down.message())
        .await
        .expect("a message for the agent in time")
        .unwrap()
        .expect("stream open")
        .message
        .unwrap()
}

/// The next event that is not a heartbeat.
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

async fn subscribe(client: &mut SchedulerClient<Channel>) -> (v1::Caller, Streaming<v1::Event>) {
    let req = v1::SubscribeRequest {
        framework: Some(v1::FrameworkInfo {
            name: "test".into(),
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
    (caller, events)
}

async fn expect_update(events: &mut Streaming<v1::Event>) -> v1::TaskStatus {
    match next_event(events).await {
        event::Event::Update(u) => u.status.unwrap(),
        other => panic!("expected UPDATE, got {other:?}"),
    }
}

#[tokio::test]
async fn a_task_runs_from_offer_to_acknowledged_finish() {
    let master = start().await;
    let mut agent = FakeAgent::register(master.addr).await;
    let mut client = scheduler(master.addr).await;
    let (caller, mut events) = subscribe(&mut client).await;

    let offer = match next_event(&mut events).await {
        event::Event::Offers(o) => o.offers.into_iter().next().unwrap(),
        other => panic!("expected OFFERS, got {other:?}"),
    };
    assert_eq!(offer.agent_id, agent.id);
    let task = v1::TaskInfo {
        name: "hello".into(),
        task_id: "hello-1".into(),
        resources: Resources::parse("cpus:1;mem:64").unwrap().to_proto(),
        command: Some(v1::CommandInfo {
            command: Some(v1::command_info::Command::Shell("echo hi".into())),
            ..Default::default()
        }),
        ..Default::default()
    };
    client
        .accept(v1::AcceptRequest {
            caller: Some(caller.clone()),
            offer_ids: vec![offer.id.clone()],
            operations: vec![v1::Operation {
                operation: Some(v1::operation::Operation::Launch(v1::Launch {
                    task_infos: vec![task],
                })),
            }],
            filters: None,
        })
        .await
        .unwrap();

    match next_down(&mut agent.down).await {
        master_message::Message::RunTask(r) => {
            assert_eq!(r.task.unwrap().task_id, "hello-1");
            assert_eq!(r.framework.unwrap().id, caller.framework_id);
        }
        other => panic!("expected RUN_TASK, got {other:?}"),
    }

    for (state, uuid) in [
        (v1::TaskState::Running, b"uuid-1".as_slice()),
        (v1::TaskState::Finished, b"uuid-2".as_slice()),
    ] {
        agent.update(&caller.framework_id, "hello-1", state, uuid).await;
        let status = expect_update(&mut events).await;
        assert_eq!(status.state, state as i32);
        assert_eq!(status.uuid, uuid);
        client
            .acknowledge(v1::AcknowledgeRequest {
                caller: Some(caller.clone()),
                agent_id: agent.id.clone(),
                task_id: "hello-1".into(),
                uuid: uuid.to_vec(),
            })
            .await
            .unwrap();
        match next_down(&mut agent.down).await {
            master_message::Message::Acknowledge(a) => assert_eq!(a.uuid, uuid),
            other => panic!("expected ACKNOWLEDGE, got {other:?}"),
        }
    }

    let state = http_get(master.addr, "/state").await;
    assert!(state.contains("TASK_FINISHED"), "{state}");
    master.stop().await;
}

#[tokio::test]
async fn bad_calls_get_the_right_codes() {
    let master = start().await;
    let mut client = scheduler(master.addr).await;
    let (caller, _events) = subscribe(&mut client).await;
    let revive = |caller: Option<v1::Caller>| v1::ReviveRequest {
        caller,
        roles: vec![],
    };
    let with = |framework_id: &str, stream_id: &str| {
        Some(v1::Caller {
            framework_id: framework_id.into(),
            stream_id: stream_id.into(),
        })
    };

    let cases: Vec<(&str, tonic::Code, &str, tonic::Status)> = vec![
        (
            "missing caller",
            tonic::Code::InvalidArgument,
            "caller",
            client.revive(revive(None)).await.unwrap_err(),
        ),
        (
            "empty framework id",
            tonic::Code::InvalidArgument,
            "caller.framework_id: must not be empty",
            client
                .revive(revive(with("", &caller.stream_id)))
                .await
                .unwrap_err(),
        ),
        (
            "unparseable framework id",
            tonic::Code::InvalidArgument,
            "caller.framework_id",
            client
                .revive(revive(with("a b", &caller.stream_id)))
                .await
                .unwrap_err(),
        ),
        (
            "unknown framework",
            tonic::Code::NotFound,
            "fw-nope",
            client
                .revive(revive(with("fw-nope", &caller.stream_id)))
                .await
                .unwrap_err(),
        ),
        (
            "stale stream id",
            tonic::Code::FailedPrecondition,
            "caller.stream_id",
            client
                .revive(revive(with(&caller.framework_id, "stream-old")))
                .await
                .unwrap_err(),
        ),
        (
            "empty offer ids",
            tonic::Code::InvalidArgument,
            "offer_ids",
            client
                .decline(v1::DeclineRequest {
                    caller: Some(caller.clone()),
                    offer_ids: vec![],
                    filters: None,
                })
                .await
                .unwrap_err(),
        ),
        (
            "unparseable offer id",
            tonic::Code::InvalidArgument,
            "offer_ids[0]",
            client
                .accept(v1::AcceptRequest {
                    caller: Some(caller.clone()),
                    offer_ids: vec!["has/slash".into()],
                    operations: vec![],
                    filters: None,
                })
                .await
                .unwrap_err(),
        ),
        (
            "unparseable task id",
            tonic::Code::InvalidArgument,
            "task_id",
            client
                .kill(v1::KillRequest {
                    caller: Some(caller.clone()),
                    task_id: String::new(),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
        ),
        (
            "subscribe with an unknown id",
            tonic::Code::NotFound,
            "framework.id",
            client
                .subscribe(v1::SubscribeRequest {
                    framework: Some(v1::FrameworkInfo {
                        id: "fw-nope".into(),
                        name: "x".into(),
                        ..Default::default()
                    }),
                    suppressed_roles: vec![],
                })
                .await
                .map(|_| ())
                .unwrap_err(),
        ),
    ];
    for (what, code, words, status) in cases {
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(status.message().contains(words), "{what}: {}", status.message());
    }
    master.stop().await;
}

#[tokio::test]
async fn an_agent_whose_first_message_is_not_register_is_refused() {
    let master = start().await;
    let mut client = AgentLinkClient::connect(format!("http://{}", master.addr))
        .await
        .unwrap();
    let (up, rx) = mpsc::channel(4);
    up.send(msg(v1::agent_message::Message::Heartbeat(v1::AgentHeartbeat {})))
        .await
        .unwrap();
    let mut down = client.attach(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let err = tokio::time::timeout(WAIT, down.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("register"), "{}", err.message());
    master.stop().await;
}

#[tokio::test]
async fn a_framework_that_re_subscribes_replaces_its_old_stream() {
    let master = start().await;
    let mut client = scheduler(master.addr).await;
    let (caller, mut old_events) = subscribe(&mut client).await;
    let req = v1::SubscribeRequest {
        framework: Some(v1::FrameworkInfo {
            id: caller.framework_id.clone(),
            name: "test".into(),
            failover_timeout_seconds: 60.0,
            ..Default::default()
        }),
        suppressed_roles: vec![],
    };
    let mut events = client.subscribe(req).await.unwrap().into_inner();
    match next_event(&mut events).await {
        event::Event::Subscribed(s) => {
            assert_eq!(s.framework_id, caller.framework_id);
            assert_ne!(s.stream_id, caller.stream_id);
        }
        other => panic!("expected SUBSCRIBED, got {other:?}"),
    }
    match next_event(&mut old_events).await {
        event::Event::Error(e) => assert!(e.message.contains("failed over")),
        other => panic!("expected ERROR, got {other:?}"),
    }
    master.stop().await;
}

#[tokio::test]
async fn http_health_state_and_metrics_share_the_grpc_port() {
    let master = start().await;
    let _agent = FakeAgent::register(master.addr).await;
    let health = http_get(master.addr, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok"), "{health}");
    let state = http_get(master.addr, "/state").await;
    assert!(state.contains("\"hostname\":\"fake-host\""), "{state}");
    assert!(state.contains("\"ports\":\"[31000-31004]\""), "{state}");
    let metrics = http_get(master.addr, "/metrics").await;
    assert!(
        metrics.contains("agora_master_agents{status=\"active\"} 1"),
        "{metrics}"
    );
    master.stop().await;
}

#[tokio::test]
async fn a_restarted_master_knows_its_frameworks() {
    let dir = tempfile::tempdir().unwrap();
    let run = |dir: std::path::PathBuf| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(MasterConfig::new(addr, dir), listener, async move {
            let _ = stopped.await;
        }));
        (addr, stop, server)
    };
    let (addr, stop, server) = run(dir.path().to_owned()).await;
    let mut client = scheduler(addr).await;
    let (caller, events) = subscribe(&mut client).await;
    drop(events);
    drop(client);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();

    let (addr, stop, server) = run(dir.path().to_owned()).await;
    let mut client = scheduler(addr).await;
    let req = v1::SubscribeRequest {
        framework: Some(v1::FrameworkInfo {
            id: caller.framework_id.clone(),
            name: "test".into(),
            ..Default::default()
        }),
        suppressed_roles: vec![],
    };
    let mut events = client.subscribe(req).await.unwrap().into_inner();
    assert!(
        matches!(next_event(&mut events).await, event::Event::Subscribed(s) if s.framework_id == caller.framework_id)
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// A minimal HTTP/1.1 GET; returns the status line, headers and body.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

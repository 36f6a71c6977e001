//! The driver against the real master, with a scripted agent on the real
//! AgentLink stream: the whole launch path, and re-subscription after the
//! master restarts.

#![allow(clippy::unwrap_used)] // test helpers: panicking is the failure report

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agora_master::MasterConfig;
use agora_proto::v1::agent_link_client::AgentLinkClient;
use agora_proto::v1::{self, agent_message, master_message};
use agora_sdk::{Driver, FileIdStore, Resources};
use support::{Seen, config, recorder};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// A master serving on `addr` (port 0 for any) until the returned sender fires.
async fn start_master(
    addr: SocketAddr,
    work_dir: &Path,
) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = MasterConfig::new(addr, work_dir.to_path_buf());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        agora_master::serve(config, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, stop, server)
}

/// A scripted agent: registers with 4 cpus and 1 GiB, answers each RunTask
/// with RUNNING then (after RUNNING is acknowledged) FINISHED, and reports
/// every acknowledgement it gets.
async fn fake_agent(master: SocketAddr) -> mpsc::UnboundedReceiver<Vec<u8>> {
    let mut client = AgentLinkClient::connect(format!("http://{master}"))
        .await
        .unwrap();
    let (up, up_rx) = mpsc::channel(64);
    up.send(v1::AgentMessage {
        message: Some(agent_message::Message::Register(v1::Register {
            agent: Some(v1::AgentInfo {
                hostname: "fake-agent".into(),
                resources: Resources::parse("cpus:4;mem:1024").unwrap().to_proto(),
                ..Default::default()
            }),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut down = client
        .attach(ReceiverStream::new(up_rx))
        .await
        .unwrap()
        .into_inner();
    let (acks_tx, acks) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut agent_id = String::new();
        // task id -> framework id, for tasks whose FINISHED is still to send.
        let mut awaiting_finish = std::collections::HashMap::new();
        let update =
            |framework_id: &str, task_id: &str, agent_id: &str, state: v1::TaskState| v1::AgentMessage {
                message: Some(agent_message::Message::StatusUpdate(v1::StatusUpdate {
                    framework_id: framework_id.into(),
                    latest_state: state as i32,
                    status: Some(v1::TaskStatus {
                        task_id: task_id.into(),
                        agent_id: agent_id.into(),
                        state: state as i32,
                        source: v1::StatusSource::Agent as i32,
                        uuid: format!("{task_id}-{}", state as i32).into_bytes(),
                        ..Default::default()
                    }),
                })),
            };
        while let Some(Ok(message)) = down.next().await {
            match message.message {
                Some(master_message::Message::Registered(r)) => agent_id = r.agent_id,
                Some(master_message::Message::RunTask(run)) => {
                    let framework_id = run.framework.map(|f| f.id).unwrap_or_default();
                    let task_id = run.task.map(|t| t.task_id).unwrap_or_default();
                    let _ = up
                        .send(update(&framework_id, &task_id, &agent_id, v1::TaskState::Running))
                        .await;
                    awaiting_finish.insert(task_id, framework_id);
                }
                Some(master_message::Message::Acknowledge(ack)) => {
                    if let Some(framework_id) = awaiting_finish.remove(&ack.task_id) {
                        let _ = up
                            .send(update(
                                &framework_id,
                                &ack.task_id,
                                &agent_id,
                                v1::TaskState::Finished,
                            ))
                            .await;
                    }
                    let _ = acks_tx.send(ack.uuid);
                }
                _ => {}
            }
        }
    });
    acks
}

async fn next_ack(acks: &mut mpsc::UnboundedReceiver<Vec<u8>>) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(5), acks.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn offers_are_launched_and_every_update_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop, _server) = start_master("127.0.0.1:0".parse().unwrap(), dir.path()).await;
    let mut acks = fake_agent(addr).await;
    let (scheduler, mut events) = recorder();
    let (_driver, _run) = Driver::start(config(vec![addr.to_string()]), scheduler);

    assert!(matches!(events.next().await, Seen::Subscribed(_)));
    let Seen::Offers(offers) = events.next().await else {
        panic!("expected offers")
    };
    let task_id = format!("task-{}", offers[0].id);

    let running = loop {
        if let Seen::Update(status) = events.next().await {
            break status;
        }
    };
    assert_eq!(
        (running.task_id.as_str(), running.state()),
        (task_id.as_str(), v1::TaskState::Running)
    );
    assert_eq!(next_ack(&mut acks).await, running.uuid);

    let finished = loop {
        if let Seen::Update(status) = events.next().await {
            break status;
        }
    };
    assert_eq!(finished.state(), v1::TaskState::Finished);
    assert_eq!(next_ack(&mut acks).await, finished.uuid);
}

#[tokio::test]
async fn the_driver_resubscribes_as_itself_after_the_master_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let id_file = dir.path().join("framework-id");
    let master_dir = dir.path().join("master");
    let (addr, stop, server) = start_master("127.0.0.1:0".parse().unwrap(), &master_dir).await;
    let mut cfg = config(vec![addr.to_string()]);
    cfg.framework_id_store = Some(Arc::new(FileIdStore::new(&id_file)));
    let (scheduler, mut events) = recorder();
    let (driver, _run) = Driver::start(cfg, scheduler);
    let Seen::Subscribed(first) = events.next().await else {
        panic!("expected SUBSCRIBED")
    };

    stop.send(()).unwrap();
    server.await.unwrap();
    assert_eq!(events.next().await, Seen::Disconnected);
    let (_addr, _stop, _server) = start_master(addr, &master_dir).await;

    let Seen::Subscribed(second) = events.next().await else {
        panic!("expected SUBSCRIBED")
    };
    assert!(second.resubscribed);
    assert_eq!(second.framework_id, first.framework_id);
    assert_ne!(second.master_id, first.master_id);
    assert_eq!(driver.framework_id(), Some(first.framework_id.clone()));
    assert_eq!(
        std::fs::read_to_string(&id_file).unwrap(),
        first.framework_id.as_str()
    );
}

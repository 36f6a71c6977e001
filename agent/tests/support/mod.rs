//! The stand-in master and helpers shared by the agent's integration tests:
//! a tiny in-test AgentLink server that records each agent session, and an
//! agent running on it with the real supervisor program.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_agent::{AgentConfig, AgentError};
use agora_proto::v1::{self, TaskState};
use nix::sys::signal::killpg;
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};

pub const WAIT: Duration = Duration::from_secs(15);
pub const FRAMEWORK: &str = "fw-1";

// ---------------------------------------------------------------------------
// The stand-in master
// ---------------------------------------------------------------------------

/// One Attach stream, as the test sees it.
pub struct Session {
    pub register: v1::Register,
    pub down: mpsc::UnboundedSender<Result<v1::MasterMessage, tonic::Status>>,
    pub up: mpsc::UnboundedReceiver<v1::AgentMessage>,
}

pub struct FakeMaster {
    pub sessions: mpsc::UnboundedSender<Session>,
}

#[tonic::async_trait]
impl v1::agent_link_server::AgentLink for FakeMaster {
    type AttachStream = UnboundedReceiverStream<Result<v1::MasterMessage, tonic::Status>>;

    async fn attach(
        &self,
        request: tonic::Request<tonic::Streaming<v1::AgentMessage>>,
    ) -> Result<tonic::Response<Self::AttachStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let register = match inbound.message().await?.and_then(|m| m.message) {
            Some(v1::agent_message::Message::Register(r)) => r,
            _ => return Err(tonic::Status::invalid_argument("first message must be register")),
        };
        let agent_id = register
            .agent
            .as_ref()
            .map(|a| a.id.clone())
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| "agent-1".to_owned());
        let (down, down_rx) = mpsc::unbounded_channel();
        down.send(Ok(master_message(v1::master_message::Message::Registered(
            v1::Registered {
                agent_id,
                heartbeat_interval_seconds: 1.0,
                master_id: "master-1".into(),
            },
        ))))
        .unwrap();
        let (up_tx, up) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if !matches!(m.message, Some(v1::agent_message::Message::Heartbeat(_)))
                    && up_tx.send(m).is_err()
                {
                    return;
                }
            }
        });
        let _ = self.sessions.send(Session { register, down, up });
        Ok(tonic::Response::new(UnboundedReceiverStream::new(down_rx)))
    }
}

pub async fn start_master() -> (SocketAddr, mpsc::UnboundedReceiver<Session>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (sessions, rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(v1::agent_link_server::AgentLinkServer::new(FakeMaster {
                sessions,
            }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, rx)
}

pub fn master_message(m: v1::master_message::Message) -> v1::MasterMessage {
    v1::MasterMessage { message: Some(m) }
}

impl Session {
    pub fn send(&self, m: v1::master_message::Message) {
        self.down.send(Ok(master_message(m))).unwrap();
    }

    pub fn run_task(&self, task_id: &str, shell: &str) {
        self.run(task(task_id, shell));
    }

    pub fn run(&self, task: v1::TaskInfo) {
        self.send(v1::master_message::Message::RunTask(v1::RunTask {
            framework: Some(v1::FrameworkInfo {
                id: FRAMEWORK.into(),
                name: "test".into(),
                ..Default::default()
            }),
            task: Some(task),
        }));
    }

    pub fn kill(&self, task_id: &str) {
        self.send(v1::master_message::Message::KillTask(v1::KillTask {
            framework_id: FRAMEWORK.into(),
            task_id: task_id.into(),
            kill_policy: None,
        }));
    }

    pub fn ack(&self, status: &v1::TaskStatus) {
        self.send(v1::master_message::Message::Acknowledge(v1::AcknowledgeUpdate {
            framework_id: FRAMEWORK.into(),
            task_id: status.task_id.clone(),
            uuid: status.uuid.clone(),
        }));
    }

    /// The next status update the agent sends (heartbeats are skipped).
    pub async fn next_update(&mut self) -> v1::TaskStatus {
        loop {
            let m = tokio::time::timeout(WAIT, self.up.recv())
                .await
                .expect("timed out waiting for a status update")
                .expect("agent closed the stream");
            if let Some(v1::agent_message::Message::StatusUpdate(u)) = m.message {
                assert_eq!(u.framework_id, FRAMEWORK);
                return u.status.unwrap();
            }
        }
    }

    /// Receives the next update, checks its state, acknowledges it.
    pub async fn expect_and_ack(&mut self, state: TaskState) -> v1::TaskStatus {
        let status = self.next_update().await;
        assert_eq!(status.state(), state, "{status:?}");
        self.ack(&status);
        status
    }
}

pub async fn next_session(sessions: &mut mpsc::UnboundedReceiver<Session>) -> Session {
    tokio::time::timeout(WAIT, sessions.recv())
        .await
        .expect("timed out waiting for the agent to register")
        .unwrap()
}

pub fn task(task_id: &str, shell: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: task_id.into(),
        task_id: task_id.into(),
        agent_id: "agent-1".into(),
        resources: agora_proto::Resources::parse("cpus:0.1;mem:32;ports:[31000-31001]")
            .unwrap()
            .to_proto(),
        command: Some(v1::CommandInfo {
            command: Some(v1::command_info::Command::Shell(shell.into())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// The agent under test
// ---------------------------------------------------------------------------

pub struct RunningAgent {
    pub http: SocketAddr,
    pub stop: oneshot::Sender<()>,
    pub done: JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    pub async fn start(
        master: SocketAddr,
        work_dir: &Path,
        configure: impl FnOnce(&mut AgentConfig),
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        let mut config = AgentConfig::new(vec![master.to_string()], http, work_dir.to_path_buf());
        config.supervisor = Some(PathBuf::from(env!("CARGO_BIN_EXE_agora-task-supervisor")));
        config.resources = Some("cpus:2;mem:1024;disk:1024;ports:[31000-31010]".into());
        config.attributes = Some("rack:a".into());
        config.hostname = Some("test-host".into());
        config.kill_grace_period = Duration::from_secs(2);
        configure(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(agora_agent::run(config, listener, async {
            let _ = stopped.await;
        }));
        RunningAgent { http, stop, done }
    }

    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(WAIT, self.done)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(self.http).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let code = response[9..12].parse().unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
        (code, body)
    }
}

/// The task's pid (= its process group), from its sandbox.
pub fn task_pid(work_dir: &Path, task_id: &str) -> i32 {
    let runs = work_dir.join("sandboxes").join(FRAMEWORK).join(task_id);
    let run = std::fs::read_dir(runs).unwrap().next().unwrap().unwrap().path();
    std::fs::read_to_string(run.join(".agora/task.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

pub fn group_exists(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

pub async fn wait_until(mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("condition never became true");
}

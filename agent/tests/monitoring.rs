//! Task logs over HTTP and resource-usage samples, against a stand-in master
//! (a tiny in-test AgentLink server), with real tasks under the real supervisor.

// Test helpers fail loudly: unwrap is the point here.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_agent::AgentConfig;
use agora_proto::v1::{self, TaskState};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};

const WAIT: Duration = Duration::from_secs(15);
const FRAMEWORK: &str = "fw-1";

// ---------------------------------------------------------------------------
// The stand-in master
// ---------------------------------------------------------------------------

struct Session {
    down: mpsc::UnboundedSender<Result<v1::MasterMessage, tonic::Status>>,
    up: mpsc::UnboundedReceiver<v1::AgentMessage>,
}

struct FakeMaster {
    sessions: mpsc::UnboundedSender<Session>,
}

#[tonic::async_trait]
impl v1::agent_link_server::AgentLink for FakeMaster {
    type AttachStream = UnboundedReceiverStream<Result<v1::MasterMessage, tonic::Status>>;

    async fn attach(
        &self,
        request: tonic::Request<tonic::Streaming<v1::AgentMessage>>,
    ) -> Result<tonic::Response<Self::AttachStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        inbound.message().await?;
        let (down, down_rx) = mpsc::unbounded_channel();
        down.send(Ok(message(v1::master_message::Message::Registered(
            v1::Registered {
                agent_id: "agent-1".into(),
                heartbeat_interval_seconds: 1.0,
                master_id: "master-1".into(),
            },
        ))))
        .unwrap();
        let (up_tx, up) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if up_tx.send(m).is_err() {
                    return;
                }
            }
        });
        let _ = self.sessions.send(Session { down, up });
        Ok(tonic::Response::new(UnboundedReceiverStream::new(down_rx)))
    }
}

fn message(m: v1::master_message::Message) -> v1::MasterMessage {
    v1::MasterMessage { message: Some(m) }
}

impl Session {
    fn run_in(&self, framework: &str, task_id: &str, shell: &str) {
        let task = v1::TaskInfo {
            name: task_id.into(),
            task_id: task_id.into(),
            agent_id: "agent-1".into(),
            resources: agora_proto::Resources::parse("cpus:1;mem:128")
                .unwrap()
                .to_proto(),
            command: Some(v1::CommandInfo {
                command: Some(v1::command_info::Command::Shell(shell.into())),
                ..Default::default()
            }),
            kill_policy: Some(v1::KillPolicy {
                grace_period_seconds: Some(0.5),
            }),
            ..Default::default()
        };
        self.down
            .send(Ok(message(v1::master_message::Message::RunTask(v1::RunTask {
                framework: Some(v1::FrameworkInfo {
                    id: framework.into(),
                    name: "test".into(),
                    ..Default::default()
                }),
                task: Some(task),
            }))))
            .unwrap();
    }

    fn run(&self, task_id: &str, shell: &str) {
        self.run_in(FRAMEWORK, task_id, shell);
    }

    fn kill(&self, task_id: &str) {
        self.down
            .send(Ok(message(v1::master_message::Message::KillTask(v1::KillTask {
                framework_id: FRAMEWORK.into(),
                task_id: task_id.into(),
                kill_policy: None,
            }))))
            .unwrap();
    }

    fn ack(&self, framework: &str, status: &v1::TaskStatus) {
        let _ = self
            .down
            .send(Ok(message(v1::master_message::Message::Acknowledge(
                v1::AcknowledgeUpdate {
                    framework_id: framework.into(),
                    task_id: status.task_id.clone(),
                    uuid: status.uuid.clone(),
                },
            ))));
    }

    /// Waits for the task to reach `state` (skipping other messages).
    async fn wait_state(&mut self, task_id: &str, state: TaskState) {
        self.next(|m| match m {
            v1::agent_message::Message::StatusUpdate(u) => u
                .status
                .as_ref()
                .filter(|s| s.task_id == task_id && s.state() == state)
                .map(|_| ()),
            _ => None,
        })
        .await
    }

    /// Waits for a usage sample in which `pick` finds what it looks for.
    async fn wait_usage<T>(&mut self, mut pick: impl FnMut(&v1::ResourceUsage) -> Option<T>) -> T {
        self.next(|m| match m {
            v1::agent_message::Message::Usage(u) => pick(u),
            _ => None,
        })
        .await
    }

    async fn next<T>(&mut self, mut pick: impl FnMut(&v1::agent_message::Message) -> Option<T>) -> T {
        tokio::time::timeout(WAIT, async {
            loop {
                let m = self.up.recv().await.expect("agent closed the stream");
                // The agent sends a task's next update once the previous one is acknowledged.
                if let Some(v1::agent_message::Message::StatusUpdate(u)) = &m.message
                    && let Some(status) = &u.status
                {
                    self.ack(&u.framework_id, status);
                }
                if let Some(found) = m.message.as_ref().and_then(&mut pick) {
                    return found;
                }
            }
        })
        .await
        .expect("timed out waiting for a message from the agent")
    }
}

// ---------------------------------------------------------------------------
// The agent under test
// ---------------------------------------------------------------------------

struct Agent {
    http: SocketAddr,
    session: Session,
    _stop: oneshot::Sender<()>,
    /// Kills the tasks' process groups when the test ends (the agent leaves tasks running).
    _sweep: Sweep,
}

struct Sweep(PathBuf);

impl Drop for Sweep {
    fn drop(&mut self) {
        let Ok(frameworks) = std::fs::read_dir(self.0.join("sandboxes")) else {
            return;
        };
        for pid_file in frameworks
            .flatten()
            .flat_map(|f| std::fs::read_dir(f.path()).into_iter().flatten().flatten())
            .flat_map(|t| std::fs::read_dir(t.path()).into_iter().flatten().flatten())
            .map(|run| run.path().join(".agora/task.pid"))
        {
            if let Some(pgid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
        }
    }
}

async fn start_agent(work_dir: &Path) -> Agent {
    let master = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master_addr = master.local_addr().unwrap();
    let (sessions, mut sessions_rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(v1::agent_link_server::AgentLinkServer::new(FakeMaster {
                sessions,
            }))
            .serve_with_incoming(TcpListenerStream::new(master)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let mut config = AgentConfig::new(vec![master_addr.to_string()], http, work_dir.to_path_buf());
    config.supervisor = Some(PathBuf::from(env!("CARGO_BIN_EXE_agora-task-supervisor")));
    config.resources = Some("cpus:4;mem:1024;disk:1024;ports:[31000-31010]".into());
    config.hostname = Some("test-host".into());
    config.usage_interval = Duration::from_millis(500);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(agora_agent::run(config, listener, async {
        let _ = stopped.await;
    }));
    let session = tokio::time::timeout(WAIT, sessions_rx.recv())
        .await
        .expect("agent never registered")
        .unwrap();
    Agent {
        http,
        session,
        _stop: stop,
        _sweep: Sweep(work_dir.to_path_buf()),
    }
}

/// An HTTP/1.0 response being read as it arrives.
struct Response {
    stream: tokio::net::TcpStream,
    status: u16,
    body: Vec<u8>,
}

impl Response {
    async fn open(http: SocketAddr, path: &str) -> Response {
        let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(
                stream.read(&mut byte).await.unwrap(),
                1,
                "connection closed early"
            );
            head.push(byte[0]);
        }
        let status = String::from_utf8_lossy(&head[9..12]).parse().unwrap();
        Response {
            stream,
            status,
            body: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Reads until the body contains `needle`.
    async fn read_until(&mut self, needle: &str) {
        tokio::time::timeout(WAIT, async {
            while !self.text().contains(needle) {
                let mut buf = [0u8; 4096];
                let n = self.stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "stream ended before {needle:?}: {:?}", self.text());
                self.body.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("never saw {needle:?}; got {:?}", self.text()));
    }

    /// Reads the rest of the body, until the server ends it.
    async fn read_to_end(mut self) -> String {
        tokio::time::timeout(WAIT, self.stream.read_to_end(&mut self.body))
            .await
            .expect("the body never ended")
            .unwrap();
        self.text()
    }
}

async fn get(http: SocketAddr, path: &str) -> (u16, String) {
    let response = Response::open(http, path).await;
    let status = response.status;
    (status, response.read_to_end().await)
}

/// Polls `path` until its body is `expected`.
async fn wait_body(http: SocketAddr, path: &str, expected: &str) {
    let mut last = (0, String::new());
    let found = tokio::time::timeout(WAIT, async {
        loop {
            last = get(http, path).await;
            if last == (200, expected.to_owned()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "{path} never answered {expected:?}; last: {last:?}"
    );
}

fn sandbox_of(work_dir: &Path, task_id: &str) -> PathBuf {
    let runs = work_dir.join("sandboxes").join(FRAMEWORK).join(task_id);
    std::fs::read_dir(runs).unwrap().next().unwrap().unwrap().path()
}

fn task_usage<'a>(u: &'a v1::ResourceUsage, task_id: &str) -> Option<&'a v1::TaskUsage> {
    u.tasks.iter().find(|t| t.task_id == task_id)
}

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tail_returns_the_last_lines_of_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_agent(dir.path()).await;
    agent
        .session
        .run("lines", "echo one; echo two; echo three; sleep 100");
    agent.session.wait_state("lines", TaskState::Running).await;

    wait_body(agent.http, "/tasks/lines/logs?tail=2", "two\nthree\n").await;
    let (status, all) = get(agent.http, "/tasks/lines/logs").await;
    assert_eq!((status, all.as_str()), (200, "one\ntwo\nthree\n"));
    agent.session.kill("lines");
}

#[tokio::test]
async fn stderr_is_served_apart_from_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_agent(dir.path()).await;
    agent.session.run("err", "echo out; echo oops >&2");
    agent.session.wait_state("err", TaskState::Finished).await;

    wait_body(agent.http, "/tasks/err/logs?stream=stderr", "oops\n").await;
    wait_body(agent.http, "/tasks/err/logs?stream=stdout", "out\n").await;
}

#[tokio::test]
async fn follow_streams_later_output_and_ends_when_the_task_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_agent(dir.path()).await;
    agent.session.run(
        "slow",
        "echo first; while [ ! -f go ]; do sleep 0.1; done; echo second",
    );
    agent.session.wait_state("slow", TaskState::Running).await;

    let mut follow = Response::open(agent.http, "/tasks/slow/logs?follow=true").await;
    assert_eq!(follow.status, 200);
    follow.read_until("first\n").await;
    std::fs::write(sandbox_of(dir.path(), "slow").join("go"), "").unwrap();
    let text = follow.read_to_end().await;
    assert_eq!(text, "first\nsecond\n");
}

#[tokio::test]
async fn an_unknown_task_is_404_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path()).await;
    let (status, body) = get(agent.http, "/tasks/nope/logs").await;
    assert_eq!(status, 404);
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(error["error"].as_str().unwrap().contains("nope"), "{body}");
}

#[tokio::test]
async fn a_bad_stream_or_tail_is_400_naming_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_agent(dir.path()).await;
    agent.session.run("t", "sleep 100");
    agent.session.wait_state("t", TaskState::Running).await;
    for (query, name) in [("stream=stdin", "stream"), ("tail=lots", "tail")] {
        let (status, body) = get(agent.http, &format!("/tasks/t/logs?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(error["error"].as_str().unwrap().contains(name), "{body}");
    }
    agent.session.kill("t");
}

#[tokio::test]
async fn a_task_id_in_two_frameworks_needs_framework_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_agent(dir.path()).await;
    agent.session.run_in("fw-a", "same", "echo from-a; sleep 100");
    agent.session.run_in("fw-b", "same", "echo from-b; sleep 100");
    agent.session.wait_state("same", TaskState::Running).await;
    agent.session.wait_state("same", TaskState::Running).await;

    let (status, body) = get(agent.http, "/tasks/same/logs").await;
    assert_eq!(status, 409, "{body}");
    wait_body(agent.http, "/tasks/same/logs?framework_id=fw-b", "from-b\n").await;
}

// ---------------------------------------------------------------------------
// Usage
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_busy_task_uses_most_of_a_core() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_agent(dir.path()).await;
    agent.session.run("busy", "while :; do :; done");
    agent.session.wait_state("busy", TaskState::Running).await;

    let cpus = agent
        .session
        .wait_usage(|u| task_usage(u, "busy").map(|t| t.cpus_used).filter(|c| *c > 0.5))
        .await;
    assert!(cpus < 1.5, "one shell loop uses at most about one core: {cpus}");
    let host = agent.session.wait_usage(|u| u.host).await;
    assert!(host.cpus_total >= 1.0 && host.mem_total_mib > 0.0, "{host:?}");
    agent.session.kill("busy");
}

#[tokio::test]
async fn a_task_holding_memory_shows_its_rss() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_agent(dir.path()).await;
    // The shell keeps 64 MiB of 'a's in a variable.
    agent.session.run(
        "hog",
        "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo held; sleep 100",
    );
    agent.session.wait_state("hog", TaskState::Running).await;

    agent
        .session
        .wait_usage(|u| task_usage(u, "hog").map(|t| t.mem_used_mib).filter(|m| *m > 60.0))
        .await;
    let (_, body) = get(agent.http, "/state").await;
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    let task = &state["tasks"][0];
    assert!(task["usage"]["mem_used_mib"].as_f64().unwrap() > 60.0, "{task}");
    assert!(
        state["usage"]["host"]["mem_total_mib"].as_f64().unwrap() > 0.0,
        "{state}"
    );
    agent.session.kill("hog");
}

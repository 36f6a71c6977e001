//! The Docker containerizer against a stand-in master, with a real Docker
//! engine and the `agora-test/busybox:latest` image (scripts/test-image.sh).
//! Every container a test starts is removed by its work-dir label, even when
//! the test fails ([`Cleanup`]).

// Test helpers fail loudly: unwrap is the point here. Some shared helpers go unused.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_agent::AgentConfig;
use agora_proto::v1::{self, StatusReason, TaskState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

mod support;

use support::*;

// ---------------------------------------------------------------------------
// Docker helpers
// ---------------------------------------------------------------------------

const IMAGE: &str = "agora-test/busybox:latest";

/// Fails the test loudly when there is no engine or no test image.
fn require_docker() {
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output();
    match out {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "Docker tests need the test image {IMAGE} (run scripts/test-image.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(err) => panic!("Docker tests need a Docker engine and the docker CLI: {err}"),
    }
}

fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Ids of the containers labelled with this work dir (running or not).
fn containers_of(work_dir: &Path) -> Vec<String> {
    let filter = format!("label=agora.work_dir={}", work_dir.display());
    docker(&["ps", "-aq", "--filter", &filter])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Removes every container labelled with the work dir when dropped, so a
/// failing test leaves nothing behind.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in containers_of(&self.0) {
            docker(&["rm", "-f", &id]);
        }
    }
}

/// A work dir, its cleanup guard, the stand-in master and a Docker-enabled agent.
async fn setup() -> (
    tempfile::TempDir,
    Cleanup,
    RunningAgent,
    Session,
    mpsc::UnboundedReceiver<Session>,
) {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let cleanup = Cleanup(dir.path().to_path_buf());
    let (master, mut sessions) = start_master().await;
    let agent = RunningAgent::start(master, dir.path(), docker_only).await;
    let session = next_session(&mut sessions).await;
    (dir, cleanup, agent, session, sessions)
}

fn docker_only(config: &mut AgentConfig) {
    config.containerizers = vec![
        agora_agent::ContainerizerKind::Docker,
        agora_agent::ContainerizerKind::Process,
    ];
}

fn container_task(task_id: &str, shell: &str, configure: impl FnOnce(&mut v1::DockerInfo)) -> v1::TaskInfo {
    let mut t = task(task_id, shell);
    let mut info = v1::DockerInfo {
        image: IMAGE.into(),
        ..Default::default()
    };
    configure(&mut info);
    t.container = Some(v1::ContainerInfo {
        kind: Some(v1::container_info::Kind::Docker(info)),
        ..Default::default()
    });
    t
}

/// Acknowledges STARTING and RUNNING.
async fn expect_started(session: &mut Session) {
    session.expect_and_ack(TaskState::Starting).await;
    session.expect_and_ack(TaskState::Running).await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------
// Behaviours
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_container_that_exits_zero_reports_starting_running_finished() {
    let (_dir, _cleanup, agent, mut session, _s) = setup().await;
    session.run(container_task("ok", "echo hello", |_| {}));
    expect_started(&mut session).await;
    let done = session.expect_and_ack(TaskState::Finished).await;
    assert_eq!(done.exit_code, Some(0));
    agent.stop().await;
}

#[tokio::test]
async fn a_container_exiting_3_fails_with_exit_code_3_and_is_removed() {
    let (dir, _cleanup, agent, mut session, _s) = setup().await;
    session.run(container_task("three", "exit 3", |_| {}));
    expect_started(&mut session).await;
    let failed = session.expect_and_ack(TaskState::Failed).await;
    assert_eq!(failed.exit_code, Some(3));
    assert_eq!(failed.reason(), StatusReason::ReasonCommandExited);
    assert!(containers_of(dir.path()).is_empty());
    agent.stop().await;
}

#[tokio::test]
async fn a_container_over_its_memory_limit_fails_out_of_memory() {
    let (_dir, _cleanup, agent, mut session, _s) = setup().await;
    let mut t = container_task("oom", "x=a; while true; do x=$x$x; done", |_| {});
    t.resources = agora_proto::Resources::parse("cpus:0.5;mem:8")
        .unwrap()
        .to_proto();
    session.run(t);
    expect_started(&mut session).await;
    let failed = session.expect_and_ack(TaskState::Failed).await;
    assert_eq!(failed.reason(), StatusReason::ReasonContainerLimitationMemory);
    assert_eq!(failed.message, "out of memory");
    agent.stop().await;
}

#[tokio::test]
async fn kill_reports_killing_then_killed_within_the_grace_period() {
    let (_dir, _cleanup, agent, mut session, _s) = setup().await;
    let mut t = container_task("sleepy", "sleep 100", |_| {});
    t.kill_policy = Some(v1::KillPolicy {
        grace_period_seconds: Some(1.0),
    });
    session.run(t);
    expect_started(&mut session).await;
    let asked = tokio::time::Instant::now();
    session.kill("sleepy");
    session.expect_and_ack(TaskState::Killing).await;
    session.expect_and_ack(TaskState::Killed).await;
    assert!(asked.elapsed() < Duration::from_secs(6), "{:?}", asked.elapsed());
    agent.stop().await;
}

#[tokio::test]
async fn a_bridge_port_mapping_reaches_the_container_on_the_host_port() {
    let (_dir, _cleanup, agent, mut session, _s) = setup().await;
    let port = free_port();
    let mut t = container_task(
        "web",
        "mkdir -p /www && echo hello-from-agora > /www/index.html && httpd -f -p 8080 -h /www",
        |d| {
            d.network = v1::NetworkMode::Bridge as i32;
            d.port_mappings.push(v1::PortMapping {
                host_port: u32::from(port),
                container_port: 8080,
                protocol: "tcp".into(),
            });
        },
    );
    t.resources = agora_proto::Resources::parse(&format!("cpus:0.1;mem:32;ports:[{port}-{port}]"))
        .unwrap()
        .to_proto();
    session.run(t);
    expect_started(&mut session).await;
    let body = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                let _ = stream
                    .write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
                    .await;
                let mut response = String::new();
                let _ = stream.read_to_string(&mut response).await;
                if response.contains("hello-from-agora") {
                    return response;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the mapped port never served the page");
    assert!(body.starts_with("HTTP/1."));
    session.kill("web");
    session.expect_and_ack(TaskState::Killing).await;
    session.expect_and_ack(TaskState::Killed).await;
    agent.stop().await;
}

#[tokio::test]
async fn an_unknown_image_is_a_task_error_naming_the_field() {
    let (_dir, _cleanup, agent, mut session, _s) = setup().await;
    let started = tokio::time::Instant::now();
    session.run(container_task("ghost", "true", |d| {
        d.image = "agora-test/does-not-exist:1".into();
    }));
    session.expect_and_ack(TaskState::Starting).await;
    let error = session.expect_and_ack(TaskState::Error).await;
    assert_eq!(
        error.message,
        "container.docker.image: image not found: agora-test/does-not-exist:1"
    );
    assert_eq!(error.reason(), StatusReason::ReasonTaskInvalid);
    assert!(started.elapsed() < Duration::from_secs(20));
    agent.stop().await;
}

#[tokio::test]
async fn a_forced_pull_of_a_missing_image_fails_quickly_as_image_not_found() {
    let (_dir, _cleanup, agent, mut session, _s) = setup().await;
    let started = tokio::time::Instant::now();
    session.run(container_task("ghost", "true", |d| {
        d.image = "agora-test/does-not-exist:1".into();
        d.force_pull_image = true;
    }));
    session.expect_and_ack(TaskState::Starting).await;
    let failed = session.expect_and_ack(TaskState::Failed).await;
    assert_eq!(failed.message, "image not found: agora-test/does-not-exist:1");
    assert_eq!(failed.reason(), StatusReason::ReasonContainerLaunchFailed);
    assert!(started.elapsed() < Duration::from_secs(20));
    agent.stop().await;
}

#[tokio::test]
async fn a_port_mapping_outside_the_tasks_ports_is_a_task_error_and_creates_nothing() {
    let (dir, _cleanup, agent, mut session, _s) = setup().await;
    session.run(container_task("bad", "true", |d| {
        d.port_mappings.push(v1::PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: String::new(),
        });
    }));
    let error = session.expect_and_ack(TaskState::Error).await;
    assert_eq!(error.reason(), StatusReason::ReasonTaskInvalid);
    assert_eq!(
        error.message,
        "container.docker.port_mappings[0].host_port: 8080 is not in the task's ports"
    );
    assert!(containers_of(dir.path()).is_empty());
    agent.stop().await;
}

fn started_at(id: &str) -> String {
    docker(&["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", id])
}

#[tokio::test]
async fn a_restarted_agent_reattaches_running_containers_and_reports_ones_that_exited() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(dir.path().to_path_buf());
    let (master, mut sessions) = start_master().await;
    let agent = RunningAgent::start(master, dir.path(), docker_only).await;
    let mut session = next_session(&mut sessions).await;
    for id in ["long-1", "long-2"] {
        session.run(container_task(id, "sleep 100", |_| {}));
    }
    session.run(container_task("short", "sleep 3; exit 7", |_| {}));
    let mut running = 0;
    while running < 3 {
        let s = session.next_update().await;
        session.ack(&s);
        if s.state() == TaskState::Running {
            running += 1;
        }
    }
    let before: Vec<String> = containers_of(dir.path())
        .iter()
        .map(|id| started_at(id))
        .collect();
    assert_eq!(before.len(), 3);
    agent.stop().await;

    // While the agent is down, the short one exits.
    wait_until(|| {
        containers_of(dir.path())
            .iter()
            .any(|id| docker(&["inspect", "-f", "{{.State.Running}}", id]) == "false")
    })
    .await;

    let agent = RunningAgent::start(master, dir.path(), docker_only).await;
    let mut session = next_session(&mut sessions).await;
    assert_eq!(session.register.tasks.len(), 3, "no task lost");
    // Updates the old agent sent but saw no acknowledgement for come again first.
    let failed = loop {
        let s = session.next_update().await;
        session.ack(&s);
        if s.task_id == "short" && s.state() != TaskState::Running {
            break s;
        }
        assert_eq!(s.state(), TaskState::Running, "{s:?}");
    };
    assert_eq!(failed.state(), TaskState::Failed);
    assert_eq!(failed.exit_code, Some(7));
    let after: Vec<String> = containers_of(dir.path())
        .iter()
        .map(|id| started_at(id))
        .collect();
    assert_eq!(after.len(), 2);
    for container in &after {
        assert!(
            before.contains(container),
            "{container} was restarted or replaced"
        );
    }
    agent.stop().await;
}

#[tokio::test]
async fn containers_of_this_work_dir_that_no_checkpoint_knows_are_removed_at_start() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(dir.path().to_path_buf());
    let label = format!("agora.work_dir={}", dir.path().display());
    docker(&[
        "run",
        "-d",
        "--label",
        &label,
        "--label",
        "agora.sandbox=/nowhere",
        IMAGE,
        "sleep",
        "100",
    ]);
    assert_eq!(containers_of(dir.path()).len(), 1);
    let (master, mut sessions) = start_master().await;
    let agent = RunningAgent::start(master, dir.path(), docker_only).await;
    let _session = next_session(&mut sessions).await;
    assert!(containers_of(dir.path()).is_empty(), "the orphan is still there");
    agent.stop().await;
}

fn run_group(session: &Session, group_id: &str, tasks: Vec<v1::TaskInfo>) {
    session.send(v1::master_message::Message::RunTaskGroup(v1::RunTaskGroup {
        framework: Some(v1::FrameworkInfo {
            id: FRAMEWORK.into(),
            name: "test".into(),
            ..Default::default()
        }),
        group_id: group_id.into(),
        tasks,
    }));
}

/// Acknowledges updates until every named task reached a terminal state; returns those.
async fn until_all_ended(session: &mut Session, ids: &[&str]) -> Vec<v1::TaskStatus> {
    let mut ended: Vec<v1::TaskStatus> = Vec::new();
    while ended.len() < ids.len() {
        let s = session.next_update().await;
        session.ack(&s);
        if matches!(
            s.state(),
            TaskState::Finished | TaskState::Failed | TaskState::Killed | TaskState::Error
        ) {
            ended.push(s);
        }
    }
    ended.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    ended
}

#[tokio::test]
async fn pod_containers_reach_each_other_on_localhost_and_share_a_volume() {
    let (_dir, _cleanup, agent, mut session, _s) = setup().await;
    let server = container_task(
        "pod-server",
        "mkdir -p /www && echo pod-hello > /www/index.html && echo up > /mnt/shared/ready && httpd -f -p 8080 -h /www",
        |_| {},
    );
    let client = container_task(
        "pod-client",
        "while [ ! -f /mnt/shared/ready ]; do sleep 0.1; done; \
         for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://127.0.0.1:8080/index.html | grep -q pod-hello && exit 0; sleep 0.3; done; exit 1",
        |_| {},
    );
    run_group(&session, "pod-1", vec![server, client]);
    // The client finishes; then the server is killed.
    let finished = loop {
        let s = session.next_update().await;
        session.ack(&s);
        if s.task_id == "pod-client" && matches!(s.state(), TaskState::Finished | TaskState::Failed) {
            break s;
        }
    };
    assert_eq!(finished.state(), TaskState::Finished, "{finished:?}");
    session.kill("pod-server");
    until_all_ended(&mut session, &["pod-server"]).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_failing_pod_member_kills_the_others_naming_it() {
    let (dir, _cleanup, agent, mut session, _s) = setup().await;
    let long = container_task("pod-long", "sleep 100", |_| {});
    let bad = container_task("pod-bad", "sleep 1; exit 4", |_| {});
    run_group(&session, "pod-2", vec![long, bad]);
    let ended = until_all_ended(&mut session, &["pod-bad", "pod-long"]).await;
    assert_eq!(ended[0].task_id, "pod-bad");
    assert_eq!(ended[0].state(), TaskState::Failed);
    assert_eq!(ended[0].exit_code, Some(4));
    assert_eq!(ended[1].task_id, "pod-long");
    assert_eq!(ended[1].state(), TaskState::Killed);
    assert_eq!(
        ended[1].message,
        "task pod-bad of the pod failed: exited with code 4"
    );
    wait_until(|| containers_of(dir.path()).is_empty()).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_pod_with_two_containers_of_the_same_name_is_a_task_error() {
    let (dir, _cleanup, agent, mut session, _s) = setup().await;
    let a = container_task("same-a", "true", |_| {});
    let mut b = container_task("same-b", "true", |_| {});
    b.name = a.name.clone();
    run_group(&session, "pod-3", vec![a, b]);
    let ended = until_all_ended(&mut session, &["same-a", "same-b"]).await;
    for e in &ended {
        assert_eq!(e.state(), TaskState::Error);
        assert!(e.message.starts_with("tasks[1].name:"), "{}", e.message);
    }
    assert!(containers_of(dir.path()).is_empty());
    agent.stop().await;
}

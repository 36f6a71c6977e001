//! The agent against a stand-in master (a tiny in-test AgentLink server),
//! running real tasks under the real supervisor program.

// Test helpers fail loudly: unwrap is the point here.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use agora_agent::{AgentConfig, AgentError};
use agora_proto::v1::{self, StatusReason, TaskState};

mod support;

use support::*;

// ---------------------------------------------------------------------------
// Behaviours
// ---------------------------------------------------------------------------

#[tokio::test]
async fn agent_registers_with_its_resources_attributes_and_address() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let session = next_session(&mut sessions).await;
    let info = session.register.agent.clone().unwrap();
    assert_eq!(info.id, "");
    assert_eq!(info.hostname, "test-host");
    assert_eq!(info.http_address, agent.http.to_string());
    assert_eq!(
        info.attributes,
        vec![v1::Attribute {
            name: "rack".into(),
            value: "a".into()
        }]
    );
    let resources = agora_proto::Resources::from_proto(&info.resources).unwrap();
    assert_eq!(resources.get_scalar("cpus"), 2.0);
    assert_eq!(resources.get_ranges("ports").ranges(), &[(31000, 31010)]);
    wait_until(|| dir.path().join("agent_id").exists()).await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("agent_id")).unwrap(),
        "agent-1"
    );
    agent.stop().await;
}

#[tokio::test]
async fn health_and_state_are_served_over_http() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let mut session = next_session(&mut sessions).await;
    session.run_task("web.1", "sleep 100");
    session.expect_and_ack(TaskState::Running).await;

    assert_eq!(agent.get("/health").await, (200, "ok".to_owned()));
    let (code, body) = agent.get("/state").await;
    assert_eq!(code, 200);
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["id"], "agent-1");
    assert_eq!(state["registered"], true);
    assert_eq!(state["master"], master.to_string());
    assert_eq!(state["attributes"]["rack"], "a");
    assert_eq!(state["resources"]["cpus"], 2.0);
    let t = &state["tasks"][0];
    assert_eq!(t["id"], "web.1");
    assert_eq!(t["state"], "TASK_RUNNING");
    assert_eq!(t["pid"], task_pid(dir.path(), "web.1"));
    let (code, sandbox) = agent.get("/tasks/web.1/sandbox").await;
    assert_eq!(code, 200);
    assert_eq!(t["sandbox"], sandbox.as_str());

    session.kill("web.1");
    session.expect_and_ack(TaskState::Killing).await;
    session.expect_and_ack(TaskState::Killed).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_true_task_goes_straight_to_running_then_finished() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let mut session = next_session(&mut sessions).await;
    session.run_task("ok", "true");
    // The process containerizer reports no TASK_STARTING.
    let running = session.expect_and_ack(TaskState::Running).await;
    assert_eq!(running.source(), v1::StatusSource::Agent);
    assert_eq!(running.agent_id, "agent-1");
    assert_eq!(running.uuid.len(), 16);
    assert!(running.timestamp > 0.0);
    let finished = session.expect_and_ack(TaskState::Finished).await;
    assert_eq!(finished.exit_code, Some(0));
    // The acknowledged terminal update drops the task (once the agent has
    // the ack) and its checkpoint: a restarted agent no longer reports it.
    // The sandbox stays.
    for _ in 0..100 {
        let (_, body) = agent.get("/state").await;
        if !body.contains("\"ok\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.stop().await;
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let session = next_session(&mut sessions).await;
    assert!(session.register.tasks.is_empty(), "{:?}", session.register.tasks);
    assert!(dir.path().join("sandboxes").join(FRAMEWORK).join("ok").exists());
    agent.stop().await;
}

#[tokio::test]
async fn each_update_is_resent_until_acknowledged_and_the_next_waits() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |c| {
        c.status_update_retry = Duration::from_millis(200);
    })
    .await;
    let mut session = next_session(&mut sessions).await;
    session.run_task("ok", "true");
    let first = session.next_update().await;
    assert_eq!(first.state(), TaskState::Running);
    // Not acknowledged: the same update comes again, and nothing newer.
    let again = session.next_update().await;
    assert_eq!(again.uuid, first.uuid);
    assert_eq!(again.state(), TaskState::Running);
    session.ack(&first);
    let mut next = session.next_update().await;
    while next.uuid == first.uuid {
        next = session.next_update().await;
    }
    assert_eq!(next.state(), TaskState::Finished);
    let resent = session.next_update().await;
    assert_eq!(resent.uuid, next.uuid);
    session.ack(&next);
    agent.stop().await;
}

#[tokio::test]
async fn a_non_zero_exit_fails_with_the_exit_code() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let mut session = next_session(&mut sessions).await;
    session.run_task("bad", "exit 3");
    session.expect_and_ack(TaskState::Running).await;
    let failed = session.expect_and_ack(TaskState::Failed).await;
    assert_eq!(failed.exit_code, Some(3));
    assert_eq!(failed.reason(), StatusReason::ReasonCommandExited);
    assert_eq!(failed.message, "exited with code 3");
    agent.stop().await;
}

#[tokio::test]
async fn a_command_that_cannot_start_fails_as_a_launch_failure() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let mut session = next_session(&mut sessions).await;
    let mut t = task("nope", "");
    t.command = Some(v1::CommandInfo {
        command: Some(v1::command_info::Command::Argv(v1::Argv {
            args: vec!["/nonexistent/program".into()],
        })),
        ..Default::default()
    });
    session.run(t);
    let failed = session.expect_and_ack(TaskState::Failed).await;
    assert_eq!(failed.reason(), StatusReason::ReasonContainerLaunchFailed);
    assert!(failed.message.contains("No such file"), "{}", failed.message);
    agent.stop().await;
}

#[tokio::test]
async fn the_task_sees_its_ports_and_agora_environment() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let mut session = next_session(&mut sessions).await;
    session.run_task("env", "echo $PORT $PORT0 $PORT1 $AGORA_TASK_ID $HOST; pwd");
    session.expect_and_ack(TaskState::Running).await;
    session.expect_and_ack(TaskState::Finished).await;
    let runs = dir.path().join("sandboxes").join(FRAMEWORK).join("env");
    let sandbox = std::fs::read_dir(runs).unwrap().next().unwrap().unwrap().path();
    let out = std::fs::read_to_string(sandbox.join("stdout")).unwrap();
    assert_eq!(
        out,
        format!("31000 31000 31001 env test-host\n{}\n", sandbox.display())
    );
    agent.stop().await;
}

#[tokio::test]
async fn kill_reports_killing_then_killed_and_the_whole_process_group_is_gone() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let mut session = next_session(&mut sessions).await;
    session.run_task("sleepy", "sleep 100 & sleep 100");
    session.expect_and_ack(TaskState::Running).await;
    let pgid = task_pid(dir.path(), "sleepy");
    assert!(group_exists(pgid));

    let asked = tokio::time::Instant::now();
    session.kill("sleepy");
    let killing = session.expect_and_ack(TaskState::Killing).await;
    assert_eq!(killing.reason(), StatusReason::ReasonTaskKilled);
    session.expect_and_ack(TaskState::Killed).await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "took {:?}",
        asked.elapsed()
    );
    wait_until(|| !group_exists(pgid)).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_task_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let mut session = next_session(&mut sessions).await;
    let mut t = task("stubborn", "trap '' TERM; sleep 100 & wait; wait; wait");
    t.kill_policy = Some(v1::KillPolicy {
        grace_period_seconds: Some(0.5),
    });
    session.run(t);
    session.expect_and_ack(TaskState::Running).await;
    let pgid = task_pid(dir.path(), "stubborn");
    let asked = tokio::time::Instant::now();
    session.kill("stubborn");
    session.expect_and_ack(TaskState::Killing).await;
    let killed = session.expect_and_ack(TaskState::Killed).await;
    assert!(asked.elapsed() >= Duration::from_millis(500));
    assert!(killed.message.contains("signal 9"), "{}", killed.message);
    wait_until(|| !group_exists(pgid)).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_task_with_a_container_fails_as_containerizer_unavailable() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |c| {
        c.containerizers = vec![agora_agent::ContainerizerKind::Process];
    })
    .await;
    let mut session = next_session(&mut sessions).await;
    let mut t = task("docker", "true");
    t.container = Some(v1::ContainerInfo {
        kind: Some(v1::container_info::Kind::Docker(v1::DockerInfo {
            image: "busybox".into(),
            ..Default::default()
        })),
        ..Default::default()
    });
    session.run(t);
    let failed = session.expect_and_ack(TaskState::Failed).await;
    assert_eq!(failed.reason(), StatusReason::ReasonContainerizerUnavailable);
    assert_eq!(failed.message, "docker containerizer not enabled");
    agent.stop().await;
}

#[tokio::test]
async fn framework_messages_are_appended_to_the_task_mailbox() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let mut session = next_session(&mut sessions).await;
    session.run_task("mbox", "sleep 100");
    session.expect_and_ack(TaskState::Running).await;
    for data in ["hello", "world"] {
        session.send(v1::master_message::Message::FrameworkMessage(
            v1::FrameworkToAgentMessage {
                framework_id: FRAMEWORK.into(),
                task_id: "mbox".into(),
                data: data.as_bytes().to_vec(),
            },
        ));
    }
    let runs = dir.path().join("sandboxes").join(FRAMEWORK).join("mbox");
    let sandbox = std::fs::read_dir(runs).unwrap().next().unwrap().unwrap().path();
    let mailbox = sandbox.join(".agora/messages");
    wait_until(|| std::fs::read_to_string(&mailbox).is_ok_and(|m| m == "hello\nworld\n")).await;
    session.send(v1::master_message::Message::ShutdownFramework(
        v1::ShutdownFramework {
            framework_id: FRAMEWORK.into(),
        },
    ));
    let killing = session.expect_and_ack(TaskState::Killing).await;
    assert_eq!(killing.reason(), StatusReason::ReasonFrameworkRemoved);
    session.expect_and_ack(TaskState::Killed).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_restarted_agent_reattaches_running_tasks_and_reports_ones_that_ended_while_down() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let mut session = next_session(&mut sessions).await;
    session.run_task("long", "sleep 100");
    let mut seen = vec![session.expect_and_ack(TaskState::Running).await.uuid];
    session.run_task("short", "sleep 1; exit 7");
    seen.push(session.expect_and_ack(TaskState::Running).await.uuid);
    let long_pid = task_pid(dir.path(), "long");
    agent.stop().await;

    // "short" ends while no agent runs; "long" keeps running.
    let runs = dir.path().join("sandboxes").join(FRAMEWORK).join("short");
    let short = std::fs::read_dir(runs).unwrap().next().unwrap().unwrap().path();
    wait_until(|| short.join(".agora/exit_status.json").exists()).await;
    assert!(group_exists(long_pid));

    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let mut session = next_session(&mut sessions).await;
    assert_eq!(session.register.agent.as_ref().unwrap().id, "agent-1");
    let mut reported: Vec<(String, TaskState)> = session
        .register
        .tasks
        .iter()
        .map(|t| {
            (
                t.info.as_ref().unwrap().task_id.clone(),
                t.status.as_ref().unwrap().state(),
            )
        })
        .collect();
    reported.sort();
    assert_eq!(reported.len(), 2, "{reported:?}");
    assert_eq!(reported[0], ("long".to_owned(), TaskState::Running));
    assert_eq!(session.register.frameworks.len(), 1);
    assert_eq!(session.register.frameworks[0].id, FRAMEWORK);

    // An acknowledgement still in flight when the agent stopped may be lost:
    // then the update is simply delivered again (at least once).
    let mut failed = session.next_update().await;
    while seen.contains(&failed.uuid) {
        session.ack(&failed);
        failed = session.next_update().await;
    }
    session.ack(&failed);
    assert_eq!(failed.state(), TaskState::Failed);
    assert_eq!(failed.task_id, "short");
    assert_eq!(failed.exit_code, Some(7));

    // The running task was not restarted.
    assert_eq!(task_pid(dir.path(), "long"), long_pid);
    assert!(group_exists(long_pid));
    session.kill("long");
    session.expect_and_ack(TaskState::Killing).await;
    session.expect_and_ack(TaskState::Killed).await;
    wait_until(|| !group_exists(long_pid)).await;
    agent.stop().await;
}

#[tokio::test]
async fn the_agent_reconnects_and_resends_pending_updates_after_the_stream_ends() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let mut session = next_session(&mut sessions).await;
    session.run_task("ok", "sleep 100");
    let running = session.next_update().await;
    assert_eq!(running.state(), TaskState::Running);
    // The master drops the stream without acknowledging.
    session
        .down
        .send(Err(tonic::Status::unavailable("master restarting")))
        .unwrap();
    let mut session = next_session(&mut sessions).await;
    assert_eq!(session.register.agent.as_ref().unwrap().id, "agent-1");
    assert_eq!(session.register.tasks.len(), 1);
    let again = session.next_update().await;
    assert_eq!(again.uuid, running.uuid);
    session.ack(&again);
    session.kill("ok");
    session.expect_and_ack(TaskState::Killing).await;
    session.expect_and_ack(TaskState::Killed).await;
    agent.stop().await;
}

/// Whether the agent's checkpoint log on disk holds the update (by its uuid).
fn checkpointed(work_dir: &Path, status: &v1::TaskStatus) -> bool {
    std::fs::read(work_dir.join("meta/tasks.log")).is_ok_and(|bytes| {
        bytes
            .windows(status.uuid.len())
            .any(|w| w == status.uuid.as_slice())
    })
}

#[tokio::test]
async fn every_update_is_on_disk_before_it_is_sent() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let mut session = next_session(&mut sessions).await;
    let ids: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    for id in &ids {
        session.run_task(id, "true");
    }
    let mut finished = 0;
    while finished < ids.len() {
        // Checked before acknowledging, so the update is still pending on disk.
        let status = session.next_update().await;
        assert!(
            checkpointed(dir.path(), &status),
            "{status:?} sent before it was checkpointed"
        );
        if status.state() == TaskState::Finished {
            finished += 1;
        }
        session.ack(&status);
    }
    agent.stop().await;
}

#[tokio::test]
async fn a_batch_of_tasks_launches_concurrently_and_each_reports_running_then_its_end() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let mut session = next_session(&mut sessions).await;
    for i in 0..30 {
        session.run_task(&format!("b{i}"), "exit 0");
    }
    let mut states: std::collections::BTreeMap<String, Vec<TaskState>> = Default::default();
    while states.values().filter(|s| s.len() == 2).count() < 30 {
        let status = session.next_update().await;
        session.ack(&status);
        states
            .entry(status.task_id.clone())
            .or_default()
            .push(status.state());
    }
    for (id, seen) in &states {
        assert_eq!(seen, &[TaskState::Running, TaskState::Finished], "{id}");
    }
    agent.stop().await;
}

#[tokio::test]
async fn a_kill_racing_the_launch_kills_the_task_once_it_is_launched() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let mut session = next_session(&mut sessions).await;
    // Both arrive in one read of the stream: the launch is still in flight.
    session.run_task("racer", "sleep 100");
    session.kill("racer");
    let killing = session.expect_and_ack(TaskState::Killing).await;
    assert_eq!(killing.reason(), StatusReason::ReasonTaskKilled);
    let killed = session.expect_and_ack(TaskState::Killed).await;
    assert_eq!(killed.reason(), StatusReason::ReasonTaskKilled);
    let pgid = task_pid(dir.path(), "racer");
    wait_until(|| !group_exists(pgid)).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_stopped_agent_has_checkpointed_the_tasks_it_launched() {
    let (master, mut sessions) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let session = next_session(&mut sessions).await;
    session.run_task("quick", "sleep 100");
    // Stop at once: the launch may still be in flight.
    wait_until(|| {
        dir.path()
            .join("sandboxes")
            .join(FRAMEWORK)
            .join("quick")
            .exists()
    })
    .await;
    agent.stop().await;

    let agent = RunningAgent::start(master, dir.path(), |_| {}).await;
    let mut session = next_session(&mut sessions).await;
    assert_eq!(session.register.tasks.len(), 1);
    // Re-attached (not reported as lost): it runs, and can be killed.
    session.expect_and_ack(TaskState::Running).await;
    let pgid = task_pid(dir.path(), "quick");
    assert!(group_exists(pgid));
    session.kill("quick");
    session.expect_and_ack(TaskState::Killing).await;
    session.expect_and_ack(TaskState::Killed).await;
    wait_until(|| !group_exists(pgid)).await;
    agent.stop().await;
}

#[tokio::test]
async fn bad_attributes_are_an_error_from_run() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(
        vec!["127.0.0.1:1".into()],
        listener.local_addr().unwrap(),
        dir.path().into(),
    );
    config.attributes = Some("rack".into());
    let err = agora_agent::run(config, listener, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Attributes(_)), "{err}");
}

//! Processes crash and come back; tasks carry on and nothing is lost.

use std::time::Duration;

use agora_proto::v1::{StatusReason, TaskState};

use crate::harness::*;

fn fast_agent_timeout() -> ClusterSpec {
    ClusterSpec {
        master_args: vec!["--agent-timeout".into(), "2s".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_silent_agent_makes_its_tasks_unreachable_and_its_return_reconciles_them() {
    let mut cluster = Cluster::start(fast_agent_timeout()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![shell_task("t1", "echo $$ > pid; exec sleep 300", 0.1, 32.0)],
    )
    .await;
    fw.update("t1", TaskState::Running).await;
    let pid = task_pid(&cluster, "t1").await;

    cluster.agents[0].crash();
    let unreachable = fw.update("t1", TaskState::Unreachable).await;
    assert_eq!(unreachable.reason(), StatusReason::ReasonAgentUnreachable);
    assert!(pid_alive(pid), "the task runs on while its agent is away");

    cluster.agents[0].restart().await;
    let back = fw.update("t1", TaskState::Running).await;
    assert_eq!(
        back.agent_id, offers[0].agent_id,
        "the agent came back under its old id"
    );
    assert!(pid_alive(pid), "the task was restarted or killed, not reconciled");
}

#[tokio::test]
async fn a_restarted_agent_reattaches_to_its_running_task() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![shell_task("t1", "echo $$ > pid; exec sleep 300", 0.1, 32.0)],
    )
    .await;
    fw.update("t1", TaskState::Running).await;
    let pid = task_pid(&cluster, "t1").await;

    cluster.agents[0].restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(pid_alive(pid), "the task died with its agent");
    // The restarted agent still controls the task: a kill works.
    fw.kill("t1").await;
    fw.update("t1", TaskState::Killed).await;
    assert!(!pid_alive(pid));
}

#[tokio::test]
async fn a_task_that_exits_while_its_agent_is_down_reports_its_real_exit_code() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![shell_task("t1", "echo $$ > pid; sleep 1; exit 7", 0.1, 32.0)],
    )
    .await;
    fw.update("t1", TaskState::Running).await;

    cluster.agents[0].crash();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.agents[0].restart().await;
    let failed = fw.update("t1", TaskState::Failed).await;
    assert_eq!(failed.exit_code, Some(7));
}

#[tokio::test]
async fn a_master_restart_keeps_tasks_running_and_frameworks_known() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 120.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![shell_task("t1", "echo $$ > pid; exec sleep 300", 0.1, 32.0)],
    )
    .await;
    fw.update("t1", TaskState::Running).await;
    let pid = task_pid(&cluster, "t1").await;
    let id = fw.id.clone();
    drop(fw);

    cluster.master.restart().await;
    cluster.wait_agents(1).await;
    let mut info = framework_info("e2e", 120.0);
    info.id = id.clone();
    let mut fw = Framework::subscribe(cluster.master.addr, info).await;
    assert_eq!(fw.id, id, "the restarted master remembered the framework");
    fw.reconcile(&["t1"]).await;
    let st = fw.next_update("t1", SOON).await.expect("reconciliation answer");
    assert_eq!(st.state(), TaskState::Running);
    assert!(pid_alive(pid));
    let state = cluster.state().await;
    let tasks = state["tasks"].as_array().cloned().unwrap_or_default();
    assert!(
        tasks
            .iter()
            .any(|t| t["id"] == "t1" && t["state"] == "TASK_RUNNING"),
        "{state:#}"
    );
}

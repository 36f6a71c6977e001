//! The basic life of a task: launch to FINISHED or FAILED, and kill.

use agora_proto::v1::TaskState;

use crate::harness::*;

#[tokio::test]
async fn a_task_that_exits_zero_runs_to_finished() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![shell_task("t1", "echo hello; exit 0", 0.1, 32.0)],
    )
    .await;

    let running = fw.update("t1", TaskState::Running).await;
    assert_eq!(running.agent_id, offers[0].agent_id);
    assert!(
        !running.uuid.is_empty(),
        "agent updates carry a uuid to acknowledge"
    );
    let finished = fw.update("t1", TaskState::Finished).await;
    assert_eq!(finished.exit_code, Some(0));
}

#[tokio::test]
async fn a_task_that_exits_non_zero_fails_with_its_exit_code() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(&[&offers[0]], vec![shell_task("t1", "exit 3", 0.1, 32.0)])
        .await;

    let failed = fw.update("t1", TaskState::Failed).await;
    assert_eq!(failed.exit_code, Some(3));
    assert!(
        failed.message.contains('3'),
        "message names the code: {}",
        failed.message
    );
}

#[tokio::test]
async fn killing_a_task_stops_its_whole_process_group() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    // A child in the background must die with the task.
    fw.launch(
        &[&offers[0]],
        vec![shell_task(
            "t1",
            "echo $$ > pid; sleep 300 & sleep 300",
            0.1,
            32.0,
        )],
    )
    .await;
    fw.update("t1", TaskState::Running).await;
    let pid = task_pid(&cluster, "t1").await;

    fw.kill("t1").await;
    fw.update("t1", TaskState::Killed).await;
    assert!(!pid_alive(pid), "task process {pid} survived the kill");
    // The supervisor exits too once the task is gone.
    let deadline = tokio::time::Instant::now() + SOON;
    while !cluster.task_processes().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "left behind: {:?}",
            cluster.task_processes()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_task_sees_its_ports_and_sandbox_in_its_environment() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    let mut task = shell_task(
        "t1",
        r#"test "$PORT0" = 31005 && test "$PORT1" = 31006 && test "$PORT" = "$PORT0" && test -d "$AGORA_SANDBOX" && test "$AGORA_TASK_ID" = t1"#,
        0.1,
        32.0,
    );
    task.resources = agora_proto::Resources::new()
        .scalar("cpus", 0.1)
        .scalar("mem", 32.0)
        .with_ranges("ports", [(31005, 31006)])
        .to_proto();
    fw.launch(&[&offers[0]], vec![task]).await;
    fw.update("t1", TaskState::Finished).await;
}

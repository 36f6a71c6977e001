//! TASK_UNREACHABLE against a real master and two agents: when a task's
//! agent goes silent, the task is replaced on the other agent after the
//! app's `unreachableStrategy.inactiveAfterSeconds`; when the agent comes
//! back with the old task still running, the old one is killed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: panics are the failure report

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Cluster, ClusterOptions, TestService, app_from_json, eventually, pid_alive, task_pid};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_task_is_replaced_elsewhere_and_killed_when_its_agent_returns() {
    let mut cluster = Cluster::start_with(ClusterOptions {
        agents: 2,
        agent_timeout: Some(Duration::from_secs(2)),
        ..ClusterOptions::default()
    })
    .await;
    let service = TestService::start(&cluster, &cluster.service_dir()).await;
    let app = service
        .create(app_from_json(json!({
            "id": "/partitioned",
            "cmd": "sleep 1000",
            "instances": 1,
            "cpus": 0.1,
            "mem": 16,
            "taskKillGracePeriodSeconds": 1,
            "unreachableStrategy": {"inactiveAfterSeconds": 1, "expungeAfterSeconds": 3600},
        })))
        .await;
    let first = service.wait_running(&app, 1).await.remove(0);
    service.wait_deployments_done().await;
    let away = cluster.agent_of_task(first.id.as_str()).unwrap();
    let pid = task_pid(&cluster.agent_dir_of(away), first.id.as_str()).unwrap();

    cluster.stop_agent(away).await;

    let handle = service.handle.clone();
    let replacement = eventually("a replacement on the other agent", || {
        let handle = handle.clone();
        let app = app.clone();
        let first = first.clone();
        async move {
            let tasks = handle.tasks(Some(&app)).await;
            let old = tasks.iter().find(|t| t.id == first.id)?;
            let new = tasks
                .iter()
                .find(|t| t.id != first.id && t.state == "TASK_RUNNING")?;
            (old.state == "TASK_UNREACHABLE").then(|| new.clone())
        }
    })
    .await;
    assert_ne!(
        replacement.agent_id, first.agent_id,
        "replaced on the other agent"
    );
    assert_eq!(cluster.agent_of_task(replacement.id.as_str()), Some(1 - away));
    assert!(pid_alive(pid), "the old task still runs while its agent is away");

    cluster.restart_agent(away).await;

    let after = service.wait_running(&app, 1).await;
    assert_eq!(
        after[0].id, replacement.id,
        "the replacement stays, the returning task goes"
    );
    eventually("the returning task's process to be killed", || async move {
        (!pid_alive(pid)).then_some(())
    })
    .await;
    // And it stays at one instance.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tasks = service.handle.tasks(Some(&app)).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].id, replacement.id);
    service.stop().await;
}

//! Health checks against real tasks: a Python HTTP server per task (on its
//! `PORT0`, serving its sandbox) checked over HTTP. A task whose check keeps
//! failing is killed and replaced; a task that passes is left alone; a
//! rolling update waits for the new version's tasks to be healthy before it
//! kills the old ones.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: panics are the failure report

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use agora_service::app::{AppDefinition, AppId};
use agora_service::handle::{ServiceEvent, TaskView};
use serde_json::json;
use support::{
    Cluster, ClusterOptions, EventLog, TestService, app_from_json, eventually, pid_alive, task_pid,
    task_sandbox,
};

/// A task that writes `ok` into its sandbox and serves the sandbox over HTTP
/// on `PORT0`.
const SERVER: &str = "echo ok > ok && exec /usr/bin/python3 -m http.server $PORT0 --bind 127.0.0.1";

/// An app of `instances` HTTP servers whose check asks for `path` every
/// second; `max_failures` failures in a row after the grace period kill a task.
fn web_app(id: &str, instances: u32, path: &str, max_failures: u32) -> AppDefinition {
    app_from_json(json!({
        "id": id,
        "cmd": SERVER,
        "instances": instances,
        "cpus": 0.1,
        "mem": 32,
        "portDefinitions": [{"port": 0}],
        "taskKillGracePeriodSeconds": 1,
        "healthChecks": [{
            "protocol": "HTTP",
            "path": path,
            "portIndex": 0,
            "gracePeriodSeconds": 10,
            "intervalSeconds": 1,
            "timeoutSeconds": 1,
            "maxConsecutiveFailures": max_failures,
        }],
    }))
}

async fn cluster() -> Cluster {
    Cluster::start_with(ClusterOptions {
        free_ports: true,
        ..ClusterOptions::default()
    })
    .await
}

fn ids(tasks: &[TaskView]) -> BTreeSet<String> {
    tasks.iter().map(|t| t.id.to_string()).collect()
}

fn is_healthy(task: &TaskView) -> bool {
    !task.health.is_empty() && task.health.iter().all(|r| r.alive)
}

/// Waits until `n` tasks of `app` run, all of them healthy, and no others exist.
async fn wait_healthy(service: &TestService, app: &AppId, n: usize) -> Vec<TaskView> {
    let handle = service.handle.clone();
    eventually(&format!("{n} healthy tasks of {app}"), || {
        let handle = handle.clone();
        async move {
            let tasks = handle.tasks(Some(app)).await;
            (tasks.len() == n && tasks.iter().all(|t| t.state == "TASK_RUNNING" && is_healthy(t)))
                .then_some(tasks)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_failing_its_health_check_is_killed_and_replaced() {
    let cluster = cluster().await;
    let service = TestService::start(&cluster, &cluster.service_dir()).await;
    let events = EventLog::record(&service.handle);
    let app = service.create(web_app("/web", 1, "/ok", 2)).await;
    let before = wait_healthy(&service, &app, 1).await;
    let victim = before[0].id.clone();
    let pid = task_pid(&cluster.agent_dir, victim.as_str()).unwrap();

    // The server keeps running but its check now answers 404.
    let sandbox = task_sandbox(&cluster.agent_dir, victim.as_str()).unwrap();
    std::fs::remove_file(sandbox.join("ok")).unwrap();

    let kill = events
        .wait_for(
            "an unhealthy_task_kill of the task",
            |e| matches!(e, ServiceEvent::UnhealthyTaskKill { task_id, .. } if *task_id == victim),
        )
        .await;
    let ServiceEvent::UnhealthyTaskKill { app_id, host, .. } = &kill else {
        unreachable!()
    };
    assert_eq!(app_id, &app);
    assert_eq!(host, "127.0.0.1");
    let failed_checks = events
        .snapshot()
        .await
        .iter()
        .filter(|e| matches!(e, ServiceEvent::FailedHealthCheck { task_id, .. } if *task_id == victim))
        .count();
    assert!(
        failed_checks >= 2,
        "{failed_checks} failed_health_check events before the kill"
    );
    let after = wait_healthy(&service, &app, 1).await;
    assert_ne!(after[0].id, victim, "a new task replaced the unhealthy one");
    eventually("the unhealthy task's process to exit", || async move {
        (!pid_alive(pid)).then_some(())
    })
    .await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_passing_its_health_checks_is_never_killed() {
    let cluster = cluster().await;
    let service = TestService::start(&cluster, &cluster.service_dir()).await;
    let events = EventLog::record(&service.handle);
    let app = service.create(web_app("/steady", 2, "/ok", 2)).await;
    let before = wait_healthy(&service, &app, 2).await;
    service.wait_deployments_done().await;

    // Five more checks of each task.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let after = wait_healthy(&service, &app, 2).await;
    assert_eq!(ids(&after), ids(&before), "no task was replaced");
    let status = service.handle.app(&app).await.unwrap();
    assert_eq!((status.tasks_healthy, status.tasks_unhealthy), (2, 0));
    for task in &after {
        assert_eq!(task.health[0].consecutive_failures, 0, "{task:?}");
    }
    let bad: Vec<&str> = events
        .snapshot()
        .await
        .iter()
        .filter(|e| {
            matches!(
                e,
                ServiceEvent::FailedHealthCheck { .. } | ServiceEvent::UnhealthyTaskKill { .. }
            )
        })
        .map(ServiceEvent::event_type)
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_kills_old_tasks_only_once_new_ones_are_healthy() {
    let cluster = cluster().await;
    let service = TestService::start(&cluster, &cluster.service_dir()).await;
    let app = service.create(web_app("/rolling", 2, "/ok", 3)).await;
    let old = wait_healthy(&service, &app, 2).await;
    service.wait_deployments_done().await;
    let old_pids: Vec<i32> = old
        .iter()
        .map(|t| task_pid(&cluster.agent_dir, t.id.as_str()).unwrap())
        .collect();

    // A version whose tasks never pass their check (and are never killed for it).
    let broken = service
        .handle
        .update_apps(vec![web_app("/rolling", 2, "/missing", 0)], false)
        .await
        .unwrap();
    let handle = service.handle.clone();
    let new = eventually("the new version's tasks to run and fail their checks", || {
        let handle = handle.clone();
        let app = app.clone();
        async move {
            let new: Vec<TaskView> = handle
                .tasks(Some(&app))
                .await
                .into_iter()
                .filter(|t| t.version == broken.version && t.state == "TASK_RUNNING")
                .collect();
            (new.len() == 2
                && new.iter().all(|t| {
                    t.health
                        .first()
                        .is_some_and(|r| !r.alive && r.consecutive_failures >= 2)
                }))
            .then_some(new)
        }
    })
    .await;
    assert!(ids(&new).is_disjoint(&ids(&old)));
    // Give the deployment time to (wrongly) move on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let running = service.running(&app).await;
    assert!(
        ids(&old).is_subset(&ids(&running)),
        "old tasks were killed: {running:?}"
    );
    assert!(old_pids.iter().all(|pid| pid_alive(*pid)));
    let deployments = service.handle.deployments().await;
    assert_eq!(deployments.len(), 1, "{deployments:?}");
    assert_eq!(deployments[0].id, broken.id);

    // A version that passes replaces every task and the deployment finishes.
    let events = EventLog::record(&service.handle);
    let fixed = service
        .handle
        .update_apps(vec![web_app("/rolling", 2, "/ok", 3)], true)
        .await
        .unwrap();
    service.wait_deployments_done().await;
    let last = wait_healthy(&service, &app, 2).await;
    assert!(last.iter().all(|t| t.version == fixed.version), "{last:?}");
    for pid in old_pids {
        eventually("an old task's process to exit", || async move {
            (!pid_alive(pid)).then_some(())
        })
        .await;
    }
    // The first old task to go went after a task of the new version turned healthy.
    let log = events.snapshot().await;
    let first_healthy = log.iter().position(|e| {
        matches!(e, ServiceEvent::HealthStatusChanged { version, alive: true, .. } if *version == fixed.version)
    });
    let first_old_gone = log.iter().position(
        |e| matches!(e, ServiceEvent::StatusUpdate { task, .. } if ids(&old).contains(task.id.as_str())),
    );
    let (Some(healthy), Some(gone)) = (first_healthy, first_old_gone) else {
        panic!("no health change or no end of an old task in {log:#?}");
    };
    assert!(
        healthy < gone,
        "an old task went (event {gone}) before a new one was healthy (event {healthy})"
    );
    service.stop().await;
}

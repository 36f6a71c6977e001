//! The service framework against a real master and agent (process
//! containerizer, real `sleep` tasks): apps reach their instance counts,
//! scale, heal, survive a restart of the framework, roll, and go away.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: panics are the failure report

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{
    Cluster, TestService, eventually, kill_from_outside, pid_alive, serve_http, sleeper, stored_state,
    task_pid,
};

fn ids(tasks: &[agora_service::handle::TaskView]) -> BTreeSet<String> {
    tasks.iter().map(|t| t.id.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_of_three_instances_reaches_three_running_tasks() {
    let cluster = Cluster::start().await;
    let service = TestService::start(&cluster, &cluster.service_dir()).await;

    let app = service.create(sleeper("/sleepers", 3)).await;

    let tasks = service.wait_running(&app, 3).await;
    assert_eq!(ids(&tasks).len(), 3);
    for task in &tasks {
        let pid = task_pid(&cluster.agent_dir, task.id.as_str()).expect("the task wrote its pid");
        assert!(pid_alive(pid), "task {} is not running", task.id);
        assert_eq!(task.host, "127.0.0.1");
    }
    service.wait_deployments_done().await;
    let status = service.handle.app(&app).await.unwrap();
    assert_eq!(status.tasks_running, 3);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_three_to_five_to_two_keeps_that_many_running() {
    let cluster = Cluster::start().await;
    let service = TestService::start(&cluster, &cluster.service_dir()).await;
    let app = service.create(sleeper("/scaled", 3)).await;
    service.wait_running(&app, 3).await;
    service.wait_deployments_done().await;

    service
        .handle
        .update_apps(vec![sleeper("/scaled", 5)], false)
        .await
        .unwrap();
    let five = service.wait_running(&app, 5).await;
    service.wait_deployments_done().await;

    service
        .handle
        .update_apps(vec![sleeper("/scaled", 2)], false)
        .await
        .unwrap();
    let two = service.wait_running(&app, 2).await;
    service.wait_deployments_done().await;
    assert!(
        ids(&two).is_subset(&ids(&five)),
        "scaling down launched new tasks"
    );
    // The three killed tasks' processes are gone.
    for task in five.iter().filter(|t| !ids(&two).contains(t.id.as_str())) {
        let pid = task_pid(&cluster.agent_dir, task.id.as_str()).unwrap();
        eventually("the killed task's process to exit", || async move {
            (!pid_alive(pid)).then_some(())
        })
        .await;
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_killed_outside_agora_is_replaced() {
    let cluster = Cluster::start().await;
    let service = TestService::start(&cluster, &cluster.service_dir()).await;
    let app = service.create(sleeper("/healing", 3)).await;
    let before = service.wait_running(&app, 3).await;
    let victim = before[0].id.to_string();
    let pid = task_pid(&cluster.agent_dir, &victim).unwrap();

    kill_from_outside(pid);

    let handle = service.handle.clone();
    let after = eventually("a replacement for the killed task", || {
        let handle = handle.clone();
        let app = app.clone();
        let victim = victim.clone();
        async move {
            let tasks = handle.tasks(Some(&app)).await;
            let running: Vec<_> = tasks.into_iter().filter(|t| t.state == "TASK_RUNNING").collect();
            (running.len() == 3 && !ids(&running).contains(&victim)).then_some(running)
        }
    })
    .await;
    let kept: BTreeSet<_> = ids(&before).into_iter().filter(|id| *id != victim).collect();
    assert!(kept.is_subset(&ids(&after)), "the other tasks were not touched");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_service_keeps_its_tasks_apps_versions_and_deployments() {
    let cluster = Cluster::start().await;
    let work_dir = cluster.service_dir();
    let service = TestService::start(&cluster, &work_dir).await;
    let app = service.create(sleeper("/kept", 3)).await;
    let tasks = service.wait_running(&app, 3).await;
    // A second app too big for the agent: its deployment stays in progress.
    let mut big = sleeper("/too-big", 1);
    big.cpus = 100.0;
    let stuck = service.handle.create_app(big).await.unwrap();
    let before_versions = service.handle.app_versions(&app).await.unwrap();
    let before_pids: Vec<i32> = tasks
        .iter()
        .map(|t| task_pid(&cluster.agent_dir, t.id.as_str()).unwrap())
        .collect();
    let before_deployments: BTreeSet<_> = service
        .handle
        .deployments()
        .await
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert!(before_deployments.contains(&stuck.id));
    let framework_id = service.handle.info().await.framework_id;
    assert!(framework_id.is_some());
    service.stop().await;

    let service = TestService::start(&cluster, &work_dir).await;

    let after = service.wait_running(&app, 3).await;
    assert_eq!(ids(&after), ids(&tasks), "the same tasks, none replaced");
    // The master sees one framework, the same one, connected again.
    let master = format!("http://{}/state", cluster.master);
    let frameworks = eventually("the framework to re-subscribe", || {
        let master = master.clone();
        async move {
            let state: serde_json::Value = reqwest::get(&master).await.ok()?.json().await.ok()?;
            let frameworks = state["frameworks"].as_array()?.clone();
            frameworks
                .iter()
                .any(|f| f["connected"] == true)
                .then_some(frameworks)
        }
    })
    .await;
    assert_eq!(frameworks.len(), 1, "{frameworks:?}");
    assert_eq!(frameworks[0]["id"].as_str(), framework_id.as_deref());
    for (task, pid) in tasks.iter().zip(&before_pids) {
        assert!(pid_alive(*pid), "task {} was restarted", task.id);
        assert_eq!(task_pid(&cluster.agent_dir, task.id.as_str()), Some(*pid));
    }
    assert_eq!(service.handle.app_versions(&app).await.unwrap(), before_versions);
    let after_deployments: BTreeSet<_> = service
        .handle
        .deployments()
        .await
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(after_deployments, before_deployments);
    let apps: BTreeSet<_> = service
        .handle
        .apps()
        .await
        .into_iter()
        .map(|a| a.app.id.to_string())
        .collect();
    assert_eq!(apps, BTreeSet::from(["/kept".to_owned(), "/too-big".to_owned()]));

    // After reconciliation has had time to run, still nothing was replaced.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ids(&service.running(&app).await), ids(&tasks));
    assert!(before_pids.iter().all(|pid| pid_alive(*pid)));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_replaces_every_task_and_finishes() {
    let cluster = Cluster::start().await;
    let service = TestService::start(&cluster, &cluster.service_dir()).await;
    let app = service.create(sleeper("/rolling", 3)).await;
    let old = service.wait_running(&app, 3).await;
    service.wait_deployments_done().await;

    let mut updated = sleeper("/rolling", 3);
    updated.cmd = Some("sleep 2000".to_owned());
    let deployment = service.handle.update_apps(vec![updated], false).await.unwrap();

    service.wait_deployments_done().await;
    let new = service.wait_running(&app, 3).await;
    assert!(ids(&old).is_disjoint(&ids(&new)), "every old task was replaced");
    assert!(new.iter().all(|t| t.version == deployment.version), "{new:?}");
    let current = service.handle.app(&app).await.unwrap();
    assert_eq!(current.app.cmd.as_deref(), Some("sleep 2000"));
    assert_eq!(service.handle.app_versions(&app).await.unwrap().len(), 2);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_app_kills_every_task() {
    let cluster = Cluster::start().await;
    let service = TestService::start(&cluster, &cluster.service_dir()).await;
    let app = service.create(sleeper("/doomed", 3)).await;
    let tasks = service.wait_running(&app, 3).await;
    let pids: Vec<i32> = tasks
        .iter()
        .map(|t| task_pid(&cluster.agent_dir, t.id.as_str()).unwrap())
        .collect();

    service
        .handle
        .delete_apps(vec![app.clone()], false)
        .await
        .unwrap();

    service.wait_deployments_done().await;
    assert!(service.handle.apps().await.is_empty());
    assert!(service.handle.tasks(None).await.is_empty());
    for pid in pids {
        eventually("the task's process to exit", || async move {
            (!pid_alive(pid)).then_some(())
        })
        .await;
    }
    let work_dir = service.work_dir.clone();
    service.stop().await;
    let stored = stored_state(&work_dir).await;
    assert!(stored.apps.is_empty() && stored.versions.is_empty() && stored.tasks.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_with_negative_cpus_is_refused_and_nothing_is_stored() {
    let cluster = Cluster::start().await;
    let work_dir = cluster.service_dir();
    let (base, stop, run) = serve_http(&cluster, &work_dir).await;
    let client = reqwest::Client::new();

    let response = client
        .post(format!("{base}/v2/apps"))
        .json(&serde_json::json!({"id": "/bad", "cmd": "sleep 1", "cpus": -1}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status().as_u16(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    let paths: Vec<&str> = body["details"]
        .as_array()
        .expect("Marathon's details")
        .iter()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert!(paths.contains(&"/cpus"), "{body}");
    let apps: serde_json::Value = client
        .get(format!("{base}/v2/apps"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(apps["apps"], serde_json::json!([]));
    stop.send(()).unwrap();
    tokio::time::timeout(support::WAIT, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let stored = stored_state(&work_dir).await;
    assert!(stored.apps.is_empty() && stored.versions.is_empty() && stored.deployments.is_empty());
}

//! The launch backoff of a crash-looping app on a real master and agent:
//! it holds the app's launches across a restart of the service framework.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: panics are the failure report

mod support;

use std::time::Duration;

use agora_service::app::AppId;
use serde_json::json;
use support::{Cluster, TestService, app_from_json, eventually};

/// The seconds the app's queue entry still waits, once it waits.
async fn delay_left(service: &TestService, app: &AppId) -> Option<u64> {
    let queue = service.handle.queue().await;
    queue
        .iter()
        .find(|q| &q.app.id == app)
        .map(|q| q.delay_seconds_left)
        .filter(|left| *left > 0)
}

/// How many tasks the agent has run (one sandbox directory each).
fn launched_tasks(cluster: &Cluster) -> usize {
    let Ok(frameworks) = std::fs::read_dir(cluster.agent_dir.join("sandboxes")) else {
        return 0;
    };
    frameworks
        .flatten()
        .map(|f| std::fs::read_dir(f.path()).map_or(0, |tasks| tasks.count()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_app_stays_held_by_its_backoff_after_a_restart() {
    let cluster = Cluster::start().await;
    let work_dir = cluster.service_dir();
    let service = TestService::start(&cluster, &work_dir).await;
    let app = service
        .create(app_from_json(json!({
            "id": "/crashing",
            "cmd": "sleep 0.2; exit 1",
            "cpus": 0.1,
            "mem": 16,
            "backoffSeconds": 120,
        })))
        .await;
    // The first failure is replaced at once, the second waits 120 s.
    let before = eventually("the second failure to hold the app's launches", || {
        delay_left(&service, &app)
    })
    .await;
    assert!(before > 100, "{before} s left");
    let launched_before = launched_tasks(&cluster);
    assert_eq!(launched_before, 2, "one launch and one immediate replacement");
    service.stop().await;

    let service = TestService::start(&cluster, &work_dir).await;
    // The restarted framework subscribes again, and offers reach it.
    let master = format!("http://{}/state", cluster.master);
    eventually("the framework to subscribe again", || {
        let master = master.clone();
        async move {
            let state: serde_json::Value = reqwest::get(&master).await.ok()?.json().await.ok()?;
            let frameworks = state["frameworks"].as_array()?.clone();
            frameworks.iter().any(|f| f["connected"] == true).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(
        launched_tasks(&cluster),
        launched_before,
        "a task was launched although the backoff holds"
    );
    let after = delay_left(&service, &app).await.expect("still delayed");
    assert!(
        after > 90 && after <= before,
        "{after} s left after the restart, {before} s before"
    );
    service.stop().await;
}

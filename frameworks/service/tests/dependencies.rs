//! Dependencies between apps in one deployment, on a real master and agent:
//! an app starts only once the apps it depends on run, and on removal the
//! dependent app goes first.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: panics are the failure report

mod support;

use agora_service::app::{AppDefinition, AppId};
use agora_service::handle::{ServiceEvent, TaskView};
use serde_json::json;
use support::{Cluster, EventLog, TestService, app_from_json};

fn app(id: &str, cmd: &str, dependencies: &[&str]) -> AppDefinition {
    app_from_json(json!({
        "id": id,
        "cmd": cmd,
        "instances": 2,
        "cpus": 0.1,
        "mem": 16,
        "taskKillGracePeriodSeconds": 5,
        "dependencies": dependencies,
    }))
}

/// The first event that is a status update of a task of `app`.
fn first_update_of(events: &[ServiceEvent], app: &AppId) -> Option<(usize, TaskView)> {
    events.iter().enumerate().find_map(|(i, e)| match e {
        ServiceEvent::StatusUpdate { task, .. } if &task.app_id == app => Some((i, task.clone())),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_started_only_after_the_app_it_depends_on_runs() {
    let cluster = Cluster::start().await;
    let service = TestService::start(&cluster, &cluster.service_dir()).await;
    let db = AppId::parse("/shop/db").unwrap();
    let web = AppId::parse("/shop/web").unwrap();

    // The dependent app first in the request: order comes from dependencies.
    service
        .handle
        .update_apps(
            vec![
                app("/shop/web", "sleep 1000", &["/shop/db"]),
                app("/shop/db", "sleep 1000", &[]),
            ],
            false,
        )
        .await
        .unwrap();

    let web_tasks = service.wait_running(&web, 2).await;
    let db_tasks = service.wait_running(&db, 2).await;
    service.wait_deployments_done().await;
    let db_running = db_tasks.iter().filter_map(|t| t.started_at).max().unwrap();
    let web_staged = web_tasks.iter().map(|t| t.staged_at).min().unwrap();
    assert!(
        web_staged >= db_running,
        "web staged at {web_staged}, before every db task ran (the last at {db_running})"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_apps_stops_the_dependent_app_before_its_dependency() {
    let cluster = Cluster::start().await;
    let service = TestService::start(&cluster, &cluster.service_dir()).await;
    let db = AppId::parse("/shop/db").unwrap();
    let web = AppId::parse("/shop/web").unwrap();
    // The dependent app takes a second to stop after SIGTERM.
    let slow_to_stop = "trap 'sleep 1; exit 0' TERM; while true; do sleep 0.1; done";
    service
        .handle
        .update_apps(
            vec![
                app("/shop/db", "sleep 1000", &[]),
                app("/shop/web", slow_to_stop, &["/shop/db"]),
            ],
            false,
        )
        .await
        .unwrap();
    service.wait_running(&db, 2).await;
    service.wait_running(&web, 2).await;
    service.wait_deployments_done().await;
    let events = EventLog::record(&service.handle);

    service
        .handle
        .delete_apps(vec![db.clone(), web.clone()], false)
        .await
        .unwrap();
    service.wait_deployments_done().await;

    let log = events.snapshot().await;
    let last_web_end = log
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            ServiceEvent::StatusUpdate { task, .. } if task.app_id == web => Some(i),
            _ => None,
        })
        .max()
        .expect("web's tasks ended");
    let (first_db, task) = first_update_of(&log, &db).expect("db's tasks ended");
    assert!(
        last_web_end < first_db,
        "db task {} was {} (event {first_db}) before web's tasks were gone (event {last_web_end})",
        task.id,
        task.state
    );
    assert!(service.handle.apps().await.is_empty());
    service.stop().await;
}

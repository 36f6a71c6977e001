//! Docker tasks through the real binary: a `shell_task` with a container,
//! on the `agora-test/busybox:latest` image (scripts/test-image.sh). Every
//! container is removed by its work-dir label when the test ends, pass or fail.

use std::time::Duration;

use agora_proto::v1::{self, StatusReason, TaskState};

use crate::containers::*;
use crate::harness::*;

fn docker_task(id: &str, cmd: &str, image: &str) -> v1::TaskInfo {
    let mut task = shell_task(id, cmd, 0.1, 32.0);
    task.container = Some(v1::ContainerInfo {
        kind: Some(v1::container_info::Kind::Docker(v1::DockerInfo {
            image: image.into(),
            ..Default::default()
        })),
        ..Default::default()
    });
    task
}

async fn docker_cluster() -> Cluster {
    docker_cluster_with(&[]).await
}

async fn docker_cluster_with(extra_agent_args: &[&str]) -> Cluster {
    require_docker();
    let mut agent_args = vec!["--containerizers".to_owned(), "docker,process".to_owned()];
    agent_args.extend(extra_agent_args.iter().map(|a| (*a).to_owned()));
    Cluster::start(ClusterSpec {
        agent_args,
        ..ClusterSpec::default()
    })
    .await
}

#[tokio::test]
async fn a_docker_task_runs_to_finished() {
    let cluster = docker_cluster().await;
    let _containers = Containers::of(cluster.dir.path());
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(&[&offers[0]], vec![docker_task("d1", "echo hi", IMAGE)])
        .await;
    fw.update("d1", TaskState::Running).await;
    let finished = fw.update("d1", TaskState::Finished).await;
    assert_eq!(finished.exit_code, Some(0));
}

#[tokio::test]
async fn a_docker_task_exiting_3_fails_with_3() {
    let cluster = docker_cluster().await;
    let _containers = Containers::of(cluster.dir.path());
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(&[&offers[0]], vec![docker_task("d3", "exit 3", IMAGE)])
        .await;
    let failed = fw.update("d3", TaskState::Failed).await;
    assert_eq!(failed.exit_code, Some(3));
}

#[tokio::test]
async fn killing_a_docker_task_stops_and_removes_its_container() {
    let cluster = docker_cluster().await;
    let containers = Containers::of(cluster.dir.path());
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(&[&offers[0]], vec![docker_task("dk", "sleep 300", IMAGE)])
        .await;
    fw.update("dk", TaskState::Running).await;
    assert_eq!(containers.ids().len(), 1);
    fw.kill("dk").await;
    fw.update("dk", TaskState::Killed).await;
    assert!(containers.ids().is_empty(), "the container was not removed");
}

#[tokio::test]
async fn a_docker_task_with_an_unknown_image_is_a_task_error_naming_the_image() {
    let cluster = docker_cluster().await;
    let _containers = Containers::of(cluster.dir.path());
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![docker_task("dm", "true", "agora-test/missing:1")],
    )
    .await;
    let error = fw.update("dm", TaskState::Error).await;
    assert_eq!(
        error.message,
        "container.docker.image: image not found: agora-test/missing:1"
    );
    assert_eq!(error.reason(), StatusReason::ReasonTaskInvalid);
}

#[tokio::test]
async fn agora_logs_prints_a_running_containers_output() {
    let cluster = docker_cluster().await;
    let _containers = Containers::of(cluster.dir.path());
    let master = cluster.master.addr.to_string();
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![docker_task("dl", "echo hello-from-container; sleep 30", IMAGE)],
    )
    .await;
    fw.update("dl", TaskState::Running).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = std::process::Command::new(agora_bin())
            .args(["logs", "dl", "--master", &master])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout == "hello-from-container\n" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agora logs printed {stdout:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_master_shows_a_busy_containers_usage() {
    let cluster = docker_cluster_with(&["--usage-interval", "500ms"]).await;
    let _containers = Containers::of(cluster.dir.path());
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    let mut task = docker_task("busy", "while :; do :; done", IMAGE);
    task.resources = agora_proto::Resources::parse("cpus:0.5;mem:32")
        .unwrap()
        .to_proto();
    fw.launch(&[&offers[0]], vec![task]).await;
    fw.update("busy", TaskState::Running).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let state = cluster.state().await;
        let task = state["tasks"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["id"] == "busy"))
            .cloned()
            .unwrap_or_default();
        if task["usage"]["cpus_used"].as_f64().unwrap_or(0.0) > 0.2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no busy container usage shown: {state:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

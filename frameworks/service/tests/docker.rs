//! An app in a Docker container (BRIDGE network, a dynamic host port) on a
//! real master and a Docker-enabled agent, with the real Docker engine and
//! the `agora-test/busybox:latest` image (scripts/test-image.sh). Every
//! container the agent starts is removed when the cluster is dropped, also
//! when the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: panics are the failure report

mod support;

use agora_service::handle::TaskView;
use serde_json::json;
use support::{
    Cluster, ClusterOptions, IMAGE, TestService, app_from_json, docker, eventually, require_docker,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_container_gets_a_host_port_from_the_offer_and_turns_healthy() {
    require_docker();
    let cluster = Cluster::start_with(ClusterOptions {
        docker: true,
        free_ports: true,
        ..ClusterOptions::default()
    })
    .await;
    let service = TestService::start(&cluster, &cluster.service_dir()).await;
    let offered = cluster.agent_ports(0);
    let app = service
        .create(app_from_json(json!({
            "id": "/docker/web",
            "cmd": "mkdir -p /www && echo hello-from-a-container > /www/index.html && httpd -f -p 80 -h /www",
            "cpus": 0.1,
            "mem": 32,
            "container": {
                "type": "DOCKER",
                "docker": {"image": IMAGE, "network": "BRIDGE"},
                "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp"}],
            },
            "healthChecks": [{
                "protocol": "HTTP",
                "path": "/index.html",
                "portIndex": 0,
                "gracePeriodSeconds": 30,
                "intervalSeconds": 1,
                "timeoutSeconds": 2,
                "maxConsecutiveFailures": 3,
            }],
        })))
        .await;

    let handle = service.handle.clone();
    let task: TaskView = eventually("the container to run and be healthy", || {
        let handle = handle.clone();
        let app = app.clone();
        async move {
            let tasks = handle.tasks(Some(&app)).await;
            let task = tasks.first()?;
            (task.state == "TASK_RUNNING" && task.health.first().is_some_and(|r| r.alive))
                .then(|| task.clone())
        }
    })
    .await;
    service.wait_deployments_done().await;

    assert_eq!(task.ports.len(), 1, "{task:?}");
    let port = task.ports[0];
    assert!(
        offered.contains(&port),
        "host port {port} is not one of the offered {offered:?}"
    );
    // Docker publishes the container's port 80 on that host port.
    let containers = cluster.containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    let published = docker(&["port", &containers[0], "80/tcp"]);
    assert!(published.contains(&format!(":{port}")), "{published}");
    let body = reqwest::get(format!("http://127.0.0.1:{port}/index.html"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body.trim(), "hello-from-a-container");
    let status = service.handle.app(&app).await.unwrap();
    assert_eq!((status.tasks_running, status.tasks_healthy), (1, 1));

    // Deleting the app removes its container.
    service.handle.delete_apps(vec![app], false).await.unwrap();
    service.wait_deployments_done().await;
    eventually("the container to be removed", || async {
        cluster.containers().is_empty().then_some(())
    })
    .await;
    service.stop().await;
}

//! Pods (LAUNCH_GROUP) and container validation through the real binary and
//! a real Docker engine, on the `agora-test/busybox:latest` image
//! (scripts/test-image.sh). Every container is removed by its work-dir label
//! when the test ends, pass or fail.

use agora_proto::v1::{self, StatusReason, TaskState};

use crate::containers::*;
use crate::harness::*;

fn container_task(id: &str, cmd: &str) -> v1::TaskInfo {
    let mut task = shell_task(id, cmd, 0.1, 32.0);
    task.container = Some(v1::ContainerInfo {
        kind: Some(v1::container_info::Kind::Docker(v1::DockerInfo {
            image: IMAGE.into(),
            ..Default::default()
        })),
        ..Default::default()
    });
    task
}

/// A framework that may launch task groups.
async fn pod_framework(cluster: &Cluster) -> Framework {
    let mut info = framework_info("pods", 0.0);
    info.capabilities.push(v1::FrameworkCapability::TaskGroups as i32);
    Framework::subscribe(cluster.master.addr, info).await
}

async fn launch_group(fw: &mut Framework, offer: &v1::Offer, tasks: Vec<v1::TaskInfo>) {
    let caller = fw.caller();
    fw.client
        .accept(v1::AcceptRequest {
            caller,
            offer_ids: vec![offer.id.clone()],
            operations: vec![v1::Operation {
                operation: Some(v1::operation::Operation::LaunchGroup(v1::LaunchGroup {
                    task_infos: tasks,
                })),
            }],
            filters: Some(v1::Filters {
                refuse_seconds: Some(0.0),
            }),
        })
        .await
        .expect("accept");
}

async fn docker_cluster() -> Cluster {
    require_docker();
    Cluster::start(ClusterSpec {
        agent_args: vec!["--containerizers".into(), "docker,process".into()],
        ..ClusterSpec::default()
    })
    .await
}

#[tokio::test]
async fn the_containers_of_a_pod_reach_each_other_on_localhost() {
    let cluster = docker_cluster().await;
    let _containers = Containers::of(cluster.dir.path());
    let mut fw = pod_framework(&cluster).await;
    let offers = fw.offers().await;
    let web = container_task(
        "web",
        "mkdir -p /tmp/www && echo pod-ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
    );
    let client = container_task(
        "client",
        "i=0; while [ $i -lt 100 ]; do wget -q -O- http://127.0.0.1:8080/ | grep -q pod-ok && exit 0; i=$((i+1)); sleep 0.2; done; exit 1",
    );
    launch_group(&mut fw, &offers[0], vec![web, client]).await;
    let finished = fw.update("client", TaskState::Finished).await;
    assert_eq!(finished.exit_code, Some(0));
    let state = cluster.state().await;
    let tasks = state["tasks"].as_array().unwrap();
    let web_state = tasks.iter().find(|t| t["id"] == "web").unwrap();
    assert!(
        web_state["group_id"].as_str().unwrap().starts_with("group-"),
        "{web_state}"
    );
    fw.kill("web").await;
    fw.update("web", TaskState::Killed).await;
}

#[tokio::test]
async fn when_one_task_of_a_pod_fails_the_others_are_killed_naming_it() {
    let cluster = docker_cluster().await;
    let _containers = Containers::of(cluster.dir.path());
    let mut fw = pod_framework(&cluster).await;
    let offers = fw.offers().await;
    launch_group(
        &mut fw,
        &offers[0],
        vec![
            container_task("steady", "sleep 300"),
            container_task("crasher", "sleep 1; exit 1"),
        ],
    )
    .await;
    let failed = fw.update("crasher", TaskState::Failed).await;
    assert_eq!(failed.exit_code, Some(1));
    let killed = fw.update("steady", TaskState::Killed).await;
    assert!(killed.message.contains("crasher"), "{}", killed.message);
}

#[tokio::test]
async fn a_pod_with_two_containers_of_the_same_name_is_refused_before_any_is_created() {
    let cluster = docker_cluster().await;
    let containers = Containers::of(cluster.dir.path());
    let mut fw = pod_framework(&cluster).await;
    let offers = fw.offers().await;
    let mut twin = container_task("twin-b", "sleep 300");
    twin.name = "twin".into();
    let mut first = container_task("twin-a", "sleep 300");
    first.name = "twin".into();
    launch_group(&mut fw, &offers[0], vec![first, twin]).await;
    let a = fw.update("twin-a", TaskState::Error).await;
    let b = fw.update("twin-b", TaskState::Error).await;
    assert!(
        a.message.contains("task group refused: task twin-b is invalid"),
        "{}",
        a.message
    );
    assert!(
        b.message
            .starts_with("operations[0].launch_group.task_infos[1].name"),
        "{}",
        b.message
    );
    assert!(containers.ids().is_empty());
}

#[tokio::test]
async fn a_launch_with_a_bad_container_field_is_refused_naming_it_and_creates_nothing() {
    let cluster = docker_cluster().await;
    let containers = Containers::of(cluster.dir.path());
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    let mut tiny = container_task("tiny", "sleep 300");
    tiny.resources = agora_proto::Resources::new()
        .scalar("cpus", 0.1)
        .scalar("mem", 2.0)
        .to_proto();
    let mut relative = container_task("relative", "sleep 300");
    if let Some(c) = relative.container.as_mut() {
        c.volumes.push(v1::Volume {
            container_path: "data".into(),
            host_path: String::new(),
            read_only: false,
        });
    }
    fw.launch(&[&offers[0]], vec![tiny, relative]).await;
    let tiny = fw.update("tiny", TaskState::Error).await;
    assert_eq!(tiny.reason(), StatusReason::ReasonTaskInvalid);
    assert!(
        tiny.message
            .starts_with("operations[0].launch.task_infos[0].resources.mem: 2 MiB"),
        "{}",
        tiny.message
    );
    let relative = fw.update("relative", TaskState::Error).await;
    assert!(
        relative
            .message
            .starts_with("operations[0].launch.task_infos[1].container.volumes[0].container_path"),
        "{}",
        relative.message
    );
    assert!(containers.ids().is_empty(), "a container was created");
}

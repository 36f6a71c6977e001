//! Pods: a task group launched all-or-nothing as containers sharing one
//! network namespace and a scratch volume.
//!
//! - **Network.** Every container joins the network namespace of the
//!   group's first container (`--network container:<first>`), so they reach
//!   each other on `localhost`; the first task's networking and port
//!   mappings are the pod's. No infra container: it would cost one more
//!   container start (≈0.3 s here) per pod and one more thing to clean up.
//!   The namespace outlives the first container as long as others run.
//! - **Scratch volume.** `pod-shared/` in the first task's sandbox, mounted
//!   read-write at [`SHARED_MOUNT`] in every container.
//! - **All or nothing.** Every image is checked and every container created
//!   before any starts; any failure removes what was created, and every
//!   task of the group fails with the reason.

use std::path::Path;

use futures::future::join_all;

use super::spec::{self, ContainerPlan, docker_info};
use super::{DockerContainerizer, container_name};
use crate::containerizer::{
    ContainerEvent, EventSender, LaunchError, LaunchSpec, SupervisorProcess, Watcher,
};

/// Where a pod's scratch volume appears in each of its containers.
pub(crate) const SHARED_MOUNT: &str = "/mnt/shared";
/// The scratch directory's name in the first task's sandbox.
const SHARED_DIR: &str = "pod-shared";

impl DockerContainerizer {
    /// Launches a pod: all containers run, or none exists.
    pub(crate) async fn launch_group_async(
        &self,
        group_id: &str,
        specs: Vec<LaunchSpec>,
        events: EventSender,
    ) -> Result<Vec<(SupervisorProcess, Watcher)>, LaunchError> {
        let Some(first) = specs.first() else {
            return Ok(Vec::new());
        };
        let shared = first.run.sandbox.join(SHARED_DIR);
        for s in &specs {
            self.prepare_sandbox(s)?;
        }
        std::fs::create_dir_all(&shared).map_err(|e| LaunchError::Sandbox(shared.clone(), e))?;
        for s in &specs {
            let docker = docker_info(&s.task).ok_or(LaunchError::NoCommand)?;
            self.ensure_image(&docker.image, docker.force_pull_image).await?;
        }
        let names: Vec<String> = specs.iter().map(|s| container_name(&s.run.sandbox)).collect();
        let first_name = names[0].clone();
        let mut gpus: Vec<Vec<String>> = Vec::with_capacity(specs.len());
        for s in &specs {
            match self.take_gpus(&s.task).await {
                Ok(taken) => gpus.push(taken),
                Err(err) => {
                    for taken in &gpus {
                        self.release_gpus(taken).await;
                    }
                    return Err(LaunchError::Docker(format!("task {}: {err}", s.task.name)));
                }
            }
        }
        let mut created: Vec<&str> = Vec::new();
        let mut failure = None;
        for ((s, name), taken) in specs.iter().zip(&names).zip(&gpus) {
            let plan = member_plan(
                s,
                group_id,
                self.work_dir(),
                &shared,
                (name != &first_name).then_some(first_name.as_str()),
                taken.clone(),
            );
            match self.create(&plan, name).await {
                Ok(()) => created.push(name),
                Err(err) => {
                    failure = Some(LaunchError::Docker(format!("task {}: {err}", s.task.name)));
                    break;
                }
            }
        }
        if failure.is_none() {
            // The others join the first one's namespace: it must run first.
            match self.start(&first_name).await {
                Ok(_) => {
                    let rest = join_all(names[1..].iter().map(|n| self.start(n))).await;
                    if let Some((i, Err(err))) = rest.into_iter().enumerate().find(|(_, r)| r.is_err()) {
                        failure = Some(LaunchError::Docker(format!(
                            "task {}: {err}",
                            specs[i + 1].task.name
                        )));
                    }
                }
                Err(err) => {
                    failure = Some(LaunchError::Docker(format!("task {}: {err}", specs[0].task.name)))
                }
            }
        }
        if let Some(err) = failure {
            for name in created {
                self.remove(name).await;
            }
            for taken in &gpus {
                self.release_gpus(taken).await;
            }
            return Err(err);
        }
        let mut launched = Vec::with_capacity(specs.len());
        for ((s, name), taken) in specs.into_iter().zip(names).zip(gpus) {
            let process = match self
                .docker
                .inspect_container(&name, None::<bollard::query_parameters::InspectContainerOptions>)
                .await
            {
                Ok(info) => info
                    .state
                    .and_then(|st| st.pid)
                    .and_then(|p| i32::try_from(p).ok())
                    .unwrap_or(0),
                Err(_) => 0,
            };
            let this = self.clone();
            let events = events.clone();
            let run = s.run;
            let watcher: Watcher = Box::pin(async move {
                let _ = events.send((run.clone(), ContainerEvent::Started { task_pid: process }));
                let record = this.watch(&name, &run.sandbox).await;
                this.release_gpus(&taken).await;
                let _ = events.send((run, ContainerEvent::Exited(record)));
            });
            launched.push((
                SupervisorProcess {
                    pid: process,
                    start_time: 0,
                },
                watcher,
            ));
        }
        Ok(launched)
    }
}

/// The plan of one pod member's container: the pod's group label and
/// scratch volume, the first member's network namespace (`join_network_of`,
/// `None` for the first member itself) and the GPUs assigned to the member.
fn member_plan<'a>(
    spec: &'a LaunchSpec,
    group_id: &str,
    work_dir: &'a Path,
    shared: &Path,
    join_network_of: Option<&'a str>,
    gpus: Vec<String>,
) -> ContainerPlan<'a> {
    ContainerPlan {
        task: &spec.task,
        framework_id: &spec.run.framework_id,
        agent_id: spec
            .env
            .iter()
            .find(|(k, _)| k == "AGORA_AGENT_ID")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default(),
        work_dir,
        sandbox: &spec.run.sandbox,
        env: &spec.env,
        join_network_of,
        extra_binds: vec![format!("{}:{SHARED_MOUNT}:rw", shared.display())],
        extra_labels: vec![(spec::LABEL_GROUP.to_owned(), group_id.to_owned())],
        gpus,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use agora_proto::v1;

    use super::*;
    use crate::containerizer::RunRef;

    fn member(task_id: &str, gpus: f64) -> LaunchSpec {
        let resources = if gpus > 0.0 {
            format!("cpus:0.1;mem:32;gpus:{gpus}")
        } else {
            "cpus:0.1;mem:32".to_owned()
        };
        LaunchSpec {
            run: RunRef {
                framework_id: "fw".into(),
                task_id: task_id.into(),
                sandbox: PathBuf::from(format!("/work/s/{task_id}")),
            },
            task: v1::TaskInfo {
                name: task_id.into(),
                task_id: task_id.into(),
                resources: agora_proto::Resources::parse(&resources).unwrap().to_proto(),
                container: Some(v1::ContainerInfo {
                    kind: Some(v1::container_info::Kind::Docker(v1::DockerInfo {
                        image: "busybox".into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            },
            env: vec![("AGORA_AGENT_ID".into(), "ag".into())],
        }
    }

    #[test]
    fn a_pod_member_gets_its_assigned_gpus_as_a_device_request() {
        let spec = member("t2", 1.0);
        let plan = member_plan(
            &spec,
            "g1",
            Path::new("/work"),
            Path::new("/work/s/t1/pod-shared"),
            Some("agora-t1"),
            vec!["GPU-aaaa".into()],
        );
        let hc = spec::create_body(&plan, "busybox").host_config.unwrap();
        let requests = hc.device_requests.unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].device_ids, Some(vec!["GPU-aaaa".to_owned()]));
        assert_eq!(requests[0].capabilities, Some(vec![vec!["gpu".to_owned()]]));
        assert_eq!(hc.network_mode.as_deref(), Some("container:agora-t1"));
        let labels = spec::create_body(&plan, "busybox").labels.unwrap();
        assert_eq!(labels[spec::LABEL_GROUP], "g1");
        assert_eq!(labels[spec::LABEL_AGENT], "ag");
    }

    #[test]
    fn a_pod_member_without_gpus_requests_no_devices() {
        let spec = member("t1", 0.0);
        let plan = member_plan(&spec, "g1", Path::new("/work"), Path::new("/x"), None, Vec::new());
        let hc = spec::create_body(&plan, "busybox").host_config.unwrap();
        assert!(hc.device_requests.is_none());
        assert_eq!(hc.binds.unwrap()[1], format!("/x:{SHARED_MOUNT}:rw"));
    }
}

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
        let mut created: Vec<&str> = Vec::new();
        let mut failure = None;
        for (s, name) in specs.iter().zip(&names) {
            let agent_id = s
                .env
                .iter()
                .find(|(k, _)| k == "AGORA_AGENT_ID")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let plan = ContainerPlan {
                task: &s.task,
                framework_id: &s.run.framework_id,
                agent_id: &agent_id,
                work_dir: self.work_dir(),
                sandbox: &s.run.sandbox,
                env: &s.env,
                join_network_of: (name != &first_name).then_some(first_name.as_str()),
                extra_binds: vec![format!("{}:{SHARED_MOUNT}:rw", shared.display())],
                extra_labels: vec![(spec::LABEL_GROUP.to_owned(), group_id.to_owned())],
                gpus: Vec::new(),
            };
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
            return Err(err);
        }
        let mut launched = Vec::with_capacity(specs.len());
        for (s, name) in specs.into_iter().zip(names) {
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

//! The Docker containerizer: runs a task with `container.docker` as a Docker
//! container through the Engine API (bollard, API 1.41 fields only).
//!
//! - **Identity.** A run's container is named `agora-<run id>` (the last
//!   component of its sandbox path), so the sandbox alone names it: no extra
//!   checkpoint field is needed, and a restarted agent finds it again. The
//!   sandbox's `.agora/docker` marker file says the run is a container.
//! - **Launch** (blocking, on the agent's launch pool): make sure the image
//!   is there (a pull, bounded by [`PULL_TIMEOUT`], only when it is missing
//!   or `force_pull_image` is set), create, start, inspect for the pid.
//! - **Watch** with the engine's `wait` API, then inspect: exit code, or
//!   `OOMKilled`. The end is recorded in the sandbox (`exit_status.json`, as
//!   the supervisor does), the container's output is copied to the sandbox's
//!   `stdout`/`stderr`, and the container is removed.
//! - **Kill** is `docker stop` with the grace period (SIGTERM, then SIGKILL).
//! - **Recovery** inspects the container: running → watch it again (never
//!   restarted); exited → report its real exit; gone → the recorded end.
//!   [`DockerContainerizer::remove_orphans`] removes containers labelled with
//!   this work dir that no checkpoint knows.

pub(crate) mod gpu;
pub(crate) mod pod;
pub(crate) mod spec;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StatsOptions, StopContainerOptions, WaitContainerOptions,
};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::containerizer::{
    ContainerEvent, EventSender, LaunchError, LaunchSpec, LogChunks, LogStream, RunRef, SupervisorProcess,
    Usage, Watcher,
};
use crate::supervisor::{ExitRecord, META_DIR, STATUS_FILE};
use spec::{ContainerPlan, docker_info};

/// Longest a pull may take: with no registry reachable, a missing image fails
/// the task instead of hanging it.
pub(crate) const PULL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `ping` may take when the agent decides whether Docker is there.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Marker file (in [`META_DIR`]) of a run that is a container.
pub(crate) const MARKER_FILE: &str = "docker";
/// Request timeout handed to bollard. It bounds the time to response
/// headers; `stop` answers only after the grace period, so this is long.
const REQUEST_TIMEOUT_SECS: u64 = 4000;
/// Pause before re-issuing a `wait` that failed while the container still runs.
const WAIT_RETRY: Duration = Duration::from_secs(1);

/// Why the engine could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DockerUnavailable {
    /// No client could be built for the socket.
    #[error("cannot connect to docker at {0}: {1}")]
    Connect(String, DockerError),
    /// The engine did not answer `ping` in time.
    #[error("docker did not answer ping within {0:?}")]
    Timeout(Duration),
    /// The engine answered with an error.
    #[error("docker ping failed: {0}")]
    Ping(DockerError),
}

/// Connects to the engine (`socket` as `unix:///path` or a path; `None`:
/// `DOCKER_HOST` or the default socket), negotiates the API version and pings it.
pub(crate) async fn connect(socket: Option<&str>) -> Result<Docker, DockerUnavailable> {
    let docker = match socket {
        Some(s) if s.starts_with("tcp://") || s.starts_with("http://") => {
            Docker::connect_with_http(s, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        }
        Some(s) => Docker::connect_with_socket(s, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION),
        None => Docker::connect_with_local_defaults()
            .map(|d| d.with_timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS))),
    }
    .map_err(|e| DockerUnavailable::Connect(socket.unwrap_or("default").to_owned(), e))?;
    let negotiated = tokio::time::timeout(PING_TIMEOUT, async {
        let docker = docker.negotiate_version().await?;
        docker.ping().await?;
        Ok::<_, DockerError>(docker)
    })
    .await
    .map_err(|_| DockerUnavailable::Timeout(PING_TIMEOUT))?;
    negotiated.map_err(DockerUnavailable::Ping)
}

/// The container name of the run in `sandbox`.
pub(crate) fn container_name(sandbox: &Path) -> String {
    let run = sandbox
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let safe: String = run
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("agora-{safe}")
}

/// Whether the run in `sandbox` is a container.
pub(crate) fn is_container_run(sandbox: &Path) -> bool {
    sandbox.join(META_DIR).join(MARKER_FILE).is_file()
}

fn status_file(sandbox: &Path) -> PathBuf {
    sandbox.join(META_DIR).join(STATUS_FILE)
}

fn is_not_found(err: &DockerError) -> bool {
    matches!(
        err,
        DockerError::DockerResponseServerError { status_code: 404, .. }
    )
}

fn docker_err(err: DockerError) -> LaunchError {
    LaunchError::Docker(err.to_string())
}

/// `image` split into repository and tag for a pull (`latest` when untagged),
/// so that a pull never fetches every tag.
pub(crate) fn image_reference(image: &str) -> (String, String) {
    if image.contains('@') {
        return (image.to_owned(), String::new());
    }
    let last_slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[last_slash..].rfind(':') {
        Some(colon) => {
            let at = last_slash + colon;
            (image[..at].to_owned(), image[at + 1..].to_owned())
        }
        None => (image.to_owned(), "latest".to_owned()),
    }
}

/// Runs tasks as Docker containers.
#[derive(Clone)]
pub(crate) struct DockerContainerizer {
    docker: Docker,
    work_dir: PathBuf,
    /// The machine's GPUs and which ones are handed out.
    gpus: Arc<Mutex<gpu::GpuPool>>,
}

impl DockerContainerizer {
    pub(crate) fn new(docker: Docker, work_dir: PathBuf, gpus: Vec<String>) -> Self {
        Self {
            docker,
            work_dir,
            gpus: Arc::new(Mutex::new(gpu::GpuPool::new(gpus))),
        }
    }

    /// The agent's work dir (labelled on every container).
    pub(crate) fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// Makes sure `image` is present: pulls it (bounded by [`PULL_TIMEOUT`])
    /// when missing or when `force_pull`. With no registry, a present image
    /// is used as is; a missing one is [`LaunchError::ImageNotFound`].
    pub(crate) async fn ensure_image(&self, image: &str, force_pull: bool) -> Result<(), LaunchError> {
        let present = match self.docker.inspect_image(image).await {
            Ok(_) => true,
            Err(err) if is_not_found(&err) => false,
            Err(err) => return Err(docker_err(err)),
        };
        if present && !force_pull {
            return Ok(());
        }
        let (from_image, tag) = image_reference(image);
        let options = CreateImageOptions {
            from_image: Some(from_image),
            tag: Some(tag).filter(|t| !t.is_empty()),
            ..Default::default()
        };
        let pull = async {
            let mut progress = self.docker.create_image(Some(options), None, None);
            while let Some(step) = progress.next().await {
                step?;
            }
            Ok::<(), DockerError>(())
        };
        let pulled = tokio::time::timeout(PULL_TIMEOUT, pull).await;
        match pulled {
            Ok(Ok(())) => Ok(()),
            failed => {
                let why = match failed {
                    Ok(Err(err)) => err.to_string(),
                    _ => format!("timed out after {PULL_TIMEOUT:?}"),
                };
                if present {
                    tracing::warn!(%image, %why, "force pull failed; using the local image");
                    Ok(())
                } else {
                    tracing::warn!(%image, %why, "image missing and cannot be pulled");
                    Err(LaunchError::ImageNotFound(image.to_owned()))
                }
            }
        }
    }

    /// Prepares the sandbox of a container run: directories, the marker file,
    /// and the directories backing sandbox volumes.
    pub(crate) fn prepare_sandbox(&self, spec: &LaunchSpec) -> Result<(), LaunchError> {
        let sandbox = &spec.run.sandbox;
        let err = |e| LaunchError::Sandbox(sandbox.clone(), e);
        let meta = sandbox.join(META_DIR);
        fs::create_dir_all(&meta).map_err(err)?;
        fs::write(meta.join(MARKER_FILE), container_name(sandbox)).map_err(err)?;
        for name in ["stdout", "stderr"] {
            fs::File::create(sandbox.join(name)).map_err(err)?;
        }
        if let Some(container) = &spec.task.container {
            for volume in container.volumes.iter().filter(|v| v.host_path.is_empty()) {
                fs::create_dir_all(spec::volume_host_path(sandbox, volume)).map_err(err)?;
            }
        }
        Ok(())
    }

    /// Takes GPUs for a task asking for `gpus`; an error if too few are free.
    pub(crate) async fn take_gpus(&self, task: &v1::TaskInfo) -> Result<Vec<String>, LaunchError> {
        let wanted = spec::scalar(task, "gpus").ceil() as usize;
        if wanted == 0 {
            return Ok(Vec::new());
        }
        let mut pool = self.gpus.lock().await;
        let free = pool.free();
        pool.take(wanted)
            .ok_or_else(|| LaunchError::Docker(format!("{wanted} GPUs asked for, {free} free")))
    }

    async fn release_gpus(&self, gpus: &[String]) {
        if gpus.is_empty() {
            return;
        }
        self.gpus.lock().await.release(gpus);
    }

    /// Creates the container of a plan (not started); removes it on failure.
    pub(crate) async fn create(&self, plan: &ContainerPlan<'_>, name: &str) -> Result<(), LaunchError> {
        let image = docker_info(plan.task)
            .map(|d| d.image.clone())
            .unwrap_or_default();
        let body = spec::create_body(plan, &image);
        let options = CreateContainerOptions {
            name: Some(name.to_owned()),
            ..Default::default()
        };
        match self.docker.create_container(Some(options), body).await {
            Ok(_) => Ok(()),
            Err(err) => {
                self.remove(name).await;
                if is_not_found(&err) {
                    return Err(LaunchError::ImageNotFound(image));
                }
                Err(docker_err(err))
            }
        }
    }

    /// Starts a created container and returns its host pid.
    pub(crate) async fn start(&self, name: &str) -> Result<SupervisorProcess, LaunchError> {
        self.docker
            .start_container(name, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(docker_err)?;
        let pid = match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => info
                .state
                .and_then(|s| s.pid)
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
            Err(_) => 0,
        };
        Ok(SupervisorProcess { pid, start_time: 0 })
    }

    /// Removes a container, whatever its state; missing is fine.
    pub(crate) async fn remove(&self, name: &str) {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => {}
            Err(err) if is_not_found(&err) => {}
            Err(err) => tracing::warn!(container = %name, %err, "cannot remove container"),
        }
    }

    async fn launch_async(
        &self,
        spec: LaunchSpec,
        events: EventSender,
    ) -> Result<(SupervisorProcess, Watcher), LaunchError> {
        let docker = docker_info(&spec.task).ok_or(LaunchError::NoCommand)?.clone();
        self.prepare_sandbox(&spec)?;
        self.ensure_image(&docker.image, docker.force_pull_image).await?;
        let gpus = self.take_gpus(&spec.task).await?;
        let name = container_name(&spec.run.sandbox);
        let agent_id = spec
            .env
            .iter()
            .find(|(k, _)| k == "AGORA_AGENT_ID")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let plan = ContainerPlan {
            task: &spec.task,
            framework_id: &spec.run.framework_id,
            agent_id: &agent_id,
            work_dir: &self.work_dir,
            sandbox: &spec.run.sandbox,
            env: &spec.env,
            join_network_of: None,
            extra_binds: Vec::new(),
            extra_labels: Vec::new(),
            gpus: gpus.clone(),
        };
        let started = async {
            self.create(&plan, &name).await?;
            match self.start(&name).await {
                Ok(process) => Ok(process),
                Err(err) => {
                    self.remove(&name).await;
                    Err(err)
                }
            }
        }
        .await;
        let process = match started {
            Ok(process) => process,
            Err(err) => {
                self.release_gpus(&gpus).await;
                return Err(err);
            }
        };
        tracing::debug!(task = %spec.run.task_id, container = %name, pid = process.pid, "container started");
        let this = self.clone();
        let run = spec.run;
        let watcher = Box::pin(async move {
            let _ = events.send((
                run.clone(),
                ContainerEvent::Started {
                    task_pid: process.pid,
                },
            ));
            let record = this.watch(&name, &run.sandbox).await;
            this.release_gpus(&gpus).await;
            let _ = events.send((run, ContainerEvent::Exited(record)));
        });
        Ok((process, watcher))
    }

    /// Waits for the container to stop, records how it ended in the sandbox,
    /// keeps its output there and removes it.
    pub(crate) async fn watch(&self, name: &str, sandbox: &Path) -> Option<ExitRecord> {
        loop {
            let mut wait = self.docker.wait_container(
                name,
                Some(WaitContainerOptions {
                    condition: "not-running".to_owned(),
                }),
            );
            match wait.next().await {
                Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) | None => break,
                Some(Err(err)) if is_not_found(&err) => break,
                Some(Err(err)) => {
                    tracing::warn!(container = %name, %err, "wait failed; checking the container");
                    if !self.is_running(name).await.unwrap_or(false) {
                        break;
                    }
                    tokio::time::sleep(WAIT_RETRY).await;
                }
            }
        }
        self.finish(name, sandbox).await
    }

    async fn is_running(&self, name: &str) -> Option<bool> {
        let info = self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .ok()?;
        info.state.and_then(|s| s.running)
    }

    /// How a stopped container ended (recorded in the sandbox), with its
    /// output saved and the container removed. A container already gone
    /// yields the recorded end, if any.
    pub(crate) async fn finish(&self, name: &str, sandbox: &Path) -> Option<ExitRecord> {
        let info = match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => info,
            Err(err) => {
                if !is_not_found(&err) {
                    tracing::warn!(container = %name, %err, "cannot inspect container");
                }
                return ExitRecord::read(&status_file(sandbox));
            }
        };
        let state = info.state.unwrap_or_default();
        let record = if state.oom_killed == Some(true) {
            ExitRecord::OutOfMemory
        } else {
            match state.exit_code.and_then(|c| i32::try_from(c).ok()) {
                Some(code) => ExitRecord::ExitCode(code),
                None => ExitRecord::LaunchError(state.error.unwrap_or_else(|| "container ended".to_owned())),
            }
        };
        if let Err(err) = record.write(&status_file(sandbox)) {
            tracing::warn!(container = %name, %err, "cannot record the container's exit");
        }
        self.save_output(name, sandbox).await;
        self.remove(name).await;
        Some(record)
    }

    /// Copies the container's stdout and stderr into the sandbox files.
    async fn save_output(&self, name: &str, sandbox: &Path) {
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let mut chunks = self.docker_logs(name, stream, None, false);
            let mut data = Vec::new();
            while let Some(Ok(chunk)) = chunks.next().await {
                data.extend_from_slice(&chunk);
            }
            if let Err(err) = tokio::fs::write(sandbox.join(stream.file_name()), &data).await {
                tracing::warn!(container = %name, %err, "cannot save container output");
            }
        }
    }

    fn docker_logs(&self, name: &str, stream: LogStream, tail: Option<usize>, follow: bool) -> LogChunks {
        let options = LogsOptions {
            follow,
            stdout: stream == LogStream::Stdout,
            stderr: stream == LogStream::Stderr,
            tail: tail.map(|t| t.to_string()).unwrap_or_else(|| "all".to_owned()),
            ..Default::default()
        };
        Box::pin(
            self.docker
                .logs(name, Some(options))
                .map(|item| item.map(|out| out.into_bytes()).map_err(std::io::Error::other)),
        )
    }

    /// Stops the container: SIGTERM, SIGKILL after `grace`.
    pub(crate) async fn stop(&self, name: &str, grace: Duration) {
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace.as_secs_f64().ceil() as i64).unwrap_or(i32::MAX)),
            signal: None,
        };
        match self.docker.stop_container(name, Some(options)).await {
            Ok(()) => {}
            Err(DockerError::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => {}
            Err(err) => tracing::warn!(container = %name, %err, "cannot stop container"),
        }
    }

    /// Removes containers labelled with this work dir whose sandbox no
    /// checkpoint knows (orphans of an earlier agent process).
    pub(crate) async fn remove_orphans(&self, known: &BTreeSet<PathBuf>) -> usize {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{}={}", spec::LABEL_WORK_DIR, self.work_dir.display())],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let list = match self.docker.list_containers(Some(options)).await {
            Ok(list) => list,
            Err(err) => {
                tracing::warn!(%err, "cannot list containers to find orphans");
                return 0;
            }
        };
        let mut removed = 0;
        for summary in list {
            let labels = summary.labels.unwrap_or_default();
            let sandbox = labels.get(spec::LABEL_SANDBOX).map(PathBuf::from);
            if sandbox.as_ref().is_some_and(|s| known.contains(s)) {
                continue;
            }
            let Some(id) = summary.id else { continue };
            tracing::info!(container = %id, task = ?labels.get(spec::LABEL_TASK), "removing orphan container");
            self.remove(&id).await;
            removed += 1;
        }
        removed
    }

    fn launch(
        &self,
        spec: LaunchSpec,
        events: EventSender,
    ) -> Result<(SupervisorProcess, Watcher), LaunchError> {
        tokio::runtime::Handle::current().block_on(self.launch_async(spec, events))
    }

    fn recover(&self, run: RunRef, events: EventSender) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let name = container_name(&run.sandbox);
            let inspected = this
                .docker
                .inspect_container(&name, None::<InspectContainerOptions>)
                .await;
            // The GPUs a surviving container holds stay taken until it ends.
            let held = inspected
                .as_ref()
                .ok()
                .and_then(|info| info.config.as_ref())
                .and_then(|c| c.labels.as_ref())
                .and_then(|l| l.get(spec::LABEL_GPUS))
                .map(|l| gpu::parse_gpus_label(l))
                .unwrap_or_default();
            if !held.is_empty() {
                this.gpus.lock().await.reserve(&held);
            }
            let running = match inspected {
                Ok(info) => info
                    .state
                    .as_ref()
                    .and_then(|s| s.running)
                    .unwrap_or(false)
                    .then(|| {
                        info.state
                            .and_then(|s| s.pid)
                            .and_then(|p| i32::try_from(p).ok())
                            .unwrap_or(0)
                    }),
                Err(_) => None,
            };
            if let Some(task_pid) = running {
                tracing::info!(task = %run.task_id, container = %name, "re-attached to running container");
                let _ = events.send((run.clone(), ContainerEvent::Started { task_pid }));
            }
            let record = this.watch(&name, &run.sandbox).await;
            this.release_gpus(&held).await;
            let _ = events.send((run, ContainerEvent::Exited(record)));
        })
    }

    fn kill(&self, sandbox: &Path, grace: Duration) -> JoinHandle<()> {
        let this = self.clone();
        let name = container_name(sandbox);
        tokio::spawn(async move { this.stop(&name, grace).await })
    }

    fn logs(&self, run: &RunRef, stream: LogStream, tail: Option<usize>, follow: bool) -> LogChunks {
        let this = self.clone();
        let name = container_name(&run.sandbox);
        let path = run.sandbox.clone();
        Box::pin(
            futures::stream::once(async move {
                let exists = this
                    .docker
                    .inspect_container(&name, None::<InspectContainerOptions>)
                    .await
                    .is_ok();
                if exists {
                    this.docker_logs(&name, stream, tail, follow)
                } else {
                    crate::logs::file_logs(path, stream, tail, false)
                }
            })
            .flatten(),
        )
    }

    fn usage(&self, run: &RunRef) -> BoxFuture<'static, Option<Usage>> {
        let this = self.clone();
        let name = container_name(&run.sandbox);
        Box::pin(async move {
            let options = StatsOptions {
                stream: false,
                one_shot: true,
            };
            let mut stats = this.docker.stats(&name, Some(options));
            let inspect = this
                .docker
                .inspect_container(&name, None::<InspectContainerOptions>);
            let (stats, inspect) = tokio::join!(stats.next(), inspect);
            let stats = stats?.ok()?;
            let cpus_limit = inspect
                .ok()
                .and_then(|info| info.host_config)
                .and_then(|hc| spec::cpus_limit(hc.cpu_quota, hc.cpu_period));
            let cpu_ns = stats
                .cpu_stats
                .and_then(|c| c.cpu_usage)
                .and_then(|u| u.total_usage)?;
            let memory = stats.memory_stats.unwrap_or_default();
            Some(Usage {
                cpu_seconds_total: cpu_ns as f64 / 1e9,
                mem_bytes: memory.usage.unwrap_or(0),
                cpus_limit,
                mem_limit_bytes: memory.limit,
            })
        })
    }
}

/// The containerizers an agent runs: processes always, Docker when enabled.
/// Runs are told apart by their task (launch) or their sandbox's marker file.
#[derive(Clone)]
pub(crate) struct Containerizers {
    pub process: crate::containerizer::ProcessContainerizer,
    pub docker: Option<DockerContainerizer>,
}

impl Containerizers {
    fn docker_for(&self, sandbox: &Path) -> Option<&DockerContainerizer> {
        self.docker.as_ref().filter(|_| is_container_run(sandbox))
    }
}

impl crate::containerizer::Containerizer for Containerizers {
    fn supports(&self, task: &v1::TaskInfo) -> bool {
        match task.container {
            None => true,
            Some(_) => self.docker.is_some(),
        }
    }

    fn reports_starting(&self, task: &v1::TaskInfo) -> bool {
        task.container.is_some()
    }

    fn logs(&self, run: &RunRef, stream: LogStream, tail: Option<usize>, follow: bool) -> LogChunks {
        match self.docker_for(&run.sandbox) {
            Some(docker) => docker.logs(run, stream, tail, follow),
            None => self.process.logs(run, stream, tail, follow),
        }
    }

    fn usage(&self, run: &RunRef, task_pid: Option<i32>) -> BoxFuture<'static, Option<Usage>> {
        match self.docker_for(&run.sandbox) {
            Some(docker) => docker.usage(run),
            None => self.process.usage(run, task_pid),
        }
    }

    fn launch_group(
        &self,
        group_id: &str,
        specs: Vec<LaunchSpec>,
        events: EventSender,
    ) -> Result<Vec<(SupervisorProcess, Watcher)>, LaunchError> {
        match &self.docker {
            Some(docker) => {
                tokio::runtime::Handle::current().block_on(docker.launch_group_async(group_id, specs, events))
            }
            None => Err(LaunchError::Docker("docker containerizer not enabled".to_owned())),
        }
    }

    fn launch(
        &self,
        spec: LaunchSpec,
        events: EventSender,
    ) -> Result<(SupervisorProcess, Watcher), LaunchError> {
        match (&spec.task.container, &self.docker) {
            (None, _) => self.process.launch(spec, events),
            (Some(_), Some(docker)) => docker.launch(spec, events),
            (Some(_), None) => Err(LaunchError::Docker("docker containerizer not enabled".to_owned())),
        }
    }

    fn recover(&self, run: RunRef, supervisor: SupervisorProcess, events: EventSender) -> JoinHandle<()> {
        match self.docker_for(&run.sandbox) {
            Some(docker) => docker.recover(run, events),
            None => self.process.recover(run, supervisor, events),
        }
    }

    fn is_alive(&self, sandbox: &Path, supervisor: SupervisorProcess) -> bool {
        if is_container_run(sandbox) {
            // The engine knows; recover() asks it and reports either way.
            return self.docker.is_some();
        }
        self.process.is_alive(sandbox, supervisor)
    }

    fn exit_record(&self, sandbox: &Path) -> Option<ExitRecord> {
        ExitRecord::read(&status_file(sandbox))
    }

    fn kill(&self, sandbox: &Path, grace: Duration) -> JoinHandle<()> {
        match self.docker_for(sandbox) {
            Some(docker) => docker.kill(sandbox, grace),
            None => self.process.kill(sandbox, grace),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged_images_pull_latest_and_registry_ports_are_not_tags() {
        assert_eq!(image_reference("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(image_reference("a/b:1.2"), ("a/b".into(), "1.2".into()));
        assert_eq!(
            image_reference("reg:5000/b"),
            ("reg:5000/b".into(), "latest".into())
        );
        assert_eq!(
            image_reference("b@sha256:ab"),
            ("b@sha256:ab".into(), String::new())
        );
    }

    #[test]
    fn the_container_is_named_after_the_run() {
        assert_eq!(
            container_name(Path::new("/w/sandboxes/fw/t/abc123")),
            "agora-abc123"
        );
    }
}

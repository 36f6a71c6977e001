//! The Agora agent: offers this machine's resources to the master and runs
//! the tasks the master sends.
//!
//! - [`run`] is the agent: resource detection ([`detect_host_resources`]),
//!   the connection to the master (register, re-register, heartbeats), the
//!   process containerizer, checkpoints in `--work-dir`, the status-update
//!   retry queue, resource-usage sampling every `--usage-interval`
//!   (`monitor`), and HTTP `/health`, `/state`, `/tasks/{id}/sandbox`,
//!   `/tasks/{id}/logs` (`logs`).
//! - [`supervisor`] is the small program each task runs under
//!   (`agora supervise`), which records the task's exit status in its sandbox.
//!
//! Architecture invariants: every status update is checkpointed before it is
//! sent, and stays queued until acknowledged. Tasks never run as children of
//! the agent directly, so the agent can restart (or be SIGKILLed) without
//! killing them; stopping the agent never kills tasks.
//!
//! Files: `work_dir/agent_id`, `work_dir/meta/tasks.log` (every task checkpoint),
//! and each run's sandbox `work_dir/sandboxes/<framework>/<task>/<run>/`
//! holding `stdout`, `stderr` and `.agora/` (`task.pid`, `exit_status.json`,
//! `supervisor.log`, and `messages`: a mailbox where each framework message
//! for the task is appended as one line, for the task to read).
#![forbid(unsafe_code)]

mod agent;
mod checkpoint;
mod containerizer;
mod docker;
mod env;
mod host;
mod http;
mod link;
mod logs;
mod monitor;
pub mod supervisor;
mod updates;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::resources::ResourceError;
use tokio::sync::mpsc;

pub use host::{AttributeError, detect_host_resources};

use crate::agent::{Agent, AgentSettings, Command};
use crate::checkpoint::WorkDir;
use crate::containerizer::ProcessContainerizer;

/// Flags of `agora agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentConfig {
    /// Master address(es): host:port[,host:port...], tried in turn with backoff (a standby's
    /// redirect to the leader is followed at once); or zk://host:2181[,host:2181...]/path to
    /// follow the leader the masters elect in ZooKeeper.
    #[arg(long, value_delimiter = ',', required = true)]
    pub master: Vec<String>,
    /// Address to serve HTTP (/health, /state) on.
    #[arg(long, default_value = "127.0.0.1:5051")]
    pub listen: SocketAddr,
    /// Directory for the agent id, task checkpoints and sandboxes.
    #[arg(long, default_value = "./agora-data/agent")]
    pub work_dir: PathBuf,
    /// Resources to offer, e.g. 'cpus:4;mem:8192;disk:20000;ports:[31000-32000]'; what is
    /// missing is detected (ports default 31000-32000).
    #[arg(long)]
    pub resources: Option<String>,
    /// Attributes, e.g. 'rack:a;zone:eu'.
    #[arg(long)]
    pub attributes: Option<String>,
    /// Hostname reported to the master (default: the machine's).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Resend an unacknowledged status update after this long (doubling up to 10x, capped at 10 min).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub status_update_retry: Duration,
    /// Default SIGTERM->SIGKILL grace period when the task has no kill policy.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub kill_grace_period: Duration,
    /// Program used to supervise tasks (`<supervisor> supervise ...`); default: the current executable.
    #[arg(long)]
    pub supervisor: Option<PathBuf>,
    /// How often to sample the tasks' and the host's CPU and memory use and
    /// report it to the master (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub usage_interval: Duration,
    /// Containerizers to enable, e.g. `docker,process` (default: both when the
    /// Docker engine answers at start, else process only, with a warning).
    #[arg(long, value_delimiter = ',')]
    pub containerizers: Vec<ContainerizerKind>,
    /// The Docker engine: `unix:///path/docker.sock` or `tcp://host:port`
    /// (default: the local socket).
    #[arg(long, env = "DOCKER_HOST")]
    pub docker_socket: Option<String>,
}

/// A way of running tasks (`--containerizers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ContainerizerKind {
    /// Tasks without a container run as processes under the task supervisor.
    Process,
    /// Tasks with `container.docker` run as Docker containers.
    Docker,
}

impl AgentConfig {
    /// A configuration with the flags' defaults.
    pub fn new(master: Vec<String>, listen: SocketAddr, work_dir: PathBuf) -> Self {
        Self {
            master,
            listen,
            work_dir,
            resources: None,
            attributes: None,
            hostname: None,
            status_update_retry: Duration::from_secs(10),
            kill_grace_period: Duration::from_secs(3),
            supervisor: None,
            usage_interval: Duration::from_secs(5),
            containerizers: Vec::new(),
            docker_socket: None,
        }
    }
}

/// Why the agent could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// `--master` named no address.
    #[error("no master address given")]
    NoMaster,
    /// `--master` is a `zk://` URL that does not parse.
    #[error("invalid --master: {0}")]
    MasterUrl(agora_store::ZkUrlError),
    /// `--resources` is not valid.
    #[error("invalid --resources: {0}")]
    Resources(#[from] ResourceError),
    /// `--attributes` is not valid.
    #[error("invalid --attributes: {0}")]
    Attributes(#[from] AttributeError),
    /// The work directory or its checkpoints cannot be used.
    #[error("work dir {0}: {1}")]
    WorkDir(PathBuf, io::Error),
    /// No supervisor program given and the current executable is unknown.
    #[error("cannot find the supervisor program (current executable): {0}")]
    Supervisor(io::Error),
    /// The HTTP listener failed.
    #[error("http server: {0}")]
    Http(io::Error),
    /// `--containerizers docker` was asked for and the engine does not answer.
    #[error("--containerizers docker: {0}")]
    Docker(#[from] docker::DockerUnavailable),
}

/// Runs the agent until `shutdown` completes: serves HTTP on `listener`, keeps
/// registered with a master, runs and watches tasks. Shutdown stops the agent's
/// own loops and HTTP server but leaves tasks running: a restarted agent with the
/// same work dir re-attaches to them.
pub async fn run(
    mut config: AgentConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    // Sandbox paths are handed to supervisors that change into the sandbox,
    // so a relative work dir (the default `./agora-data`) would point them
    // elsewhere: make it absolute once, here.
    config.work_dir =
        std::path::absolute(&config.work_dir).map_err(|e| AgentError::WorkDir(config.work_dir.clone(), e))?;
    // A zk:// URL was split on its commas by clap: `from_list` joins it again.
    let masters = match agora_store::Endpoints::from_list(&config.master) {
        Ok(masters) => masters,
        Err(agora_store::EndpointsError::Empty) => return Err(AgentError::NoMaster),
        Err(agora_store::EndpointsError::ZkUrl(e)) => return Err(AgentError::MasterUrl(e)),
    };
    let attributes = host::parse_attributes(config.attributes.as_deref().unwrap_or(""))?;
    let work_err = |e| AgentError::WorkDir(config.work_dir.clone(), e);
    std::fs::create_dir_all(&config.work_dir).map_err(work_err)?;
    let docker = docker_containerizer(&config).await?;
    let mut detected = detect_host_resources(&config.work_dir);
    let gpus = match &docker {
        Some(_) => docker::gpu::detect_gpus(std::env::var("PATH").ok().as_deref()),
        None => Vec::new(),
    };
    let gpus_named = config.resources.as_deref().is_some_and(|r| r.contains("gpus"));
    if !gpus.is_empty() && !gpus_named {
        tracing::info!(gpus = gpus.len(), "offering GPUs found by nvidia-smi");
        detected.add(&agora_proto::Resources::new().scalar("gpus", gpus.len() as f64));
    }
    let mut resources = host::resolve_resources(config.resources.as_deref(), &detected)?;
    if !gpus.is_empty() && !gpus_named {
        resources.add(&agora_proto::Resources::new().scalar("gpus", gpus.len() as f64));
    }
    let hostname = match &config.hostname {
        Some(h) => h.clone(),
        None => hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".to_owned()),
    };
    let supervisor = match &config.supervisor {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(AgentError::Supervisor)?,
    };
    let http_address = listener.local_addr().map_err(AgentError::Http)?;

    let work = WorkDir::new(config.work_dir.clone());
    let agent_id = work.load_agent_id().map_err(work_err)?;
    let checkpoints = work.load_all().map_err(work_err)?;
    tracing::info!(
        root = %work.root().display(), ?agent_id, tasks = checkpoints.len(), %resources, %http_address,
        "agent starting"
    );

    let settings = AgentSettings {
        hostname,
        resources,
        attributes,
        http_address: http_address.to_string(),
        status_update_retry: config.status_update_retry,
        kill_grace_period: config.kill_grace_period,
    };
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (events, event_rx) = mpsc::unbounded_channel();
    let docker = docker.map(|d| {
        docker::DockerContainerizer::new(
            d,
            config.work_dir.clone(),
            gpus.into_iter().map(|g| g.uuid).collect(),
        )
    });
    if let Some(docker) = &docker {
        let known = checkpoints.iter().map(|cp| PathBuf::from(&cp.sandbox)).collect();
        let removed = docker.remove_orphans(&known).await;
        if removed > 0 {
            tracing::info!(removed, "removed orphan containers");
        }
    }
    let containerizer = Arc::new(docker::Containerizers {
        process: ProcessContainerizer::new(supervisor),
        docker,
    });
    let sandboxes = work.root().join("sandboxes");
    let mut agent = Agent::new(settings, work, containerizer.clone(), agent_id, events);
    agent.recover(checkpoints);
    let actor = tokio::spawn(agent.run(command_rx, event_rx));
    let link = tokio::spawn(link::maintain(
        masters,
        agora_store::ZkOptions::default(),
        commands.clone(),
    ));
    let monitor = tokio::spawn(monitor::run(
        config.usage_interval,
        containerizer.clone(),
        commands.clone(),
    ));
    let routes =
        http::router(commands.clone()).merge(logs::router(commands.clone(), containerizer, sandboxes));

    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut http = tokio::spawn(
        axum::serve(listener, routes)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .into_future(),
    );

    let result = tokio::select! {
        () = shutdown => Ok(()),
        served = &mut http => match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(AgentError::Http(err)),
            Err(join) => Err(AgentError::Http(io::Error::other(join))),
        },
    };
    tracing::info!("agent shutting down (tasks keep running)");
    link.abort();
    monitor.abort();
    let _ = stop_http.send(());
    let _ = commands.send(Command::Shutdown);
    let _ = actor.await;
    if !http.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut http).await;
        http.abort();
    }
    result
}

/// The Docker client, if Docker is enabled: asked for explicitly (an error if
/// the engine does not answer), or by default when it answers in time.
async fn docker_containerizer(config: &AgentConfig) -> Result<Option<bollard::Docker>, AgentError> {
    let explicit = !config.containerizers.is_empty();
    if explicit && !config.containerizers.contains(&ContainerizerKind::Docker) {
        return Ok(None);
    }
    match docker::connect(config.docker_socket.as_deref()).await {
        Ok(client) => {
            tracing::info!("docker containerizer enabled");
            Ok(Some(client))
        }
        Err(err) if explicit => Err(AgentError::Docker(err)),
        Err(err) => {
            tracing::warn!(%err, "Docker is not available: running tasks as processes only (tasks with a Docker container will fail)");
            Ok(None)
        }
    }
}

//! A real cluster in-process for the service framework's tests: a master and
//! an agent (process containerizer, the real task supervisor) on loopback
//! port 0 in one tempdir, and the service framework on top, reached through
//! its `ServiceHandle` or its REST API.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test support: panics are the failure report

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agora_agent::{AgentConfig, AgentError, ContainerizerKind};
use agora_master::MasterConfig;
use agora_service::app::{AppDefinition, AppId};
use agora_service::handle::{ServiceEvent, ServiceHandle, TaskView};
use agora_service::runtime::{RuntimeError, Service, ServiceConfig};
use agora_service::state::{KvStateStore, StateStore};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for the cluster to get somewhere.
pub const WAIT: Duration = Duration::from_secs(30);

/// The task supervisor program the agent runs tasks under: the agent
/// crate's `agora-task-supervisor` (or the `agora` binary) next to this test
/// binary, built once if neither is there.
pub fn supervisor() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/<test binary>
            let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
            let candidates = [
                profile_dir.join("agora-task-supervisor"),
                profile_dir.join("agora"),
            ];
            if let Some(found) = candidates.iter().find(|p| p.exists()) {
                return found.clone();
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let status = std::process::Command::new(cargo)
                .args(["build", "-p", "agora-agent", "--bin", "agora-task-supervisor"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build for the task supervisor");
            assert!(status.success(), "building agora-task-supervisor failed");
            assert!(
                candidates[0].exists(),
                "no supervisor at {}",
                candidates[0].display()
            );
            candidates[0].clone()
        })
        .clone()
}

/// A master and its agents, each with its own work dir under one tempdir.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub master: SocketAddr,
    master_stop: Option<oneshot::Sender<()>>,
    master_run: JoinHandle<()>,
    /// The work dir of the first agent.
    pub agent_dir: PathBuf,
    agents: Vec<TestAgent>,
}

/// How [`Cluster::start_with`] builds a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How many agents (each with 4 cpus, 4 GiB).
    pub agents: usize,
    /// The master's `--agent-timeout` (`None`: its default, 15 s); agents
    /// are asked to heartbeat ten times within it.
    pub agent_timeout: Option<Duration>,
    /// Agents run the Docker containerizer besides the process one.
    pub docker: bool,
    /// Each agent offers ports that were free on this host when the cluster
    /// started (instead of 31000-31099), for tasks that really listen.
    pub free_ports: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            agents: 1,
            agent_timeout: None,
            docker: false,
            free_ports: false,
        }
    }
}

/// One agent of a [`Cluster`], which can be stopped and started again on
/// the same work dir (its tasks keep running meanwhile).
struct TestAgent {
    dir: PathBuf,
    resources: String,
    docker: bool,
    stop: Option<oneshot::Sender<()>>,
    run: Option<JoinHandle<Result<(), AgentError>>>,
}

impl TestAgent {
    async fn start(master: SocketAddr, dir: PathBuf, resources: String, docker: bool) -> TestAgent {
        let mut agent = TestAgent {
            dir,
            resources,
            docker,
            stop: None,
            run: None,
        };
        agent.run(master).await;
        agent
    }

    async fn run(&mut self, master: SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = AgentConfig::new(
            vec![master.to_string()],
            listener.local_addr().unwrap(),
            self.dir.clone(),
        );
        config.supervisor = Some(supervisor());
        config.containerizers = if self.docker {
            vec![ContainerizerKind::Docker, ContainerizerKind::Process]
        } else {
            vec![ContainerizerKind::Process]
        };
        config.resources = Some(self.resources.clone());
        config.hostname = Some("127.0.0.1".into());
        config.kill_grace_period = Duration::from_secs(1);
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.run = Some(tokio::spawn(agora_agent::run(config, listener, async {
            let _ = stopped.await;
        })));
    }

    /// Stops the agent's loops (not its tasks) and waits for it to end.
    async fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(run) = self.run.take() {
            tokio::time::timeout(WAIT, run)
                .await
                .expect("the agent stops in time")
                .unwrap()
                .unwrap();
        }
    }
}

impl Cluster {
    /// Starts a master and an agent with 4 cpus, 4 GiB and 100 ports.
    pub async fn start() -> Cluster {
        Cluster::start_with(ClusterOptions::default()).await
    }

    /// Starts a master and `options.agents` agents.
    pub async fn start_with(options: ClusterOptions) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let master = listener.local_addr().unwrap();
        let mut config = MasterConfig::new(master, dir.path().join("master"));
        config.allocation_delay = Duration::from_millis(1);
        if let Some(timeout) = options.agent_timeout {
            config.agent_timeout = timeout;
            config.agent_heartbeat_interval = Some(timeout / 10);
        }
        let (master_stop, stopped) = oneshot::channel::<()>();
        let master_run = tokio::spawn(async move {
            agora_master::serve(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });

        let mut agents = Vec::new();
        for index in 0..options.agents.max(1) {
            let agent_dir = match index {
                0 => dir.path().join("agent"),
                n => dir.path().join(format!("agent-{n}")),
            };
            let ports = if options.free_ports {
                let ranges: Vec<String> = free_ports(20).iter().map(|p| format!("{p}-{p}")).collect();
                ranges.join(",")
            } else {
                "31000-31099".to_owned()
            };
            let resources = format!("cpus:4;mem:4096;disk:1024;ports:[{ports}]");
            agents.push(TestAgent::start(master, agent_dir, resources, options.docker).await);
        }
        Cluster {
            dir,
            master,
            master_stop: Some(master_stop),
            master_run,
            agent_dir: agents[0].dir.clone(),
            agents,
        }
    }

    /// The work dir of agent `index`.
    pub fn agent_dir_of(&self, index: usize) -> PathBuf {
        self.agents[index].dir.clone()
    }

    /// The ports agent `index` offers.
    pub fn agent_ports(&self, index: usize) -> Vec<u16> {
        let resources = agora_proto::Resources::parse(&self.agents[index].resources).unwrap();
        let text = resources.to_string();
        let ranges = text
            .split(';')
            .find_map(|r| r.strip_prefix("ports:"))
            .unwrap_or("[]")
            .trim_matches(|c| c == '[' || c == ']');
        ranges
            .split(',')
            .filter(|r| !r.is_empty())
            .flat_map(|range| {
                let (begin, end) = range.split_once('-').unwrap_or((range, range));
                begin.trim().parse::<u16>().unwrap()..=end.trim().parse::<u16>().unwrap()
            })
            .collect()
    }

    /// Which agent (index) has `task_id` in its sandboxes.
    pub fn agent_of_task(&self, task_id: &str) -> Option<usize> {
        self.agents
            .iter()
            .position(|a| task_sandbox(&a.dir, task_id).is_some())
    }

    /// Stops agent `index` (its tasks keep running): the master hears no
    /// more heartbeats from it.
    pub async fn stop_agent(&mut self, index: usize) {
        self.agents[index].halt().await;
    }

    /// Starts agent `index` again on its work dir: it re-registers with its
    /// old id and reports the tasks still running.
    pub async fn restart_agent(&mut self, index: usize) {
        let master = self.master;
        let agent = &mut self.agents[index];
        agent.halt().await;
        agent.run(master).await;
    }

    /// A fresh work dir for a service framework.
    pub fn service_dir(&self) -> PathBuf {
        self.dir.path().join("service")
    }

    /// The configuration of a service framework on this cluster.
    pub fn service_config(&self, work_dir: &Path) -> ServiceConfig {
        let mut config = ServiceConfig::new(
            vec![self.master.to_string()],
            "127.0.0.1:0".parse().unwrap(),
            work_dir.to_path_buf(),
        );
        config.reconcile_interval = Duration::from_secs(30);
        config
    }

    /// Every process whose working directory is in an agent's sandboxes, so
    /// that no task outlives the test.
    fn kill_tasks(&self) {
        let sandboxes: Vec<PathBuf> = self.agents.iter().map(|a| a.dir.join("sandboxes")).collect();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
            if sandboxes.iter().any(|s| cwd.starts_with(s)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Every container the Docker agents started (found by their work-dir label).
    pub fn containers(&self) -> Vec<String> {
        self.agents
            .iter()
            .filter(|a| a.docker)
            .flat_map(|a| containers_of(&a.dir))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            if let Some(stop) = agent.stop.take() {
                let _ = stop.send(());
            }
            if let Some(run) = agent.run.take() {
                run.abort();
            }
        }
        if let Some(stop) = self.master_stop.take() {
            let _ = stop.send(());
        }
        self.master_run.abort();
        // Tasks run outside the agent (in their own sessions, or as
        // containers): kill them.
        self.kill_tasks();
        for id in self.containers() {
            docker(&["rm", "-f", &id]);
        }
    }
}

/// The service framework on a cluster, driven through its handle.
pub struct TestService {
    pub service: Option<Service>,
    pub handle: ServiceHandle,
    pub work_dir: PathBuf,
}

impl TestService {
    /// Starts the framework with its state (an embedded store) in `work_dir`.
    pub async fn start(cluster: &Cluster, work_dir: &Path) -> TestService {
        let store = agora_store::open_embedded(work_dir).unwrap();
        let state: Arc<dyn StateStore> = Arc::new(KvStateStore::new(store));
        let config = cluster.service_config(work_dir);
        let service = Service::start(&config, state, "127.0.0.1:0".to_owned())
            .await
            .unwrap();
        let handle = service.handle();
        TestService {
            service: Some(service),
            handle,
            work_dir: work_dir.to_path_buf(),
        }
    }

    /// Stops the framework without tearing it down (tasks keep running).
    pub async fn stop(mut self) {
        let service = self.service.take().unwrap();
        tokio::time::timeout(WAIT, service.stop())
            .await
            .expect("the service stops in time")
            .unwrap();
    }

    /// Creates an app and returns its id.
    pub async fn create(&self, app: AppDefinition) -> AppId {
        let id = app.id.clone();
        self.handle.create_app(app).await.unwrap();
        id
    }

    /// The app's tasks in state TASK_RUNNING.
    pub async fn running(&self, app: &AppId) -> Vec<TaskView> {
        self.handle
            .tasks(Some(app))
            .await
            .into_iter()
            .filter(|t| t.state == "TASK_RUNNING")
            .collect()
    }

    /// Waits until exactly `n` tasks of the app run and no others exist.
    pub async fn wait_running(&self, app: &AppId, n: usize) -> Vec<TaskView> {
        let handle = self.handle.clone();
        let app = app.clone();
        eventually(&format!("{n} running tasks of {app}"), || {
            let handle = handle.clone();
            let app = app.clone();
            async move {
                let tasks = handle.tasks(Some(&app)).await;
                let running = tasks.iter().filter(|t| t.state == "TASK_RUNNING").count();
                (running == n && tasks.len() == n).then_some(tasks)
            }
        })
        .await
    }

    /// Waits until no deployment is running.
    pub async fn wait_deployments_done(&self) {
        let handle = self.handle.clone();
        eventually("every deployment to finish", || {
            let handle = handle.clone();
            async move { handle.deployments().await.is_empty().then_some(()) }
        })
        .await
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        // A failed test leaves the service running: stop its driver and actor.
        drop(self.service.take());
    }
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `sleep` app with small resources.
pub fn sleeper(id: &str, instances: u32) -> AppDefinition {
    let mut app = AppDefinition::new(AppId::parse(id).unwrap(), "sleep 1000");
    app.instances = instances;
    app.cpus = 0.1;
    app.mem = 16.0;
    app.task_kill_grace_period_seconds = Some(1.0);
    app
}

/// The pid of a task's process (its process group leader), from its sandbox:
/// `<agent>/sandboxes/<framework>/<task>/<run>/.agora/task.pid`.
pub fn task_pid(agent_dir: &Path, task_id: &str) -> Option<i32> {
    let frameworks = std::fs::read_dir(agent_dir.join("sandboxes")).ok()?;
    for framework in frameworks.flatten() {
        let Ok(runs) = std::fs::read_dir(framework.path().join(task_id)) else {
            continue;
        };
        for run in runs.flatten() {
            if let Ok(text) = std::fs::read_to_string(run.path().join(".agora/task.pid"))
                && let Ok(pid) = text.trim().parse()
            {
                return Some(pid);
            }
        }
    }
    None
}

/// Whether a process is alive (and not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty()
        && !stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
}

/// Sends SIGKILL to a task's process group, as an outside killer would.
pub fn kill_from_outside(pid: i32) {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
}

/// The state the framework stored in `work_dir` (the service must be stopped).
pub async fn stored_state(work_dir: &Path) -> agora_service::engine::Recovered {
    let store = agora_store::open_embedded(work_dir).unwrap();
    KvStateStore::new(store).load().await.unwrap()
}

/// Runs the service framework with its REST API on a free port; stop it by
/// sending on the returned sender and awaiting the task.
pub async fn serve_http(
    cluster: &Cluster,
    work_dir: &Path,
) -> (String, oneshot::Sender<()>, JoinHandle<Result<(), RuntimeError>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = cluster.service_config(work_dir);
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(agora_service::runtime::serve(config, listener, async {
        let _ = stopped.await;
    }));
    (base, stop, run)
}

/// `n` distinct TCP ports that were free on loopback just now (the
/// listeners are closed again), for agents whose tasks really listen.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
    ports.sort_unstable();
    ports
}

/// The sandbox of a task's latest run on the agent with work dir
/// `agent_dir`: `<agent>/sandboxes/<framework>/<task>/<run>/`.
pub fn task_sandbox(agent_dir: &Path, task_id: &str) -> Option<PathBuf> {
    let frameworks = std::fs::read_dir(agent_dir.join("sandboxes")).ok()?;
    for framework in frameworks.flatten() {
        let Ok(runs) = std::fs::read_dir(framework.path().join(task_id)) else {
            continue;
        };
        let mut runs: Vec<PathBuf> = runs.flatten().map(|r| r.path()).collect();
        runs.sort();
        if let Some(latest) = runs.pop() {
            return Some(latest);
        }
    }
    None
}

/// An app from Marathon's JSON (parsed, defaulted and validated as the API does).
pub fn app_from_json(json: serde_json::Value) -> AppDefinition {
    AppDefinition::from_json(json.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("invalid test app {json}: {e:?}"))
}

/// Every event the service publishes from the moment it is created, kept
/// in order.
pub struct EventLog {
    events: Arc<tokio::sync::Mutex<Vec<ServiceEvent>>>,
    collector: JoinHandle<()>,
}

impl EventLog {
    /// Starts recording the events of `handle`.
    pub fn record(handle: &ServiceHandle) -> EventLog {
        let mut receiver = handle.subscribe();
        let events = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let collector = tokio::spawn(async move {
            loop {
                match receiver.recv().await {
                    Ok(event) => sink.lock().await.push(event),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        panic!("the event log missed {n} events")
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        EventLog { events, collector }
    }

    /// The events so far.
    pub async fn snapshot(&self) -> Vec<ServiceEvent> {
        self.events.lock().await.clone()
    }

    /// Waits until an event matches `wanted` and returns it.
    pub async fn wait_for(&self, what: &str, wanted: impl Fn(&ServiceEvent) -> bool) -> ServiceEvent {
        let wanted = &wanted;
        eventually(what, || async move {
            self.events.lock().await.iter().find(|e| wanted(e)).cloned()
        })
        .await
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.collector.abort();
    }
}

/// The test image (scripts/test-image.sh builds it).
pub const IMAGE: &str = "agora-test/busybox:latest";

/// Runs the docker CLI; its trimmed stdout.
pub fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("Docker tests need the docker CLI and a running engine");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Fails loudly when the engine or the test image is missing.
pub fn require_docker() {
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .expect("Docker tests need the docker CLI and a running engine");
    assert!(
        out.status.success(),
        "Docker tests need the image {IMAGE} (run scripts/test-image.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Ids of the containers (running or not) the agent with work dir
/// `agent_dir` labelled as its own.
pub fn containers_of(agent_dir: &Path) -> Vec<String> {
    let filter = format!("label=agora.work_dir={}", agent_dir.display());
    docker(&["ps", "-aq", "--filter", &filter])
        .lines()
        .map(str::to_owned)
        .collect()
}

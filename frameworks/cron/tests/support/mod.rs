//! A real cluster in this process for the cron framework's integration tests: the master and
//! one agent (process containerizer, the real task supervisor) on loopback port 0 in a
//! tempdir, and the cron framework, which can be stopped and started again on the same work
//! dir. Dropping the cluster kills every task process it started.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test support: panicking is the report

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_agent::{AgentConfig, ContainerizerKind};
use agora_cron::handle::{CronHandle, RunRecord};
use agora_cron::job::{Job, JobKind, JobName};
use agora_cron::runtime::{CronConfig, CronFramework};
use agora_master::MasterConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(30);

/// The task supervisor program the agent runs tasks under: `agora-task-supervisor` next to
/// this test binary's directory (built by `cargo build --workspace`), built here if missing.
pub fn supervisor() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let path = target.join("agora-task-supervisor");
    if !path.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "agora-agent", "--bin", "agora-task-supervisor"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building agora-task-supervisor failed");
    }
    assert!(path.exists(), "{} is missing", path.display());
    path
}

struct Stoppable {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Stoppable {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

/// A master, an agent and (when started) the cron framework.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub master: SocketAddr,
    master_task: Option<Stoppable>,
    agent_task: Option<Stoppable>,
    cron: Option<CronFramework>,
}

impl Cluster {
    /// Starts a master and one agent (8 cpus, 8 GiB) and waits until the agent registered.
    pub async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let master = listener.local_addr().unwrap();
        let master_task = Some(spawn_master(listener, dir.path()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent_task = Some(spawn_agent(listener, master, dir.path()));
        let cluster = Cluster {
            dir,
            master,
            master_task,
            agent_task,
            cron: None,
        };
        cluster.wait_for_agent().await;
        cluster
    }

    /// Stops the master (its registry stays in its work dir).
    pub async fn stop_master(&mut self) {
        if let Some(master) = self.master_task.take() {
            master.stop().await;
        }
    }

    /// Starts the master again on its address and work dir (after [`Cluster::stop_master`]).
    pub async fn start_master(&mut self) {
        assert!(self.master_task.is_none(), "the master is running");
        // The stopped master's tasks may hold its registry a little longer.
        let registry = self.dir.path().join("master");
        let deadline = tokio::time::Instant::now() + WAIT;
        while let Err(e) = agora_store::open_embedded(&registry) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stopped master still holds its registry: {e}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let listener = bind_again(self.master).await;
        self.master_task = Some(spawn_master(listener, self.dir.path()));
    }

    /// Stops the agent; its tasks keep running (an agent never kills tasks when it stops).
    pub async fn stop_agent(&mut self) {
        if let Some(agent) = self.agent_task.take() {
            agent.stop().await;
        }
    }

    /// Starts the agent again on its work dir (after [`Cluster::stop_agent`]) and waits until
    /// it registered.
    pub async fn start_agent(&mut self) {
        assert!(self.agent_task.is_none(), "the agent is running");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.agent_task = Some(spawn_agent(listener, self.master, self.dir.path()));
        self.wait_for_agent().await;
    }

    /// The master's `/state` (None while it does not answer, e.g. while it starts).
    pub async fn master_state(&self) -> Option<serde_json::Value> {
        let response = reqwest::get(format!("http://{}/state", self.master)).await.ok()?;
        response.json().await.ok()
    }

    async fn wait_for_agent(&self) {
        let url = format!("http://{}/state", self.master);
        let client = reqwest::Client::new();
        wait_until("the agent registers with the master", || async {
            let Ok(response) = client.get(&url).send().await else {
                return false;
            };
            let Ok(state) = response.json::<serde_json::Value>().await else {
                return false;
            };
            state["agents"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    }

    /// The cron framework's work dir.
    pub fn cron_dir(&self) -> PathBuf {
        self.dir.path().join("cron")
    }

    /// Starts the cron framework (on its work dir, any free port) and returns its handle.
    pub async fn start_cron(&mut self) -> CronHandle {
        assert!(self.cron.is_none(), "the cron framework is already running");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = CronConfig::new(vec![self.master.to_string()], addr, self.cron_dir());
        config.hostname = Some("test-host".into());
        config.retry_backoff = Duration::from_millis(500);
        let cron = agora_cron::runtime::start(config, listener).await.unwrap();
        let handle = cron.handle();
        self.cron = Some(cron);
        handle
    }

    /// The cron framework's REST API base URL, e.g. `http://127.0.0.1:4400`.
    pub fn cron_url(&self) -> String {
        let cron = self.cron.as_ref().expect("the cron framework is running");
        format!("http://{}", cron.address())
    }

    /// Stops the cron framework (its tasks keep running).
    pub async fn stop_cron(&mut self) {
        if let Some(cron) = self.cron.take() {
            tokio::time::timeout(Duration::from_secs(10), cron.stop())
                .await
                .expect("the cron framework stops in time")
                .unwrap();
        }
    }

    /// Stops everything and kills every task process the agent started.
    pub async fn shutdown(mut self) {
        self.stop_cron().await;
        if let Some(agent) = self.agent_task.take() {
            agent.stop().await;
        }
        if let Some(master) = self.master_task.take() {
            master.stop().await;
        }
        kill_tasks(&self.dir.path().join("agent"));
    }

    /// The sandboxes of a task: one directory per time the agent launched it.
    pub fn task_launches(&self, task_id: &str) -> usize {
        let sandboxes = self.dir.path().join("agent").join("sandboxes");
        let Ok(frameworks) = std::fs::read_dir(sandboxes) else {
            return 0;
        };
        frameworks
            .flatten()
            .map(|fw| match std::fs::read_dir(fw.path().join(task_id)) {
                Ok(runs) => runs.flatten().count(),
                Err(_) => 0,
            })
            .sum()
    }
}

/// Binds `addr` again (the port of a process that just stopped), retrying a little.
async fn bind_again(addr: SocketAddr) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot bind {addr} again: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A master serving on `listener`, its registry in `dir/master`.
fn spawn_master(listener: tokio::net::TcpListener, dir: &Path) -> Stoppable {
    let config = MasterConfig::new(listener.local_addr().unwrap(), dir.join("master"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        if let Err(e) = agora_master::serve(config, listener, async {
            let _ = stopped.await;
        })
        .await
        {
            eprintln!("the test master stopped: {e}");
        }
    });
    Stoppable {
        stop: Some(stop),
        task,
    }
}

/// An agent (8 cpus, 8 GiB, process containerizer) of `master` serving on `listener`, its
/// work dir `dir/agent`.
fn spawn_agent(listener: tokio::net::TcpListener, master: SocketAddr, dir: &Path) -> Stoppable {
    let http = listener.local_addr().unwrap();
    let mut config = AgentConfig::new(vec![master.to_string()], http, dir.join("agent"));
    config.supervisor = Some(supervisor());
    config.resources = Some("cpus:8;mem:8192;disk:8192;ports:[31000-31010]".into());
    config.hostname = Some("test-host".into());
    config.containerizers = vec![ContainerizerKind::Process];
    config.status_update_retry = Duration::from_secs(1);
    config.kill_grace_period = Duration::from_secs(1);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        if let Err(e) = agora_agent::run(config, listener, async {
            let _ = stopped.await;
        })
        .await
        {
            eprintln!("the test agent stopped: {e}");
        }
    });
    Stoppable {
        stop: Some(stop),
        task,
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        kill_tasks(&self.dir.path().join("agent"));
    }
}

/// SIGKILLs the process group of every task with a pid file under the agent's sandboxes.
pub fn kill_tasks(agent_dir: &Path) {
    let Ok(frameworks) = std::fs::read_dir(agent_dir.join("sandboxes")) else {
        return;
    };
    for fw in frameworks.flatten() {
        for task in std::fs::read_dir(fw.path()).into_iter().flatten().flatten() {
            for run in std::fs::read_dir(task.path()).into_iter().flatten().flatten() {
                let pid_file = run.path().join(".agora").join("task.pid");
                if let Ok(pid) = std::fs::read_to_string(pid_file)
                    && let Ok(pid) = pid.trim().parse::<i32>()
                    && pid > 1
                {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// Polls `condition` every 100 ms until it holds; panics after [`WAIT`] naming `what`.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A job from Chronos JSON.
pub fn job(body: serde_json::Value) -> Job {
    let kind = if body.get("parents").is_some() {
        JobKind::Dependent
    } else {
        JobKind::Scheduled
    };
    Job::from_json(&serde_json::to_vec(&body).unwrap(), kind).unwrap()
}

/// A job name.
pub fn name(n: &str) -> JobName {
    JobName::new(n).unwrap()
}

/// The first whole second at least `lead` from now, as an ISO 8601 start.
pub fn start_in(lead: Duration) -> jiff::Timestamp {
    let at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(lead).unwrap())
        .unwrap();
    jiff::Timestamp::from_second(at.as_second() + 1).unwrap()
}

/// The job's runs (panics if the job is unknown).
pub async fn runs(handle: &CronHandle, job: &str) -> Vec<RunRecord> {
    handle.runs(&name(job)).await.unwrap()
}

//! The in-process cluster the framework benchmarks (`bench service`, `bench
//! cron`) run on: `agora local` with one framework, in a kept `--work-dir`
//! or a scratch directory removed afterwards. Everything is read through
//! HTTP: the master's and the agents' `/state`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::time::Instant;

/// Which framework the cluster runs next to the master and agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameworkKind {
    /// The service framework (Marathon's API).
    Service,
    /// The cron framework (Chronos' API).
    Cron,
}

impl FrameworkKind {
    /// The name the framework subscribes with.
    pub fn framework_name(self) -> &'static str {
        match self {
            FrameworkKind::Service => "agora-service",
            FrameworkKind::Cron => "agora-cron",
        }
    }
}

/// A task as an agent's `/state` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentTask {
    /// Task id.
    pub id: String,
    /// Its framework.
    pub framework_id: String,
    /// Mesos' state name.
    pub state: String,
    /// The task's process (process containerizer: its process group leader;
    /// Docker: the container's init process on the host).
    pub pid: Option<i32>,
}

/// A running in-process cluster and its work dir.
pub struct BenchCluster {
    cluster: Option<crate::local::LocalCluster>,
    scratch: Option<PathBuf>,
    work_dir: PathBuf,
    http: reqwest::Client,
    kind: FrameworkKind,
}

impl BenchCluster {
    /// Starts a master, `agents` agents and the framework `kind` (its API on
    /// an ephemeral loopback port) in `work_dir`, or in a fresh scratch
    /// directory when `work_dir` is `None`.
    pub async fn start(work_dir: Option<&Path>, agents: usize, kind: FrameworkKind) -> anyhow::Result<Self> {
        let (work_dir, scratch) = match work_dir {
            Some(dir) => {
                let used = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
                anyhow::ensure!(
                    !used,
                    "--work-dir {} is not empty: the frameworks would recover an earlier run's apps or jobs; \
                     give a new directory",
                    dir.display()
                );
                (dir.to_path_buf(), None)
            }
            None => {
                let dir = std::env::temp_dir().join(format!("agora-bench-{}", uuid::Uuid::new_v4().simple()));
                (dir.clone(), Some(dir))
            }
        };
        let any: SocketAddr = "127.0.0.1:0".parse()?;
        let started = crate::local::start(crate::local::LocalConfig {
            work_dir: work_dir.clone(),
            agents,
            master_listen: any,
            agent_base_port: 0,
            service_listen: (kind == FrameworkKind::Service).then_some(any),
            cron_listen: (kind == FrameworkKind::Cron).then_some(any),
        })
        .await;
        let cluster = match started {
            Ok(c) => c,
            Err(e) => {
                remove_scratch(scratch.as_deref());
                return Err(e.context("cannot start the in-process cluster"));
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Self {
            cluster: Some(cluster),
            scratch,
            work_dir,
            http,
            kind,
        })
    }

    fn cluster(&self) -> anyhow::Result<&crate::local::LocalCluster> {
        self.cluster.as_ref().context("the cluster was stopped")
    }

    /// The master's address (gRPC and HTTP).
    pub fn master_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.cluster()?.master_addr())
    }

    /// The framework's REST API base URL, `http://127.0.0.1:PORT`.
    pub fn framework_url(&self) -> anyhow::Result<String> {
        let cluster = self.cluster()?;
        let addr = match self.kind {
            FrameworkKind::Service => cluster.service_addr(),
            FrameworkKind::Cron => cluster.cron_addr(),
        };
        let addr = addr.context("the framework did not start")?;
        Ok(format!("http://{addr}"))
    }

    /// The directory holding the master's and agents' state and sandboxes.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// An HTTP client with a 60 s timeout per request.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The master's `/state`.
    pub async fn master_state(&self) -> anyhow::Result<Value> {
        let url = format!("http://{}/state", self.master_addr()?);
        get_json(&self.http, &url).await
    }

    /// Waits until every agent is registered and the framework is subscribed
    /// (connected) at the master; returns the framework's id.
    pub async fn wait_ready(&self, agents: usize, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let name = self.kind.framework_name();
        loop {
            let state = self.master_state().await?;
            let active = state["agents"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|a| a["active"] == true).count());
            let framework = state["frameworks"].as_array().and_then(|fs| {
                fs.iter()
                    .find(|f| f["name"] == name && f["connected"] == true)
                    .and_then(|f| f["id"].as_str())
                    .map(str::to_owned)
            });
            if active >= agents
                && let Some(id) = framework
            {
                return Ok(id);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the cluster was not ready within {timeout:?}: {active}/{agents} agents, framework {name} subscribed: {}",
                framework.is_some()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Tasks the master knows in a non-terminal state, of `framework_id` if
    /// given, else of every framework.
    pub async fn live_tasks(&self, framework_id: Option<&str>) -> anyhow::Result<usize> {
        let state = self.master_state().await?;
        Ok(state["tasks"].as_array().map_or(0, |tasks| {
            tasks
                .iter()
                .filter(|t| framework_id.is_none_or(|id| t["framework_id"] == id))
                .filter(|t| !t["state"].as_str().is_some_and(super::events::is_terminal_state))
                .count()
        }))
    }

    /// Waits until the master knows no live task of `framework_id` (or of
    /// any framework).
    pub async fn wait_no_live_tasks(
        &self,
        framework_id: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let live = self.live_tasks(framework_id).await?;
            if live == 0 {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{live} tasks still live after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every task every agent lists in its `/state`.
    pub async fn agent_tasks(&self) -> anyhow::Result<Vec<AgentTask>> {
        let mut out = Vec::new();
        for addr in self.cluster()?.agent_addrs() {
            let state = get_json(&self.http, &format!("http://{addr}/state")).await?;
            for t in state["tasks"].as_array().into_iter().flatten() {
                out.push(AgentTask {
                    id: t["id"].as_str().unwrap_or_default().to_owned(),
                    framework_id: t["framework_id"].as_str().unwrap_or_default().to_owned(),
                    state: t["state"].as_str().unwrap_or_default().to_owned(),
                    pid: t["pid"]
                        .as_i64()
                        .and_then(|p| i32::try_from(p).ok())
                        .filter(|p| *p > 0),
                });
            }
        }
        Ok(out)
    }

    /// Last resort before stopping: SIGKILLs every task process an agent
    /// still lists as live (the cluster's tasks outlive it otherwise).
    /// Returns how many were signalled.
    pub async fn reap(&self, containers: bool) -> usize {
        let tasks = match self.agent_tasks().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the agents' tasks to reap them");
                return 0;
            }
        };
        let mut reaped = 0;
        for t in tasks
            .iter()
            .filter(|t| !super::events::is_terminal_state(&t.state))
        {
            if let Some(pid) = t.pid
                && sigkill(pid, !containers).is_ok()
            {
                reaped += 1;
            }
        }
        reaped
    }

    /// Stops the cluster and removes the scratch directory (a kept
    /// `--work-dir` stays).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let result = match self.cluster.take() {
            Some(c) => c.shutdown().await,
            None => Ok(()),
        };
        remove_scratch(self.scratch.as_deref());
        result
    }
}

fn remove_scratch(dir: Option<&Path>) {
    if let Some(dir) = dir
        && let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the scratch directory");
    }
}

/// GETs `url` and parses the body as JSON; a non-2xx status is an error.
pub async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = http.get(url).send().await.with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .with_context(|| format!("GET {url}: body"))?;
    anyhow::ensure!(status.is_success(), "GET {url}: {status}: {body}");
    serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))
}

/// Sends `body` as JSON with `method` to `url`; returns the status and the
/// parsed body (`Null` when empty or not JSON).
pub async fn send_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: &Value,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let response = http
        .request(method.clone(), url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("{method} {url}: body"))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// SIGKILLs `pid`, or its whole process group when `group` (a process task
/// is its group's leader, so the shell and its children die together).
pub fn sigkill(pid: i32, group: bool) -> anyhow::Result<()> {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    let target = Pid::from_raw(pid);
    let result = if group {
        killpg(target, Signal::SIGKILL)
    } else {
        kill(target, Signal::SIGKILL)
    };
    result.with_context(|| {
        format!(
            "cannot SIGKILL {}{pid}",
            if group { "process group " } else { "pid " }
        )
    })
}

//! `agora bench failover`: how long a master failover takes, from SIGKILL of
//! the leader until the cluster works again (issue 7, Performance).
//!
//! The cluster, all on loopback: a ZooKeeper server (started here unless
//! `--zk` names one), `--masters` `agora master --zk` child processes with
//! `--quorum` (default a majority), agents that follow the leader through
//! ZooKeeper — real `agora agent` processes (`--agents`, process
//! containerizer) and/or simulated agents (`--sim-agents`, [`sim_agent`]
//! made to follow the leader and re-register with their ids and tasks) —
//! and `--frameworks` frameworks on the SDK subscribed through `zk://`,
//! which launch `--tasks` long-running tasks between them and then decline
//! every offer (refuse `--refuse`).
//!
//! Each of `--kills` rounds: wait until the cluster is steady (one master
//! leads, every master takes part in the election, the leader has every
//! agent registered and none recovering, every framework is subscribed with
//! it, has its tasks RUNNING and has received OFFERS since it subscribed),
//! wait `--pause`, SIGKILL the leader, and time from the kill to:
//!
//! - **(a) elected**: ZooKeeper names another master leader (a watch of the
//!   election in this process); **leading**: that master's `/health` says
//!   it leads, i.e. it has a quorum and has read the registry (polled every
//!   10 ms);
//! - **(b) agents re-registered**: the new leader's `/metrics` shows every
//!   agent active and none recovering (polled every 20 ms, stamped when the
//!   answer arrives);
//! - **(c) frameworks offered**: every framework has re-subscribed with the
//!   new leader and received an OFFERS event on that subscription (stamped
//!   in the framework's callbacks; the latest framework counts). The
//!   re-subscription alone is reported too.
//!
//! Then the killed master is started again (a new process, as a standby) so
//! every round has the same number of candidates. A SIGKILLed leader
//! cannot close its ZooKeeper session: its election node goes only when
//! the session expires, so (a) is bounded below by the session timeout
//! (less the time since the session's last ping).
//!
//! [`sim_agent`]: super::sim_agent

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agora_sdk::{
    Driver, DriverConfig, Filters, OfferPool, Resources, Scheduler, SdkError, TaskBuilder, TaskId, v1,
};
use agora_store::zk_server::{TICK_MS, ZkServer};
use agora_store::{LeaderInfo, ZkOptions, ZkUrl};
use anyhow::Context;
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::cluster::parse_duration;
use super::framework::split_evenly;
use super::master_process::{MasterProcess, spawn_listening};
use super::service::local_cluster::{get_json, sigkill};
use super::sim_agent::{AgentShard, SimConfig, SimCounters, connect};
use super::stats::{LatencySummary, millis};
use super::timeline::Timeline;

/// The issue's target for (c), p99.
const TARGET_P99: Duration = Duration::from_secs(5);
/// What the masters log: the HA steps and every agent registration, so the
/// time of a failover can be followed in their logs.
const MASTER_LOG: &str = "warn,agora=info,agora_master=info,agora_store=info,agora_proto=warn";
const AGENT_LOG: &str = "warn,agora=info,agora_agent=info,agora_store=info";
/// How often `/health` is polled after a kill.
const HEALTH_POLL: Duration = Duration::from_millis(10);
/// How often the new leader's `/metrics` is polled after a kill.
const METRICS_POLL: Duration = Duration::from_millis(20);
/// How often the steady state is checked between rounds.
const STEADY_POLL: Duration = Duration::from_millis(50);
/// Each task's resources.
const TASK_CPUS: f64 = 0.01;
const TASK_MEM: f64 = 8.0;
/// The frameworks' failover timeout: far longer than any failover here.
const FRAMEWORK_FAILOVER_TIMEOUT: f64 = 3600.0;

/// Flags of `agora bench failover`.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverArgs {
    /// Masters, all started with --zk (each a candidate for leader).
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
    /// The masters' --quorum; default a majority of --masters.
    #[arg(long)]
    pub quorum: Option<u32>,
    /// How many times the leader is SIGKILLed (one failover each).
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// Real `agora agent` processes (process containerizer), following the
    /// leader through ZooKeeper.
    #[arg(long, default_value_t = 2)]
    pub agents: usize,
    /// Simulated agents (those of `bench cluster`, made to follow the
    /// leader), in addition to --agents.
    #[arg(long, default_value_t = 0)]
    pub sim_agents: usize,
    /// Frameworks on the SDK, subscribed through zk://.
    #[arg(long, default_value_t = 2)]
    pub frameworks: usize,
    /// Long-running tasks in all (`sleep 3600` on real agents), split evenly
    /// among the frameworks; a framework puts at most one on each agent.
    #[arg(long, default_value_t = 4)]
    pub tasks: usize,
    /// The ZooKeeper session timeout of the masters, the frameworks and the
    /// simulated agents' leader watch (real agents keep their default, 2 s:
    /// it only times their watch of the leader).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub zk_session_timeout: Duration,
    /// A running ZooKeeper, `zk://host:port/path` (a path no cluster uses);
    /// default: a standalone server started here (tickTime 200 ms, so
    /// session timeouts of 0.4 s to 4 s).
    #[arg(long)]
    pub zk: Option<String>,
    /// Pause once the cluster is steady before each kill.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub pause: Duration,
    /// Frameworks decline offers they do not use with this refuse filter.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub refuse: Duration,
    /// Each real agent's --resources.
    #[arg(long, default_value = "cpus:2;mem:2048;disk:10000;ports:[31000-32000]")]
    pub agent_resources: String,
    /// Each simulated agent's resources.
    #[arg(long, default_value = "cpus:8;mem:32768;disk:100000;ports:[31000-32000]", value_parser = parse_resources)]
    pub sim_agent_resources: Resources,
    /// HTTP/2 connections the simulated agents share (one driving task each).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Extra flag for every master, repeatable (e.g. --master-arg=--allocation-delay=1ms).
    #[arg(long = "master-arg", allow_hyphen_values = true)]
    pub master_args: Vec<String>,
    /// Directory of the masters' and agents' work dirs and logs (kept
    /// afterwards); default a fresh temporary directory, removed afterwards.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Give up when the start, or one round, takes longer than this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Print the results as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_resources(text: &str) -> Result<Resources, String> {
    Resources::parse(text).map_err(|e| e.to_string())
}

impl FailoverArgs {
    fn quorum(&self) -> u32 {
        self.quorum
            .unwrap_or_else(|| u32::try_from(self.masters / 2 + 1).unwrap_or(u32::MAX))
    }

    fn total_agents(&self) -> usize {
        self.agents + self.sim_agents
    }

    fn zk_options(&self) -> ZkOptions {
        ZkOptions {
            session_timeout: self.zk_session_timeout,
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.masters >= 2,
            "--masters must be at least 2 (a failover needs a standby)"
        );
        let quorum = self.quorum() as usize;
        anyhow::ensure!(
            quorum >= 1 && quorum < self.masters,
            "--quorum must be at least 1 and below --masters, or no standby can lead once the leader is killed"
        );
        anyhow::ensure!(self.kills > 0, "--kills must be at least 1");
        anyhow::ensure!(
            self.total_agents() > 0,
            "--agents plus --sim-agents must be at least 1"
        );
        anyhow::ensure!(self.frameworks > 0, "--frameworks must be at least 1");
        anyhow::ensure!(self.connections > 0, "--connections must be at least 1");
        let most = split_evenly(self.tasks, self.frameworks)
            .iter()
            .map(|r| r.len())
            .max()
            .unwrap_or(0);
        anyhow::ensure!(
            most <= self.total_agents(),
            "--tasks: a framework puts at most one task on each agent, so at most {} tasks for {} frameworks",
            self.total_agents() * self.frameworks,
            self.frameworks
        );
        if self.zk.is_none() {
            let (least, longest) = (
                Duration::from_millis(2 * TICK_MS),
                Duration::from_millis(20 * TICK_MS),
            );
            anyhow::ensure!(
                (least..=longest).contains(&self.zk_session_timeout),
                "--zk-session-timeout: the ZooKeeper started here grants {least:?} to {longest:?}; give --zk for others"
            );
        }
        Ok(())
    }
}

/// Removes a scratch directory when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove the scratch directory");
        }
    }
}

/// Runs the failover benchmark and prints its results.
pub async fn failover(args: FailoverArgs) -> anyhow::Result<()> {
    args.check()?;
    let (dir, _scratch) = match &args.work_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir =
                std::env::temp_dir().join(format!("agora-bench-failover-{}", uuid::Uuid::new_v4().simple()));
            (dir.clone(), Some(ScratchDir(dir)))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let (zk_server, root) = match &args.zk {
        Some(url) => (None, url.clone()),
        None => {
            let server = ZkServer::launch()
                .await
                .context("cannot start ZooKeeper (give --zk to use a running one)")?;
            tracing::info!(port = server.port(), "ZooKeeper started");
            let root = server.url("/agora");
            (Some(server), root)
        }
    };
    let root = ZkUrl::parse(&root).with_context(|| format!("--zk {root}"))?;

    let mut bench = Bench::new(&args, dir, root);
    let result = bench.run().await;
    bench.shut_down().await;
    drop(zk_server);
    let report = result?;
    report.print(&args);
    Ok(())
}

/// Everything the benchmark started.
struct Bench<'a> {
    args: &'a FailoverArgs,
    dir: PathBuf,
    root: ZkUrl,
    http: reqwest::Client,
    masters: Vec<MasterSlot>,
    agents: Vec<AgentProcess>,
    /// The leader as ZooKeeper names it.
    leader: watch::Receiver<Option<LeaderInfo>>,
    /// How many masters take part in the election.
    candidates: watch::Receiver<usize>,
    sims: Option<Sims>,
    frameworks: Vec<FrameworkHandle>,
}

/// One master position: its current process and how many it has had.
struct MasterSlot {
    runs: usize,
    process: Option<MasterProcess>,
}

/// The simulated agents and their shards.
struct Sims {
    counters: Arc<SimCounters>,
    stop: watch::Sender<bool>,
    shards: JoinSet<()>,
}

/// A framework's driver and what it has seen.
struct FrameworkHandle {
    driver: Driver,
    run: JoinHandle<Result<(), SdkError>>,
    view: watch::Receiver<FrameworkView>,
    tasks: usize,
}

impl<'a> Bench<'a> {
    fn new(args: &'a FailoverArgs, dir: PathBuf, root: ZkUrl) -> Self {
        let leader = agora_store::follow(&root, args.zk_options());
        let candidates =
            agora_master::ha::candidates::count(&agora_store::leader::leader_url(&root), args.zk_options());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        Self {
            args,
            dir,
            root,
            http,
            masters: Vec::new(),
            agents: Vec::new(),
            leader,
            candidates,
            sims: None,
            frameworks: Vec::new(),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.args.timeout_secs)
    }

    async fn run(&mut self) -> anyhow::Result<Report> {
        let started = Instant::now();
        for index in 0..self.args.masters {
            self.masters.push(MasterSlot {
                runs: 0,
                process: None,
            });
            self.start_master(index).await?;
        }
        let leader = self.wait_leading(None).await?;
        tracing::info!(%leader, "a master leads");
        for k in 0..self.args.agents {
            let agent =
                AgentProcess::start(&self.dir.join(format!("agent-{k}")), k, &self.root, self.args).await?;
            tracing::info!(pid = agent.pid, address = %agent.addr, "agent started");
            self.agents.push(agent);
        }
        if self.args.sim_agents > 0 {
            self.sims = Some(self.start_sims(&leader).await?);
        }
        self.start_frameworks();
        self.wait_steady().await?;
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            "the cluster is steady; killing leaders"
        );

        let mut rounds = Vec::with_capacity(self.args.kills);
        for round in 1..=self.args.kills {
            let measured = self.round().await.with_context(|| format!("round {round}"))?;
            tracing::info!(
                round,
                killed = %measured.killed,
                new_leader = %measured.new_leader,
                elected_ms = millis(measured.elected),
                leading_ms = millis(measured.leading),
                agents_ms = millis(measured.agents),
                offered_ms = millis(measured.offered()),
                "failover measured"
            );
            rounds.push(measured);
        }
        let tasks_ended = self.frameworks.iter().map(|f| f.view.borrow().ended).sum();
        let failed_attaches = self
            .sims
            .as_ref()
            .map_or(0, |s| s.counters.failed_attaches.load(Ordering::Relaxed));
        Ok(Report {
            rounds,
            tasks_ended,
            failed_attaches,
            zookeeper: match &self.args.zk {
                Some(url) => url.clone(),
                None => format!("started here (standalone, tickTime {TICK_MS} ms)"),
            },
        })
    }

    /// Starts (again) the master in slot `index`, in a new directory.
    async fn start_master(&mut self, index: usize) -> anyhow::Result<()> {
        let args = self.args;
        let slot = self.masters.get_mut(index).context("no such master")?;
        let dir = self
            .dir
            .join(format!("master-{index}"))
            .join(format!("run-{}", slot.runs));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut extra = vec![
            "--zk".to_owned(),
            self.root.to_string(),
            "--quorum".to_owned(),
            args.quorum().to_string(),
            "--zk-session-timeout".to_owned(),
            format!("{}ms", args.zk_session_timeout.as_millis()),
        ];
        extra.extend(args.master_args.iter().cloned());
        let process = MasterProcess::start_logging(&dir, &extra, MASTER_LOG).await?;
        tracing::info!(master = index, run = slot.runs, pid = process.pid(), address = %process.addr(), "master started");
        slot.runs += 1;
        slot.process = Some(process);
        Ok(())
    }

    /// Addresses of the masters that run.
    fn master_addrs(&self) -> Vec<String> {
        self.masters
            .iter()
            .filter_map(|m| m.process.as_ref().map(|p| p.addr().to_string()))
            .collect()
    }

    /// Which master says it leads in `/health` (the first that does).
    async fn leading_master(&self, among: &[String]) -> Option<String> {
        let answers = futures::future::join_all(among.iter().map(|a| self.health(a))).await;
        among
            .iter()
            .zip(answers)
            .find(|(_, h)| h.as_ref().is_some_and(|h| h["leader"] == json!(true)))
            .map(|(a, _)| a.clone())
    }

    async fn health(&self, addr: &str) -> Option<Value> {
        let response = self.http.get(format!("http://{addr}/health")).send().await.ok()?;
        response.json().await.ok()
    }

    /// Waits until a master other than `not` leads; returns its address.
    async fn wait_leading(&self, not: Option<&str>) -> anyhow::Result<String> {
        let deadline = Instant::now() + self.timeout();
        loop {
            let among: Vec<String> = self
                .master_addrs()
                .into_iter()
                .filter(|a| Some(a.as_str()) != not)
                .collect();
            if let Some(leader) = self.leading_master(&among).await {
                return Ok(leader);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no master led within {:?}",
                self.timeout()
            );
            tokio::time::sleep(HEALTH_POLL).await;
        }
    }

    /// Attaches the simulated agents to `leader` and makes them follow it.
    async fn start_sims(&self, leader: &str) -> anyhow::Result<Sims> {
        let counters = Arc::new(SimCounters::default());
        let config = Arc::new(SimConfig {
            resources: self.args.sim_agent_resources.to_proto(),
            // Tasks run until killed.
            task_duration: Duration::MAX,
        });
        let timeline = Arc::new(Timeline::new(0));
        let (stop, stop_rx) = watch::channel(false);
        let mut shards = JoinSet::new();
        let parts = self.args.connections.min(self.args.sim_agents);
        // Hostnames follow the real agents' numbers.
        for numbers in split_evenly(self.args.sim_agents, parts) {
            let numbers = numbers.start + self.args.agents..numbers.end + self.args.agents;
            let channel = connect(leader).await.map_err(anyhow::Error::msg)?;
            let shard = AgentShard::attach(
                channel,
                numbers,
                config.clone(),
                counters.clone(),
                timeline.clone(),
            )
            .await?
            .following(self.leader.clone(), leader.to_owned());
            shards.spawn(shard.run(stop_rx.clone()));
        }
        let deadline = Instant::now() + self.timeout();
        while counters.registered.load(Ordering::Relaxed) < self.args.sim_agents {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {} simulated agents registered within {:?}",
                counters.registered.load(Ordering::Relaxed),
                self.args.sim_agents,
                self.timeout()
            );
            tokio::time::sleep(STEADY_POLL).await;
        }
        tracing::info!(agents = self.args.sim_agents, "simulated agents registered");
        Ok(Sims {
            counters,
            stop,
            shards,
        })
    }

    fn start_frameworks(&mut self) {
        let per_task = Resources::new().scalar("cpus", TASK_CPUS).scalar("mem", TASK_MEM);
        for (k, tasks) in split_evenly(self.args.tasks, self.args.frameworks)
            .into_iter()
            .enumerate()
        {
            let info = v1::FrameworkInfo {
                name: format!("bench-failover-{k}"),
                failover_timeout_seconds: FRAMEWORK_FAILOVER_TIMEOUT,
                ..Default::default()
            };
            let mut config = DriverConfig::new(vec![self.root.to_string()], info);
            config.zk = self.args.zk_options();
            let (view_tx, view) = watch::channel(FrameworkView::default());
            let framework = FailoverFramework {
                index: k,
                target: tasks.len(),
                next_task: 0,
                live: BTreeSet::new(),
                per_task: per_task.clone(),
                refuse: self.args.refuse,
                view: view_tx,
            };
            let (driver, run) = Driver::start(config, framework);
            self.frameworks.push(FrameworkHandle {
                driver,
                run,
                view,
                tasks: tasks.len(),
            });
        }
    }

    /// The agents' counts in `addr`'s `/metrics`: (active, recovering).
    async fn agent_counts(&self, addr: &str) -> Option<(usize, usize)> {
        let response = self
            .http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let text = response.text().await.ok()?;
        let count = |status: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("agora_master_agents{{status=\"{status}\"}}")))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| v as usize)
        };
        Some((count("active")?, count("recovering").unwrap_or(0)))
    }

    /// Waits until one master leads, every master takes part in the
    /// election, the leader has every agent and none recovering, and every
    /// framework is subscribed with it, runs its tasks and has been offered
    /// resources since it subscribed. Returns the leader.
    async fn wait_steady(&self) -> anyhow::Result<String> {
        let deadline = Instant::now() + self.timeout();
        let agents = self.args.total_agents();
        loop {
            let addrs = self.master_addrs();
            let mut missing = Vec::new();
            let leader = self.leading_master(&addrs).await;
            let candidates = *self.candidates.borrow();
            if candidates != self.args.masters {
                missing.push(format!(
                    "{candidates} of {} masters in the election",
                    self.args.masters
                ));
            }
            match &leader {
                None => missing.push("no master leads".to_owned()),
                Some(leader) => {
                    match self.agent_counts(leader).await {
                        Some((active, 0)) if active >= agents => {}
                        counts => missing.push(format!("agents (active, recovering) {counts:?} of {agents}")),
                    }
                    for (k, f) in self.frameworks.iter().enumerate() {
                        let view = f.view.borrow();
                        if !view.steady_with(leader, f.tasks) {
                            missing.push(format!(
                                "framework {k}: master {:?}, offered {}, {} of {} tasks running",
                                view.master,
                                view.offered_at.is_some(),
                                view.running.len(),
                                f.tasks
                            ));
                        }
                    }
                }
            }
            match leader {
                Some(leader) if missing.is_empty() => return Ok(leader),
                _ => {}
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the cluster was not steady within {:?}: {}",
                self.timeout(),
                missing.join("; ")
            );
            tokio::time::sleep(STEADY_POLL).await;
        }
    }

    /// One failover: steady, pause, SIGKILL the leader, measure, restart it.
    async fn round(&mut self) -> anyhow::Result<Round> {
        let leader = loop {
            let leader = self.wait_steady().await?;
            tokio::time::sleep(self.args.pause).await;
            // Still the leader after the pause (a flap would mislead the figures)?
            if self.leading_master(std::slice::from_ref(&leader)).await.is_some() {
                break leader;
            }
        };
        let slot = self
            .masters
            .iter()
            .position(|m| m.process.as_ref().is_some_and(|p| p.addr().to_string() == leader))
            .context("the leader is none of the masters started here")?;
        let survivors: Vec<String> = self.master_addrs().into_iter().filter(|a| *a != leader).collect();
        let sims_registered = self
            .sims
            .as_ref()
            .map(|s| s.counters.registered.load(Ordering::Relaxed));

        // ZooKeeper's view, stamped the moment its watch fires.
        let mut zk_leader = self.leader.clone();
        zk_leader.borrow_and_update();
        let elected = {
            let killed = leader.clone();
            tokio::spawn(async move {
                let moved = zk_leader
                    .wait_for(|l| l.as_ref().is_some_and(|l| l.address != killed))
                    .await
                    .ok()
                    .and_then(|l| l.as_ref().map(|l| l.address.clone()));
                (Instant::now(), moved)
            })
        };

        let process = self
            .masters
            .get_mut(slot)
            .and_then(|m| m.process.take())
            .context("the leader's process is gone")?;
        let pid = process.pid();
        let killed_unix_ms = agora_proto::unix_seconds(std::time::SystemTime::now()) * 1000.0;
        let kill = Instant::now();
        process.kill().await;
        tracing::info!(%leader, pid, "leader SIGKILLed");

        let measured = self.measure(kill, &leader, &survivors, sims_registered).await;
        elected.abort();
        let mut measured = measured?;
        let (elected_at, elected_leader) = match elected.await {
            Ok(seen) => seen,
            Err(_) => (Instant::now(), None),
        };
        measured.elected = elected_at.saturating_duration_since(kill);
        measured.elected_leader = elected_leader.unwrap_or_default();
        measured.killed_unix_ms = killed_unix_ms;
        self.start_master(slot).await?;
        Ok(measured)
    }

    /// Polls until every figure of the round is in (see the module docs).
    async fn measure(
        &self,
        kill: Instant,
        killed: &str,
        survivors: &[String],
        sims_registered: Option<usize>,
    ) -> anyhow::Result<Round> {
        let deadline = kill + self.timeout();
        let agents = self.args.total_agents();
        let mut new_leader: Option<(String, Instant)> = None;
        let mut agents_at = None;
        let mut sims_at = None;
        let mut frameworks: Vec<Option<(Instant, Instant)>> = vec![None; self.frameworks.len()];
        let mut last_metrics = kill;
        // Polled figures are stamped when the answer arrives: the master
        // answers `/metrics` only after the commands queued before it (e.g.
        // registrations), so the state it shows is that of the answer.
        loop {
            if new_leader.is_none()
                && let Some(leader) = self.leading_master(survivors).await
            {
                new_leader = Some((leader, Instant::now()));
            }
            if let (Some(base), Some(sims)) = (sims_registered, &self.sims)
                && sims_at.is_none()
                && sims.counters.registered.load(Ordering::Relaxed) >= base + self.args.sim_agents
            {
                sims_at = Some(Instant::now());
            }
            if let Some((leader, _)) = &new_leader {
                let now = Instant::now();
                if agents_at.is_none() && now >= last_metrics + METRICS_POLL {
                    last_metrics = now;
                    if let Some((active, 0)) = self.agent_counts(leader).await
                        && active >= agents
                    {
                        agents_at = Some(Instant::now());
                    }
                }
                for (seen, f) in frameworks.iter_mut().zip(&self.frameworks) {
                    if seen.is_none() {
                        let view = f.view.borrow();
                        if view.master.as_deref() == Some(leader.as_str())
                            && let (Some(subscribed), Some(offered)) = (view.subscribed_at, view.offered_at)
                            && subscribed >= kill
                        {
                            *seen = Some((subscribed, offered));
                        }
                    }
                }
            }
            if let (Some((leader, leading)), Some(agents_at)) = (&new_leader, agents_at)
                && frameworks.iter().all(Option::is_some)
                && (sims_registered.is_none() || sims_at.is_some())
            {
                let since = |at: Instant| at.saturating_duration_since(kill);
                return Ok(Round {
                    killed: killed.to_owned(),
                    new_leader: leader.clone(),
                    elected_leader: String::new(),
                    killed_unix_ms: 0.0,
                    elected: Duration::ZERO,
                    leading: since(*leading),
                    agents: since(agents_at),
                    sims: sims_at.map(since),
                    frameworks: frameworks
                        .iter()
                        .flatten()
                        .map(|(s, o)| (since(*s), since(*o)))
                        .collect(),
                });
            }
            if Instant::now() >= deadline {
                let views: Vec<String> = self
                    .frameworks
                    .iter()
                    .map(|f| format!("{:?}", f.view.borrow().master))
                    .collect();
                anyhow::bail!(
                    "the failover was not complete {:?} after the kill: new leader {:?}, agents re-registered {}, frameworks offered {} of {} (subscribed with {})",
                    self.timeout(),
                    new_leader.as_ref().map(|(l, _)| l),
                    agents_at.is_some(),
                    frameworks.iter().flatten().count(),
                    frameworks.len(),
                    views.join(", ")
                );
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
    }

    /// Tears the frameworks down (their tasks are killed), reaps any task
    /// process left, stops the agents and the masters.
    async fn shut_down(&mut self) {
        let teardowns = self.frameworks.iter().map(|f| async {
            match tokio::time::timeout(Duration::from_secs(10), f.driver.teardown()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "teardown failed");
                    f.driver.stop();
                }
                Err(_) => {
                    tracing::warn!("teardown timed out");
                    f.driver.stop();
                }
            }
        });
        futures::future::join_all(teardowns).await;
        for f in self.frameworks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), f.run).await;
        }
        self.reap_tasks().await;
        if let Some(mut sims) = self.sims.take() {
            let _ = sims.stop.send(true);
            while sims.shards.join_next().await.is_some() {}
        }
        for agent in self.agents.drain(..) {
            agent.kill().await;
        }
        for slot in &mut self.masters {
            if let Some(process) = slot.process.take() {
                process.kill().await;
            }
        }
    }

    /// Waits (a little) for the real agents' tasks to end after the
    /// teardown, then SIGKILLs any still running.
    async fn reap_tasks(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut live = Vec::new();
            for agent in &self.agents {
                let Ok(state) = get_json(&self.http, &format!("http://{}/state", agent.addr)).await else {
                    continue;
                };
                for task in state["tasks"].as_array().into_iter().flatten() {
                    let ended = task["state"].as_str().is_some_and(|s| {
                        [
                            "TASK_FINISHED",
                            "TASK_FAILED",
                            "TASK_KILLED",
                            "TASK_LOST",
                            "TASK_ERROR",
                            "TASK_DROPPED",
                            "TASK_GONE",
                        ]
                        .contains(&s)
                    });
                    if !ended
                        && let Some(pid) = task["pid"]
                            .as_i64()
                            .and_then(|p| i32::try_from(p).ok())
                            .filter(|p| *p > 0)
                    {
                        live.push(pid);
                    }
                }
            }
            if live.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                for pid in &live {
                    if let Err(e) = sigkill(*pid, true) {
                        tracing::warn!(pid, error = %e, "cannot reap a task process");
                    }
                }
                tracing::warn!(
                    reaped = live.len(),
                    "SIGKILLed task processes left after the teardown"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// An `agora agent` child process following the leader through ZooKeeper.
struct AgentProcess {
    child: Child,
    pid: u32,
    addr: std::net::SocketAddr,
}

impl AgentProcess {
    /// Starts agent number `k` in `dir`, following the cluster at `root`.
    async fn start(dir: &Path, k: usize, root: &ZkUrl, args: &FailoverArgs) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let flags: Vec<std::ffi::OsString> = vec![
            "agent".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--containerizers".into(),
            "process".into(),
            "--master".into(),
            root.to_string().into(),
            "--work-dir".into(),
            dir.join("work").into(),
            "--resources".into(),
            args.agent_resources.clone().into(),
            "--hostname".into(),
            format!("agent-{k}").into(),
        ];
        let (child, pid, addr) = spawn_listening("agent", &flags, &dir.join("agent.log"), AGENT_LOG).await?;
        Ok(Self { child, pid, addr })
    }

    async fn kill(mut self) {
        if let Err(e) = self.child.kill().await {
            tracing::warn!(error = %e, "cannot kill an agent");
        }
    }
}

/// What one framework has seen, as the measuring loop reads it.
#[derive(Debug, Clone, Default)]
struct FrameworkView {
    /// The master of the current subscription.
    master: Option<String>,
    /// When the current subscription was made.
    subscribed_at: Option<Instant>,
    /// The first OFFERS event of the current subscription.
    offered_at: Option<Instant>,
    /// Tasks reported RUNNING and not ended since.
    running: BTreeSet<String>,
    /// Tasks that ended (a failover should end none).
    ended: usize,
}

impl FrameworkView {
    fn steady_with(&self, leader: &str, tasks: usize) -> bool {
        self.master.as_deref() == Some(leader) && self.offered_at.is_some() && self.running.len() >= tasks
    }
}

/// A framework that keeps `target` long-running tasks (at most one per
/// agent), declines everything else, and records when it subscribes and
/// when offers come.
struct FailoverFramework {
    index: usize,
    target: usize,
    next_task: usize,
    /// Tasks launched and not ended.
    live: BTreeSet<String>,
    per_task: Resources,
    refuse: Duration,
    view: watch::Sender<FrameworkView>,
}

impl Scheduler for FailoverFramework {
    async fn subscribed(&mut self, _driver: &Driver, info: agora_sdk::Subscribed) {
        let now = Instant::now();
        self.view.send_modify(|v| {
            v.master = Some(info.master_address.clone());
            v.subscribed_at = Some(now);
            v.offered_at = None;
        });
    }

    async fn offers(&mut self, driver: &Driver, offers: Vec<v1::Offer>) {
        let now = Instant::now();
        self.view.send_if_modified(|v| {
            let first = v.offered_at.is_none();
            if first {
                v.offered_at = Some(now);
            }
            first
        });
        let mut pool = OfferPool::new(&offers);
        let mut placed = Vec::new();
        for agent in pool.agents_mut() {
            if self.live.len() + placed.len() >= self.target {
                break;
            }
            let id = format!("f{}-t{}", self.index, self.next_task);
            let Ok(task_id) = TaskId::parse(&id) else {
                continue;
            };
            let built = agent.place(&self.per_task, 0, |_, resources| {
                TaskBuilder::new(task_id, "failover")
                    .shell("sleep 3600")
                    .resources(&resources)
                    .build()
            });
            if built {
                self.next_task += 1;
                placed.push(id);
            }
        }
        self.live.extend(placed.iter().cloned());
        if let Err(e) = driver
            .execute(pool.into_plan(), Filters::refuse(self.refuse))
            .await
        {
            tracing::warn!(error = %e, "accept/decline failed");
            for id in &placed {
                self.live.remove(id);
            }
        }
    }

    async fn update(&mut self, _driver: &Driver, status: v1::TaskStatus) {
        let state = status.state();
        if state == v1::TaskState::Running {
            self.view.send_modify(|v| {
                v.running.insert(status.task_id.clone());
            });
        } else if agora_sdk::proto::state::is_terminal(state) && self.live.remove(&status.task_id) {
            tracing::warn!(task = %status.task_id, state = agora_sdk::proto::state::mesos_name(state), message = %status.message, "a task ended");
            self.view.send_modify(|v| {
                v.running.remove(&status.task_id);
                v.ended += 1;
            });
        }
    }

    async fn disconnected(&mut self, _driver: &Driver) {
        self.view.send_modify(|v| v.master = None);
    }

    async fn error(&mut self, _driver: &Driver, message: String) {
        tracing::error!(%message, "the master ended a benchmark framework");
    }
}

/// One failover, timed from the SIGKILL.
#[derive(Debug, Clone)]
struct Round {
    killed: String,
    /// The master whose `/health` said it leads first.
    new_leader: String,
    /// The master ZooKeeper named first.
    elected_leader: String,
    /// Wall clock of the kill, to find it in the masters' logs.
    killed_unix_ms: f64,
    /// (a) ZooKeeper names another leader.
    elected: Duration,
    /// (a) that master's `/health` says it leads.
    leading: Duration,
    /// (b) the new leader has every agent active, none recovering.
    agents: Duration,
    /// The simulated agents all got REGISTERED again (their side of (b)).
    sims: Option<Duration>,
    /// Per framework: (re-subscribed with the new leader, first OFFERS then).
    frameworks: Vec<(Duration, Duration)>,
}

impl Round {
    /// (c): the last framework's first offers from the new leader.
    fn offered(&self) -> Duration {
        self.frameworks.iter().map(|(_, o)| *o).max().unwrap_or_default()
    }

    fn resubscribed(&self) -> Duration {
        self.frameworks.iter().map(|(s, _)| *s).max().unwrap_or_default()
    }

    fn to_json(&self) -> Value {
        json!({
            "killed": self.killed,
            "killed_unix_ms": self.killed_unix_ms,
            "elected_leader": self.elected_leader,
            "new_leader": self.new_leader,
            "elected_ms": millis(self.elected),
            "leading_ms": millis(self.leading),
            "agents_reregistered_ms": millis(self.agents),
            "sim_agents_registered_ms": self.sims.map(millis),
            "frameworks": self.frameworks.iter().map(|(s, o)| json!({
                "resubscribed_ms": millis(*s),
                "offered_ms": millis(*o),
            })).collect::<Vec<_>>(),
            "frameworks_resubscribed_ms": millis(self.resubscribed()),
            "frameworks_offered_ms": millis(self.offered()),
        })
    }
}

/// What the failover benchmark measured.
#[derive(Debug)]
struct Report {
    rounds: Vec<Round>,
    tasks_ended: usize,
    failed_attaches: usize,
    zookeeper: String,
}

fn summary_json(summary: Option<LatencySummary>) -> Value {
    summary.map_or(
        Value::Null,
        |s| json!({ "p50": millis(s.p50), "p99": millis(s.p99), "max": millis(s.max), "samples": s.samples }),
    )
}

fn summary_text(summary: Option<LatencySummary>) -> String {
    summary.map_or("no samples".to_owned(), |s| {
        format!(
            "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} kills)",
            millis(s.p50),
            millis(s.p99),
            millis(s.max),
            s.samples
        )
    })
}

impl Report {
    fn summary(&self, figure: impl Fn(&Round) -> Option<Duration>) -> Option<LatencySummary> {
        LatencySummary::of(self.rounds.iter().filter_map(figure).collect())
    }

    fn print(&self, args: &FailoverArgs) {
        let elected = self.summary(|r| Some(r.elected));
        let leading = self.summary(|r| Some(r.leading));
        let agents = self.summary(|r| Some(r.agents));
        let sims = self.summary(|r| r.sims);
        let resubscribed = self.summary(|r| Some(r.resubscribed()));
        let offered = self.summary(|r| Some(r.offered()));
        let met = offered.is_some_and(|s| s.p99 < TARGET_P99);
        if args.json {
            let value = json!({
                "masters": args.masters,
                "quorum": args.quorum(),
                "kills": args.kills,
                "agents": args.agents,
                "sim_agents": args.sim_agents,
                "frameworks": args.frameworks,
                "tasks": args.tasks,
                "zk_session_timeout_ms": millis(args.zk_session_timeout),
                "zookeeper": self.zookeeper,
                "elected_ms": summary_json(elected),
                "leading_ms": summary_json(leading),
                "agents_reregistered_ms": summary_json(agents),
                "sim_agents_registered_ms": summary_json(sims),
                "frameworks_resubscribed_ms": summary_json(resubscribed),
                "frameworks_offered_ms": summary_json(offered),
                "target_offered_p99_ms": millis(TARGET_P99),
                "target_met": met,
                "tasks_ended": self.tasks_ended,
                "sim_failed_attaches": self.failed_attaches,
                "rounds": self.rounds.iter().map(Round::to_json).collect::<Vec<_>>(),
            });
            println!("{value}");
            return;
        }
        println!(
            "cluster:        {} masters (quorum {}), {} agents + {} simulated, {} frameworks with {} tasks; ZooKeeper session {} ms ({})",
            args.masters,
            args.quorum(),
            args.agents,
            args.sim_agents,
            args.frameworks,
            args.tasks,
            args.zk_session_timeout.as_millis(),
            self.zookeeper
        );
        println!("from SIGKILL of the leader to:");
        println!(
            "(a) elected:    {}  (ZooKeeper names a new leader)",
            summary_text(elected)
        );
        println!(
            "    leading:    {}  (its /health says it leads)",
            summary_text(leading)
        );
        println!(
            "(b) agents:     {}  (all re-registered, none recovering)",
            summary_text(agents)
        );
        if sims.is_some() {
            println!(
                "    sim side:   {}  (every simulated agent REGISTERED again)",
                summary_text(sims)
            );
        }
        println!("    frameworks re-subscribed: {}", summary_text(resubscribed));
        println!(
            "(c) offered:    {}  (every framework re-subscribed and offered; target p99 < {} s: {})",
            summary_text(offered),
            TARGET_P99.as_secs(),
            if met { "met" } else { "NOT met" }
        );
        println!("tasks ended during the run: {}", self.tasks_ended);
        if self.failed_attaches > 0 {
            println!(
                "simulated agents' failed re-attach attempts: {}",
                self.failed_attaches
            );
        }
        for (k, r) in self.rounds.iter().enumerate() {
            println!(
                "  kill {:>2}: {} → {}: elected {:.0}, leading {:.0}, agents {:.0}, re-subscribed {:.0}, offered {:.0} ms",
                k + 1,
                r.killed,
                r.new_leader,
                millis(r.elected),
                millis(r.leading),
                millis(r.agents),
                millis(r.resubscribed()),
                millis(r.offered())
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: FailoverArgs,
    }

    fn parse(flags: &[&str]) -> FailoverArgs {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn defaults_are_the_issue_s_run() {
        let args = parse(&[]);
        assert_eq!((args.masters, args.quorum(), args.kills), (3, 2, 20));
        assert_eq!((args.agents, args.sim_agents), (2, 0));
        assert_eq!(args.zk_session_timeout, Duration::from_secs(2));
        assert!(args.check().is_ok());
    }

    #[test]
    fn a_quorum_of_every_master_is_refused() {
        assert!(parse(&["--masters", "3", "--quorum", "3"]).check().is_err());
    }

    #[test]
    fn more_tasks_than_agents_per_framework_is_refused() {
        let args = parse(&["--agents", "2", "--frameworks", "1", "--tasks", "3"]);
        assert!(args.check().is_err());
        let args = parse(&["--agents", "0", "--sim-agents", "1000", "--tasks", "1000"]);
        assert!(args.check().is_ok());
    }

    #[test]
    fn the_built_in_zookeeper_bounds_the_session_timeout() {
        assert!(parse(&["--zk-session-timeout", "10s"]).check().is_err());
        let external = parse(&["--zk-session-timeout", "10s", "--zk", "zk://h:2181/x"]);
        assert!(external.check().is_ok());
    }

    #[test]
    fn the_last_framework_decides_c() {
        let round = Round {
            killed: "a".into(),
            new_leader: "b".into(),
            elected_leader: "b".into(),
            killed_unix_ms: 0.0,
            elected: Duration::from_millis(2000),
            leading: Duration::from_millis(2100),
            agents: Duration::from_millis(2500),
            sims: None,
            frameworks: vec![
                (Duration::from_millis(2200), Duration::from_millis(2600)),
                (Duration::from_millis(3000), Duration::from_millis(3100)),
            ],
        };
        assert_eq!(round.offered(), Duration::from_millis(3100));
        assert_eq!(round.resubscribed(), Duration::from_millis(3000));
        let json = round.to_json();
        assert_eq!(json["frameworks_offered_ms"], 3100.0);
    }
}

//! `agora bench cluster`: a real master on loopback, thousands of simulated
//! agents speaking the agent protocol over gRPC, and frameworks on the SDK.
//! Measures tasks/s, offer→launch latency, the master's allocation pass
//! time and its peak RSS.
//!
//! The run: start the master (a child process, unless `--master`), attach
//! and register every agent, then start the frameworks; the clock runs from
//! the first OFFERS event any framework receives to the last terminal update.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_sdk::{Driver, DriverConfig, Resources, split_masters, v1};
use anyhow::Context;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::framework::{BenchFramework, Outcome, split_evenly};
use super::master_process::MasterProcess;
use super::scrape::{AllocationStats, sample_sum};
use super::sim_agent::{AgentShard, SimConfig, SimCounters};
use super::stats::{LatencySummary, millis};
use super::timeline::Timeline;

/// Flags of `agora bench cluster`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 10_000)]
    pub agents: usize,
    /// Frameworks; the tasks are split evenly among them.
    #[arg(long, default_value_t = 100)]
    pub frameworks: usize,
    /// Tasks to run in all.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
    /// How long each task "runs" between RUNNING and FINISHED (e.g. 1s, 250ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub task_duration: Duration,
    /// Address(es) of a running master; without it a master is started as a
    /// child process (and its peak RSS reported).
    #[arg(long)]
    pub master: Option<String>,
    /// Extra flag for the child master, repeatable (e.g. --master-arg=--allocation-delay=1ms).
    #[arg(long = "master-arg", allow_hyphen_values = true)]
    pub master_args: Vec<String>,
    /// Each simulated agent's resources.
    #[arg(long, default_value = "cpus:8;mem:32768;disk:100000;ports:[31000-32000]", value_parser = parse_resources)]
    pub agent_resources: Resources,
    /// CPUs per task.
    #[arg(long, default_value_t = 0.1)]
    pub task_cpus: f64,
    /// Memory per task, MiB.
    #[arg(long, default_value_t = 32.0)]
    pub task_mem: f64,
    /// Most tasks a framework launches per OFFERS event; default all that
    /// fit. A small burst spreads the launches over allocation cycles (a
    /// steady stream instead of one wave).
    #[arg(long)]
    pub burst: Option<usize>,
    /// HTTP/2 connections the simulated agents share (one driving task each).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Directory of the child master's registry and log (kept afterwards);
    /// default a fresh temporary directory, removed afterwards.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Give up after this many seconds (registration and run each).
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Print the results as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parses `1s`, `250ms`, `500us`, `2m`, `1.5s`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 1s or 250ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "ns" => value / 1e9,
        "m" => value * 60.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ns, us, ms, s or m)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

fn parse_resources(text: &str) -> Result<Resources, String> {
    Resources::parse(text).map_err(|e| e.to_string())
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

/// Runs the cluster benchmark and prints its results.
pub async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.agents > 0, "--agents must be at least 1");
    anyhow::ensure!(args.frameworks > 0, "--frameworks must be at least 1");
    anyhow::ensure!(args.tasks > 0, "--tasks must be at least 1");
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.burst != Some(0), "--burst must be at least 1");
    let per_task = Resources::new()
        .scalar("cpus", args.task_cpus)
        .scalar("mem", args.task_mem);
    anyhow::ensure!(
        !per_task.is_empty(),
        "--task-cpus and --task-mem must be positive"
    );
    anyhow::ensure!(
        args.agent_resources.contains(&per_task),
        "a task ({per_task}) does not fit on an agent ({})",
        args.agent_resources
    );

    let (masters, master, _scratch) = match &args.master {
        Some(list) => (split_masters(list), None, None),
        None => {
            let (dir, scratch) = match &args.work_dir {
                Some(dir) => (dir.clone(), None),
                None => {
                    let dir = std::env::temp_dir()
                        .join(format!("agora-bench-cluster-{}", uuid::Uuid::new_v4().simple()));
                    (dir.clone(), Some(ScratchDir(dir)))
                }
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let master = MasterProcess::start(&dir, &args.master_args).await?;
            tracing::info!(pid = master.pid(), address = %master.addr(), log = %master.log().display(), "master started");
            (vec![master.addr().to_string()], Some(master), scratch)
        }
    };
    let result = drive(&args, masters, per_task, master.as_ref()).await;
    let peak_rss = master.as_ref().and_then(MasterProcess::peak_rss);
    if let Some(master) = master {
        master.kill().await;
    }
    let mut report = result?;
    report.master_peak_rss = peak_rss;
    report.print(&args);
    Ok(())
}

/// Attaches the agents, runs the frameworks to the end and collects the figures.
async fn drive(
    args: &ClusterArgs,
    masters: Vec<String>,
    per_task: Resources,
    master: Option<&MasterProcess>,
) -> anyhow::Result<Report> {
    let first = masters.first().context("--master names no address")?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let timeline = Arc::new(Timeline::new(args.tasks));
    let counters = Arc::new(SimCounters::default());
    let config = Arc::new(SimConfig {
        resources: args.agent_resources.to_proto(),
        task_duration: args.task_duration,
    });

    // Agents first: attach and register all of them, bounded per connection.
    let registering = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shards = JoinSet::new();
    for numbers in split_evenly(args.agents, args.connections.min(args.agents)) {
        let channel = connect(first).await?;
        let (config, counters, timeline, stop) = (
            config.clone(),
            counters.clone(),
            timeline.clone(),
            stop_rx.clone(),
        );
        shards.spawn(async move {
            let shard = AgentShard::attach(channel, numbers, config, counters, timeline).await?;
            shard.run(stop).await;
            anyhow::Ok(())
        });
    }
    wait_registered(args.agents, &counters, &mut shards, timeout).await?;
    let registration = registering.elapsed();
    let http = reqwest::Client::new();
    let metrics_url = format!("http://{first}/metrics");
    let active = scrape(&http, &metrics_url)
        .await
        .and_then(|t| sample_sum(&t, "agora_master_agents"));
    tracing::info!(agents = args.agents, seconds = registration.as_secs_f64(), master_reports = ?active, "agents registered");

    // Then the frameworks; the clock starts at the first offer.
    let mut drivers = Vec::new();
    let mut outcomes = Vec::new();
    for (k, tasks) in split_evenly(args.tasks, args.frameworks).into_iter().enumerate() {
        let info = v1::FrameworkInfo {
            name: format!("bench-cluster-{k}"),
            failover_timeout_seconds: 0.0,
            ..Default::default()
        };
        let (done_tx, done_rx) = oneshot::channel();
        let framework = BenchFramework::new(
            tasks,
            per_task.clone(),
            args.burst.unwrap_or(usize::MAX),
            timeline.clone(),
            done_tx,
        );
        drivers.push(Driver::start(DriverConfig::new(masters.clone(), info), framework));
        outcomes.push(done_rx);
    }
    let progress = tokio::spawn(report_progress(timeline.clone(), args.tasks));
    // A framework whose driver stops (e.g. the master removed it) drops its
    // sender: give up at once rather than at the timeout.
    let waited = tokio::time::timeout(timeout, futures::future::try_join_all(outcomes)).await;
    progress.abort();
    let outcomes: Vec<Outcome> = match waited {
        Ok(results) => results.context("a framework stopped before its tasks ended")?,
        Err(_) => anyhow::bail!(
            "the benchmark did not complete within {} s ({} of {} tasks terminal)",
            args.timeout_secs,
            timeline.terminal_count(),
            args.tasks
        ),
    };

    let metrics = scrape(&http, &metrics_url).await.unwrap_or_default();
    let teardowns = drivers.iter().map(|(driver, _)| async move {
        if let Err(e) = driver.teardown().await {
            tracing::warn!(error = %e, "teardown failed");
            driver.stop();
        }
    });
    futures::future::join_all(teardowns).await;
    for (_, run) in drivers {
        let _ = run.await;
    }
    let _ = stop_tx.send(true);
    while let Some(joined) = shards.join_next().await {
        joined.context("a simulated agent shard panicked")??;
    }

    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for outcome in outcomes {
        for (state, n) in outcome.failures {
            *failures.entry(state.to_owned()).or_default() += n;
        }
    }
    let failed: usize = failures.values().sum();
    Ok(Report {
        agents: args.agents,
        frameworks: args.frameworks,
        tasks: args.tasks,
        finished: args.tasks.saturating_sub(failed),
        failures,
        registration,
        run_time: timeline.run_time().unwrap_or_default(),
        launched: timeline.launched_count(),
        launch_time: timeline.launch_time().unwrap_or_default(),
        latency: LatencySummary::of(timeline.offer_to_launch()),
        allocation: AllocationStats::parse(&metrics),
        offers_made: sample_sum(&metrics, "agora_master_offers_made_total"),
        offers_declined: sample_sum(&metrics, "agora_master_offers_declined_total"),
        status_updates: sample_sum(&metrics, "agora_master_status_updates_total"),
        lost_streams: counters.lost_streams.load(std::sync::atomic::Ordering::Relaxed),
        master_pid: master.map(MasterProcess::pid),
        master_peak_rss: None,
    })
}

/// One HTTP/2 connection to the master.
async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))
        .context("bad master address")?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to the master at {addr}"))
}

/// Waits until `agents` agents got REGISTERED; fails if a shard fails or an
/// agent's stream ends first.
async fn wait_registered(
    agents: usize,
    counters: &SimCounters,
    shards: &mut JoinSet<anyhow::Result<()>>,
    timeout: Duration,
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let deadline = Instant::now() + timeout;
    let mut last_log = Instant::now();
    loop {
        let registered = counters.registered.load(Relaxed);
        if registered >= agents {
            return Ok(());
        }
        anyhow::ensure!(
            counters.lost_streams.load(Relaxed) == 0,
            "simulated agents lost their streams while registering"
        );
        if let Some(joined) = shards.try_join_next() {
            joined.context("a simulated agent shard panicked")??;
            anyhow::bail!("a simulated agent shard stopped while registering");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {registered} of {agents} agents registered within {timeout:?}"
        );
        if last_log.elapsed() >= Duration::from_secs(5) {
            tracing::info!(registered, agents, "registering agents");
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Logs how many tasks have ended, every few seconds.
async fn report_progress(timeline: Arc<Timeline>, tasks: usize) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.tick().await;
    loop {
        every.tick().await;
        tracing::info!(terminal = timeline.terminal_count(), tasks, "progress");
    }
}

async fn scrape(http: &reqwest::Client, url: &str) -> Option<String> {
    let response = http.get(url).send().await.ok()?;
    response.error_for_status().ok()?.text().await.ok()
}

/// What the cluster benchmark measured.
#[derive(Debug, Clone)]
struct Report {
    agents: usize,
    frameworks: usize,
    tasks: usize,
    finished: usize,
    failures: BTreeMap<String, usize>,
    registration: Duration,
    /// First offer → last terminal update.
    run_time: Duration,
    launched: usize,
    /// First offer → last RunTask at an agent.
    launch_time: Duration,
    latency: Option<LatencySummary>,
    allocation: Option<AllocationStats>,
    offers_made: Option<f64>,
    offers_declined: Option<f64>,
    status_updates: Option<f64>,
    lost_streams: usize,
    master_pid: Option<u32>,
    master_peak_rss: Option<u64>,
}

fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(f64::MIN_POSITIVE)
}

impl Report {
    fn print(&self, args: &ClusterArgs) {
        let tasks_per_second = per_second(self.finished, self.run_time);
        let launches_per_second = per_second(self.launched, self.launch_time);
        let latency = self
            .latency
            .map(|l| (millis(l.p50), millis(l.p99), millis(l.max), l.samples));
        let rss_mib = self.master_peak_rss.map(|b| b as f64 / (1024.0 * 1024.0));
        if args.json {
            let value = serde_json::json!({
                "agents": self.agents,
                "frameworks": self.frameworks,
                "tasks": self.tasks,
                "task_duration_seconds": args.task_duration.as_secs_f64(),
                "burst": args.burst,
                "finished": self.finished,
                "failures_by_state": self.failures,
                "registration_seconds": self.registration.as_secs_f64(),
                "run_seconds": self.run_time.as_secs_f64(),
                "tasks_per_second": tasks_per_second,
                "launched": self.launched,
                "launch_seconds": self.launch_time.as_secs_f64(),
                "launches_per_second": launches_per_second,
                "offer_to_launch_ms": latency.map(|(p50, p99, max, samples)| serde_json::json!({
                    "p50": p50, "p99": p99, "max": max, "samples": samples,
                })),
                "allocation": self.allocation.as_ref().map(|a| serde_json::json!({
                    "metric": a.metric,
                    "passes": a.passes,
                    "mean_ms": a.mean_seconds() * 1000.0,
                    "total_seconds": a.total_seconds,
                })),
                "offers_made": self.offers_made,
                "offers_declined": self.offers_declined,
                "status_updates": self.status_updates,
                "lost_agent_streams": self.lost_streams,
                "master_pid": self.master_pid,
                "master_peak_rss_bytes": self.master_peak_rss,
            });
            println!("{value}");
            return;
        }
        println!(
            "cluster:        {} simulated agents ({}), {} frameworks, {} tasks of {} (cpus {}, mem {} MiB)",
            self.agents,
            args.agent_resources,
            self.frameworks,
            self.tasks,
            humanize(args.task_duration),
            args.task_cpus,
            args.task_mem
        );
        println!(
            "registration:   {:.2} s for all agents",
            self.registration.as_secs_f64()
        );
        println!(
            "throughput:     {tasks_per_second:.1} tasks/s ({} finished in {:.2} s, first offer → last terminal update)",
            self.finished,
            self.run_time.as_secs_f64()
        );
        println!(
            "launch rate:    {launches_per_second:.1} tasks/s ({} launched in {:.2} s, first offer → last RunTask)",
            self.launched,
            self.launch_time.as_secs_f64()
        );
        match latency {
            Some((p50, p99, max, samples)) => println!(
                "offer→launch:   p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms ({samples} samples)"
            ),
            None => println!("offer→launch:   no samples"),
        }
        match &self.allocation {
            Some(a) => println!(
                "allocation:     mean {:.3} ms over {} passes ({:.2} s in all; {})",
                a.mean_seconds() * 1000.0,
                a.passes,
                a.total_seconds,
                a.metric
            ),
            None => println!("allocation:     no allocation histogram in /metrics"),
        }
        let show = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.0}"));
        println!(
            "master:         {} offers made, {} declined, {} status updates",
            show(self.offers_made),
            show(self.offers_declined),
            show(self.status_updates)
        );
        match rss_mib {
            Some(mib) => println!("master peak RSS: {mib:.1} MiB"),
            None => println!("master peak RSS: not measured (--master given)"),
        }
        println!("failures:       {}", self.tasks - self.finished);
        for (state, n) in &self.failures {
            println!("  {state}: {n}");
        }
        if self.lost_streams > 0 {
            println!("lost agent streams: {}", self.lost_streams);
        }
    }
}

fn humanize(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{} s", d.as_secs_f64())
    } else {
        format!("{} ms", millis(d))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ClusterArgs,
    }

    #[test]
    fn defaults_are_the_issue_scale() {
        let cli = Cli::try_parse_from(["bench"]).unwrap();
        assert_eq!(
            (cli.args.agents, cli.args.frameworks, cli.args.tasks),
            (10_000, 100, 100_000)
        );
        assert_eq!(cli.args.task_duration, Duration::from_secs(1));
        assert_eq!(cli.args.agent_resources.get_scalar("cpus"), 8.0);
        assert_eq!(cli.args.connections, 64);
        assert!(cli.args.master.is_none());
    }

    #[test]
    fn flags_override_the_defaults() {
        let cli = Cli::try_parse_from([
            "bench",
            "--agents",
            "20",
            "--task-duration",
            "10ms",
            "--agent-resources",
            "cpus:2;mem:512",
            "--master-arg=--allocation-delay=1ms",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.args.agents, 20);
        assert_eq!(cli.args.task_duration, Duration::from_millis(10));
        assert_eq!(cli.args.agent_resources.get_scalar("mem"), 512.0);
        assert_eq!(cli.args.master_args, vec!["--allocation-delay=1ms".to_owned()]);
        assert!(cli.args.json);
    }

    #[test]
    fn malformed_agent_resources_are_refused() {
        assert!(Cli::try_parse_from(["bench", "--agent-resources", "cpus:lots"]).is_err());
    }

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_are_refused() {
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("").is_err());
    }
}

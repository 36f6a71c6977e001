//! `agora bench launch`: how fast a framework on the SDK gets short tasks
//! through the whole path (offer → accept → agent → supervisor → exit →
//! update), and how long a task waits between the offer it was placed on and
//! its RUNNING update.
//!
//! With no `--master`, an in-process cluster (master + `--agents` agents) is
//! started in a scratch directory and removed afterwards.

use std::path::PathBuf;
use std::time::Duration;

use agora_sdk::proto::state::{is_terminal, mesos_name};
use agora_sdk::{
    Driver, DriverConfig, Filters, OfferPool, Resources, Scheduler, TaskBuilder, TaskId, split_masters, v1,
};
use anyhow::Context;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::stats::percentile;

/// Flags of `agora bench launch`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Number of tasks to launch.
    #[arg(long, default_value_t = 10000)]
    pub tasks: usize,
    /// Master address(es) of a running cluster; without it an in-process
    /// cluster is started.
    #[arg(long)]
    pub master: Option<String>,
    /// Agents of the in-process cluster.
    #[arg(long, default_value_t = 2)]
    pub agents: usize,
    /// Shell command every task runs.
    #[arg(long, default_value = "true")]
    pub command: String,
    /// CPUs per task.
    #[arg(long, default_value_t = 0.01)]
    pub cpus: f64,
    /// Memory per task, MiB.
    #[arg(long, default_value_t = 4.0)]
    pub mem: f64,
    /// Most tasks launched per agent per offer (bounds how many tasks an
    /// agent starts at once, and so the offer→RUNNING latency).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Most tasks launched but not yet RUNNING at any time, cluster-wide
    /// (0: no limit). By Little's law offer→RUNNING latency is about this
    /// divided by the launch rate, so it trades a little throughput for
    /// latency.
    #[arg(long, default_value_t = 0)]
    pub max_starting: usize,
    /// Work dir of the in-process cluster; default a fresh temporary
    /// directory, removed afterwards.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Print the results as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the launch benchmark and prints its results.
pub async fn launch(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.tasks > 0, "--tasks must be at least 1");
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    let per_task = Resources::new().scalar("cpus", args.cpus).scalar("mem", args.mem);
    anyhow::ensure!(!per_task.is_empty(), "--cpus and --mem must be positive");

    let (masters, cluster, scratch) = match &args.master {
        Some(list) => (split_masters(list), None, None),
        None => {
            let (work_dir, scratch) = match &args.work_dir {
                Some(dir) => (dir.clone(), None),
                None => {
                    let dir =
                        std::env::temp_dir().join(format!("agora-bench-{}", uuid::Uuid::new_v4().simple()));
                    (dir.clone(), Some(dir))
                }
            };
            let cluster = crate::local::start(crate::local::LocalConfig {
                work_dir,
                agents: args.agents,
                master_listen: "127.0.0.1:0".parse()?,
                agent_base_port: 0,
                service_listen: None,
                cron_listen: None,
            })
            .await
            .context("cannot start the in-process cluster")?;
            (vec![cluster.master_addr().to_string()], Some(cluster), scratch)
        }
    };

    let result = drive(&args, masters, per_task).await;

    if let Some(cluster) = cluster {
        cluster.shutdown().await?;
    }
    if let Some(dir) = scratch
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the scratch directory");
    }
    let report = result?;
    report.print(&args);
    Ok(())
}

/// Runs the benchmark framework until every task is terminal.
async fn drive(args: &BenchArgs, masters: Vec<String>, per_task: Resources) -> anyhow::Result<Report> {
    let framework = v1::FrameworkInfo {
        name: "agora-bench".into(),
        failover_timeout_seconds: 0.0,
        ..Default::default()
    };
    let config = DriverConfig::new(masters, framework);
    let (done_tx, done_rx) = oneshot::channel();
    let bench = LaunchBench::new(args, per_task, done_tx);
    let (driver, run) = Driver::start(config, bench);

    let outcome = tokio::time::timeout(Duration::from_secs(args.timeout_secs), done_rx).await;
    let report = match outcome {
        Ok(Ok(report)) => report,
        Ok(Err(_)) => {
            let ended = run.await.context("the driver panicked")?;
            anyhow::bail!("the framework stopped before the benchmark completed: {ended:?}");
        }
        Err(_) => {
            let _ = driver.teardown().await;
            driver.stop();
            anyhow::bail!("the benchmark did not complete within {} s", args.timeout_secs);
        }
    };
    if let Err(e) = driver.teardown().await {
        tracing::warn!(error = %e, "teardown failed");
        driver.stop();
    }
    let _ = run.await;
    Ok(report)
}

/// What the benchmark measured.
#[derive(Debug, Clone)]
struct Report {
    tasks: usize,
    /// From the first ACCEPT to the last terminal update.
    elapsed: Duration,
    /// Offer received → RUNNING received, one per task that reached RUNNING.
    latencies: Vec<Duration>,
    /// ACCEPT sent → RUNNING received: the launch path alone, without the
    /// time a held offer waited for a free slot.
    launch_latencies: Vec<Duration>,
    /// Tasks that ended in a state other than FINISHED, by state.
    failures: Vec<(String, usize)>,
}

impl Report {
    fn throughput(&self) -> f64 {
        self.tasks as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn failed(&self) -> usize {
        self.failures.iter().map(|(_, n)| n).sum()
    }

    fn print(&self, args: &BenchArgs) {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
        let (p50, p99, max) = (
            ms(percentile(&sorted, 0.50)),
            ms(percentile(&sorted, 0.99)),
            ms(sorted.last().copied()),
        );
        let mut launch = self.launch_latencies.clone();
        launch.sort_unstable();
        let (l50, l99, lmax) = (
            ms(percentile(&launch, 0.50)),
            ms(percentile(&launch, 0.99)),
            ms(launch.last().copied()),
        );
        if args.json {
            let value = serde_json::json!({
                "tasks": self.tasks,
                "command": args.command,
                "elapsed_seconds": self.elapsed.as_secs_f64(),
                "tasks_per_second": self.throughput(),
                "offer_to_running_ms": { "p50": p50, "p99": p99, "max": max, "samples": sorted.len() },
                "accept_to_running_ms": { "p50": l50, "p99": l99, "max": lmax, "samples": launch.len() },
                "failures": self.failed(),
                "failures_by_state": self.failures.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            });
            println!("{value}");
            return;
        }
        println!(
            "tasks:        {} × `{}` (cpus {}, mem {} MiB, ≤ {} per agent per offer)",
            self.tasks, args.command, args.cpus, args.mem, args.batch
        );
        println!(
            "throughput:   {:.1} tasks/s ({:.2} s from the first launch to the last terminal update)",
            self.throughput(),
            self.elapsed.as_secs_f64()
        );
        println!(
            "offer→RUNNING: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms ({} samples)",
            sorted.len()
        );
        println!(
            "accept→RUNNING: p50 {l50:.1} ms, p99 {l99:.1} ms, max {lmax:.1} ms ({} samples)",
            launch.len()
        );
        println!("failures:     {}", self.failed());
        for (state, n) in &self.failures {
            println!("  {state}: {n}");
        }
    }
}

/// Per-task bookkeeping.
#[derive(Debug, Clone, Default)]
struct TaskTrack {
    /// When the offer the task was placed on arrived.
    offered_at: Option<Instant>,
    /// When the task was placed (its ACCEPT sent right after).
    accepted_at: Option<Instant>,
    running_seen: bool,
    terminal: bool,
}

/// The benchmark framework: launches `total` tasks as fast as offers allow.
struct LaunchBench {
    total: usize,
    next: usize,
    command: String,
    per_task: Resources,
    batch: usize,
    max_starting: usize,
    /// Tasks launched that are neither RUNNING nor ended yet.
    starting: usize,
    /// Offers kept while `starting` is at `max_starting`, used as soon as a
    /// task reaches RUNNING (no wait for the next offer cycle).
    held: Vec<(v1::Offer, Instant)>,
    tasks: Vec<TaskTrack>,
    first_launch: Option<Instant>,
    ended: usize,
    latencies: Vec<Duration>,
    launch_latencies: Vec<Duration>,
    failures: std::collections::BTreeMap<&'static str, usize>,
    done: Option<oneshot::Sender<Report>>,
}

impl LaunchBench {
    fn new(args: &BenchArgs, per_task: Resources, done: oneshot::Sender<Report>) -> Self {
        Self {
            total: args.tasks,
            next: 0,
            command: args.command.clone(),
            per_task,
            batch: args.batch,
            max_starting: args.max_starting,
            starting: 0,
            held: Vec::new(),
            tasks: vec![TaskTrack::default(); args.tasks],
            first_launch: None,
            ended: 0,
            latencies: Vec::with_capacity(args.tasks),
            launch_latencies: Vec::with_capacity(args.tasks),
            failures: Default::default(),
            done: Some(done),
        }
    }

    fn index_of(task_id: &str) -> Option<usize> {
        task_id.strip_prefix("bench-")?.parse().ok()
    }
}

impl LaunchBench {
    /// How many tasks may be launched now.
    fn room(&self, agents: usize) -> usize {
        let limit = self.batch.saturating_mul(agents);
        if self.max_starting > 0 {
            limit.min(self.max_starting.saturating_sub(self.starting))
        } else {
            limit
        }
    }

    /// Places tasks on the held offers and accepts the offers that got some.
    /// With a cap on starting tasks, offers that got none are kept for when
    /// a task reaches RUNNING; without one (or once every task is placed)
    /// they are declined.
    async fn launch_on_held(&mut self, driver: &Driver) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        let offers: Vec<v1::Offer> = held.iter().map(|(o, _)| o.clone()).collect();
        let arrived: std::collections::HashMap<String, Instant> =
            held.iter().map(|(o, at)| (o.agent_id.clone(), *at)).collect();
        let mut pool = OfferPool::new(&offers);
        let limit = self.room(pool.agents().len());
        let mut placed = 0;
        while self.next < self.total && placed < limit {
            let id = self.next;
            let mut agent = None;
            let ok = pool.place(&self.per_task, 0, |offered, resources| {
                agent = Some(offered.agent_id().clone());
                TaskBuilder::new(TaskId::new_unchecked(format!("bench-{id}")), "bench")
                    .shell(self.command.as_str())
                    .resources(&resources)
                    .build()
            });
            if !ok {
                break;
            }
            if let Some(t) = self.tasks.get_mut(id) {
                t.offered_at = agent.and_then(|a| arrived.get(a.as_str()).copied());
                t.accepted_at = Some(Instant::now());
            }
            self.next += 1;
            placed += 1;
        }
        self.starting += placed;
        if placed > 0 && self.first_launch.is_none() {
            self.first_launch = Some(Instant::now());
        }
        let mut plan = pool.into_plan();
        let keep = self.max_starting > 0 && self.next < self.total;
        if keep {
            let unused: std::collections::HashSet<String> =
                plan.declines.drain(..).map(|id| id.into_string()).collect();
            self.held = held.into_iter().filter(|(o, _)| unused.contains(&o.id)).collect();
        }
        // Unused resources may come straight back while tasks remain.
        let filters = if self.next < self.total {
            Filters::refuse(Duration::ZERO)
        } else {
            Filters::refuse(Duration::from_secs(60))
        };
        if let Err(e) = driver.execute(plan, filters).await {
            tracing::warn!(error = %e, "accept/decline failed");
        }
    }
}

impl Scheduler for LaunchBench {
    async fn offers(&mut self, driver: &Driver, offers: Vec<v1::Offer>) {
        let arrived = Instant::now();
        self.held.extend(offers.into_iter().map(|o| (o, arrived)));
        self.launch_on_held(driver).await;
    }

    async fn rescinded(&mut self, _driver: &Driver, offer_id: agora_sdk::OfferId) {
        self.held.retain(|(o, _)| o.id != offer_id.as_str());
    }

    async fn update(&mut self, driver: &Driver, status: v1::TaskStatus) {
        let now = Instant::now();
        let state = status.state();
        let Some(track) = Self::index_of(&status.task_id).and_then(|i| self.tasks.get_mut(i)) else {
            return;
        };
        let freed_a_slot =
            (state == v1::TaskState::Running || is_terminal(state)) && !track.running_seen && !track.terminal;
        if state == v1::TaskState::Running && !track.running_seen {
            track.running_seen = true;
            if let Some(at) = track.offered_at {
                self.latencies.push(now - at);
            }
            if let Some(at) = track.accepted_at {
                self.launch_latencies.push(now - at);
            }
        }
        if is_terminal(state) && !track.terminal {
            track.terminal = true;
            self.ended += 1;
            if state != v1::TaskState::Finished {
                tracing::debug!(task = %status.task_id, state = mesos_name(state), message = %status.message, "task failed");
                *self.failures.entry(mesos_name(state)).or_default() += 1;
            }
            if self.ended == self.total
                && let Some(done) = self.done.take()
            {
                let elapsed = self.first_launch.map_or(Duration::ZERO, |t| now - t);
                let _ = done.send(Report {
                    tasks: self.total,
                    elapsed,
                    latencies: std::mem::take(&mut self.latencies),
                    launch_latencies: std::mem::take(&mut self.launch_latencies),
                    failures: self.failures.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect(),
                });
            }
        }
        if freed_a_slot {
            self.starting = self.starting.saturating_sub(1);
            self.launch_on_held(driver).await;
        }
    }

    async fn error(&mut self, _driver: &Driver, message: String) {
        tracing::error!(%message, "the master ended the benchmark framework");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_map_back_to_their_index() {
        assert_eq!(LaunchBench::index_of("bench-42"), Some(42));
        assert_eq!(LaunchBench::index_of("other-42"), None);
    }
}

//! `agora bench cron`: how late the cron framework launches scheduled runs.
//!
//! On an in-process `agora local` (master, agents, the cron framework), N
//! jobs running `true` are created through `POST /scheduler/iso8601`, each
//! `R/<start>/<every>`. With identical starts (the default, the hard case)
//! every job fires at the same instants; with `--stagger` job i starts
//! i × every ÷ N (rounded down to the millisecond) after the first. After
//! `--minutes`, each job's run history (`GET /scheduler/job/{name}/runs`) is
//! compared with the instants its schedule has in the window:
//!
//! - **lateness** = the run's `startedAt` − its `scheduledAt`. The cron
//!   engine stamps `startedAt` when it places the task on an offer, in the
//!   same step that builds the ACCEPT; the ACCEPT is sent once that step's
//!   state changes are stored (so the figure excludes that write);
//! - **agent-side lateness** = when the task's sandbox directory was created
//!   on its agent (its birth time on the file system) − the instant: the
//!   whole path to the agent, an upper bound of the launch time;
//! - **missed**: an instant of the window without a launched run (a
//!   SKIPPED record counts as missed and is also counted apart);
//!   **doubled**: the runs beyond the first for one instant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::service::local_cluster::{BenchCluster, FrameworkKind, get_json, send_json};
use super::stats::{LatencySummary, millis};

/// HTTP requests in flight at once when creating jobs and reading runs.
const CONCURRENT_REQUESTS: usize = 16;

/// Flags of `agora bench cron`.
#[derive(Debug, Clone, clap::Args)]
pub struct CronArgs {
    /// Jobs to schedule.
    #[arg(long, default_value_t = 1000)]
    pub jobs: usize,
    /// Length of the measured window, minutes.
    #[arg(long, default_value_t = 10)]
    pub minutes: u64,
    /// Period of every job (an ISO 8601 duration of hours, minutes and
    /// seconds).
    #[arg(long, default_value = "PT1M")]
    pub every: String,
    /// Spread the jobs' starts evenly over one period instead of starting
    /// them all at the same instant.
    #[arg(long)]
    pub stagger: bool,
    /// Seconds from the benchmark's start to the first instant (time to
    /// create the jobs).
    #[arg(long, default_value_t = 30)]
    pub lead_secs: u64,
    /// Seconds to wait after the window before reading the run histories.
    #[arg(long, default_value_t = 10)]
    pub grace_secs: u64,
    /// Agents of the in-process cluster.
    #[arg(long, default_value_t = 2)]
    pub agents: usize,
    /// Shell command of every job.
    #[arg(long, default_value = "true")]
    pub command: String,
    /// CPUs per run.
    #[arg(long, default_value_t = 0.001)]
    pub cpus: f64,
    /// Memory per run, MiB.
    #[arg(long, default_value_t = 4.0)]
    pub mem: f64,
    /// Disk per run, MiB (Chronos' default of 256 would not fit 1,000 runs at once).
    #[arg(long, default_value_t = 1.0)]
    pub disk: f64,
    /// Work dir of the in-process cluster; default a fresh temporary
    /// directory, removed afterwards.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Print the results as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The jobs and the window the benchmark measures.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    /// Name and first instant of each job.
    jobs: Vec<(String, Timestamp)>,
    /// The period.
    every: SignedDuration,
    /// The window: instants in `[first, end)` count.
    first: Timestamp,
    end: Timestamp,
}

impl Plan {
    /// `jobs` jobs firing every `every` for `minutes` from `first`, all at
    /// once or staggered over one period.
    fn new(
        jobs: usize,
        every: SignedDuration,
        minutes: u64,
        first: Timestamp,
        stagger: bool,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(every.is_positive(), "--every must be longer than zero");
        let window = SignedDuration::from_secs(i64::try_from(minutes.saturating_mul(60))?);
        let end = first
            .checked_add(window)
            .context("the window ends out of range")?;
        let every_ms = every.as_millis();
        let jobs = (0..jobs)
            .map(|i| {
                let offset_ms = if stagger {
                    every_ms * i as i128 / jobs as i128
                } else {
                    0
                };
                let offset = SignedDuration::from_millis(i64::try_from(offset_ms)?);
                Ok((format!("bench-{i:05}"), first.checked_add(offset)?))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            jobs,
            every,
            first,
            end,
        })
    }

    /// The instants of a job starting at `start` that fall in the window.
    fn instants(&self, start: Timestamp) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let mut t = start;
        while t < self.end {
            if t >= self.first {
                out.push(t);
            }
            match t.checked_add(self.every) {
                Ok(next) => t = next,
                Err(_) => break,
            }
        }
        out
    }

    /// The Chronos job JSON of job `name` starting at `start`.
    fn job_json(&self, args: &CronArgs, name: &str, start: Timestamp) -> Value {
        json!({
            "name": name,
            "command": args.command,
            "shell": true,
            "owner": "bench@agora.invalid",
            "schedule": format!("R/{start}/{}", args.every),
            "cpus": args.cpus,
            "mem": args.mem,
            "disk": args.disk,
            "retries": 0,
        })
    }
}

/// One run as `GET /scheduler/job/{name}/runs` shows it.
#[derive(Debug, Clone, PartialEq)]
struct RunView {
    trigger: String,
    scheduled_at: Option<Timestamp>,
    started_at: Option<Timestamp>,
    state: String,
    task_id: Option<String>,
}

impl RunView {
    fn parse(v: &Value) -> Self {
        let time = |field: &str| v[field].as_str().and_then(|s| s.parse::<Timestamp>().ok());
        let text = |field: &str| v[field].as_str().map(str::to_owned);
        Self {
            trigger: text("trigger").unwrap_or_default(),
            scheduled_at: time("scheduledAt"),
            started_at: time("startedAt"),
            state: text("state").unwrap_or_default(),
            task_id: text("taskId"),
        }
    }

    fn is_scheduled(&self) -> bool {
        matches!(self.trigger.as_str(), "SCHEDULE" | "CATCH_UP")
    }
}

/// The comparison of the run histories with the schedule.
#[derive(Debug, Clone, Default, PartialEq)]
struct Outcome {
    /// Instants in the window, over all jobs.
    expected: usize,
    /// Instants with a launched run.
    launched: usize,
    /// startedAt − scheduledAt, one per launched instant (0 when early).
    lateness: Vec<Duration>,
    /// Sandbox created on the agent − scheduledAt, where the sandbox was found.
    agent_lateness: Vec<Duration>,
    /// Launched instants whose task's sandbox was not found.
    no_sandbox: usize,
    /// Instants without a launched run.
    missed: usize,
    /// Of the missed: recorded as SKIPPED.
    skipped: usize,
    /// Runs beyond the first for one instant.
    doubled: usize,
    /// Scheduled runs in the window at instants the schedule does not have.
    unexpected: usize,
    /// Launched runs whose startedAt precedes the instant.
    early: usize,
    /// Launched runs that ended FAILED.
    failed: usize,
}

fn non_negative(d: SignedDuration, early: &mut usize) -> Duration {
    Duration::try_from(d).unwrap_or_else(|_| {
        *early += 1;
        Duration::ZERO
    })
}

/// Compares each job's runs with its instants in the window. `sandboxes`
/// maps task ids to when their sandbox was created.
fn analyse(
    plan: &Plan,
    runs: &HashMap<String, Vec<RunView>>,
    sandboxes: &HashMap<String, Timestamp>,
) -> Outcome {
    let mut out = Outcome::default();
    let none = Vec::new();
    for (name, start) in &plan.jobs {
        let mut by_instant: HashMap<Timestamp, Vec<&RunView>> = HashMap::new();
        for run in runs.get(name).unwrap_or(&none) {
            if let Some(at) = run.scheduled_at
                && run.is_scheduled()
                && at >= plan.first
                && at < plan.end
            {
                by_instant.entry(at).or_default().push(run);
            }
        }
        for instant in plan.instants(*start) {
            out.expected += 1;
            let Some(found) = by_instant.remove(&instant) else {
                out.missed += 1;
                continue;
            };
            out.doubled += found.len() - 1;
            let first = found
                .iter()
                .filter_map(|r| Some((r.started_at?, *r)))
                .min_by_key(|(at, _)| *at);
            let Some((started, run)) = first else {
                out.missed += 1;
                if found.iter().any(|r| r.state == "SKIPPED") {
                    out.skipped += 1;
                }
                continue;
            };
            out.launched += 1;
            out.lateness
                .push(non_negative(started.duration_since(instant), &mut out.early));
            if run.state == "FAILED" {
                out.failed += 1;
            }
            match run.task_id.as_ref().and_then(|t| sandboxes.get(t)) {
                Some(created) => {
                    let mut ignored = 0;
                    out.agent_lateness
                        .push(non_negative(created.duration_since(instant), &mut ignored));
                }
                None => out.no_sandbox += 1,
            }
        }
        out.unexpected += by_instant.values().map(Vec::len).sum::<usize>();
    }
    out
}

/// When each task's first sandbox was created: `<work_dir>/agent-*/sandboxes/<framework>/<task>/<run>/`.
fn sandbox_births(work_dir: &Path) -> HashMap<String, Timestamp> {
    let mut out: HashMap<String, Timestamp> = HashMap::new();
    let dirs = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default()
    };
    for agent in dirs(work_dir) {
        if !agent
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("agent-"))
        {
            continue;
        }
        for framework in dirs(&agent.join("sandboxes")) {
            for task in dirs(&framework) {
                let Some(task_id) = task.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                    continue;
                };
                for run in dirs(&task) {
                    let born = std::fs::metadata(&run)
                        .and_then(|m| m.created())
                        .ok()
                        .and_then(|t| Timestamp::try_from(t).ok());
                    if let Some(born) = born {
                        let slot = out.entry(task_id.clone()).or_insert(born);
                        *slot = (*slot).min(born);
                    }
                }
            }
        }
    }
    out
}

/// Runs the cron benchmark and prints its results.
pub async fn cron(args: CronArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.jobs > 0, "--jobs must be at least 1");
    anyhow::ensure!(args.minutes > 0, "--minutes must be at least 1");
    anyhow::ensure!(args.agents > 0, "--agents must be at least 1");
    anyhow::ensure!(
        args.every.starts_with('P'),
        "--every must be an ISO 8601 duration such as PT1M"
    );
    let every: SignedDuration = args.every.parse().with_context(|| {
        format!(
            "--every {:?} is not an ISO 8601 duration of hours, minutes and seconds",
            args.every
        )
    })?;
    let cluster = BenchCluster::start(args.work_dir.as_deref(), args.agents, FrameworkKind::Cron).await?;
    let result = measure(&args, every, &cluster).await;
    if let Err(e) = cluster.wait_no_live_tasks(None, Duration::from_secs(30)).await {
        tracing::warn!(error = %e, "runs still live at the end; killing their processes");
        cluster.reap(false).await;
    }
    if let Err(e) = cluster.stop().await {
        tracing::warn!(error = %e, "the cluster did not stop cleanly");
    }
    let (plan, outcome, creation) = result?;
    print(&args, &plan, &outcome, creation);
    Ok(())
}

async fn measure(
    args: &CronArgs,
    every: SignedDuration,
    cluster: &BenchCluster,
) -> anyhow::Result<(Plan, Outcome, Duration)> {
    cluster.wait_ready(args.agents, Duration::from_secs(60)).await?;
    let base = cluster.framework_url()?;
    let http = cluster.http().clone();

    let lead = SignedDuration::from_secs(i64::try_from(args.lead_secs)?);
    let first = Timestamp::now().checked_add(lead)?;
    let first = Timestamp::from_second(first.as_second() + 1)?;
    let plan = Plan::new(args.jobs, every, args.minutes, first, args.stagger)?;

    tracing::info!(jobs = args.jobs, first = %plan.first, end = %plan.end, "creating the jobs");
    let began = tokio::time::Instant::now();
    let url = format!("{base}/scheduler/iso8601");
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(plan.jobs.iter())
        .map(|(name, start)| {
            let (http, url) = (&http, &url);
            let body = plan.job_json(args, name, *start);
            async move {
                let (status, answer) = send_json(http, reqwest::Method::POST, url, &body).await?;
                anyhow::ensure!(status.is_success(), "POST {url} of {name}: {status}: {answer}");
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENT_REQUESTS)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let creation = began.elapsed();
    anyhow::ensure!(
        Timestamp::now() < plan.first,
        "creating {} jobs took {creation:?}, past the first instant: raise --lead-secs",
        args.jobs
    );

    let until = plan
        .end
        .checked_add(SignedDuration::from_secs(i64::try_from(args.grace_secs)?))?;
    loop {
        let left = Duration::try_from(until.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO);
        if left.is_zero() {
            break;
        }
        tracing::info!(left_seconds = left.as_secs(), "waiting for the window to pass");
        tokio::time::sleep(left.min(Duration::from_secs(60))).await;
    }

    tracing::info!("reading the run histories");
    let fetched: Vec<anyhow::Result<(String, Vec<RunView>)>> = futures::stream::iter(plan.jobs.iter())
        .map(|(name, _)| {
            let (http, base) = (&http, &base);
            async move {
                let body = get_json(http, &format!("{base}/scheduler/job/{name}/runs")).await?;
                let runs = body
                    .as_array()
                    .with_context(|| format!("the runs of {name} are not a list: {body}"))?
                    .iter()
                    .map(RunView::parse)
                    .collect();
                Ok((name.clone(), runs))
            }
        })
        .buffer_unordered(CONCURRENT_REQUESTS)
        .collect()
        .await;
    let runs: HashMap<String, Vec<RunView>> = fetched.into_iter().collect::<anyhow::Result<_>>()?;
    let sandboxes = sandbox_births(cluster.work_dir());
    Ok((plan.clone(), analyse(&plan, &runs, &sandboxes), creation))
}

fn print(args: &CronArgs, plan: &Plan, o: &Outcome, creation: Duration) {
    let lateness = LatencySummary::of(o.lateness.clone());
    let agent = LatencySummary::of(o.agent_lateness.clone());
    let starts = if args.stagger {
        "staggered over one period"
    } else {
        "identical (every job fires at the same instants)"
    };
    if args.json {
        let summary = |s: Option<LatencySummary>| match s {
            Some(s) => {
                json!({"p50": millis(s.p50), "p99": millis(s.p99), "max": millis(s.max), "samples": s.samples})
            }
            None => Value::Null,
        };
        let value = json!({
            "jobs": args.jobs,
            "every": args.every,
            "minutes": args.minutes,
            "starts": if args.stagger { "staggered" } else { "identical" },
            "first_instant": plan.first.to_string(),
            "window_end": plan.end.to_string(),
            "job_creation_seconds": creation.as_secs_f64(),
            "expected": o.expected,
            "launched": o.launched,
            "lateness_ms": summary(lateness),
            "agent_lateness_ms": summary(agent),
            "no_sandbox": o.no_sandbox,
            "missed": o.missed,
            "skipped": o.skipped,
            "doubled": o.doubled,
            "unexpected": o.unexpected,
            "early": o.early,
            "failed": o.failed,
        });
        println!("{value}");
        return;
    }
    println!(
        "jobs:       {} × `{}` every {}, starts {starts}; window {} → {} ({} min); created in {:.2} s",
        args.jobs,
        args.command,
        args.every,
        plan.first,
        plan.end,
        args.minutes,
        creation.as_secs_f64()
    );
    println!("instants:   {} expected, {} launched", o.expected, o.launched);
    let line = |s: Option<LatencySummary>| match s {
        Some(s) => format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
            millis(s.p50),
            millis(s.p99),
            millis(s.max),
            s.samples
        ),
        None => "no samples".to_owned(),
    };
    println!(
        "lateness:   scheduledAt → startedAt: {} (target p99 < 100 ms)",
        line(lateness)
    );
    println!("agent side: scheduledAt → sandbox created: {}", line(agent));
    println!(
        "missed:     {} (of which recorded SKIPPED: {}); doubled: {} (targets 0, 0)",
        o.missed, o.skipped, o.doubled
    );
    if o.unexpected + o.early + o.failed + o.no_sandbox > 0 {
        println!(
            "anomalies:  {} runs at unexpected instants, {} started before their instant, {} FAILED, {} without a sandbox",
            o.unexpected, o.early, o.failed, o.no_sandbox
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn minute() -> SignedDuration {
        SignedDuration::from_secs(60)
    }

    fn run(scheduled: &str, started: Option<&str>, state: &str, task: &str) -> RunView {
        RunView {
            trigger: "SCHEDULE".into(),
            scheduled_at: Some(t(scheduled)),
            started_at: started.map(t),
            state: state.into(),
            task_id: Some(task.into()),
        }
    }

    #[test]
    fn identical_starts_give_every_job_the_same_instants() {
        let plan = Plan::new(3, minute(), 2, t("2026-01-01T00:00:00Z"), false).unwrap();
        let instants: Vec<_> = plan.jobs.iter().map(|(_, s)| plan.instants(*s)).collect();
        assert!(
            instants
                .iter()
                .all(|i| i == &vec![t("2026-01-01T00:00:00Z"), t("2026-01-01T00:01:00Z")])
        );
    }

    #[test]
    fn staggered_starts_spread_over_one_period() {
        let plan = Plan::new(4, minute(), 1, t("2026-01-01T00:00:00Z"), true).unwrap();
        let starts: Vec<_> = plan.jobs.iter().map(|(_, s)| *s).collect();
        assert_eq!(
            starts,
            vec![
                t("2026-01-01T00:00:00Z"),
                t("2026-01-01T00:00:15Z"),
                t("2026-01-01T00:00:30Z"),
                t("2026-01-01T00:00:45Z")
            ]
        );
        assert_eq!(plan.instants(starts[3]), vec![t("2026-01-01T00:00:45Z")]);
    }

    #[test]
    fn a_job_schedule_repeats_forever_from_its_start() {
        let plan = Plan::new(1, minute(), 1, t("2026-01-01T00:00:00Z"), false).unwrap();
        let args = CronArgs {
            jobs: 1,
            minutes: 1,
            every: "PT1M".into(),
            stagger: false,
            lead_secs: 0,
            grace_secs: 0,
            agents: 1,
            command: "true".into(),
            cpus: 0.001,
            mem: 4.0,
            disk: 1.0,
            work_dir: None,
            json: false,
        };
        let body = plan.job_json(&args, "bench-00000", plan.first);
        assert_eq!(body["schedule"], "R/2026-01-01T00:00:00Z/PT1M");
        assert_eq!(body["retries"], 0);
    }

    #[test]
    fn lateness_is_started_minus_scheduled() {
        let plan = Plan::new(1, minute(), 1, t("2026-01-01T00:00:00Z"), false).unwrap();
        let runs = HashMap::from([(
            "bench-00000".to_owned(),
            vec![run(
                "2026-01-01T00:00:00Z",
                Some("2026-01-01T00:00:00.025Z"),
                "SUCCEEDED",
                "x",
            )],
        )]);
        let sandboxes = HashMap::from([("x".to_owned(), t("2026-01-01T00:00:00.040Z"))]);
        let o = analyse(&plan, &runs, &sandboxes);
        assert_eq!((o.expected, o.launched, o.missed, o.doubled), (1, 1, 0, 0));
        assert_eq!(o.lateness, vec![Duration::from_millis(25)]);
        assert_eq!(o.agent_lateness, vec![Duration::from_millis(40)]);
    }

    #[test]
    fn an_instant_without_a_run_is_missed() {
        let plan = Plan::new(1, minute(), 2, t("2026-01-01T00:00:00Z"), false).unwrap();
        let runs = HashMap::from([(
            "bench-00000".to_owned(),
            vec![run(
                "2026-01-01T00:00:00Z",
                Some("2026-01-01T00:00:00Z"),
                "SUCCEEDED",
                "x",
            )],
        )]);
        let o = analyse(&plan, &runs, &HashMap::new());
        assert_eq!((o.expected, o.launched, o.missed), (2, 1, 1));
        assert_eq!(o.no_sandbox, 1);
    }

    #[test]
    fn a_skipped_run_is_missed_and_counted_as_skipped() {
        let plan = Plan::new(1, minute(), 1, t("2026-01-01T00:00:00Z"), false).unwrap();
        let runs = HashMap::from([(
            "bench-00000".to_owned(),
            vec![run("2026-01-01T00:00:00Z", None, "SKIPPED", "x")],
        )]);
        let o = analyse(&plan, &runs, &HashMap::new());
        assert_eq!((o.missed, o.skipped, o.launched), (1, 1, 0));
    }

    #[test]
    fn two_runs_for_one_instant_are_one_doubled() {
        let plan = Plan::new(1, minute(), 1, t("2026-01-01T00:00:00Z"), false).unwrap();
        let runs = HashMap::from([(
            "bench-00000".to_owned(),
            vec![
                run(
                    "2026-01-01T00:00:00Z",
                    Some("2026-01-01T00:00:00.010Z"),
                    "SUCCEEDED",
                    "a",
                ),
                run(
                    "2026-01-01T00:00:00Z",
                    Some("2026-01-01T00:00:00.020Z"),
                    "SUCCEEDED",
                    "b",
                ),
            ],
        )]);
        let o = analyse(&plan, &runs, &HashMap::new());
        assert_eq!((o.doubled, o.launched, o.missed), (1, 1, 0));
        assert_eq!(o.lateness, vec![Duration::from_millis(10)]);
    }

    #[test]
    fn runs_off_the_schedule_and_manual_runs_are_not_matched() {
        let plan = Plan::new(1, minute(), 1, t("2026-01-01T00:00:00Z"), false).unwrap();
        let mut manual = run(
            "2026-01-01T00:00:00Z",
            Some("2026-01-01T00:00:00Z"),
            "SUCCEEDED",
            "m",
        );
        manual.trigger = "MANUAL".into();
        let runs = HashMap::from([(
            "bench-00000".to_owned(),
            vec![
                manual,
                run(
                    "2026-01-01T00:00:30Z",
                    Some("2026-01-01T00:00:30Z"),
                    "SUCCEEDED",
                    "o",
                ),
            ],
        )]);
        let o = analyse(&plan, &runs, &HashMap::new());
        assert_eq!((o.missed, o.unexpected), (1, 1));
    }

    #[test]
    fn a_run_started_before_its_instant_counts_as_early_with_zero_lateness() {
        let plan = Plan::new(1, minute(), 1, t("2026-01-01T00:00:00Z"), false).unwrap();
        let runs = HashMap::from([(
            "bench-00000".to_owned(),
            vec![run(
                "2026-01-01T00:00:00Z",
                Some("2025-12-31T23:59:59.900Z"),
                "SUCCEEDED",
                "x",
            )],
        )]);
        let o = analyse(&plan, &runs, &HashMap::new());
        assert_eq!((o.early, o.lateness.clone()), (1, vec![Duration::ZERO]));
    }

    #[test]
    fn a_run_view_reads_the_runs_api_fields() {
        let v = json!({
            "job": "bench-00000", "runId": "r1", "trigger": "SCHEDULE",
            "scheduledAt": "2026-01-01T00:00:00Z", "attempt": 0, "taskId": "ct-1",
            "startedAt": "2026-01-01T00:00:00.012345Z", "finishedAt": null,
            "state": "RUNNING", "exitCode": null, "message": null
        });
        let r = RunView::parse(&v);
        assert_eq!(r.started_at, Some(t("2026-01-01T00:00:00.012345Z")));
        assert_eq!(r.task_id.as_deref(), Some("ct-1"));
        assert!(r.is_scheduled());
    }
}

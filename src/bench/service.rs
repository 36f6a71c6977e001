//! `agora bench service`: the service framework (Marathon's API) on an
//! in-process `agora local`, driven only through its REST API, the master's
//! `/state` and the agents' `/state`:
//!
//! - **(c) baseline**: N long-running tasks (`sleep 3600`) launched directly
//!   by a framework on the SDK ([`baseline`]): its subscription → the Nth
//!   TASK_RUNNING.
//! - **(a) deploy**: `POST /v2/apps` of one app of N instances → N tasks
//!   RUNNING (from `status_update_event`s on `/v2/events`). Overhead =
//!   (a) ÷ (c) − 1.
//! - **(b) rolling update**: `PUT /v2/apps/{id}` with a changed `env` under
//!   upgradeStrategy {minimumHealthCapacity 0.5, maximumOverCapacity 0} →
//!   the deployment succeeded and N tasks of the new version RUNNING.
//! - **(d) self-healing**: K times, SIGKILL one RUNNING task's process from
//!   outside (its pid from the agent's `/state`) → a new task RUNNING and N
//!   running again.
//!
//! Events come from the SSE stream; every second without the awaited
//! condition the app is re-read from `GET /v2/apps/{id}` (in case the
//! stream dropped events), and a condition first seen that way is timed at
//! the read (counted in the report as "decided by a poll").
//!
//! `--docker` runs the app as containers of `--image` and measures only (a)
//! and (d). The app is deleted at the end (and any task process left is
//! SIGKILLed) before the cluster stops, so nothing outlives the benchmark.

mod baseline;
mod events;
pub(super) mod local_cluster;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use agora_sdk::Resources;
use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::events::{Fleet, MarathonEvent, SseParser, WANTED_EVENT_TYPES, is_terminal_state, parse_event};
use self::local_cluster::{BenchCluster, FrameworkKind, get_json, send_json, sigkill};
use super::stats::{LatencySummary, millis};

/// The benchmark app's id.
const APP_ID: &str = "/bench/sleep";

/// Pause between phases, so one phase's stragglers (acknowledgements,
/// checkpoints) do not slow the next.
const SETTLE: Duration = Duration::from_secs(1);

/// How long a wait goes without its condition before the app is re-read
/// through the REST API.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Flags of `agora bench service`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Instances of the app (and tasks of the SDK baseline).
    #[arg(long, default_value_t = 200)]
    pub instances: usize,
    /// Task processes killed from outside, one at a time, for the
    /// self-healing latency.
    #[arg(long, default_value_t = 50)]
    pub kills: usize,
    /// Agents of the in-process cluster.
    #[arg(long, default_value_t = 2)]
    pub agents: usize,
    /// Shell command of every task.
    #[arg(long, default_value = "sleep 3600")]
    pub command: String,
    /// CPUs per task (Docker needs at least 0.01).
    #[arg(long, default_value_t = 0.005)]
    pub cpus: f64,
    /// Memory per task, MiB.
    #[arg(long, default_value_t = 16.0)]
    pub mem: f64,
    /// The app's backoffSeconds (Marathon's default: 1): the launch delay
    /// after a task of the app fails.
    #[arg(long, default_value_t = 1.0)]
    pub backoff_seconds: f64,
    /// Pause after each replacement before the next kill, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub kill_interval_ms: u64,
    /// Run the app as Docker containers of --image; measures only the
    /// deploy and self-healing (no baseline, no rolling update).
    #[arg(long)]
    pub docker: bool,
    /// Image of the containers with --docker (built by scripts/test-image.sh).
    #[arg(long, default_value = "agora-test/busybox:latest")]
    pub image: String,
    /// Work dir of the in-process cluster; default a fresh temporary
    /// directory, removed afterwards.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Print the results as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One kill and its replacement.
#[derive(Debug, Clone, Copy)]
struct HealSample {
    /// SIGKILL sent → a new task RUNNING and N running again.
    replaced: Duration,
    /// SIGKILL sent → the killed task's terminal update on the event stream.
    detected: Option<Duration>,
}

/// What the benchmark measured.
#[derive(Debug, Clone, Default)]
struct Report {
    /// (c) SDK framework subscribed → N RUNNING.
    baseline: Option<Duration>,
    /// (a) POST /v2/apps → N RUNNING.
    deploy: Option<Duration>,
    /// (b) PUT /v2/apps/{id} → deployment done, N RUNNING of the new version.
    update: Option<Duration>,
    /// (d) one sample per kill.
    heals: Vec<HealSample>,
    /// Waits whose end was first seen by re-reading the app, not on the stream.
    decided_by_poll: usize,
}

impl Report {
    fn overhead(&self) -> Option<f64> {
        let (a, c) = (self.deploy?, self.baseline?);
        (c > Duration::ZERO).then(|| a.as_secs_f64() / c.as_secs_f64() - 1.0)
    }

    fn print(&self, args: &ServiceArgs) {
        let replaced = LatencySummary::of(self.heals.iter().map(|h| h.replaced).collect());
        let detected = LatencySummary::of(self.heals.iter().filter_map(|h| h.detected).collect());
        let summary_json = |s: Option<LatencySummary>| match s {
            Some(s) => {
                json!({"p50": millis(s.p50), "p99": millis(s.p99), "max": millis(s.max), "samples": s.samples})
            }
            None => Value::Null,
        };
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        if args.json {
            let value = json!({
                "instances": args.instances,
                "command": args.command,
                "cpus": args.cpus,
                "mem": args.mem,
                "containerizer": if args.docker { "docker" } else { "process" },
                "backoff_seconds": args.backoff_seconds,
                "baseline_seconds": secs(self.baseline),
                "deploy_seconds": secs(self.deploy),
                "overhead": self.overhead(),
                "rolling_update_seconds": secs(self.update),
                "heal_ms": summary_json(replaced),
                "heal_detected_ms": summary_json(detected),
                "kills": self.heals.len(),
                "decided_by_poll": self.decided_by_poll,
            });
            println!("{value}");
            return;
        }
        let kind = if args.docker {
            format!("Docker containers of {}", args.image)
        } else {
            "processes".to_owned()
        };
        println!(
            "app:          {} × `{}` (cpus {}, mem {} MiB, {kind}), {} agents",
            args.instances, args.command, args.cpus, args.mem, args.agents
        );
        let fmt = |d: Option<Duration>| {
            d.map_or_else(
                || "not measured".to_owned(),
                |d| format!("{:.3} s", d.as_secs_f64()),
            )
        };
        println!(
            "(c) baseline, SDK framework subscribed → all RUNNING:  {}",
            fmt(self.baseline)
        );
        println!(
            "(a) deploy, POST /v2/apps → all RUNNING:               {}",
            fmt(self.deploy)
        );
        if let Some(o) = self.overhead() {
            println!(
                "    service overhead (a)/(c) − 1:                     {:+.1} % (target < 10 %)",
                o * 100.0
            );
        }
        println!(
            "(b) rolling update (minimumHealthCapacity 0.5, maximumOverCapacity 0), PUT → done: {}",
            fmt(self.update)
        );
        let target = if args.docker { "3 s" } else { "2 s" };
        match replaced {
            Some(s) => println!(
                "(d) self-healing, SIGKILL → replacement RUNNING: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} kills; target p99 < {target}; backoffSeconds {})",
                millis(s.p50),
                millis(s.p99),
                millis(s.max),
                s.samples,
                args.backoff_seconds
            ),
            None => println!("(d) self-healing: not measured"),
        }
        if let Some(s) = detected {
            println!(
                "    of which SIGKILL → failure on the event stream: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                millis(s.p50),
                millis(s.p99),
                millis(s.max)
            );
        }
        if self.decided_by_poll > 0 {
            println!(
                "note: {} waits ended on a re-read of the app (the event stream missed events); those times are up to {} ms late",
                self.decided_by_poll,
                POLL_EVERY.as_millis()
            );
        }
    }
}

/// Runs the service benchmark and prints its results.
pub async fn service(args: ServiceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.instances > 0, "--instances must be at least 1");
    anyhow::ensure!(args.agents > 0, "--agents must be at least 1");
    anyhow::ensure!(
        args.cpus > 0.0 && args.mem > 0.0,
        "--cpus and --mem must be positive"
    );
    anyhow::ensure!(
        !args.docker || args.cpus >= 0.01,
        "--docker needs --cpus 0.01 or more (Docker's smallest CPU quota)"
    );
    anyhow::ensure!(
        args.backoff_seconds >= 0.0,
        "--backoff-seconds must not be negative"
    );
    let cluster = BenchCluster::start(args.work_dir.as_deref(), args.agents, FrameworkKind::Service).await?;
    let mut app_created = false;
    let result = measure(&args, &cluster, &mut app_created).await;
    clean_up(&args, &cluster, app_created).await;
    if let Err(e) = cluster.stop().await {
        tracing::warn!(error = %e, "the cluster did not stop cleanly");
    }
    let report = result?;
    report.print(&args);
    Ok(())
}

/// The app's Marathon JSON; `round` goes into its env, so a new round is a
/// configuration change (a rolling update).
fn app_json(args: &ServiceArgs, round: u32) -> Value {
    let mut app = json!({
        "id": APP_ID,
        "cmd": args.command,
        "instances": args.instances,
        "cpus": args.cpus,
        "mem": args.mem,
        "disk": 0,
        "portDefinitions": [],
        "backoffSeconds": args.backoff_seconds,
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.0},
        "env": {"BENCH_ROUND": round.to_string()},
    });
    if args.docker {
        app["container"] = json!({"type": "DOCKER", "docker": {"image": args.image}});
        // busybox `sleep` as a container's pid 1 ignores SIGTERM: do not wait long to kill it.
        app["taskKillGracePeriodSeconds"] = json!(1);
    }
    app
}

async fn measure(
    args: &ServiceArgs,
    cluster: &BenchCluster,
    app_created: &mut bool,
) -> anyhow::Result<Report> {
    let timeout = Duration::from_secs(args.timeout_secs);
    cluster.wait_ready(args.agents, Duration::from_secs(60)).await?;
    cluster.wait_no_live_tasks(None, Duration::from_secs(10)).await?;
    let base = cluster.framework_url()?;
    let http = cluster.http().clone();
    let mut report = Report::default();
    let n = args.instances;

    if !args.docker {
        let per_task = Resources::new().scalar("cpus", args.cpus).scalar("mem", args.mem);
        tracing::info!(tasks = n, "(c) baseline: launching through an SDK framework");
        report.baseline = Some(baseline::measure(cluster, n, &args.command, per_task, timeout).await?);
        tokio::time::sleep(SETTLE).await;
    }

    let mut watch = AppWatch::attach(&base, APP_ID).await?;

    // (a) deploy
    tracing::info!(instances = n, "(a) deploy: POST /v2/apps");
    let began = Instant::now();
    let (status, body) = send_json(
        &http,
        reqwest::Method::POST,
        &format!("{base}/v2/apps"),
        &app_json(args, 1),
    )
    .await?;
    anyhow::ensure!(status.as_u16() == 201, "POST /v2/apps answered {status}: {body}");
    *app_created = true;
    let done = watch
        .wait_until(&http, began + timeout, "all instances RUNNING", |w| {
            w.fleet.running() >= n
        })
        .await?;
    report.deploy = Some(done - began);
    watch.verify(&http, n, None).await?;
    tokio::time::sleep(SETTLE).await;

    // (b) rolling update
    if !args.docker {
        tracing::info!("(b) rolling update: PUT /v2/apps/{{id}} with a new env");
        let began = Instant::now();
        let url = format!("{base}/v2/apps{APP_ID}");
        let (status, body) = send_json(&http, reqwest::Method::PUT, &url, &app_json(args, 2)).await?;
        anyhow::ensure!(status.is_success(), "PUT {url} answered {status}: {body}");
        let deployment = body["deploymentId"]
            .as_str()
            .context("the PUT answer has no deploymentId")?
            .to_owned();
        let version = body["version"]
            .as_str()
            .context("the PUT answer has no version")?
            .to_owned();
        watch.awaited_deployment = Some(deployment.clone());
        let done = watch
            .wait_until(&http, began + timeout, "the rolling update", |w| {
                w.deployment_ended(&deployment)
                    && w.fleet.running() == n
                    && w.fleet.running_of_version(&version) == n
            })
            .await?;
        anyhow::ensure!(
            !watch.failed_deployments.contains(&deployment),
            "the rolling update's deployment {deployment} failed"
        );
        report.update = Some(done - began);
        watch.verify(&http, n, Some(&version)).await?;
        tokio::time::sleep(SETTLE).await;
    }

    // (d) self-healing
    for k in 0..args.kills {
        let sample = heal_once(args, cluster, &http, &mut watch, k, timeout).await?;
        tracing::info!(
            kill = k + 1,
            of = args.kills,
            replaced_ms = millis(sample.replaced),
            "(d) task replaced"
        );
        report.heals.push(sample);
        tokio::time::sleep(Duration::from_millis(args.kill_interval_ms)).await;
    }
    report.decided_by_poll = watch.decided_by_poll;
    Ok(report)
}

/// Kills one RUNNING task's process and times its replacement.
async fn heal_once(
    args: &ServiceArgs,
    cluster: &BenchCluster,
    http: &reqwest::Client,
    watch: &mut AppWatch,
    k: usize,
    timeout: Duration,
) -> anyhow::Result<HealSample> {
    let n = args.instances;
    let running = watch.fleet.running_ids();
    anyhow::ensure!(
        running.len() == n,
        "{} of {n} tasks RUNNING before kill {}",
        running.len(),
        k + 1
    );
    let pids: HashMap<String, i32> = cluster
        .agent_tasks()
        .await?
        .into_iter()
        .filter(|t| t.state == "TASK_RUNNING")
        .filter_map(|t| Some((t.id, t.pid?)))
        .collect();
    // Walk the tasks from a different place each time (7919 is prime).
    let start = k.wrapping_mul(7919) % running.len();
    let (victim, pid) = running
        .iter()
        .cycle()
        .skip(start)
        .take(running.len())
        .find_map(|id| pids.get(id).map(|pid| (id.clone(), *pid)))
        .context("no RUNNING task of the app has a pid in its agent's /state")?;
    let known_before = watch.fleet.seen().clone();
    let began = Instant::now();
    sigkill(pid, !args.docker)?;
    let done = watch
        .wait_until(http, began + timeout, "a replacement RUNNING", |w| {
            w.fleet.healed(&victim, &known_before, n)
        })
        .await?;
    Ok(HealSample {
        replaced: done - began,
        detected: watch
            .ended_at
            .get(&victim)
            .map(|at| at.saturating_duration_since(began)),
    })
}

/// Deletes the app and waits until its tasks are gone; SIGKILLs whatever an
/// agent still runs after that.
async fn clean_up(args: &ServiceArgs, cluster: &BenchCluster, app_created: bool) {
    if app_created && let Ok(base) = cluster.framework_url() {
        let url = format!("{base}/v2/apps{APP_ID}?force=true");
        match cluster.http().delete(&url).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = %r.status(), "DELETE of the benchmark app refused"),
            Err(e) => tracing::warn!(error = %e, "DELETE of the benchmark app failed"),
        }
    }
    if let Err(e) = cluster.wait_no_live_tasks(None, Duration::from_secs(60)).await {
        tracing::warn!(error = %e, "tasks outlived the benchmark app; killing their processes");
    }
    let reaped = cluster.reap(args.docker).await;
    if reaped > 0 {
        tracing::warn!(reaped, "SIGKILLed task processes left behind");
    }
}

/// The benchmark app as the service framework's event stream describes it.
struct AppWatch {
    app_id: String,
    base: String,
    events: mpsc::UnboundedReceiver<(Instant, MarathonEvent)>,
    reader: JoinHandle<()>,
    fleet: Fleet,
    /// When each task's terminal update arrived.
    ended_at: HashMap<String, Instant>,
    /// The deployment a wait is about, if any.
    awaited_deployment: Option<String>,
    /// Deployments seen finished (successfully or not).
    ended_deployments: HashSet<String>,
    /// Deployments seen failed.
    failed_deployments: HashSet<String>,
    decided_by_poll: usize,
}

impl Drop for AppWatch {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl AppWatch {
    /// Opens `/v2/events` and waits until the stream is attached.
    async fn attach(base: &str, app_id: &str) -> anyhow::Result<Self> {
        let query: Vec<String> = WANTED_EVENT_TYPES
            .iter()
            .map(|t| format!("event_type={t}"))
            .collect();
        let url = format!("{base}/v2/events?{}", query.join("&"));
        // No overall timeout: the stream stays open for the whole benchmark.
        let client = reqwest::Client::new();
        let mut response = client
            .get(&url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        anyhow::ensure!(response.status().is_success(), "GET {url}: {}", response.status());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut parser = SseParser::default();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let at = Instant::now();
                        for frame in parser.push(&chunk) {
                            if let Some(event) = parse_event(&frame)
                                && tx.send((at, event)).is_err()
                            {
                                return;
                            }
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "the event stream failed");
                        return;
                    }
                }
            }
        });
        let attached = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some((_, event)) = rx.recv().await {
                if event == MarathonEvent::Attached {
                    return true;
                }
            }
            false
        })
        .await;
        if attached != Ok(true) {
            reader.abort();
            anyhow::bail!("/v2/events did not attach within 10 s");
        }
        Ok(Self {
            app_id: app_id.to_owned(),
            base: base.to_owned(),
            events: rx,
            reader,
            fleet: Fleet::default(),
            ended_at: HashMap::new(),
            awaited_deployment: None,
            ended_deployments: HashSet::new(),
            failed_deployments: HashSet::new(),
            decided_by_poll: 0,
        })
    }

    fn deployment_ended(&self, id: &str) -> bool {
        self.ended_deployments.contains(id)
    }

    fn apply(&mut self, at: Instant, event: MarathonEvent) {
        match event {
            MarathonEvent::Status {
                task_id,
                app_id,
                state,
                version,
            } if app_id == self.app_id => {
                if is_terminal_state(&state) {
                    self.ended_at.entry(task_id.clone()).or_insert(at);
                }
                self.fleet.apply(&task_id, &state, &version);
            }
            MarathonEvent::DeploymentSuccess { id } => {
                self.ended_deployments.insert(id);
            }
            MarathonEvent::DeploymentFailed { id } => {
                self.ended_deployments.insert(id.clone());
                self.failed_deployments.insert(id);
            }
            _ => {}
        }
    }

    /// `GET /v2/apps/{id}`: the app with its tasks and deployments.
    async fn read_app(&self, http: &reqwest::Client) -> anyhow::Result<Value> {
        let url = format!("{}/v2/apps{}", self.base, self.app_id);
        let body = get_json(http, &url).await?;
        Ok(body["app"].clone())
    }

    /// Brings the view up to date from the REST API.
    async fn resync(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let app = self.read_app(http).await?;
        let tasks: Vec<(String, String, String)> = app["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let field = |name: &str| t[name].as_str().unwrap_or_default().to_owned();
                (field("id"), field("state"), field("version"))
            })
            .collect();
        self.fleet
            .resync(tasks.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())));
        if let Some(id) = &self.awaited_deployment {
            let listed = app["deployments"]
                .as_array()
                .is_some_and(|ds| ds.iter().any(|d| d["id"] == id.as_str()));
            if !listed {
                self.ended_deployments.insert(id.clone());
            }
        }
        Ok(())
    }

    /// Applies events until `done` holds; returns when the event that made
    /// it hold arrived (or the re-read that showed it).
    async fn wait_until(
        &mut self,
        http: &reqwest::Client,
        deadline: Instant,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<Instant> {
        let mut next_poll = Instant::now() + POLL_EVERY;
        loop {
            if done(self) {
                return Ok(Instant::now());
            }
            let wake = next_poll.min(deadline);
            match tokio::time::timeout_at(wake, self.events.recv()).await {
                Ok(Some((at, event))) => {
                    self.apply(at, event);
                    // Drain what is already here before judging, but time the
                    // condition by the event that completed it.
                    if done(self) {
                        return Ok(at);
                    }
                }
                Ok(None) => {
                    anyhow::bail!("the service framework's event stream ended while waiting for {what}")
                }
                Err(_) if Instant::now() >= deadline => anyhow::bail!(
                    "timed out waiting for {what}: {} tasks RUNNING",
                    self.fleet.running()
                ),
                Err(_) => {
                    self.resync(http).await?;
                    next_poll = Instant::now() + POLL_EVERY;
                    if done(self) {
                        self.decided_by_poll += 1;
                        return Ok(Instant::now());
                    }
                }
            }
        }
    }

    /// Checks through the REST API that `n` tasks run (all of `version`,
    /// when given) and no deployment is left.
    async fn verify(
        &mut self,
        http: &reqwest::Client,
        n: usize,
        version: Option<&str>,
    ) -> anyhow::Result<()> {
        let app = self.read_app(http).await?;
        let running = app["tasksRunning"].as_u64().unwrap_or(0);
        anyhow::ensure!(
            running == n as u64,
            "GET /v2/apps{}: tasksRunning {running}, expected {n}",
            self.app_id
        );
        if let Some(version) = version {
            let other = app["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["version"] != version)
                .count();
            anyhow::ensure!(other == 0, "{other} tasks are not of version {version}");
        }
        Ok(())
    }
}

//! [`HealthMonitor`]: runs the probes of each watched task in its own tokio task
//! and feeds their outcomes to the pure [`TaskChecks`].

use std::collections::HashMap;
use std::sync::Arc;

use agora_proto::TaskId;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::decision::{TaskCheckEvent, TaskChecks};
use super::probe::Probe;
use super::{CheckTarget, HealthCheckResult, HealthEvent, probe_for, timing};
use crate::app::HealthCheck;

/// The HTTP client every HTTP probe shares, or why it could not be built.
type SharedClient = Arc<Result<reqwest::Client, String>>;

/// Health-checks running tasks and reports [`HealthEvent`]s on the channel
/// returned by [`HealthMonitor::new`]. Dropping it stops every check.
pub struct HealthMonitor {
    events: mpsc::UnboundedSender<HealthEvent>,
    client: SharedClient,
    watched: HashMap<TaskId, Watched>,
}

/// One watched task: its results as its runner last published them.
struct Watched {
    results: watch::Receiver<Vec<HealthCheckResult>>,
    checks: usize,
    runner: JoinHandle<()>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.runner.abort();
    }
}

impl HealthMonitor {
    /// A monitor watching nothing, and the receiver of its events.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<HealthEvent>) {
        let (events, receiver) = mpsc::unbounded_channel();
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| e.to_string());
        let monitor = Self {
            events,
            client: Arc::new(client),
            watched: HashMap::new(),
        };
        (monitor, receiver)
    }

    /// Starts checking `target` with `checks` (replacing an earlier watch of the
    /// same task). Each check's first probe runs at once, one runs right when
    /// its grace period (from `target.started_at`) ends, and then one every
    /// interval. No checks:
    /// nothing is watched. Must be called within a tokio runtime (it spawns).
    pub fn watch(&mut self, target: CheckTarget, checks: Vec<HealthCheck>) {
        self.watched.remove(&target.task_id);
        if checks.is_empty() {
            return;
        }
        let (results_tx, results) = watch::channel(Vec::new());
        let task_id = target.task_id.clone();
        let count = checks.len();
        let runner = tokio::spawn(run_checks(
            target,
            checks,
            Arc::clone(&self.client),
            self.events.clone(),
            results_tx,
        ));
        self.watched.insert(
            task_id,
            Watched {
                results,
                checks: count,
                runner,
            },
        );
    }

    /// Stops checking a task (a probe in flight is cancelled); unknown ids are ignored.
    pub fn unwatch(&mut self, task_id: &TaskId) {
        self.watched.remove(task_id);
    }

    /// Whether a task is being checked.
    pub fn is_watched(&self, task_id: &TaskId) -> bool {
        self.watched.contains_key(task_id)
    }

    /// The task's results, one per check that has a counted outcome, in check order.
    pub fn results(&self, task_id: &TaskId) -> Vec<HealthCheckResult> {
        self.watched
            .get(task_id)
            .map(|w| w.results.borrow().clone())
            .unwrap_or_default()
    }

    /// Whether the task is healthy: `None` when it has no checks or no result yet,
    /// else whether every check has a result and all are alive.
    pub fn is_healthy(&self, task_id: &TaskId) -> Option<bool> {
        let watched = self.watched.get(task_id)?;
        let results = watched.results.borrow();
        if results.is_empty() {
            return None;
        }
        Some(results.len() == watched.checks && results.iter().all(|r| r.alive))
    }
}

/// Probes one task's checks forever: starts each probe when due, records its
/// outcome, sends the events and publishes the results.
async fn run_checks(
    target: CheckTarget,
    checks: Vec<HealthCheck>,
    client: SharedClient,
    events: mpsc::UnboundedSender<HealthEvent>,
    results: watch::Sender<Vec<HealthCheckResult>>,
) {
    let probes: Vec<Probe> = checks.iter().map(|c| probe_for(c, &target)).collect();
    let mut task = TaskChecks::new(target.started_at, checks.iter().map(timing));
    let mut in_flight = FuturesUnordered::new();
    loop {
        let now = Instant::now();
        for index in task.due(now) {
            task.begin(index, now);
            let probe = probes[index].clone();
            let timeout = task.checks()[index].timing().timeout;
            let client = Arc::clone(&client);
            in_flight.push(async move { (index, probe.run(timeout, &client).await) });
        }
        let next_due = task.next_due();
        tokio::select! {
            Some((index, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                for event in task.record(index, jiff::Timestamp::now(), outcome) {
                    // A dropped receiver only means nobody listens any more.
                    let _ = events.send(health_event(&target, &checks, event));
                }
                results.send_replace(task.results(&target.task_id));
            }
            () = tokio::time::sleep_until(next_due.unwrap_or(now)), if next_due.is_some() => {}
            else => break,
        }
    }
}

fn health_event(target: &CheckTarget, checks: &[HealthCheck], event: TaskCheckEvent) -> HealthEvent {
    let task_id = target.task_id.clone();
    let app_id = target.app_id.clone();
    let version = target.version;
    match event {
        TaskCheckEvent::Changed { alive } => HealthEvent::Changed {
            task_id,
            app_id,
            version,
            alive,
        },
        TaskCheckEvent::Failed { check, cause } => HealthEvent::Failed {
            task_id,
            app_id,
            version,
            check: checks.get(check).cloned().unwrap_or_default(),
            cause,
        },
        TaskCheckEvent::Unhealthy { cause } => HealthEvent::Unhealthy {
            task_id,
            app_id,
            version,
            cause,
        },
    }
}

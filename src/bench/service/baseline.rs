//! The baseline of `agora bench service`: the same N long-running tasks
//! launched directly by a framework on the SDK, timed from its subscription
//! to the Nth TASK_RUNNING. It packs every offer as full as it can (as the
//! service framework does), declines what it cannot use with refuse 0 s
//! while tasks are pending, and SUPPRESSes once all are placed.

use std::time::Duration;

use agora_sdk::proto::state::{is_terminal, mesos_name};
use agora_sdk::{
    Driver, DriverConfig, Filters, OfferId, OfferPool, Resources, Scheduler, Subscribed, TaskBuilder, TaskId,
    v1,
};
use anyhow::Context;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::local_cluster::BenchCluster;

/// How long offers are refused once every task is placed.
const REFUSE_WHEN_DONE: Duration = Duration::from_secs(3600);

/// What the baseline measured, or why it failed.
type Outcome = Result<Duration, String>;

/// A framework that launches `total` copies of one shell command and
/// reports when all are RUNNING.
struct LongRunningTasks {
    total: usize,
    next: usize,
    command: String,
    per_task: Resources,
    subscribed_at: Option<Instant>,
    running: Vec<bool>,
    running_count: usize,
    suppressed: bool,
    done: Option<oneshot::Sender<Outcome>>,
}

impl LongRunningTasks {
    fn new(total: usize, command: String, per_task: Resources, done: oneshot::Sender<Outcome>) -> Self {
        Self {
            total,
            next: 0,
            command,
            per_task,
            subscribed_at: None,
            running: vec![false; total],
            running_count: 0,
            suppressed: false,
            done: Some(done),
        }
    }

    fn index_of(task_id: &str) -> Option<usize> {
        task_id.strip_prefix("baseline-")?.parse().ok()
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(done) = self.done.take() {
            let _ = done.send(outcome);
        }
    }
}

impl Scheduler for LongRunningTasks {
    async fn subscribed(&mut self, _driver: &Driver, _info: Subscribed) {
        self.subscribed_at.get_or_insert_with(Instant::now);
    }

    async fn offers(&mut self, driver: &Driver, offers: Vec<v1::Offer>) {
        if self.next >= self.total {
            let ids = offers.iter().filter_map(|o| OfferId::parse(&o.id).ok()).collect();
            if let Err(e) = driver.decline(ids, Some(REFUSE_WHEN_DONE)).await {
                tracing::warn!(error = %e, "decline failed");
            }
            return;
        }
        let mut pool = OfferPool::new(&offers);
        while self.next < self.total {
            let id = self.next;
            let placed = pool.place(&self.per_task, 0, |_, resources| {
                TaskBuilder::new(TaskId::new_unchecked(format!("baseline-{id}")), "baseline")
                    .shell(self.command.as_str())
                    .resources(&resources)
                    .build()
            });
            if !placed {
                break;
            }
            self.next += 1;
        }
        let filters = if self.next < self.total {
            Filters::refuse(Duration::ZERO)
        } else {
            Filters::refuse(REFUSE_WHEN_DONE)
        };
        if let Err(e) = driver.execute(pool.into_plan(), filters).await {
            tracing::warn!(error = %e, "accept/decline failed");
        }
        if self.next >= self.total && !self.suppressed {
            match driver.suppress(Vec::new()).await {
                Ok(()) => self.suppressed = true,
                Err(e) => tracing::warn!(error = %e, "suppress failed"),
            }
        }
    }

    async fn update(&mut self, _driver: &Driver, status: v1::TaskStatus) {
        let now = Instant::now();
        let state = status.state();
        let Some(index) = Self::index_of(&status.task_id) else {
            return;
        };
        if state == v1::TaskState::Running
            && let Some(seen) = self.running.get_mut(index)
            && !*seen
        {
            *seen = true;
            self.running_count += 1;
            if self.running_count == self.total {
                let began = self.subscribed_at.unwrap_or(now);
                self.finish(Ok(now - began));
            }
        } else if is_terminal(state) {
            let message = format!(
                "baseline task {} ended {} before all were RUNNING: {}",
                status.task_id,
                mesos_name(state),
                status.message
            );
            self.finish(Err(message));
        }
    }

    async fn error(&mut self, _driver: &Driver, message: String) {
        self.finish(Err(format!("the master ended the baseline framework: {message}")));
    }
}

/// Launches `total` tasks running `command` (each `per_task`) through a
/// fresh SDK framework, returns subscribed → all RUNNING, then tears the
/// framework down and waits until the master knows none of its tasks live.
pub async fn measure(
    cluster: &BenchCluster,
    total: usize,
    command: &str,
    per_task: Resources,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let framework = v1::FrameworkInfo {
        name: "agora-bench-baseline".into(),
        failover_timeout_seconds: 0.0,
        ..Default::default()
    };
    let config = DriverConfig::new(vec![cluster.master_addr()?.to_string()], framework);
    let (done_tx, done_rx) = oneshot::channel();
    let (driver, run) = Driver::start(
        config,
        LongRunningTasks::new(total, command.to_owned(), per_task, done_tx),
    );
    let outcome = tokio::time::timeout(timeout, done_rx).await;
    let framework_id = driver.framework_id().map(|id| id.to_string());
    if let Err(e) = driver.teardown().await {
        tracing::warn!(error = %e, "baseline teardown failed");
        driver.stop();
    }
    let _ = run.await;
    // The master kills the torn-down framework's tasks; wait until they are gone.
    let drained = cluster
        .wait_no_live_tasks(framework_id.as_deref(), Duration::from_secs(120))
        .await;
    let elapsed = match outcome {
        Ok(Ok(Ok(elapsed))) => elapsed,
        Ok(Ok(Err(message))) => anyhow::bail!(message),
        Ok(Err(_)) => anyhow::bail!("the baseline framework stopped before its tasks ran"),
        Err(_) => anyhow::bail!("the baseline did not get {total} tasks RUNNING within {timeout:?}"),
    };
    drained.context("the baseline's tasks were not killed")?;
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_task_ids_map_back_to_their_index() {
        assert_eq!(LongRunningTasks::index_of("baseline-7"), Some(7));
        assert_eq!(LongRunningTasks::index_of("web.7"), None);
    }
}

//! Agora: an in-process cluster (a master and one agent with the Docker
//! containerizer) and a framework on the SDK that launches every container
//! in as few ACCEPTs as the offers allow. Timed from the first ACCEPT sent
//! to the last RUNNING update received; then every task is killed and the
//! benchmark waits until each is terminal and its container is gone.

use std::path::PathBuf;
use std::time::Duration;

use agora_sdk::proto::state::{is_terminal, mesos_name};
use agora_sdk::{Driver, DriverConfig, Filters, OfferPool, Resources, Scheduler, TaskBuilder, TaskId, v1};
use anyhow::Context;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Workload;
use super::engine::{BENCH_LABEL, Engine};

/// Grace period of a killed task: `sleep` as pid 1 ignores SIGTERM.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// What the framework tells the measuring loop.
#[derive(Debug)]
enum Event {
    /// The first ACCEPT is about to be sent.
    Accepting(Instant),
    /// A status update for task `index`.
    Update {
        index: usize,
        status: v1::TaskStatus,
        at: Instant,
    },
    /// The master ended the framework.
    Error(String),
}

/// Task ids are `docker-<index>`.
fn task_id(index: usize) -> String {
    format!("docker-{index}")
}

fn task_index(id: &str) -> Option<usize> {
    id.strip_prefix("docker-")?.parse().ok()
}

/// The benchmark framework: places every task it has not placed yet on the
/// offers it gets, and forwards what happens to the measuring loop.
struct DockerFramework {
    workload: Workload,
    per_task: Resources,
    label_value: String,
    next: usize,
    accepted: bool,
    events: mpsc::UnboundedSender<Event>,
}

impl DockerFramework {
    fn task(&self, index: usize, resources: &Resources) -> v1::TaskInfo {
        TaskBuilder::new(TaskId::new_unchecked(task_id(index)), "bench-docker")
            .argv(self.workload.argv())
            .resources(resources)
            .label(BENCH_LABEL, self.label_value.as_str())
            .kill_grace_period(KILL_GRACE)
            .container(v1::ContainerInfo {
                kind: Some(v1::container_info::Kind::Docker(v1::DockerInfo {
                    image: self.workload.image.clone(),
                    ..Default::default()
                })),
                ..Default::default()
            })
            .build()
    }
}

impl Scheduler for DockerFramework {
    async fn offers(&mut self, driver: &Driver, offers: Vec<v1::Offer>) {
        let mut pool = OfferPool::new(&offers);
        while self.next < self.workload.containers {
            let index = self.next;
            if !pool.place(&self.per_task, 0, |_, resources| self.task(index, &resources)) {
                break;
            }
            self.next += 1;
        }
        if pool.task_count() > 0 && !self.accepted {
            self.accepted = true;
            let _ = self.events.send(Event::Accepting(Instant::now()));
        }
        let refuse = if self.next < self.workload.containers {
            Duration::ZERO
        } else {
            Duration::from_secs(3600)
        };
        if let Err(e) = driver.execute(pool.into_plan(), Filters::refuse(refuse)).await {
            tracing::warn!(error = %e, "accept/decline failed");
        }
    }

    async fn update(&mut self, _driver: &Driver, status: v1::TaskStatus) {
        let at = Instant::now();
        if let Some(index) = task_index(&status.task_id) {
            let _ = self.events.send(Event::Update { index, status, at });
        }
    }

    async fn error(&mut self, _driver: &Driver, message: String) {
        let _ = self.events.send(Event::Error(message));
    }
}

/// One measurement: a fresh cluster in a scratch directory, removed after.
pub async fn measure(
    engine: &Engine,
    workload: &Workload,
    label_value: &str,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let work_dir: PathBuf = std::env::temp_dir().join(format!("agora-bench-docker-{label_value}"));
    let cluster = crate::local::start(crate::local::LocalConfig {
        work_dir: work_dir.clone(),
        agents: 1,
        master_listen: "127.0.0.1:0".parse()?,
        agent_base_port: 0,
        service_listen: None,
        cron_listen: None,
    })
    .await
    .context("cannot start the in-process cluster")?;
    let result = drive(
        engine,
        workload,
        label_value,
        vec![cluster.master_addr().to_string()],
        timeout,
    )
    .await;
    if let Err(err) = cluster.shutdown().await {
        tracing::warn!(%err, "the in-process cluster did not stop cleanly");
    }
    if let Err(err) = std::fs::remove_dir_all(&work_dir) {
        tracing::warn!(dir = %work_dir.display(), %err, "cannot remove the scratch directory");
    }
    result
}

/// Runs the framework: launch, time, kill, wait for the containers to go.
async fn drive(
    engine: &Engine,
    workload: &Workload,
    label_value: &str,
    masters: Vec<String>,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let per_task = Resources::new()
        .scalar("cpus", workload.cpus)
        .scalar("mem", workload.mem_mib);
    let framework = v1::FrameworkInfo {
        name: "agora-bench-docker".into(),
        failover_timeout_seconds: 0.0,
        ..Default::default()
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let scheduler = DockerFramework {
        workload: workload.clone(),
        per_task,
        label_value: label_value.to_owned(),
        next: 0,
        accepted: false,
        events: events_tx,
    };
    let (driver, run) = Driver::start(DriverConfig::new(masters, framework), scheduler);
    let deadline = Instant::now() + timeout;
    let mut tracker = Tracker::new(workload.containers);
    let result = async {
        let elapsed = tracker
            .until(&mut events, deadline, |t| t.running == t.tasks.len())
            .await?
            .context("no ACCEPT was sent")?;
        for (index, task) in tracker.tasks.iter().enumerate() {
            let agent = task
                .agent_id
                .as_deref()
                .and_then(|a| agora_sdk::AgentId::parse(a).ok());
            if let Err(e) = driver
                .kill(&TaskId::new_unchecked(task_id(index)), agent.as_ref())
                .await
            {
                tracing::warn!(task = index, error = %e, "kill failed");
            }
        }
        tracker
            .until(&mut events, deadline, |t| t.terminal == t.tasks.len())
            .await?;
        anyhow::Ok(elapsed)
    }
    .await;
    if let Err(e) = driver.teardown().await {
        tracing::warn!(error = %e, "teardown failed");
    }
    driver.stop();
    let _ = run.await;
    // The agent removes each container once it has stopped.
    engine.clean_up(label_value, Duration::from_secs(30)).await?;
    result
}

/// What is known of one task.
#[derive(Debug, Clone, Default)]
struct TaskTrack {
    agent_id: Option<String>,
    running: bool,
    terminal: bool,
}

/// Counts the framework's events.
#[derive(Debug)]
struct Tracker {
    tasks: Vec<TaskTrack>,
    accepting: Option<Instant>,
    last_running: Option<Instant>,
    running: usize,
    terminal: usize,
}

impl Tracker {
    fn new(tasks: usize) -> Self {
        Self {
            tasks: vec![TaskTrack::default(); tasks],
            accepting: None,
            last_running: None,
            running: 0,
            terminal: 0,
        }
    }

    /// Takes events until `done` holds; then the time from the first
    /// ACCEPT to the last RUNNING so far. A task ending before it ran, an
    /// error from the master or the deadline fail the measurement.
    async fn until(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<Event>,
        deadline: Instant,
        done: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<Option<Duration>> {
        while !done(self) {
            let event = tokio::time::timeout_at(deadline, events.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "timed out: {} of {} tasks running, {} terminal",
                        self.running,
                        self.tasks.len(),
                        self.terminal
                    )
                })?
                .context("the framework stopped")?;
            self.observe(event)?;
        }
        Ok(self.accepting.zip(self.last_running).map(|(a, r)| r - a))
    }

    fn observe(&mut self, event: Event) -> anyhow::Result<()> {
        let (index, status, at) = match event {
            Event::Accepting(at) => {
                self.accepting.get_or_insert(at);
                return Ok(());
            }
            Event::Error(message) => anyhow::bail!("the master ended the framework: {message}"),
            Event::Update { index, status, at } => (index, status, at),
        };
        let Some(task) = self.tasks.get_mut(index) else {
            return Ok(());
        };
        if !status.agent_id.is_empty() {
            task.agent_id = Some(status.agent_id.clone());
        }
        let state = status.state();
        if state == v1::TaskState::Running && !task.running {
            task.running = true;
            self.running += 1;
            self.last_running = Some(at);
        }
        if is_terminal(state) && !task.terminal {
            task.terminal = true;
            self.terminal += 1;
            anyhow::ensure!(
                task.running,
                "task {} ended {} before it ran: {}",
                status.task_id,
                mesos_name(state),
                status.message
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_map_back_to_their_index() {
        assert_eq!(task_index(&task_id(49)), Some(49));
        assert_eq!(task_index("bench-1"), None);
    }

    #[test]
    fn a_task_failing_before_it_runs_fails_the_measurement() {
        let mut tracker = Tracker::new(1);
        let status = v1::TaskStatus {
            task_id: task_id(0),
            state: v1::TaskState::Failed as i32,
            ..Default::default()
        };
        let event = Event::Update {
            index: 0,
            status,
            at: Instant::now(),
        };
        assert!(tracker.observe(event).is_err());
    }
}

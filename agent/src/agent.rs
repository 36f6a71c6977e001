//! The agent's state and the one actor task that owns it: tasks, their
//! update queues, the link to the master. Everything that changes state
//! arrives as a [`Command`] or a container event and is handled in sequence.
//!
//! Architecture invariant: every status update is checkpointed before it is
//! sent, and stays queued until acknowledged.
//!
//! The loop never blocks on the disk or on process spawns:
//!
//! - **Group commit.** Handling a message only marks the task's checkpoint
//!   dirty. The loop drains every message that is ready, then hands all dirty
//!   checkpoints to one background batch ([`WorkDir::write_batch`]); updates
//!   are sent when the batch that covers them is on disk
//!   ([`UpdateQueue::mark_durable`]). At most one batch is in flight (a single
//!   writer), so a task's checkpoints reach the disk in order. Removing the
//!   checkpoint of a forgotten task goes through the same batches.
//! - **Launches** run in the blocking pool (a few at a time); the result comes
//!   back as [`Internal::Launched`]. A kill that arrives meanwhile reports
//!   KILLING at once and starts the killer when the launch completes.
//! - **No STARTING for processes.** A task goes from (unreported) STAGING
//!   straight to RUNNING when its supervisor reports that it started; only a
//!   containerizer whose start takes time ([`Containerizer::reports_starting`],
//!   e.g. Docker pulling an image) reports STARTING first.
//! - Resend deadlines live in an ordered set, not a scan of all tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agora_proto::state::{is_terminal, mesos_name};
use agora_proto::v1::{self, StatusReason, TaskState};
use agora_proto::{AgentId, FrameworkId, Resources, TaskId};
use prost::Message as _;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::checkpoint::{BatchEntry, CheckpointWrite, TaskCheckpoint, WorkDir};
use crate::containerizer::{
    ContainerEvent, Containerizer, EventSender, LaunchError, LaunchSpec, RunRef, SupervisorProcess, Watcher,
};
use crate::env::{TaskEnvContext, task_environment};
use crate::supervisor::{ExitRecord, META_DIR};
use crate::updates::{Ack, UpdateQueue};

/// Longest kill grace period honoured from a kill policy.
const MAX_GRACE: Duration = Duration::from_secs(3600);
/// How many process launches (sandbox creation + supervisor spawn) run at once.
const CONCURRENT_LAUNCHES: usize = 8;
/// How many container launches (sandbox creation + engine create/start) run
/// at once. They cost the agent little (the engine does the work), and the
/// engine overlaps container starts, so more of them in flight start a batch
/// sooner: with 8, 50 containers took 1.7x as long as 50 parallel engine calls.
const CONCURRENT_CONTAINER_LAUNCHES: usize = 64;

/// How many launches of a kind run at once.
fn launch_limit(container: bool) -> usize {
    if container {
        CONCURRENT_CONTAINER_LAUNCHES
    } else {
        CONCURRENT_LAUNCHES
    }
}
/// How long a stopping agent waits for launches in flight, so it can checkpoint them.
const SHUTDOWN_LAUNCH_WAIT: Duration = Duration::from_secs(10);

/// Messages to the agent actor.
#[derive(Debug)]
pub(crate) enum Command {
    /// The link asks for the Register message to open a stream with.
    Register(oneshot::Sender<v1::Register>),
    /// The master accepted the registration; `link` carries messages up.
    Registered {
        registered: v1::Registered,
        link: mpsc::UnboundedSender<v1::AgentMessage>,
        master: String,
    },
    /// The stream to the master ended.
    Disconnected,
    /// A message from the master.
    FromMaster(Box<v1::master_message::Message>),
    /// A snapshot for `/state`.
    State(oneshot::Sender<serde_json::Value>),
    /// Every run the agent knows, for the logs endpoint and the usage monitor.
    Runs(oneshot::Sender<Vec<RunView>>),
    /// A new usage sample: kept for `/state` and sent to the master.
    Usage(v1::ResourceUsage),
    /// Stop: abort watchers (tasks keep running) and return.
    Shutdown,
}

/// Results of the agent's own background work.
pub(crate) enum Internal {
    /// A launch finished (the supervisor runs, or it could not be started).
    Launched {
        run: RunRef,
        result: Result<(SupervisorProcess, Watcher), LaunchError>,
    },
}

/// A checkpoint batch in flight: when it completes, the updates of each task
/// up to the sequence number are durable. Keyed with the run's sandbox, so a
/// batch never vouches for a later run of a reused task id.
type Covered = Vec<(TaskKey, PathBuf, u64)>;

/// A run as the logs endpoint and the usage monitor see it.
#[derive(Debug, Clone)]
pub(crate) struct RunView {
    pub run: RunRef,
    /// The task's pid (its process group), once started.
    pub task_pid: Option<i32>,
    /// The run has ended (or its launch is still in flight: nothing to sample yet).
    pub ended: bool,
}

/// Fixed facts about this agent.
#[derive(Debug, Clone)]
pub(crate) struct AgentSettings {
    pub hostname: String,
    pub resources: Resources,
    pub attributes: Vec<v1::Attribute>,
    pub http_address: String,
    pub status_update_retry: Duration,
    pub kill_grace_period: Duration,
}

type TaskKey = (String, String);

/// One task this agent runs (or ran, with updates not yet acknowledged).
struct TaskRecord {
    framework: v1::FrameworkInfo,
    info: v1::TaskInfo,
    sandbox: PathBuf,
    supervisor: Option<SupervisorProcess>,
    task_pid: Option<i32>,
    latest: v1::TaskStatus,
    queue: UpdateQueue,
    killing: bool,
    kill_reason: StatusReason,
    /// The grace period of a kill requested while the launch was in flight.
    kill_grace: Duration,
    /// The launch is in flight (no supervisor yet).
    launching: bool,
    /// A terminal update was produced; nothing more will happen to the task.
    ended: bool,
    watcher: Option<JoinHandle<()>>,
    killer: Option<JoinHandle<()>>,
    /// The task group (pod) the task belongs to.
    group: Option<String>,
    /// Why the task is being killed, when not on request (a pod member failed).
    kill_message: Option<String>,
}

impl TaskRecord {
    fn state(&self) -> TaskState {
        TaskState::try_from(self.latest.state).unwrap_or(TaskState::Unspecified)
    }

    fn checkpoint(&self) -> TaskCheckpoint {
        TaskCheckpoint {
            framework: Some(self.framework.clone()),
            task: Some(self.info.clone()),
            sandbox: self.sandbox.display().to_string(),
            supervisor_pid: self.supervisor.map(|s| s.pid).unwrap_or(0),
            supervisor_start_time: self.supervisor.map(|s| s.start_time).unwrap_or(0),
            latest: Some(self.latest.clone()),
            pending: self.queue.pending().cloned().collect(),
            killing: self.killing,
            group_id: self.group.clone().unwrap_or_default(),
        }
    }

    fn abort_background(&mut self) {
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        if let Some(k) = self.killer.take() {
            k.abort();
        }
    }
}

/// The terminal state, reason, message and exit code of a run that ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    pub state: TaskState,
    pub reason: StatusReason,
    pub message: String,
    pub exit_code: Option<i32>,
}

/// How a run that ended is reported. `killing`: a kill was in progress, with
/// this reason; `agent_was_down`: the run ended while no agent watched it.
pub(crate) fn outcome(
    record: Option<&ExitRecord>,
    killing: Option<StatusReason>,
    agent_was_down: bool,
) -> Outcome {
    let exit_code = match record {
        Some(ExitRecord::ExitCode(code)) => Some(*code),
        _ => None,
    };
    let described = match record {
        Some(ExitRecord::ExitCode(code)) => format!("exited with code {code}"),
        Some(ExitRecord::Signal(signal)) => format!("killed by signal {signal}"),
        Some(ExitRecord::LaunchError(err)) => err.clone(),
        Some(ExitRecord::OutOfMemory) => "out of memory".to_owned(),
        None if agent_was_down => "task ended while the agent was down; exit status unknown".to_owned(),
        None => "task supervisor ended without recording an exit status".to_owned(),
    };
    if let Some(reason) = killing {
        return Outcome {
            state: TaskState::Killed,
            reason,
            message: format!("killed on request ({described})"),
            exit_code,
        };
    }
    let (state, reason) = match record {
        Some(ExitRecord::ExitCode(0)) => (TaskState::Finished, StatusReason::ReasonCommandExited),
        Some(ExitRecord::ExitCode(_) | ExitRecord::Signal(_)) => {
            (TaskState::Failed, StatusReason::ReasonCommandExited)
        }
        Some(ExitRecord::LaunchError(_)) => (TaskState::Failed, StatusReason::ReasonContainerLaunchFailed),
        Some(ExitRecord::OutOfMemory) => (TaskState::Failed, StatusReason::ReasonContainerLimitationMemory),
        None if agent_was_down => (TaskState::Failed, StatusReason::ReasonAgentRestarted),
        None => (TaskState::Failed, StatusReason::ReasonCommandExited),
    };
    Outcome {
        state,
        reason,
        message: described,
        exit_code,
    }
}

/// A grace period from a kill policy, if it sets a usable one.
fn policy_grace(policy: Option<&v1::KillPolicy>) -> Option<Duration> {
    let secs = policy?.grace_period_seconds?;
    Duration::try_from_secs_f64(secs).ok().map(|d| d.min(MAX_GRACE))
}

/// The agent actor's state.
pub(crate) struct Agent {
    settings: AgentSettings,
    work: WorkDir,
    containerizer: Arc<dyn Containerizer>,
    agent_id: Option<String>,
    link: Option<(mpsc::UnboundedSender<v1::AgentMessage>, String)>,
    tasks: BTreeMap<TaskKey, TaskRecord>,
    events: EventSender,
    internal: mpsc::UnboundedSender<Internal>,
    internal_rx: Option<mpsc::UnboundedReceiver<Internal>>,
    /// Tasks whose checkpoint must be written (or removed, if the task is gone).
    dirty: BTreeSet<TaskKey>,
    /// When each sent head is due for a resend. Entries go stale (ack, resend);
    /// a popped entry is checked against its queue.
    resends: BTreeSet<(Instant, TaskKey)>,
    /// Permits for process launches, and for container launches.
    launch_slots: Arc<Semaphore>,
    container_launch_slots: Arc<Semaphore>,
    launches_in_flight: usize,
    /// The latest resource-usage sample (see [`crate::monitor`]).
    usage: Option<v1::ResourceUsage>,
}

impl Agent {
    pub(crate) fn new(
        settings: AgentSettings,
        work: WorkDir,
        containerizer: Arc<dyn Containerizer>,
        agent_id: Option<String>,
        events: EventSender,
    ) -> Self {
        let (internal, internal_rx) = mpsc::unbounded_channel();
        Self {
            settings,
            work,
            containerizer,
            agent_id,
            link: None,
            tasks: BTreeMap::new(),
            events,
            internal,
            internal_rx: Some(internal_rx),
            dirty: BTreeSet::new(),
            resends: BTreeSet::new(),
            launch_slots: Arc::new(Semaphore::new(launch_limit(false))),
            container_launch_slots: Arc::new(Semaphore::new(launch_limit(true))),
            launches_in_flight: 0,
            usage: None,
        }
    }

    /// Takes over the tasks of an earlier agent process: re-attaches to live
    /// supervisors and reports the runs that ended while the agent was down.
    pub(crate) fn recover(&mut self, checkpoints: Vec<TaskCheckpoint>) {
        for cp in checkpoints {
            let Some(info) = cp.task.clone() else { continue };
            let framework = cp.framework.clone().unwrap_or_default();
            let key = (framework.id.clone(), info.task_id.clone());
            let latest = cp.latest.clone().unwrap_or_default();
            let supervisor = Some(SupervisorProcess {
                pid: cp.supervisor_pid,
                start_time: cp.supervisor_start_time,
            })
            .filter(|s| s.pid > 0);
            let ended = TaskState::try_from(latest.state).is_ok_and(is_terminal);
            let record = TaskRecord {
                framework,
                info,
                sandbox: PathBuf::from(&cp.sandbox),
                supervisor,
                task_pid: None,
                latest,
                queue: UpdateQueue::with_pending(self.settings.status_update_retry, cp.pending),
                killing: cp.killing,
                kill_reason: StatusReason::ReasonTaskKilled,
                kill_grace: self.settings.kill_grace_period,
                launching: false,
                ended,
                watcher: None,
                killer: None,
                group: Some(cp.group_id.clone()).filter(|g| !g.is_empty()),
                kill_message: None,
            };
            let run = RunRef {
                framework_id: key.0.clone(),
                task_id: key.1.clone(),
                sandbox: record.sandbox.clone(),
            };
            self.tasks.insert(key.clone(), record);
            if ended {
                tracing::info!(task = %key.1, "recovered ended task with unacknowledged updates");
                continue;
            }
            let killing = cp.killing.then_some(StatusReason::ReasonTaskKilled);
            match supervisor {
                Some(sup) if self.containerizer.is_alive(&run.sandbox, sup) => {
                    tracing::info!(task = %key.1, pid = sup.pid, "re-attached to running task");
                    let watcher = self.containerizer.recover(run.clone(), sup, self.events.clone());
                    let killer = cp.killing.then(|| {
                        self.containerizer
                            .kill(&run.sandbox, self.settings.kill_grace_period)
                    });
                    if let Some(record) = self.tasks.get_mut(&key) {
                        record.watcher = Some(watcher);
                        record.killer = killer;
                    }
                }
                Some(_) => {
                    let exit = self.containerizer.exit_record(&run.sandbox);
                    tracing::info!(task = %key.1, ?exit, "task ended while the agent was down");
                    self.end(&key, outcome(exit.as_ref(), killing, true));
                }
                None => {
                    let mut o = outcome(None, killing, true);
                    o.message = "the agent restarted before the task was started".to_owned();
                    self.end(&key, o);
                }
            }
        }
    }

    /// Runs the actor until `Shutdown` or until every sender is gone.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<(RunRef, ContainerEvent)>,
    ) {
        let Some(mut internal) = self.internal_rx.take() else {
            tracing::error!("agent loop started twice");
            return;
        };
        let mut flush: Option<JoinHandle<Covered>> = None;
        'serve: loop {
            if flush.is_none() {
                flush = self.start_flush();
            }
            let due = self.next_resend();
            tokio::select! {
                biased;
                done = wait_flush(&mut flush) => {
                    flush = None;
                    self.on_flushed(done);
                }
                command = commands.recv() => match command {
                    None | Some(Command::Shutdown) => break 'serve,
                    Some(command) => self.handle(command),
                },
                Some((run, event)) = events.recv() => self.on_container_event(run, event),
                Some(message) = internal.recv() => self.on_internal(message),
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    self.resend_due();
                }
            }
            // Drain whatever else is ready, so one checkpoint batch covers it all.
            loop {
                let mut progressed = false;
                match commands.try_recv() {
                    Ok(Command::Shutdown) | Err(mpsc::error::TryRecvError::Disconnected) => break 'serve,
                    Ok(command) => {
                        self.handle(command);
                        progressed = true;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
                while let Ok((run, event)) = events.try_recv() {
                    self.on_container_event(run, event);
                    progressed = true;
                }
                while let Ok(message) = internal.try_recv() {
                    self.on_internal(message);
                    progressed = true;
                }
                if !progressed {
                    break;
                }
            }
        }
        self.stop(internal, flush).await;
    }

    /// Lets launches in flight finish and writes the last checkpoints, then
    /// stops watching tasks (they keep running).
    async fn stop(
        &mut self,
        mut internal: mpsc::UnboundedReceiver<Internal>,
        flush: Option<JoinHandle<Covered>>,
    ) {
        let deadline = Instant::now() + SHUTDOWN_LAUNCH_WAIT;
        while self.launches_in_flight > 0 {
            match tokio::time::timeout_at(deadline, internal.recv()).await {
                Ok(Some(message)) => self.on_internal(message),
                Ok(None) | Err(_) => {
                    tracing::warn!(
                        launches = self.launches_in_flight,
                        "stopping with launches in flight"
                    );
                    break;
                }
            }
        }
        let mut flush = flush;
        if flush.is_some() {
            let done = wait_flush(&mut flush).await;
            self.on_flushed(done);
        }
        if let Some(last) = self.start_flush() {
            let _ = last.await;
        }
        for record in self.tasks.values_mut() {
            record.abort_background();
        }
        tracing::info!("agent stopped; tasks keep running");
    }

    /// Starts writing every dirty checkpoint in one background batch; `None` if nothing is dirty.
    fn start_flush(&mut self) -> Option<JoinHandle<Covered>> {
        if self.dirty.is_empty() {
            return None;
        }
        let dirty = std::mem::take(&mut self.dirty);
        let mut batch: Vec<BatchEntry> = Vec::with_capacity(dirty.len());
        let mut covered: Covered = Vec::with_capacity(dirty.len());
        for key in dirty {
            let write = match self.tasks.get(&key) {
                Some(record) => {
                    covered.push((key.clone(), record.sandbox.clone(), record.queue.pushed()));
                    CheckpointWrite::Save(record.checkpoint().encode_to_vec())
                }
                None => CheckpointWrite::Remove,
            };
            batch.push((key.0, key.1, write));
        }
        let work = self.work.clone();
        Some(tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            work.write_batch(&batch);
            tracing::debug!(checkpoints = batch.len(), took = ?started.elapsed(), "checkpoint batch written");
            covered
        }))
    }

    /// A checkpoint batch is on disk: send the updates it made durable.
    fn on_flushed(&mut self, done: Result<Covered, tokio::task::JoinError>) {
        let covered = match done {
            Ok(covered) => covered,
            Err(err) => {
                // Only a panic in the writer gets here; its tasks' updates wait
                // for their next checkpoint.
                tracing::error!(%err, "checkpoint batch failed");
                return;
            }
        };
        let now = Instant::now();
        for (key, sandbox, seq) in covered {
            let Some(record) = self.tasks.get_mut(&key) else {
                continue;
            };
            if record.sandbox != sandbox {
                continue;
            }
            record.queue.mark_durable(seq);
            if record.queue.is_due(now) {
                self.send_head(&key);
            }
        }
    }

    fn on_internal(&mut self, message: Internal) {
        match message {
            Internal::Launched { run, result } => self.on_launched(run, result),
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Register(reply) => {
                let _ = reply.send(self.register_message());
            }
            Command::Registered {
                registered,
                link,
                master,
            } => self.on_registered(registered, link, master),
            Command::Disconnected => {
                if self.link.take().is_some() {
                    tracing::warn!("disconnected from the master");
                }
            }
            Command::FromMaster(message) => self.on_master_message(*message),
            Command::Runs(reply) => {
                let _ = reply.send(self.runs());
            }
            Command::Usage(usage) => self.on_usage(usage),
            Command::State(reply) => {
                let _ = reply.send(self.state_json());
            }
            Command::Shutdown => {}
        }
    }

    fn register_message(&self) -> v1::Register {
        let mut frameworks: BTreeMap<&str, &v1::FrameworkInfo> = BTreeMap::new();
        let tasks = self
            .tasks
            .values()
            .map(|r| {
                frameworks.insert(&r.framework.id, &r.framework);
                v1::Task {
                    info: Some(r.info.clone()),
                    framework_id: r.framework.id.clone(),
                    status: Some(r.latest.clone()),
                    group_id: r.group.clone().unwrap_or_default(),
                }
            })
            .collect();
        v1::Register {
            agent: Some(v1::AgentInfo {
                id: self.agent_id.clone().unwrap_or_default(),
                hostname: self.settings.hostname.clone(),
                resources: self.settings.resources.to_proto(),
                attributes: self.settings.attributes.clone(),
                http_address: self.settings.http_address.clone(),
            }),
            tasks,
            frameworks: frameworks.into_values().cloned().collect(),
        }
    }

    fn on_registered(
        &mut self,
        registered: v1::Registered,
        link: mpsc::UnboundedSender<v1::AgentMessage>,
        master: String,
    ) {
        match AgentId::parse(&registered.agent_id) {
            Ok(id) => {
                if self.agent_id.as_deref() != Some(id.as_str()) {
                    if let Err(err) = self.work.save_agent_id(id.as_str()) {
                        tracing::error!(%err, "cannot save the agent id");
                    }
                    self.agent_id = Some(id.into_string());
                }
            }
            Err(err) => tracing::error!(id = %registered.agent_id, %err, "master sent an invalid agent id"),
        }
        tracing::info!(agent_id = ?self.agent_id, %master, master_id = %registered.master_id, "registered");
        self.link = Some((link, master));
        let keys: Vec<TaskKey> = self.tasks.keys().cloned().collect();
        for key in keys {
            if let Some(record) = self.tasks.get_mut(&key) {
                record.queue.reset();
            }
            self.send_head(&key);
        }
    }

    fn on_master_message(&mut self, message: v1::master_message::Message) {
        use v1::master_message::Message;
        match message {
            Message::Registered(r) => {
                tracing::warn!(agent_id = %r.agent_id, "unexpected Registered mid-stream")
            }
            // The master sends no task groups until pods land (Docker issue).
            Message::RunTaskGroup(g) => self.run_group(g),
            Message::RunTask(run) => match (run.framework, run.task) {
                (Some(framework), Some(task)) => self.run_task(framework, task),
                _ => tracing::warn!("RunTask without framework or task; ignored"),
            },
            Message::KillTask(kill) => {
                let key = (kill.framework_id, kill.task_id);
                self.kill_task(&key, kill.kill_policy.as_ref(), StatusReason::ReasonTaskKilled);
            }
            Message::Acknowledge(ack) => self.acknowledge(&(ack.framework_id, ack.task_id), &ack.uuid),
            Message::FrameworkMessage(m) => self.deliver_message(&(m.framework_id, m.task_id), &m.data),
            Message::ShutdownFramework(s) => {
                tracing::info!(framework = %s.framework_id, "shutting down framework's tasks");
                let keys: Vec<TaskKey> = self
                    .tasks
                    .keys()
                    .filter(|k| k.0 == s.framework_id)
                    .cloned()
                    .collect();
                for key in keys {
                    self.kill_task(&key, None, StatusReason::ReasonFrameworkRemoved);
                }
            }
        }
    }

    fn run_task(&mut self, framework: v1::FrameworkInfo, info: v1::TaskInfo) {
        if let Err(err) = FrameworkId::parse(&framework.id) {
            tracing::warn!(framework = %framework.id, %err, "RunTask with an invalid framework id; ignored");
            return;
        }
        if let Err(err) = TaskId::parse(&info.task_id) {
            tracing::warn!(task = %info.task_id, %err, "RunTask with an invalid task id; ignored");
            return;
        }
        let key = (framework.id.clone(), info.task_id.clone());
        if self.tasks.contains_key(&key) {
            tracing::warn!(task = %key.1, "RunTask for a task this agent already has; ignored");
            return;
        }
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let sandbox = self.work.sandbox_path(&key.0, &key.1, &run_id);
        tracing::debug!(task = %key.1, framework = %key.0, sandbox = %sandbox.display(), "launching task");
        let invalid = agora_proto::container::validate_container(&info).err();
        let unsupported = !self.containerizer.supports(&info);
        let starts_slowly = self.containerizer.reports_starting(&info);
        let staging = v1::TaskStatus {
            task_id: key.1.clone(),
            state: TaskState::Staging as i32,
            agent_id: self.agent_id.clone().unwrap_or_default(),
            ..Default::default()
        };
        self.tasks.insert(
            key.clone(),
            TaskRecord {
                framework,
                info,
                sandbox: sandbox.clone(),
                supervisor: None,
                task_pid: None,
                latest: staging,
                queue: UpdateQueue::new(self.settings.status_update_retry),
                killing: false,
                kill_reason: StatusReason::ReasonTaskKilled,
                kill_grace: self.settings.kill_grace_period,
                launching: invalid.is_none() && !unsupported,
                ended: false,
                watcher: None,
                killer: None,
                group: None,
                kill_message: None,
            },
        );
        if let Some(message) = invalid {
            tracing::warn!(task = %key.1, %message, "invalid task refused");
            self.end(
                &key,
                Outcome {
                    state: TaskState::Error,
                    reason: StatusReason::ReasonTaskInvalid,
                    message,
                    exit_code: None,
                },
            );
            return;
        }
        if unsupported {
            self.end(
                &key,
                Outcome {
                    state: TaskState::Failed,
                    reason: StatusReason::ReasonContainerizerUnavailable,
                    message: "docker containerizer not enabled".to_owned(),
                    exit_code: None,
                },
            );
            return;
        }
        self.dirty.insert(key.clone());
        if starts_slowly {
            self.update(
                &key,
                TaskState::Starting,
                StatusReason::ReasonUnspecified,
                String::new(),
                None,
            );
        }
        let Some(record) = self.tasks.get(&key) else {
            return;
        };
        let env = task_environment(&TaskEnvContext {
            task: &record.info,
            framework_id: &key.0,
            agent_id: self.agent_id.as_deref().unwrap_or_default(),
            sandbox: &sandbox,
            hostname: &self.settings.hostname,
            path: std::env::var("PATH").ok(),
        });
        let spec = LaunchSpec {
            run: RunRef {
                framework_id: key.0.clone(),
                task_id: key.1.clone(),
                sandbox,
            },
            task: record.info.clone(),
            env,
        };
        self.launches_in_flight += 1;
        let containerizer = Arc::clone(&self.containerizer);
        let events = self.events.clone();
        let internal = self.internal.clone();
        let slots = Arc::clone(if starts_slowly {
            &self.container_launch_slots
        } else {
            &self.launch_slots
        });
        tokio::spawn(async move {
            let run = spec.run.clone();
            // The semaphore is never closed; without a permit, launch anyway.
            let _permit = slots.acquire_owned().await.ok();
            let result = tokio::task::spawn_blocking(move || containerizer.launch(spec, events))
                .await
                .unwrap_or_else(|join| {
                    Err(LaunchError::Supervisor(
                        PathBuf::new(),
                        std::io::Error::other(join.to_string()),
                    ))
                });
            let _ = internal.send(Internal::Launched { run, result });
        });
    }

    /// A launch finished: watch the run (and kill it if a kill came meanwhile), or report the failure.
    fn on_launched(&mut self, run: RunRef, result: Result<(SupervisorProcess, Watcher), LaunchError>) {
        self.launches_in_flight = self.launches_in_flight.saturating_sub(1);
        let key = (run.framework_id, run.task_id);
        let record = match self.tasks.get_mut(&key) {
            Some(record) if record.sandbox == run.sandbox && record.launching => record,
            _ => {
                // Cannot happen: a launching task is never forgotten.
                tracing::error!(task = %key.1, "launch finished for a run the agent does not know");
                return;
            }
        };
        record.launching = false;
        match result {
            Ok((supervisor, watcher)) => {
                record.supervisor = Some(supervisor);
                record.watcher = Some(tokio::spawn(watcher));
                if record.killing {
                    record.killer = Some(self.containerizer.kill(&record.sandbox, record.kill_grace));
                }
                self.dirty.insert(key);
            }
            Err(err) => {
                tracing::warn!(task = %key.1, %err, "task launch failed");
                let killing = record.killing.then_some(record.kill_reason);
                let force_pull = record
                    .info
                    .container
                    .as_ref()
                    .and_then(|c| c.kind.as_ref())
                    .is_some_and(|v1::container_info::Kind::Docker(d)| d.force_pull_image);
                let o = match err {
                    // An image that is neither here nor pullable is bad input
                    // (nothing was created), unless the task asked for a
                    // pull: then the pull is what failed.
                    LaunchError::ImageNotFound(image) if !force_pull && killing.is_none() => Outcome {
                        state: TaskState::Error,
                        reason: StatusReason::ReasonTaskInvalid,
                        message: format!("container.docker.image: image not found: {image}"),
                        exit_code: None,
                    },
                    err => outcome(Some(&ExitRecord::LaunchError(err.to_string())), killing, false),
                };
                self.end(&key, o);
            }
        }
    }

    /// Launches a task group (pod) all-or-nothing; see [`crate::docker::pod`].
    fn run_group(&mut self, group: v1::RunTaskGroup) {
        let Some(framework) = group.framework else {
            tracing::warn!(group = %group.group_id, "RunTaskGroup without framework; ignored");
            return;
        };
        if FrameworkId::parse(&framework.id).is_err() || group.group_id.is_empty() {
            tracing::warn!(group = %group.group_id, "RunTaskGroup with an invalid framework or group id; ignored");
            return;
        }
        let keys: Vec<TaskKey> = group
            .tasks
            .iter()
            .map(|t| (framework.id.clone(), t.task_id.clone()))
            .collect();
        let mut seen = BTreeSet::new();
        for key in &keys {
            if TaskId::parse(&key.1).is_err() || self.tasks.contains_key(key) || !seen.insert(key.clone()) {
                tracing::warn!(group = %group.group_id, task = %key.1, "RunTaskGroup with an invalid, duplicate or known task id; ignored");
                return;
            }
        }
        let invalid = agora_proto::container::validate_group(&group.tasks).err();
        let unsupported = group
            .tasks
            .iter()
            .any(|t| t.container.is_none() || !self.containerizer.supports(t));
        let launching = invalid.is_none() && !unsupported;
        let mut specs = Vec::with_capacity(keys.len());
        for (key, info) in keys.iter().zip(group.tasks) {
            let run_id = uuid::Uuid::new_v4().simple().to_string();
            let sandbox = self.work.sandbox_path(&key.0, &key.1, &run_id);
            let env = task_environment(&TaskEnvContext {
                task: &info,
                framework_id: &key.0,
                agent_id: self.agent_id.as_deref().unwrap_or_default(),
                sandbox: &sandbox,
                hostname: &self.settings.hostname,
                path: std::env::var("PATH").ok(),
            });
            specs.push(LaunchSpec {
                run: RunRef {
                    framework_id: key.0.clone(),
                    task_id: key.1.clone(),
                    sandbox: sandbox.clone(),
                },
                task: info.clone(),
                env,
            });
            let staging = v1::TaskStatus {
                task_id: key.1.clone(),
                state: TaskState::Staging as i32,
                agent_id: self.agent_id.clone().unwrap_or_default(),
                ..Default::default()
            };
            self.tasks.insert(
                key.clone(),
                TaskRecord {
                    framework: framework.clone(),
                    info,
                    sandbox,
                    supervisor: None,
                    task_pid: None,
                    latest: staging,
                    queue: UpdateQueue::new(self.settings.status_update_retry),
                    killing: false,
                    kill_reason: StatusReason::ReasonTaskKilled,
                    kill_grace: self.settings.kill_grace_period,
                    launching,
                    ended: false,
                    watcher: None,
                    killer: None,
                    group: Some(group.group_id.clone()),
                    kill_message: None,
                },
            );
        }
        let refused = match (invalid, unsupported) {
            (Some(message), _) => Some((TaskState::Error, StatusReason::ReasonTaskInvalid, message)),
            (None, true) => Some((
                TaskState::Failed,
                StatusReason::ReasonContainerizerUnavailable,
                "task groups need the docker containerizer".to_owned(),
            )),
            (None, false) => None,
        };
        if let Some((state, reason, message)) = refused {
            tracing::warn!(group = %group.group_id, %message, "task group refused");
            for key in &keys {
                self.end(
                    key,
                    Outcome {
                        state,
                        reason,
                        message: message.clone(),
                        exit_code: None,
                    },
                );
            }
            return;
        }
        for key in &keys {
            self.update(
                key,
                TaskState::Starting,
                StatusReason::ReasonUnspecified,
                String::new(),
                None,
            );
        }
        tracing::debug!(group = %group.group_id, tasks = keys.len(), "launching task group");
        self.launches_in_flight += keys.len();
        let containerizer = Arc::clone(&self.containerizer);
        let events = self.events.clone();
        let internal = self.internal.clone();
        let slots = Arc::clone(&self.container_launch_slots);
        let group_id = group.group_id;
        tokio::spawn(async move {
            let runs: Vec<RunRef> = specs.iter().map(|s| s.run.clone()).collect();
            let _permit = slots.acquire_owned().await.ok();
            let result =
                tokio::task::spawn_blocking(move || containerizer.launch_group(&group_id, specs, events))
                    .await;
            match result {
                Ok(Ok(launched)) => {
                    for (run, launched) in runs.into_iter().zip(launched) {
                        let _ = internal.send(Internal::Launched {
                            run,
                            result: Ok(launched),
                        });
                    }
                }
                failed => {
                    let message = match failed {
                        Ok(Err(err)) => err.to_string(),
                        Err(join) => join.to_string(),
                        Ok(Ok(_)) => String::new(),
                    };
                    for run in runs {
                        let _ = internal.send(Internal::Launched {
                            run,
                            result: Err(LaunchError::Group(message.clone())),
                        });
                    }
                }
            }
        });
    }

    /// A member of a pod failed: kill the others, naming it.
    fn kill_rest_of_group(&mut self, failed: &TaskKey, why: &str) {
        let Some(record) = self.tasks.get(failed) else {
            return;
        };
        let Some(group) = record.group.clone() else { return };
        let message = format!("task {} of the pod failed: {why}", record.info.name);
        let others: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(k, r)| *k != failed && r.group.as_deref() == Some(group.as_str()) && !r.ended)
            .map(|(k, _)| k.clone())
            .collect();
        for key in others {
            if let Some(record) = self.tasks.get_mut(&key) {
                record.kill_message = Some(message.clone());
            }
            self.kill_task(&key, None, StatusReason::ReasonTaskKilled);
        }
    }

    fn kill_task(&mut self, key: &TaskKey, policy: Option<&v1::KillPolicy>, reason: StatusReason) {
        let default_grace = self.settings.kill_grace_period;
        let Some(record) = self.tasks.get_mut(key) else {
            tracing::info!(task = %key.1, framework = %key.0, "kill for an unknown task; ignored");
            return;
        };
        if record.ended || record.killing {
            tracing::debug!(task = %key.1, "kill for a task that is ending or ended; ignored");
            return;
        }
        let grace = policy_grace(policy)
            .or_else(|| policy_grace(record.info.kill_policy.as_ref()))
            .unwrap_or(default_grace);
        record.killing = true;
        record.kill_reason = reason;
        record.kill_grace = grace;
        if record.launching {
            tracing::info!(task = %key.1, ?grace, "killing task once its launch completes");
        } else {
            record.killer = Some(self.containerizer.kill(&record.sandbox, grace));
            tracing::info!(task = %key.1, ?grace, "killing task");
        }
        self.update(key, TaskState::Killing, reason, String::new(), None);
    }

    fn acknowledge(&mut self, key: &TaskKey, uuid: &[u8]) {
        let Some(record) = self.tasks.get_mut(key) else {
            tracing::debug!(task = %key.1, "acknowledgement for an unknown task; ignored");
            return;
        };
        if record.queue.ack(uuid) == Ack::Stale {
            tracing::debug!(task = %key.1, "stale acknowledgement; ignored");
            return;
        }
        if record.queue.is_empty() && record.ended {
            tracing::debug!(task = %key.1, "terminal update acknowledged; forgetting task");
            if let Some(mut record) = self.tasks.remove(key) {
                record.abort_background();
            }
            // Removed with the next batch; until then a restart would resend
            // the terminal update, which the master treats as a duplicate.
            self.dirty.insert(key.clone());
            return;
        }
        // The next update is durable already (or will be sent when it is):
        // the shorter queue is checkpointed lazily.
        self.dirty.insert(key.clone());
        if record.queue.is_due(Instant::now()) {
            self.send_head(key);
        }
    }

    fn deliver_message(&mut self, key: &TaskKey, data: &[u8]) {
        let Some(record) = self.tasks.get(key) else {
            tracing::info!(task = %key.1, "message for an unknown task; dropped");
            return;
        };
        let path = record.sandbox.join(META_DIR).join("messages");
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                let mut line = data.to_vec();
                line.push(b'\n');
                f.write_all(&line)
            });
        if let Err(err) = written {
            tracing::warn!(task = %key.1, path = %path.display(), %err, "cannot deliver framework message");
        }
    }

    fn on_container_event(&mut self, run: RunRef, event: ContainerEvent) {
        let key = (run.framework_id, run.task_id);
        let Some(record) = self.tasks.get_mut(&key) else {
            return;
        };
        if record.sandbox != run.sandbox || record.ended {
            return;
        }
        match event {
            ContainerEvent::Started { task_pid } => {
                record.task_pid = Some(task_pid);
                if !record.killing && matches!(record.state(), TaskState::Staging | TaskState::Starting) {
                    self.update(
                        &key,
                        TaskState::Running,
                        StatusReason::ReasonUnspecified,
                        String::new(),
                        None,
                    );
                }
            }
            ContainerEvent::Exited(exit) => {
                let killing = record.killing.then_some(record.kill_reason);
                tracing::debug!(task = %key.1, ?exit, "task ended");
                self.end(&key, outcome(exit.as_ref(), killing, false));
            }
        }
    }

    /// Produces the task's terminal update.
    fn end(&mut self, key: &TaskKey, mut o: Outcome) {
        let mut group_failed = false;
        if let Some(record) = self.tasks.get_mut(key) {
            if let Some(message) = record.kill_message.take()
                && o.state == TaskState::Killed
            {
                o.message = message;
            }
            // A failed group launch fails every member by itself.
            group_failed = record.group.is_some()
                && o.state == TaskState::Failed
                && o.reason != StatusReason::ReasonContainerLaunchFailed
                && !record.ended;
            record.ended = true;
            // The watcher has reported the end (or there is none): let it go.
            record.watcher = None;
        }
        if group_failed {
            let why = o.message.clone();
            self.update(key, o.state, o.reason, o.message, o.exit_code);
            self.kill_rest_of_group(key, &why);
            return;
        }
        self.update(key, o.state, o.reason, o.message, o.exit_code);
    }

    /// Produces a status update: it becomes the task's latest state at once, is
    /// queued, and is sent once a checkpoint holding it is on disk and it is the head.
    fn update(
        &mut self,
        key: &TaskKey,
        state: TaskState,
        reason: StatusReason,
        message: String,
        exit_code: Option<i32>,
    ) {
        let agent_id = self.agent_id.clone().unwrap_or_default();
        let Some(record) = self.tasks.get_mut(key) else {
            return;
        };
        let status = v1::TaskStatus {
            task_id: key.1.clone(),
            state: state as i32,
            message,
            source: v1::StatusSource::Agent as i32,
            reason: reason as i32,
            agent_id,
            timestamp: agora_proto::unix_seconds(SystemTime::now()),
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            exit_code,
            healthy: None,
        };
        tracing::debug!(task = %key.1, state = mesos_name(state), "status update");
        record.latest = status.clone();
        record.queue.push(status);
        self.dirty.insert(key.clone());
    }

    fn send_head(&mut self, key: &TaskKey) {
        let Some((link, _)) = &self.link else { return };
        let Some(record) = self.tasks.get_mut(key) else {
            return;
        };
        if !record.queue.head_is_durable() {
            return;
        }
        let Some(head) = record.queue.head() else { return };
        let message = v1::AgentMessage {
            message: Some(v1::agent_message::Message::StatusUpdate(v1::StatusUpdate {
                framework_id: key.0.clone(),
                status: Some(head.clone()),
                latest_state: record.latest.state,
            })),
        };
        if link.send(message).is_err() {
            self.link = None;
            return;
        }
        record.queue.mark_sent(Instant::now());
        if let Some(Some(due)) = record.queue.due_at() {
            self.resends.insert((due, key.clone()));
        }
    }

    /// The earliest resend deadline (possibly of a stale entry).
    fn next_resend(&self) -> Option<Instant> {
        self.link.as_ref()?;
        self.resends.first().map(|(due, _)| *due)
    }

    fn resend_due(&mut self) {
        let now = Instant::now();
        while let Some((due, key)) = self.resends.first().cloned() {
            if due > now {
                break;
            }
            self.resends.pop_first();
            if self.tasks.get(&key).is_some_and(|r| r.queue.is_due(now)) {
                tracing::debug!(task = %key.1, "resending unacknowledged status update");
                self.send_head(&key);
            }
        }
    }

    fn runs(&self) -> Vec<RunView> {
        self.tasks
            .iter()
            .map(|((framework_id, task_id), r)| RunView {
                run: RunRef {
                    framework_id: framework_id.clone(),
                    task_id: task_id.clone(),
                    sandbox: r.sandbox.clone(),
                },
                task_pid: r.task_pid,
                ended: r.ended || r.launching,
            })
            .collect()
    }

    fn on_usage(&mut self, usage: v1::ResourceUsage) {
        if let Some((link, _)) = &self.link {
            let message = v1::AgentMessage {
                message: Some(v1::agent_message::Message::Usage(usage.clone())),
            };
            if link.send(message).is_err() {
                self.link = None;
            }
        }
        self.usage = Some(usage);
    }

    /// The task's part of the latest usage sample, or null.
    fn task_usage_json(&self, framework_id: &str, task_id: &str) -> serde_json::Value {
        self.usage
            .as_ref()
            .and_then(|u| {
                u.tasks
                    .iter()
                    .find(|t| t.framework_id == framework_id && t.task_id == task_id)
            })
            .map(|t| json!({ "cpus_used": t.cpus_used, "mem_used_mib": t.mem_used_mib }))
            .unwrap_or(serde_json::Value::Null)
    }

    fn state_json(&self) -> serde_json::Value {
        let tasks: Vec<serde_json::Value> = self
            .tasks
            .values()
            .map(|r| {
                json!({
                    "id": r.info.task_id,
                    "name": r.info.name,
                    "framework_id": r.framework.id,
                    "state": mesos_name(r.state()),
                    "sandbox": r.sandbox.display().to_string(),
                    "pid": r.task_pid,
                    "resources": resources_json(&r.info.resources),
                    "usage": self.task_usage_json(&r.framework.id, &r.info.task_id),
                })
            })
            .collect();
        let attributes: serde_json::Map<String, serde_json::Value> = self
            .settings
            .attributes
            .iter()
            .map(|a| (a.name.clone(), json!(a.value)))
            .collect();
        json!({
            "id": self.agent_id,
            "hostname": self.settings.hostname,
            "master": self.link.as_ref().map(|(_, master)| master.clone()),
            "registered": self.link.is_some(),
            "resources": resources_json(&self.settings.resources.to_proto()),
            "attributes": attributes,
            "tasks": tasks,
            "usage": self.usage.as_ref().map(usage_json),
        })
    }
}

/// A usage sample for `/state`: the host's usage, the tasks' total, and when.
fn usage_json(usage: &v1::ResourceUsage) -> serde_json::Value {
    let host = usage.host.unwrap_or_default();
    json!({
        "timestamp": usage.timestamp,
        "cpus_used": usage.tasks.iter().map(|t| t.cpus_used).sum::<f64>(),
        "mem_used_mib": usage.tasks.iter().map(|t| t.mem_used_mib).sum::<f64>(),
        "host": {
            "cpus_used": host.cpus_used,
            "mem_used_mib": host.mem_used_mib,
            "cpus_total": host.cpus_total,
            "mem_total_mib": host.mem_total_mib,
        },
    })
}

/// Completes with the batch in flight; never, if there is none.
async fn wait_flush(flush: &mut Option<JoinHandle<Covered>>) -> Result<Covered, tokio::task::JoinError> {
    match flush {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

/// Resources as JSON: scalars as numbers, ranges as `"[a-b,c-d]"` (Mesos' text form);
/// reserved resources are keyed `name(role)`.
fn resources_json(list: &[v1::Resource]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for r in list {
        let key = if r.role.is_empty() || r.role == "*" {
            r.name.clone()
        } else {
            format!("{}({})", r.name, r.role)
        };
        let value = match &r.value {
            Some(v1::resource::Value::Scalar(v)) => json!(v),
            Some(v1::resource::Value::Ranges(ranges)) => {
                let parts: Vec<String> = ranges
                    .range
                    .iter()
                    .map(|g| format!("{}-{}", g.begin, g.end))
                    .collect();
                json!(format!("[{}]", parts.join(",")))
            }
            None => serde_json::Value::Null,
        };
        out.insert(key, value);
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_launches_run_many_more_at_once_than_process_launches() {
        assert_eq!(launch_limit(false), 8);
        assert!(
            launch_limit(true) >= 50,
            "a batch of 50 containers should start at once"
        );
    }

    #[test]
    fn exit_zero_is_finished() {
        let o = outcome(Some(&ExitRecord::ExitCode(0)), None, false);
        assert_eq!(o.state, TaskState::Finished);
        assert_eq!(o.exit_code, Some(0));
    }

    #[test]
    fn non_zero_exit_is_failed_with_the_code() {
        let o = outcome(Some(&ExitRecord::ExitCode(3)), None, false);
        assert_eq!(o.state, TaskState::Failed);
        assert_eq!(o.reason, StatusReason::ReasonCommandExited);
        assert_eq!(o.message, "exited with code 3");
        assert_eq!(o.exit_code, Some(3));
    }

    #[test]
    fn a_signal_is_failed_and_named() {
        let o = outcome(Some(&ExitRecord::Signal(9)), None, false);
        assert_eq!(o.state, TaskState::Failed);
        assert_eq!(o.message, "killed by signal 9");
        assert_eq!(o.exit_code, None);
    }

    #[test]
    fn any_end_during_a_kill_is_killed() {
        let o = outcome(
            Some(&ExitRecord::ExitCode(0)),
            Some(StatusReason::ReasonFrameworkRemoved),
            false,
        );
        assert_eq!(o.state, TaskState::Killed);
        assert_eq!(o.reason, StatusReason::ReasonFrameworkRemoved);
    }

    #[test]
    fn launch_errors_are_container_launch_failures() {
        let o = outcome(Some(&ExitRecord::LaunchError("No such file".into())), None, false);
        assert_eq!(o.state, TaskState::Failed);
        assert_eq!(o.reason, StatusReason::ReasonContainerLaunchFailed);
        assert_eq!(o.message, "No such file");
    }

    #[test]
    fn unknown_end_while_down_is_agent_restarted() {
        let o = outcome(None, None, true);
        assert_eq!(o.state, TaskState::Failed);
        assert_eq!(o.reason, StatusReason::ReasonAgentRestarted);
        assert_eq!(
            o.message,
            "task ended while the agent was down; exit status unknown"
        );
    }

    #[test]
    fn kill_policy_grace_must_be_a_valid_duration() {
        let p = |s: f64| v1::KillPolicy {
            grace_period_seconds: Some(s),
        };
        assert_eq!(policy_grace(Some(&p(1.5))), Some(Duration::from_millis(1500)));
        assert_eq!(policy_grace(Some(&p(-1.0))), None);
        assert_eq!(policy_grace(Some(&p(f64::NAN))), None);
        assert_eq!(policy_grace(Some(&p(1e12))), Some(MAX_GRACE));
        assert_eq!(policy_grace(Some(&v1::KillPolicy::default())), None);
        assert_eq!(policy_grace(None), None);
    }

    #[test]
    fn ranges_show_in_mesos_text_form() {
        let r = Resources::parse("cpus:2;ports:[1-2,5-5];mem(prod):10").unwrap();
        let j = resources_json(&r.to_proto());
        assert_eq!(j["cpus"], json!(2.0));
        assert_eq!(j["ports"], json!("[1-2,5-5]"));
        assert_eq!(j["mem(prod)"], json!(10.0));
    }
}

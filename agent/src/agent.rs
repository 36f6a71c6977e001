//! The agent's state and the one actor task that owns it: tasks, their
//! update queues, the link to the master. Everything that changes state
//! arrives as a [`Command`] or a container event and is handled in sequence.
//!
//! Architecture invariant: every status update is checkpointed before it is
//! sent, and stays queued until acknowledged.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agora_proto::state::{is_terminal, mesos_name};
use agora_proto::v1::{self, StatusReason, TaskState};
use agora_proto::{AgentId, FrameworkId, Resources, TaskId};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::checkpoint::{TaskCheckpoint, WorkDir};
use crate::containerizer::{
    ContainerEvent, Containerizer, EventSender, LaunchSpec, RunRef, SupervisorProcess,
};
use crate::env::{TaskEnvContext, task_environment};
use crate::supervisor::{ExitRecord, META_DIR};
use crate::updates::{Ack, UpdateQueue};

/// Longest kill grace period honoured from a kill policy.
const MAX_GRACE: Duration = Duration::from_secs(3600);

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
    /// Stop: abort watchers (tasks keep running) and return.
    Shutdown,
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
    /// A terminal update was produced; nothing more will happen to the task.
    ended: bool,
    watcher: Option<JoinHandle<()>>,
    killer: Option<JoinHandle<()>>,
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
}

impl Agent {
    pub(crate) fn new(
        settings: AgentSettings,
        work: WorkDir,
        containerizer: Arc<dyn Containerizer>,
        agent_id: Option<String>,
        events: EventSender,
    ) -> Self {
        Self {
            settings,
            work,
            containerizer,
            agent_id,
            link: None,
            tasks: BTreeMap::new(),
            events,
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
                ended,
                watcher: None,
                killer: None,
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
                Some(sup) if self.containerizer.is_alive(sup) => {
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
        loop {
            let due = self.next_resend();
            tokio::select! {
                command = commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => self.handle(command),
                },
                Some((run, event)) = events.recv() => self.on_container_event(run, event),
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    self.resend_due();
                }
            }
        }
        for record in self.tasks.values_mut() {
            record.abort_background();
        }
        tracing::info!("agent stopped; tasks keep running");
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
        tracing::info!(task = %key.1, framework = %key.0, sandbox = %sandbox.display(), "launching task");
        let has_container = info.container.is_some();
        self.tasks.insert(
            key.clone(),
            TaskRecord {
                framework,
                info,
                sandbox: sandbox.clone(),
                supervisor: None,
                task_pid: None,
                latest: v1::TaskStatus::default(),
                queue: UpdateQueue::new(self.settings.status_update_retry),
                killing: false,
                kill_reason: StatusReason::ReasonTaskKilled,
                ended: false,
                watcher: None,
                killer: None,
            },
        );
        if has_container {
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
        self.update(
            &key,
            TaskState::Starting,
            StatusReason::ReasonUnspecified,
            String::new(),
            None,
        );
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
        match self.containerizer.launch(spec, self.events.clone()) {
            Ok((supervisor, watcher)) => {
                if let Some(record) = self.tasks.get_mut(&key) {
                    record.supervisor = Some(supervisor);
                    record.watcher = Some(watcher);
                }
                self.checkpoint(&key);
            }
            Err(err) => {
                tracing::warn!(task = %key.1, %err, "task launch failed");
                self.end(
                    &key,
                    Outcome {
                        state: TaskState::Failed,
                        reason: StatusReason::ReasonContainerLaunchFailed,
                        message: err.to_string(),
                        exit_code: None,
                    },
                );
            }
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
        record.killer = Some(self.containerizer.kill(&record.sandbox, grace));
        tracing::info!(task = %key.1, ?grace, "killing task");
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
            tracing::info!(task = %key.1, "terminal update acknowledged; forgetting task");
            if let Some(mut record) = self.tasks.remove(key) {
                record.abort_background();
            }
            if let Err(err) = self.work.remove(&key.0, &key.1) {
                tracing::error!(task = %key.1, %err, "cannot remove task checkpoint");
            }
            return;
        }
        self.checkpoint(key);
        self.send_head(key);
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
                if record.state() == TaskState::Starting {
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
                tracing::info!(task = %key.1, ?exit, "task ended");
                self.end(&key, outcome(exit.as_ref(), killing, false));
            }
        }
    }

    /// Produces the task's terminal update.
    fn end(&mut self, key: &TaskKey, o: Outcome) {
        if let Some(record) = self.tasks.get_mut(key) {
            record.ended = true;
            // The watcher has reported the end (or there is none): let it go.
            record.watcher = None;
        }
        self.update(key, o.state, o.reason, o.message, o.exit_code);
    }

    /// Produces a status update: queue it, checkpoint, then send it if it is the head.
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
        tracing::info!(task = %key.1, state = mesos_name(state), "status update");
        record.latest = status.clone();
        let is_head = record.queue.push(status);
        self.checkpoint(key);
        if is_head {
            self.send_head(key);
        }
    }

    fn checkpoint(&self, key: &TaskKey) {
        if let Some(record) = self.tasks.get(key)
            && let Err(err) = self.work.save(&key.0, &key.1, &record.checkpoint())
        {
            tracing::error!(task = %key.1, %err, "cannot checkpoint task");
        }
    }

    fn send_head(&mut self, key: &TaskKey) {
        let Some((link, _)) = &self.link else { return };
        let Some(record) = self.tasks.get_mut(key) else {
            return;
        };
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
    }

    fn next_resend(&self) -> Option<Instant> {
        self.link.as_ref()?;
        let now = Instant::now();
        self.tasks
            .values()
            .filter_map(|r| r.queue.due_at())
            .map(|due| due.unwrap_or(now))
            .min()
    }

    fn resend_due(&mut self) {
        let now = Instant::now();
        let due: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, r)| r.queue.is_due(now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            tracing::debug!(task = %key.1, "resending unacknowledged status update");
            self.send_head(&key);
        }
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
        })
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

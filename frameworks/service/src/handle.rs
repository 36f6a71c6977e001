//! [`ServiceHandle`]: the one interface the REST API and the CLI use to read
//! and change the service framework, and the view types it answers with.
//!
//! A handle is a cheap clone of a channel to the runtime's actor, which owns
//! the engine: every call is a message the actor answers in its turn, so
//! reads always see the engine's latest state and changes are applied one at
//! a time. Events (Marathon's event bus) go through a broadcast channel the
//! handle carries itself.

use std::fmt;

use agora_proto::{AgentId, TaskId};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::app::{AppDefinition, AppId, HealthCheck, ValidationErrors};
use crate::engine::{Command, Reply};
use crate::health::HealthCheckResult;
use crate::runtime::ServiceState;

/// The result of a handle call.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// How many events a slow event-stream subscriber may lag behind before it
/// misses some.
pub const EVENT_BUFFER: usize = 4096;

/// Why a call failed; each kind maps to one HTTP status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// The app, task, version or deployment does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with running deployments (409); `force` overrides.
    #[error("{message}")]
    Conflict {
        /// What conflicts, for people.
        message: String,
        /// The deployments in the way.
        deployments: Vec<DeploymentId>,
    },
    /// The request is invalid (422), with Marathon's error details.
    #[error("{}", .0.message)]
    Invalid(ValidationErrors),
    /// The framework cannot answer now (503): starting, stopping, or its
    /// state store failed.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure (500).
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// The HTTP status code this error is answered with.
    pub fn http_status(&self) -> u16 {
        match self {
            ServiceError::NotFound(_) => 404,
            ServiceError::Conflict { .. } => 409,
            ServiceError::Invalid(_) => 422,
            ServiceError::Unavailable(_) => 503,
            ServiceError::Internal(_) => 500,
        }
    }
}

/// A deployment's id: a UUID in its hyphenated text form, as Marathon's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct DeploymentId(String);

impl DeploymentId {
    /// A fresh random id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// Wraps an id received from a user or read from the store. Any string is
    /// accepted: an unknown id is simply not found.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a change answers with: the deployment that carries it out and the
/// version it deploys (Marathon's `{deploymentId, version}`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRef {
    /// The deployment started.
    pub id: DeploymentId,
    /// The version of the change (the new app version, or the time of the change).
    pub version: jiff::Timestamp,
}

/// An app with its tasks and counts (Marathon's app object with embedded tasks).
#[derive(Debug, Clone)]
pub struct AppStatus {
    /// The current definition.
    pub app: AppDefinition,
    /// Its tasks, every version.
    pub tasks: Vec<TaskView>,
    /// Tasks launched but not yet running.
    pub tasks_staged: u32,
    /// Tasks running.
    pub tasks_running: u32,
    /// Running tasks whose every health check passes.
    pub tasks_healthy: u32,
    /// Running tasks with at least one failing health check.
    pub tasks_unhealthy: u32,
    /// Deployments that change this app now.
    pub deployments: Vec<DeploymentId>,
    /// The app's most recent task failure.
    pub last_task_failure: Option<TaskFailure>,
}

/// One task of an app (Marathon's task object).
#[derive(Debug, Clone)]
pub struct TaskView {
    /// The task's id.
    pub id: TaskId,
    /// The app it belongs to.
    pub app_id: AppId,
    /// The agent it runs on, once known.
    pub agent_id: Option<AgentId>,
    /// The agent's hostname.
    pub host: String,
    /// Host ports assigned to it.
    pub ports: Vec<u16>,
    /// Its last known state, as Mesos names it (`TASK_RUNNING`).
    pub state: String,
    /// When it was launched.
    pub staged_at: jiff::Timestamp,
    /// When it started running.
    pub started_at: Option<jiff::Timestamp>,
    /// The app version it runs.
    pub version: jiff::Timestamp,
    /// The results of its health checks, one per check that has run.
    pub health: Vec<HealthCheckResult>,
    /// The addresses it is reachable at.
    pub ip_addresses: Vec<String>,
}

/// The most recent failed task of an app (Marathon's `lastTaskFailure`).
#[derive(Debug, Clone)]
pub struct TaskFailure {
    /// The app.
    pub app_id: AppId,
    /// Where the task ran.
    pub host: String,
    /// What the agent said.
    pub message: String,
    /// The terminal state (`TASK_FAILED`).
    pub state: String,
    /// The task.
    pub task_id: TaskId,
    /// When it failed.
    pub timestamp: jiff::Timestamp,
    /// The app version it ran.
    pub version: jiff::Timestamp,
}

/// A running deployment (Marathon's deployment object and event `plan`).
#[derive(Debug, Clone)]
pub struct DeploymentView {
    /// Its id.
    pub id: DeploymentId,
    /// The version it deploys.
    pub version: jiff::Timestamp,
    /// Every app it changes.
    pub affected_apps: Vec<AppId>,
    /// Its steps in order; the actions of one step run together.
    pub steps: Vec<Vec<DeploymentAction>>,
    /// The actions of the step running now.
    pub current_actions: Vec<DeploymentAction>,
    /// The step running now, counted from 1.
    pub current_step: u32,
    /// How many steps it has.
    pub total_steps: u32,
    /// The affected apps before the deployment (absent ones were created by it).
    pub original: Vec<AppDefinition>,
    /// The affected apps it deploys (absent ones are removed by it).
    pub target: Vec<AppDefinition>,
}

/// One action of a deployment step.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentAction {
    /// `StartApplication`, `ScaleApplication`, `RestartApplication` or `StopApplication`.
    pub action: String,
    /// The app it acts on.
    pub app: AppId,
}

/// An app with instances waiting for offers (Marathon's queue item).
#[derive(Debug, Clone)]
pub struct QueueEntry {
    /// The app (its current definition).
    pub app: AppDefinition,
    /// How many instances still have to be launched.
    pub count: u32,
    /// Seconds of launch backoff left.
    pub delay_seconds_left: u64,
    /// True when the instances have waited longer than expected for offers.
    pub overdue: bool,
    /// Since when they wait.
    pub since: jiff::Timestamp,
    /// Why recent offers did not fit (resources, roles, constraints).
    pub unplaced_reasons: Vec<String>,
}

/// What killing tasks did.
#[derive(Debug, Clone)]
pub struct KillOutcome {
    /// The tasks that are being killed.
    pub killed: Vec<TaskView>,
    /// The deployment that scales the apps down, when `scale` was asked.
    pub deployment: Option<DeploymentRef>,
}

/// What `/v2/info` shows about this framework.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceInfo {
    /// The framework id, once subscribed.
    pub framework_id: Option<String>,
    /// The leading instance of this framework (`host:port` of its API).
    pub leader: String,
    /// The master it is subscribed to (or the configured list).
    pub master: String,
    /// The framework's name.
    pub name: String,
    /// Agora's version.
    pub version: String,
}

/// Something that happened (Marathon's event bus, served on `/v2/events`).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // events are few; boxing would only complicate matching
pub enum ServiceEvent {
    /// A change was requested through the API.
    ApiPost {
        /// The request path.
        uri: String,
        /// The app as posted.
        app: AppDefinition,
        /// When.
        timestamp: jiff::Timestamp,
    },
    /// A task changed state.
    StatusUpdate {
        /// The task, in its new state.
        task: TaskView,
        /// The agent's or master's message with the update.
        message: String,
        /// When.
        timestamp: jiff::Timestamp,
    },
    /// A deployment started (or moved to a new step).
    DeploymentInfo {
        /// The deployment.
        plan: DeploymentView,
        /// Its step now, counted from 1.
        current_step: u32,
        /// When.
        timestamp: jiff::Timestamp,
    },
    /// A deployment finished.
    DeploymentSuccess {
        /// The deployment.
        plan: DeploymentView,
        /// When.
        timestamp: jiff::Timestamp,
    },
    /// A deployment failed, was cancelled or was superseded.
    DeploymentFailed {
        /// The deployment.
        plan: DeploymentView,
        /// When.
        timestamp: jiff::Timestamp,
    },
    /// A deployment finished a step.
    DeploymentStepSuccess {
        /// The deployment.
        plan: DeploymentView,
        /// The step finished, counted from 1.
        current_step: u32,
        /// When.
        timestamp: jiff::Timestamp,
    },
    /// A task's health changed.
    HealthStatusChanged {
        /// Its app.
        app_id: AppId,
        /// The task.
        task_id: TaskId,
        /// The app version it runs.
        version: jiff::Timestamp,
        /// Healthy now?
        alive: bool,
        /// When.
        timestamp: jiff::Timestamp,
    },
    /// One health check of a task failed.
    FailedHealthCheck {
        /// Its app.
        app_id: AppId,
        /// The task.
        task_id: TaskId,
        /// The check that failed.
        check: HealthCheck,
        /// When.
        timestamp: jiff::Timestamp,
    },
    /// A task failed its health checks too often and is killed.
    UnhealthyTaskKill {
        /// Its app.
        app_id: AppId,
        /// The task.
        task_id: TaskId,
        /// The app version it runs.
        version: jiff::Timestamp,
        /// Why.
        reason: String,
        /// Where it runs.
        host: String,
        /// When.
        timestamp: jiff::Timestamp,
    },
    /// An app was removed and its last task is gone.
    AppTerminated {
        /// The app.
        app_id: AppId,
        /// When.
        timestamp: jiff::Timestamp,
    },
}

impl ServiceEvent {
    /// When it happened.
    pub fn timestamp(&self) -> jiff::Timestamp {
        match self {
            ServiceEvent::ApiPost { timestamp, .. }
            | ServiceEvent::StatusUpdate { timestamp, .. }
            | ServiceEvent::DeploymentInfo { timestamp, .. }
            | ServiceEvent::DeploymentSuccess { timestamp, .. }
            | ServiceEvent::DeploymentFailed { timestamp, .. }
            | ServiceEvent::DeploymentStepSuccess { timestamp, .. }
            | ServiceEvent::HealthStatusChanged { timestamp, .. }
            | ServiceEvent::FailedHealthCheck { timestamp, .. }
            | ServiceEvent::UnhealthyTaskKill { timestamp, .. }
            | ServiceEvent::AppTerminated { timestamp, .. } => *timestamp,
        }
    }

    /// Marathon's `eventType` of this event.
    pub fn event_type(&self) -> &'static str {
        match self {
            ServiceEvent::ApiPost { .. } => "api_post_event",
            ServiceEvent::StatusUpdate { .. } => "status_update_event",
            ServiceEvent::DeploymentInfo { .. } => "deployment_info",
            ServiceEvent::DeploymentSuccess { .. } => "deployment_success",
            ServiceEvent::DeploymentFailed { .. } => "deployment_failed",
            ServiceEvent::DeploymentStepSuccess { .. } => "deployment_step_success",
            ServiceEvent::HealthStatusChanged { .. } => "health_status_changed_event",
            ServiceEvent::FailedHealthCheck { .. } => "failed_health_check_event",
            ServiceEvent::UnhealthyTaskKill { .. } => "unhealthy_task_kill_event",
            ServiceEvent::AppTerminated { .. } => "app_terminated_event",
        }
    }
}

/// A read of the actor's state, run inside the actor.
pub(crate) type Read = Box<dyn FnOnce(&ServiceState) + Send>;

/// A message from a handle to the runtime's actor.
#[allow(clippy::large_enum_variant)] // one per API call; moved once
pub(crate) enum Request {
    /// Change something through the engine.
    Command {
        /// The change.
        command: Command,
        /// Where the engine's answer goes.
        reply: oneshot::Sender<Result<Reply>>,
    },
    /// Read the state.
    Read(Read),
}

/// The interface to a running service framework. Cheap to clone; every
/// clone talks to the same actor.
#[derive(Clone)]
pub struct ServiceHandle {
    requests: mpsc::Sender<Request>,
    events: broadcast::Sender<ServiceEvent>,
}

impl fmt::Debug for ServiceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("closed", &self.requests.is_closed())
            .finish_non_exhaustive()
    }
}

fn gone() -> ServiceError {
    ServiceError::Unavailable("the service framework is not running".to_owned())
}

impl ServiceHandle {
    /// A handle whose requests arrive on the returned receiver (the actor's
    /// end) and whose events go to `events`.
    pub(crate) fn new(
        capacity: usize,
        events: broadcast::Sender<ServiceEvent>,
    ) -> (Self, mpsc::Receiver<Request>) {
        let (requests, receiver) = mpsc::channel(capacity);
        (Self { requests, events }, receiver)
    }

    /// A handle to no framework: every call fails with
    /// [`ServiceError::Unavailable`] and every list is empty. Events
    /// published on it reach its subscribers. For tests of the API's shapes.
    pub fn disconnected() -> Self {
        let (handle, _requests) = Self::new(1, broadcast::channel(EVENT_BUFFER).0);
        handle
    }

    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&ServiceState) -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let request = Request::Read(Box::new(move |state| {
            let _ = tx.send(read(state));
        }));
        self.requests.send(request).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    async fn command(&self, command: Command) -> Result<Reply> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Command { command, reply })
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    async fn deployment(&self, command: Command) -> Result<DeploymentRef> {
        match self.command(command).await? {
            Reply::Deployment(deployment) => Ok(deployment),
            other => Err(unexpected(&other)),
        }
    }

    /// Every app with its tasks, sorted by id.
    pub async fn apps(&self) -> Vec<AppStatus> {
        self.read(|state| state.apps()).await.unwrap_or_default()
    }

    /// One app with its tasks.
    pub async fn app(&self, id: &AppId) -> Result<AppStatus> {
        let id = id.clone();
        self.read(move |state| state.app(&id)).await?
    }

    /// Creates an app; [`ServiceError::Conflict`] when one with its id exists.
    pub async fn create_app(&self, app: AppDefinition) -> Result<DeploymentRef> {
        self.deployment(Command::CreateApp(app)).await
    }

    /// Creates or replaces apps, all in one deployment.
    pub async fn update_apps(&self, apps: Vec<AppDefinition>, force: bool) -> Result<DeploymentRef> {
        self.deployment(Command::UpdateApps { apps, force }).await
    }

    /// Replaces every task of an app (a new version of the same definition).
    pub async fn restart_app(&self, id: &AppId, force: bool) -> Result<DeploymentRef> {
        self.deployment(Command::RestartApp {
            id: id.clone(),
            force,
        })
        .await
    }

    /// Removes apps (killing their tasks), all in one deployment.
    pub async fn delete_apps(&self, ids: Vec<AppId>, force: bool) -> Result<DeploymentRef> {
        self.deployment(Command::DeleteApps { ids, force }).await
    }

    /// The versions of an app, newest first.
    pub async fn app_versions(&self, id: &AppId) -> Result<Vec<jiff::Timestamp>> {
        let id = id.clone();
        self.read(move |state| state.app_versions(&id)).await?
    }

    /// One stored version of an app.
    pub async fn app_version(&self, id: &AppId, version: jiff::Timestamp) -> Result<AppDefinition> {
        let id = id.clone();
        self.read(move |state| state.app_version(&id, version)).await?
    }

    /// The tasks of one app, or of every app.
    pub async fn tasks(&self, app: Option<&AppId>) -> Vec<TaskView> {
        let app = app.cloned();
        self.read(move |state| state.tasks(app.as_ref()))
            .await
            .unwrap_or_default()
    }

    /// Kills tasks. `scale` lowers their apps' instances (a deployment);
    /// `wipe` forgets them at once; `force` overrides running deployments.
    pub async fn kill_tasks(
        &self,
        ids: Vec<TaskId>,
        scale: bool,
        wipe: bool,
        force: bool,
    ) -> Result<KillOutcome> {
        match self
            .command(Command::KillTasks {
                ids,
                scale,
                wipe,
                force,
            })
            .await?
        {
            Reply::Killed(outcome) => Ok(outcome),
            other => Err(unexpected(&other)),
        }
    }

    /// The running deployments.
    pub async fn deployments(&self) -> Vec<DeploymentView> {
        self.read(|state| state.deployments()).await.unwrap_or_default()
    }

    /// Cancels a deployment: rolls it back with a new deployment (its ref is
    /// returned), or with `force` just drops it (`None`).
    pub async fn cancel_deployment(&self, id: &DeploymentId, force: bool) -> Result<Option<DeploymentRef>> {
        match self
            .command(Command::CancelDeployment {
                id: id.clone(),
                force,
            })
            .await?
        {
            Reply::Cancelled(deployment) => Ok(deployment),
            other => Err(unexpected(&other)),
        }
    }

    /// Apps waiting for offers.
    pub async fn queue(&self) -> Vec<QueueEntry> {
        self.read(|state| state.queue()).await.unwrap_or_default()
    }

    /// Clears an app's launch backoff.
    pub async fn reset_delay(&self, id: &AppId) -> Result<()> {
        match self.command(Command::ResetDelay(id.clone())).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// What `/v2/info` shows.
    pub async fn info(&self) -> ServiceInfo {
        self.read(|state| state.info())
            .await
            .unwrap_or_else(|_| ServiceInfo {
                framework_id: None,
                leader: String::new(),
                master: String::new(),
                name: String::new(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
    }

    /// A stream of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ServiceEvent> {
        self.events.subscribe()
    }

    /// How many event streams are attached.
    pub fn event_subscribers(&self) -> usize {
        self.events.receiver_count()
    }

    /// Sends an event to every subscriber (nobody listening is fine).
    pub fn publish(&self, event: ServiceEvent) {
        let _ = self.events.send(event);
    }
}

fn unexpected(reply: &Reply) -> ServiceError {
    ServiceError::Internal(format!("the engine answered with an unexpected reply: {reply:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_marathon_status_codes() {
        assert_eq!(ServiceError::NotFound("x".into()).http_status(), 404);
        let conflict = ServiceError::Conflict {
            message: "busy".into(),
            deployments: vec![DeploymentId::generate()],
        };
        assert_eq!(conflict.http_status(), 409);
        assert_eq!(ServiceError::Unavailable("x".into()).http_status(), 503);
        assert_eq!(ServiceError::Internal("x".into()).http_status(), 500);
    }

    #[test]
    fn deployment_ids_are_hyphenated_uuids() {
        let id = DeploymentId::generate();
        assert!(uuid::Uuid::parse_str(id.as_str()).is_ok());
        assert_eq!(id.as_str().len(), 36);
        assert_ne!(id, DeploymentId::generate());
    }

    #[tokio::test]
    async fn a_disconnected_handle_answers_unavailable_and_empty() {
        let handle = ServiceHandle::disconnected();
        assert!(handle.apps().await.is_empty());
        assert!(handle.deployments().await.is_empty());
        let err = handle
            .restart_app(&AppId::parse("/x").expect("valid id"), false)
            .await
            .expect_err("nobody answers");
        assert_eq!(err.http_status(), 503);
    }
}

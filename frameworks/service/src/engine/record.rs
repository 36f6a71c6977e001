//! What the engine stores: tasks it launched and deployments it runs.

use agora_proto::{AgentId, TaskId, v1};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::app::{AppDefinition, AppId};
use crate::handle::{DeploymentAction, DeploymentId};

/// The state of a task the engine knows (Mesos' task states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    /// Launched; the agent has not started it yet.
    Staging,
    /// The agent is starting it.
    Starting,
    /// Running.
    Running,
    /// Being killed.
    Killing,
    /// Its agent is out of contact; it may still run.
    Unreachable,
    /// Ended with status 0.
    Finished,
    /// Ended non-zero or could not start.
    Failed,
    /// Killed.
    Killed,
    /// Its description was invalid.
    Error,
    /// Lost (state unknown).
    Lost,
    /// Never launched.
    Dropped,
    /// Its agent is gone for good.
    Gone,
    /// The master does not know it.
    Unknown,
}

impl TaskState {
    /// The engine's state for a wire state (`None` for unspecified).
    pub fn from_proto(state: v1::TaskState) -> Option<Self> {
        use v1::TaskState as P;
        Some(match state {
            P::Unspecified => return None,
            P::Staging => Self::Staging,
            P::Starting => Self::Starting,
            P::Running => Self::Running,
            P::Killing => Self::Killing,
            P::Finished => Self::Finished,
            P::Failed => Self::Failed,
            P::Killed => Self::Killed,
            P::Error => Self::Error,
            P::Lost => Self::Lost,
            P::Dropped => Self::Dropped,
            P::Unreachable => Self::Unreachable,
            P::Gone => Self::Gone,
            P::Unknown => Self::Unknown,
        })
    }

    /// Mesos' name, e.g. `TASK_RUNNING` (what Marathon shows).
    pub fn mesos_name(self) -> &'static str {
        match self {
            Self::Staging => "TASK_STAGING",
            Self::Starting => "TASK_STARTING",
            Self::Running => "TASK_RUNNING",
            Self::Killing => "TASK_KILLING",
            Self::Unreachable => "TASK_UNREACHABLE",
            Self::Finished => "TASK_FINISHED",
            Self::Failed => "TASK_FAILED",
            Self::Killed => "TASK_KILLED",
            Self::Error => "TASK_ERROR",
            Self::Lost => "TASK_LOST",
            Self::Dropped => "TASK_DROPPED",
            Self::Gone => "TASK_GONE",
            Self::Unknown => "TASK_UNKNOWN",
        }
    }

    /// Whether the task has ended (it no longer runs and never will).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Finished
                | Self::Failed
                | Self::Killed
                | Self::Error
                | Self::Lost
                | Self::Dropped
                | Self::Gone
                | Self::Unknown
        )
    }
}

/// A task the engine launched and has not seen end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's id.
    pub task_id: TaskId,
    /// Its app.
    pub app_id: AppId,
    /// The app version it runs.
    pub version: Timestamp,
    /// Its agent.
    pub agent_id: Option<AgentId>,
    /// The agent's hostname.
    pub host: String,
    /// The agent's attributes (for placement constraints).
    #[serde(default)]
    pub attributes: Vec<(String, String)>,
    /// Host ports, in the order of the app's ports (`PORT0`, `PORT1`, …).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// The environment it was launched with (health checks see it too).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Its last known state (never a terminal one: ended tasks are removed).
    pub state: TaskState,
    /// When it was launched.
    pub staged_at: Timestamp,
    /// When it first ran.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// The engine asked to kill it (it no longer counts as an instance).
    #[serde(default)]
    pub kill_requested: bool,
    /// Since when it is unreachable.
    #[serde(default)]
    pub unreachable_since: Option<Timestamp>,
    /// Unreachable for longer than its app's `inactiveAfterSeconds`: it has
    /// been replaced and is killed if it returns.
    #[serde(default)]
    pub inactive: bool,
    /// Health as last reported by the health checks (`None`: no result yet).
    #[serde(skip)]
    pub healthy: Option<bool>,
    /// Since when it is running (and healthy, with health checks), for the
    /// backoff reset. Not stored: a restart starts the count again.
    #[serde(skip)]
    pub(crate) ready_since: Option<tokio::time::Instant>,
    /// Since when it is unreachable, on the monotonic clock.
    #[serde(skip)]
    pub(crate) unreachable_at: Option<tokio::time::Instant>,
}

impl TaskRecord {
    /// Whether it counts as one of its app's instances: not being killed,
    /// not replaced after being unreachable.
    pub fn counts(&self) -> bool {
        !self.kill_requested && !self.inactive
    }

    /// Running, and healthy if `has_checks` (an unhealthy one never is).
    pub fn is_ready(&self, has_checks: bool) -> bool {
        self.state == TaskState::Running
            && self.healthy != Some(false)
            && (!has_checks || self.healthy == Some(true))
    }
}

/// An app's launch backoff as stored: it ends at a wall-clock time, so a
/// restarted framework keeps holding the launches of a crash-looping app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredDelay {
    /// The app.
    pub app_id: AppId,
    /// The app version whose failures it counts.
    pub version: Option<Timestamp>,
    /// The delay applied after the last failure, in seconds.
    pub current_seconds: f64,
    /// No launch before this.
    pub until: Timestamp,
    /// Failures counted.
    pub failures: u32,
}

/// What a deployment step does to one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    /// Register a new app (with no tasks yet).
    StartApplication,
    /// Bring an app to its target instance count.
    ScaleApplication,
    /// Replace every task with the target version (rolling).
    RestartApplication,
    /// Kill every task and remove the app.
    StopApplication,
}

impl ActionKind {
    /// Marathon's name of the action.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StartApplication => "StartApplication",
            Self::ScaleApplication => "ScaleApplication",
            Self::RestartApplication => "RestartApplication",
            Self::StopApplication => "StopApplication",
        }
    }
}

/// One action of a deployment step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentStepAction {
    /// What it does.
    pub action: ActionKind,
    /// To which app.
    pub app: AppId,
}

impl DeploymentStepAction {
    /// The API's view of it.
    pub fn view(&self) -> DeploymentAction {
        DeploymentAction {
            action: self.action.as_str().to_owned(),
            app: self.app.clone(),
        }
    }
}

/// A running deployment: steps of actions, run one step at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Its id.
    pub id: DeploymentId,
    /// The version it deploys (the time of the change).
    pub version: Timestamp,
    /// Every app it changes.
    pub affected_apps: Vec<AppId>,
    /// The affected apps before it (an app absent here is created by it).
    pub original: Vec<AppDefinition>,
    /// The affected apps after it (an app absent here is removed by it).
    pub target: Vec<AppDefinition>,
    /// The steps in order; the actions of one step run together.
    pub steps: Vec<Vec<DeploymentStepAction>>,
    /// The index of the step running now (== `steps.len()` when done).
    pub current_step: usize,
}

impl Deployment {
    /// The target definition of an app.
    pub fn target_of(&self, id: &AppId) -> Option<&AppDefinition> {
        self.target.iter().find(|a| &a.id == id)
    }

    /// The original definition of an app.
    pub fn original_of(&self, id: &AppId) -> Option<&AppDefinition> {
        self.original.iter().find(|a| &a.id == id)
    }

    /// The actions of the step running now.
    pub fn current_actions(&self) -> &[DeploymentStepAction] {
        self.steps.get(self.current_step).map_or(&[][..], |s| &s[..])
    }

    /// Where `app` stands in this deployment: the index of the first step
    /// with an action on it (`None`: no action on it).
    pub fn first_step_of(&self, app: &AppId) -> Option<usize> {
        self.steps.iter().position(|s| s.iter().any(|a| &a.app == app))
    }

    /// The last step with an action on `app`.
    pub fn last_step_of(&self, app: &AppId) -> Option<usize> {
        self.steps.iter().rposition(|s| s.iter().any(|a| &a.app == app))
    }
}

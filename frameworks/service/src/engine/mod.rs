//! The controller: desired apps vs observed tasks → launch, kill, backoff,
//! deployments.
//!
//! [`Engine::step`] takes one [`Input`] (a command from the API, offers, a
//! status update, a health event, a timer) with the current time ([`Now`])
//! and returns the [`Effect`]s to carry out, in order, and the answer to a
//! command. Between steps the runtime asks [`Engine::next_deadline`] when to
//! send [`Input::Tick`].
//!
//! Architecture invariant: the engine is pure. It does no I/O, reads no
//! clock and starts no task; everything it knows arrives as an input, and
//! everything it wants done leaves as an effect. State changes leave as one
//! [`Effect::Persist`] at the head of a step's effects (write-ahead: the
//! runtime stores them before it launches or kills anything).
//!
//! Decisions worth knowing: launch backoffs are stored with a wall-clock end
//! (a restarted framework keeps holding a crash-looping app, unlike
//! Marathon, whose delays live in memory only); the engine keeps each
//! task's last health verdict (`HealthEvent::Changed`) for deployments and
//! counts, while the per-check results in `TaskView::health` are merged in
//! by the runtime from its `HealthMonitor`.

use std::collections::BTreeMap;

use agora_proto::{AgentId, OfferId, TaskId, v1};

use crate::app::{AppDefinition, AppId, HealthCheck};
use crate::handle::{DeploymentId, DeploymentRef, KillOutcome, ServiceError, ServiceEvent};
use crate::health::{CheckTarget, HealthEvent};

mod backoff;
mod core;
mod deployment;
mod placement;
mod queries;
mod reconcile;
mod record;
#[cfg(test)]
mod tests;

pub use core::Engine;
pub use record::{ActionKind, Deployment, DeploymentStepAction, StoredDelay, TaskRecord, TaskState};

/// The current time, passed into every step (the engine never reads a clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timers.
    pub instant: tokio::time::Instant,
    /// Wall-clock time, for versions and timestamps shown to users.
    pub wall: jiff::Timestamp,
}

/// Tunables of the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// How long a declined offer's resources are not offered again
    /// (`Filters.refuse_seconds`). Marathon's `--decline_offer_duration`
    /// default, 120 s: the framework asks for offers again with REVIVE
    /// (which clears these filters) as soon as it needs something.
    pub decline_refuse_seconds: f64,
    /// A task of an app's current version must stay running (and healthy,
    /// when the app has health checks) this long before the app's launch
    /// backoff is reset; shorter lives count as a crash loop.
    pub backoff_reset_after: std::time::Duration,
    /// The framework's roles (for information; roles of launches come from
    /// the apps).
    pub roles: Vec<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            decline_refuse_seconds: 120.0,
            backoff_reset_after: std::time::Duration::from_secs(10),
            roles: Vec::new(),
        }
    }
}

/// What the state store held at start.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// The current definition of every app.
    pub apps: Vec<AppDefinition>,
    /// Every stored version of every app (in any order).
    pub versions: BTreeMap<AppId, Vec<AppDefinition>>,
    /// Deployments that were running.
    pub deployments: Vec<Deployment>,
    /// Tasks the framework launched and has not seen end.
    pub tasks: Vec<TaskRecord>,
    /// Launch backoffs of apps whose tasks kept failing.
    pub delays: Vec<StoredDelay>,
}

/// One thing that happened, for the engine to react to.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // app definitions travel by value; steps are not hot
pub enum Input {
    /// A request from the API or CLI (answered in [`Step::reply`]).
    Command(Command),
    /// New offers: the engine accepts or declines every one in the same step.
    Offers(Vec<v1::Offer>),
    /// An offer was rescinded (the engine holds no offers, so this is informational).
    Rescinded(OfferId),
    /// A task status update (also the answers to reconciliation).
    Status(v1::TaskStatus),
    /// A health checker's finding.
    Health(HealthEvent),
    /// The driver (re-)subscribed: reconcile with the master.
    Subscribed {
        /// The framework id the master confirmed.
        framework_id: String,
    },
    /// The driver lost the master.
    Disconnected,
    /// Time for the periodic reconciliation with the master.
    ReconcileDue,
    /// [`Engine::next_deadline`] has passed.
    Tick,
}

/// A change requested through the API.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // app definitions travel by value; steps are not hot
pub enum Command {
    /// Create an app; [`ServiceError::Conflict`] if it exists.
    CreateApp(AppDefinition),
    /// Create or replace apps, all in one deployment.
    UpdateApps {
        /// The new definitions.
        apps: Vec<AppDefinition>,
        /// Supersede deployments of these apps instead of refusing.
        force: bool,
    },
    /// Replace every task of an app.
    RestartApp {
        /// The app.
        id: AppId,
        /// Supersede a deployment of this app instead of refusing.
        force: bool,
    },
    /// Remove apps, killing their tasks.
    DeleteApps {
        /// The apps.
        ids: Vec<AppId>,
        /// Supersede deployments of these apps instead of refusing.
        force: bool,
    },
    /// Kill tasks.
    KillTasks {
        /// The tasks.
        ids: Vec<TaskId>,
        /// Lower their apps' instances by the tasks killed (a deployment).
        scale: bool,
        /// Forget the tasks at once instead of waiting for their end.
        wipe: bool,
        /// With `scale`: supersede deployments of these apps.
        force: bool,
    },
    /// Cancel a deployment: roll it back, or with `force` just drop it.
    CancelDeployment {
        /// The deployment.
        id: DeploymentId,
        /// Drop instead of rolling back.
        force: bool,
    },
    /// Clear an app's launch backoff.
    ResetDelay(AppId),
}

/// What one step produced.
#[derive(Debug, Default)]
pub struct Step {
    /// To carry out in order.
    pub effects: Vec<Effect>,
    /// The answer to an [`Input::Command`]; `None` for other inputs.
    pub reply: Option<Result<Reply, ServiceError>>,
}

/// The answer to a command.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The deployment carrying out the change.
    Deployment(DeploymentRef),
    /// The tasks being killed (and the scaling deployment).
    Killed(KillOutcome),
    /// The rollback deployment, or `None` when the deployment was just dropped.
    Cancelled(Option<DeploymentRef>),
    /// Done, nothing to report.
    Done,
}

/// Something for the runtime to do.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // app definitions travel by value; steps are not hot
pub enum Effect {
    /// Store these changes atomically before carrying out any later effect.
    Persist(Vec<StateChange>),
    /// Accept an offer, launching these tasks on it.
    Accept {
        /// The offer.
        offer_id: OfferId,
        /// The tasks to launch.
        tasks: Vec<v1::TaskInfo>,
    },
    /// Decline offers.
    Decline {
        /// The offers.
        offer_ids: Vec<OfferId>,
        /// `Filters.refuse_seconds` for them.
        refuse_seconds: f64,
    },
    /// Kill a task.
    Kill {
        /// The task.
        task_id: TaskId,
        /// Its agent, if known.
        agent_id: Option<AgentId>,
    },
    /// Ask the master for the state of these tasks; empty = implicit (all).
    Reconcile {
        /// The tasks (explicit reconciliation) or none (implicit).
        tasks: Vec<(TaskId, Option<AgentId>)>,
    },
    /// Ask for no more offers.
    Suppress,
    /// Ask for offers again (and clear decline filters).
    Revive,
    /// Publish an event on the event bus.
    Publish(ServiceEvent),
    /// Start health-checking a task.
    WatchHealth {
        /// The task to check.
        target: CheckTarget,
        /// Its app's checks.
        checks: Vec<HealthCheck>,
    },
    /// Stop health-checking a task.
    UnwatchHealth(TaskId),
}

/// One change to the stored state.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // app definitions travel by value; steps are not hot
pub enum StateChange {
    /// Store an app's current definition.
    PutApp(AppDefinition),
    /// Remove an app and all its versions.
    DeleteApp(AppId),
    /// Store one version of an app.
    PutVersion(AppDefinition),
    /// Store a deployment.
    PutDeployment(Deployment),
    /// Remove a deployment.
    DeleteDeployment(DeploymentId),
    /// Store a task.
    PutTask(TaskRecord),
    /// Remove a task.
    DeleteTask(TaskId),
    /// Store an app's launch backoff.
    PutDelay(StoredDelay),
    /// Remove an app's launch backoff.
    DeleteDelay(AppId),
}

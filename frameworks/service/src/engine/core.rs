//! The [`Engine`]'s state and its step function.

use std::collections::{BTreeMap, BTreeSet};

use agora_proto::TaskId;
use jiff::Timestamp;
use tokio::time::Instant;

use super::backoff::LaunchDelay;
use super::{Deployment, EngineConfig, Input, Now, Recovered, Step, StoredDelay, TaskRecord};
use super::{Effect, StateChange};
use crate::app::{AppDefinition, AppId};
use crate::handle::{DeploymentId, ServiceEvent, TaskFailure};

/// The controller of the service framework: pure state, stepped by inputs.
#[derive(Debug)]
pub struct Engine {
    pub(super) config: EngineConfig,
    /// The current (target) definition of every app.
    pub(super) apps: BTreeMap<AppId, AppDefinition>,
    /// Every stored version of every app.
    pub(super) versions: BTreeMap<AppId, BTreeMap<Timestamp, AppDefinition>>,
    /// Running deployments, oldest first.
    pub(super) deployments: Vec<Deployment>,
    /// Tasks launched and not seen ending.
    pub(super) tasks: BTreeMap<TaskId, TaskRecord>,
    /// Launch backoff per app.
    pub(super) delays: BTreeMap<AppId, LaunchDelay>,
    /// Stored launch backoffs, until the first step knows the time.
    pub(super) recovered_delays: Vec<StoredDelay>,
    /// The last task failure per app.
    pub(super) failures: BTreeMap<AppId, TaskFailure>,
    /// Since when each app has instances waiting to be launched.
    pub(super) queued_since: BTreeMap<AppId, Timestamp>,
    /// Why recent offers did not take each app's waiting instances.
    pub(super) unplaced: BTreeMap<AppId, BTreeSet<String>>,
    /// Whether offers are suppressed (`None`: not known since subscribing).
    pub(super) suppressed: Option<bool>,
    /// Instances launchable now, at the end of the last step.
    pub(super) launchable: u32,
    /// The framework id, once subscribed.
    pub(super) framework_id: Option<String>,
    /// Whether the driver is subscribed.
    pub(super) connected: bool,
    /// Deployments may be able to move on: the next deadline is now.
    pub(super) advance_due: bool,
    /// The first step has not run yet (recovered timers and health watches
    /// are set up then, when the time is known).
    pub(super) recovering: bool,
    /// The time of the last step.
    pub(super) last_now: Option<Now>,
}

/// What a step accumulates: state changes (stored first) and effects.
#[derive(Debug, Default)]
pub(super) struct Out {
    pub changes: Vec<StateChange>,
    pub effects: Vec<Effect>,
}

impl Out {
    pub fn change(&mut self, change: StateChange) {
        self.changes.push(change);
    }

    pub fn effect(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    pub fn publish(&mut self, event: ServiceEvent) {
        self.effects.push(Effect::Publish(event));
    }

    fn into_effects(self) -> Vec<Effect> {
        let mut effects = Vec::with_capacity(self.effects.len() + 1);
        if !self.changes.is_empty() {
            effects.push(Effect::Persist(self.changes));
        }
        effects.extend(self.effects);
        effects
    }
}

impl Engine {
    /// An engine starting from what the state store held.
    pub fn new(config: EngineConfig, recovered: Recovered) -> Self {
        let mut versions: BTreeMap<AppId, BTreeMap<Timestamp, AppDefinition>> = BTreeMap::new();
        for (id, list) in recovered.versions {
            let entry = versions.entry(id).or_default();
            for app in list {
                if let Some(v) = app.version {
                    entry.insert(v, app);
                }
            }
        }
        let mut apps = BTreeMap::new();
        for app in recovered.apps {
            if let Some(v) = app.version {
                versions
                    .entry(app.id.clone())
                    .or_default()
                    .entry(v)
                    .or_insert_with(|| app.clone());
            }
            apps.insert(app.id.clone(), app);
        }
        let mut deployments = recovered.deployments;
        deployments.sort_by_key(|d| d.version);
        let tasks = recovered
            .tasks
            .into_iter()
            .map(|t| (t.task_id.clone(), t))
            .collect();
        Self {
            config,
            apps,
            versions,
            deployments,
            tasks,
            delays: BTreeMap::new(),
            recovered_delays: recovered.delays,
            failures: BTreeMap::new(),
            queued_since: BTreeMap::new(),
            unplaced: BTreeMap::new(),
            suppressed: None,
            launchable: 0,
            framework_id: None,
            connected: false,
            advance_due: true,
            recovering: true,
            last_now: None,
        }
    }

    /// Reacts to one input at `now`.
    pub fn step(&mut self, now: Now, input: Input) -> Step {
        let mut out = Out::default();
        if self.recovering {
            self.recovering = false;
            self.recover(now, &mut out);
        }
        self.last_now = Some(now);
        let mut fresh: Option<DeploymentId> = None;
        let reply = match input {
            Input::Command(command) => {
                let reply = self.command(now, command, &mut out);
                if let Ok(super::Reply::Deployment(r)) = &reply {
                    fresh = Some(r.id.clone());
                }
                if let Ok(super::Reply::Cancelled(Some(r))) = &reply {
                    fresh = Some(r.id.clone());
                }
                if let Ok(super::Reply::Killed(k)) = &reply {
                    fresh = k.deployment.as_ref().map(|r| r.id.clone());
                }
                Some(reply)
            }
            Input::Offers(offers) => {
                self.converge(now, &mut out, None);
                self.offers(now, offers, &mut out);
                None
            }
            Input::Rescinded(_) => None,
            Input::Status(status) => {
                self.status(now, status, &mut out);
                None
            }
            Input::Health(event) => {
                self.health(now, event, &mut out);
                None
            }
            Input::Subscribed { framework_id } => {
                self.subscribed(framework_id, &mut out);
                None
            }
            Input::Disconnected => {
                self.connected = false;
                None
            }
            Input::ReconcileDue => {
                self.reconcile_due(&mut out);
                None
            }
            Input::Tick => None,
        };
        self.converge(now, &mut out, fresh.as_ref());
        Step {
            effects: out.into_effects(),
            reply,
        }
    }

    /// When the runtime should send [`Input::Tick`] next (`None`: no timer).
    pub fn next_deadline(&self) -> Option<Instant> {
        let now = self.last_now.map(|n| n.instant);
        if self.advance_due {
            // Before the first step the time is unknown; the first input
            // (the subscription at the latest) runs the pending work.
            return now;
        }
        let now = now?;
        // Only future instants: whatever was due by the last step was done
        // in it, and a past deadline would make the runtime spin.
        let mut deadline: Option<Instant> = None;
        let mut consider = |t: Instant| {
            if t > now {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
        };
        for (app, delay) in &self.delays {
            if delay.holds(now) && self.wants_launch(app) {
                consider(delay.until);
            }
            for task in self.tasks_of(app) {
                if Some(task.version) == delay.version
                    && task.counts()
                    && let Some(since) = task.ready_since
                {
                    consider(since + self.config.backoff_reset_after);
                }
            }
        }
        for task in self.tasks.values() {
            if let Some(at) = task.unreachable_at
                && let Some(app) = self.definition_of(&task.app_id)
            {
                if !task.inactive
                    && let Some(after) = app.unreachable_strategy.inactive_after()
                {
                    consider(at + after);
                }
                if let Some(after) = app.unreachable_strategy.expunge_after() {
                    consider(at + after);
                }
            }
        }
        deadline
    }

    /// The definition governing an app's tasks (the current one, else the
    /// one a deployment is removing).
    pub(super) fn definition_of(&self, id: &AppId) -> Option<&AppDefinition> {
        self.apps.get(id).or_else(|| {
            self.deployments
                .iter()
                .find_map(|d| d.original_of(id).or_else(|| d.target_of(id)))
        })
    }

    /// The tasks of one app.
    pub(super) fn tasks_of<'a, 'b>(
        &'a self,
        id: &'b AppId,
    ) -> impl Iterator<Item = &'a TaskRecord> + use<'a, 'b> {
        self.tasks.values().filter(move |t| &t.app_id == id)
    }

    /// Sets an app's launch backoff, stored with it.
    pub(super) fn set_delay(&mut self, app: &AppId, delay: LaunchDelay, now: Now, out: &mut Out) {
        out.change(StateChange::PutDelay(delay.stored(app, now)));
        self.delays.insert(app.clone(), delay);
    }

    /// Clears an app's launch backoff, if it has one, in the store too.
    pub(super) fn clear_delay(&mut self, app: &AppId, out: &mut Out) {
        if self.delays.remove(app).is_some() {
            out.change(StateChange::DeleteDelay(app.clone()));
        }
    }

    /// A version timestamp for a change at `now`: millisecond precision (as
    /// shown), later than every stored version of `apps`.
    pub(super) fn next_version<'a>(&self, now: Now, apps: impl IntoIterator<Item = &'a AppId>) -> Timestamp {
        let mut version = Timestamp::from_millisecond(now.wall.as_millisecond()).unwrap_or(now.wall);
        for id in apps {
            let latest = self
                .versions
                .get(id)
                .and_then(|v| v.keys().next_back().copied())
                .into_iter()
                .chain(self.apps.get(id).and_then(|a| a.version));
            for latest in latest {
                if latest >= version {
                    version = Timestamp::from_millisecond(latest.as_millisecond() + 1).unwrap_or(latest);
                }
            }
        }
        version
    }

    /// Sets up what recovered state needs once the time is known: launch
    /// backoffs, timers of unreachable tasks, health checks of running tasks.
    fn recover(&mut self, now: Now, out: &mut Out) {
        for stored in std::mem::take(&mut self.recovered_delays) {
            if self.apps.contains_key(&stored.app_id) {
                let delay = LaunchDelay::restored(&stored, now);
                self.delays.insert(stored.app_id, delay);
            } else {
                out.change(StateChange::DeleteDelay(stored.app_id));
            }
        }
        let ids: Vec<TaskId> = self.tasks.keys().cloned().collect();
        for id in ids {
            let Some(task) = self.tasks.get(&id) else { continue };
            let unreachable_at = task.unreachable_since.map(|since| instant_of(now, since));
            let started = task.started_at.map(|s| instant_of(now, s));
            let running = task.state == super::TaskState::Running;
            if let Some(task) = self.tasks.get_mut(&id) {
                task.unreachable_at = unreachable_at;
            }
            if running && let Some(started) = started {
                self.watch_health(&id, started, out);
            }
        }
    }
}

/// The monotonic instant of a past wall-clock time, as seen at `now`.
pub(super) fn instant_of(now: Now, wall: Timestamp) -> Instant {
    let ago = now.wall.duration_since(wall);
    match std::time::Duration::try_from(ago) {
        Ok(ago) => now.instant.checked_sub(ago).unwrap_or(now.instant),
        Err(_) => now.instant,
    }
}

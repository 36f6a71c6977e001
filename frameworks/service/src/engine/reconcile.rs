//! The reconcile loop: what each app wants (launches, kills) given its
//! definition, its deployment and its tasks; status updates, health events
//! and reconciliation with the master; offer suppression.

use agora_proto::{AgentId, TaskId, v1};
use jiff::Timestamp;

use super::backoff::LaunchDelay;
use super::core::{Engine, Out};
use super::{ActionKind, Deployment, Effect, Now, StateChange, TaskRecord, TaskState};
use crate::app::{AppDefinition, AppId, KillSelection};
use crate::handle::{DeploymentId, ServiceEvent, TaskFailure};
use crate::health::{CheckTarget, HealthEvent};

/// What governs an app's tasks right now.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode<'a> {
    /// Keep `instances` tasks (any version counts; launches use this definition).
    Keep(&'a AppDefinition),
    /// A deployment step scales the app to this definition.
    Scale(&'a AppDefinition),
    /// A deployment step replaces every task with this definition's version.
    Restart(&'a AppDefinition),
    /// No tasks wanted: the app is being removed, not started yet, or unknown.
    Stop,
}

/// What an app needs now.
#[derive(Debug, Clone, Default)]
pub(super) struct AppPlan<'a> {
    /// The definition new tasks are launched with.
    pub def: Option<&'a AppDefinition>,
    /// How many tasks to launch (before backoff).
    pub launch: u32,
    /// Tasks to kill now.
    pub kill: Vec<TaskId>,
    /// Whether the app has reached what its deployment step asks.
    pub done: bool,
}

/// The version of a stored definition (every stored one has one).
pub(super) fn version_of(def: &AppDefinition) -> Timestamp {
    def.version.unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The rolling-update bounds of `def`: (tasks that must stay healthy, most
/// tasks alive at once). As Marathon: when the bounds leave no room to move
/// (e.g. 1 and 0), one task over capacity is allowed.
pub(super) fn bounds(def: &AppDefinition) -> (u32, u32) {
    let n = f64::from(def.instances);
    let strategy = def.upgrade_strategy;
    let min_healthy = (n * strategy.minimum_health_capacity.clamp(0.0, 1.0) - 1e-9)
        .ceil()
        .max(0.0) as u32;
    let max_capacity = (n * (1.0 + strategy.maximum_over_capacity.clamp(0.0, 1.0)) + 1e-9).floor() as u32;
    if def.instances > 0 && min_healthy >= max_capacity {
        (min_healthy, min_healthy + 1)
    } else {
        (min_healthy, max_capacity)
    }
}

/// Kill order for surplus tasks (first = killed first): other versions,
/// then tasks not running, not healthy, then by `killSelection`.
fn kill_order(def: &AppDefinition, tasks: &mut [&TaskRecord]) {
    let version = version_of(def);
    let by_age = def.kill_selection;
    tasks.sort_by_key(|t| {
        let nanos = t.staged_at.as_nanosecond();
        let age = match by_age {
            KillSelection::YoungestFirst => -nanos,
            KillSelection::OldestFirst => nanos,
        };
        (
            t.version == version,
            t.state == TaskState::Running,
            t.healthy == Some(true),
            age,
            t.task_id.clone(),
        )
    });
}

impl Engine {
    /// The deployment changing `app`, if any (there is at most one).
    pub(super) fn deployment_of(&self, app: &AppId) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.affected_apps.contains(app))
    }

    /// What governs `app`'s tasks now.
    pub(super) fn mode(&self, app: &AppId) -> Mode<'_> {
        let Some(d) = self.deployment_of(app) else {
            return self.apps.get(app).map_or(Mode::Stop, Mode::Keep);
        };
        let current: Vec<ActionKind> = d
            .current_actions()
            .iter()
            .filter(|a| &a.app == app)
            .map(|a| a.action)
            .collect();
        let strongest = [
            ActionKind::StopApplication,
            ActionKind::RestartApplication,
            ActionKind::ScaleApplication,
            ActionKind::StartApplication,
        ]
        .into_iter()
        .find(|k| current.contains(k));
        if let Some(kind) = strongest {
            return match (kind, d.target_of(app)) {
                (ActionKind::StopApplication, _) | (_, None) => Mode::Stop,
                (ActionKind::RestartApplication, Some(t)) => Mode::Restart(t),
                (ActionKind::ScaleApplication, Some(t)) => Mode::Scale(t),
                (ActionKind::StartApplication, Some(_)) => Mode::Stop,
            };
        }
        // Not in the running step: the app is as its last finished action left it.
        let done = d
            .steps
            .iter()
            .take(d.current_step)
            .flatten()
            .rfind(|a| &a.app == app);
        match done.map(|a| a.action) {
            None => d.original_of(app).map_or(Mode::Stop, Mode::Keep),
            Some(ActionKind::StartApplication) | Some(ActionKind::StopApplication) => Mode::Stop,
            Some(ActionKind::ScaleApplication) | Some(ActionKind::RestartApplication) => {
                d.target_of(app).map_or(Mode::Stop, Mode::Keep)
            }
        }
    }

    /// What `app` needs now.
    pub(super) fn plan(&self, app: &AppId) -> AppPlan<'_> {
        match self.mode(app) {
            Mode::Keep(def) => self.plan_scale(app, def),
            Mode::Scale(def) => self.plan_scale(app, def),
            Mode::Restart(def) => self.plan_restart(app, def),
            Mode::Stop => {
                let kill = self
                    .tasks_of(app)
                    .filter(|t| !t.kill_requested && !t.inactive)
                    .map(|t| t.task_id.clone())
                    .collect();
                AppPlan {
                    def: None,
                    launch: 0,
                    kill,
                    done: self.tasks_of(app).all(|t| t.inactive),
                }
            }
        }
    }

    fn plan_scale<'a>(&'a self, app: &AppId, def: &'a AppDefinition) -> AppPlan<'a> {
        let n = def.instances as usize;
        let has_checks = !def.health_checks.is_empty();
        let mut counted: Vec<&TaskRecord> = self.tasks_of(app).filter(|t| t.counts()).collect();
        let mut kill = Vec::new();
        if counted.len() > n {
            kill_order(def, &mut counted);
            let surplus = counted.len() - n;
            kill = counted.drain(..surplus).map(|t| t.task_id.clone()).collect();
        }
        let killing = self.tasks_of(app).any(|t| t.kill_requested && !t.inactive);
        let done = kill.is_empty()
            && !killing
            && counted.len() == n
            && counted
                .iter()
                .all(|t| t.is_ready(has_checks && t.version == version_of(def)));
        AppPlan {
            def: Some(def),
            launch: (n - counted.len().min(n)) as u32,
            kill,
            done,
        }
    }

    /// A rolling replacement: never fewer than `minimumHealthCapacity` ready
    /// tasks (not being killed), never more than `1 + maximumOverCapacity`
    /// times `instances` tasks alive (being killed included); new tasks must
    /// be ready (running, and healthy with health checks) before old ones go.
    fn plan_restart<'a>(&'a self, app: &AppId, def: &'a AppDefinition) -> AppPlan<'a> {
        let n = def.instances as usize;
        let version = version_of(def);
        let has_checks = !def.health_checks.is_empty();
        let (min_healthy, max_capacity) = bounds(def);
        let alive: Vec<&TaskRecord> = self.tasks_of(app).filter(|t| !t.inactive).collect();
        let killing = alive.iter().filter(|t| t.kill_requested).count();
        let mut new: Vec<&TaskRecord> = alive
            .iter()
            .copied()
            .filter(|t| t.counts() && t.version == version)
            .collect();
        let mut old: Vec<&TaskRecord> = alive
            .iter()
            .copied()
            .filter(|t| t.counts() && t.version != version)
            .collect();
        let ready = |t: &TaskRecord| t.is_ready(has_checks && t.version == version);
        let healthy = new.iter().filter(|t| ready(t)).count() + old.iter().filter(|t| ready(t)).count();
        let mut allowance = healthy.saturating_sub(min_healthy as usize);

        // Candidates in kill order: surplus new tasks, then old ones; tasks
        // that are not ready go first as killing them costs no capacity.
        let mut candidates: Vec<&TaskRecord> = Vec::new();
        if new.len() > n {
            kill_order(def, &mut new);
            candidates.extend(new.drain(..new.len() - n));
        }
        kill_order(def, &mut old);
        candidates.extend(old.iter().copied());
        candidates.sort_by_key(|t| ready(t));
        let mut kill = Vec::new();
        for t in candidates {
            if ready(t) {
                if allowance == 0 {
                    continue;
                }
                allowance -= 1;
            }
            kill.push(t.task_id.clone());
        }
        let want = n.saturating_sub(new.len());
        let room = (max_capacity as usize).saturating_sub(alive.len());
        let done = old.is_empty()
            && killing == 0
            && kill.is_empty()
            && new.len() == n
            && new.iter().all(|t| ready(t));
        AppPlan {
            def: Some(def),
            launch: want.min(room) as u32,
            kill,
            done,
        }
    }

    /// Every app the engine has to look after (apps, and apps of stray tasks).
    pub(super) fn app_ids(&self) -> Vec<AppId> {
        let mut ids: Vec<AppId> = self.apps.keys().cloned().collect();
        for d in &self.deployments {
            ids.extend(d.affected_apps.iter().cloned());
        }
        ids.extend(self.tasks.values().map(|t| t.app_id.clone()));
        ids.sort();
        ids.dedup();
        ids
    }

    /// Whether `app` has tasks to launch (backoff or not).
    pub(super) fn wants_launch(&self, app: &AppId) -> bool {
        self.plan(app).launch > 0
    }

    /// The launch backoff holding `def`'s launches at `now`, if any.
    pub(super) fn delay_holding(
        &self,
        def: &AppDefinition,
        now: tokio::time::Instant,
    ) -> Option<&LaunchDelay> {
        self.delays
            .get(&def.id)
            .filter(|d| d.version == def.version && d.holds(now))
    }

    /// Apps with tasks to launch now (not held by backoff): app, definition,
    /// count.
    pub(super) fn launchable(&self, now: tokio::time::Instant) -> Vec<(AppId, AppDefinition, u32)> {
        let mut out = Vec::new();
        for id in self.app_ids() {
            let plan = self.plan(&id);
            if let Some(def) = plan.def
                && plan.launch > 0
                && self.delay_holding(def, now).is_none()
            {
                out.push((id, def.clone(), plan.launch));
            }
        }
        out
    }

    /// Brings the engine's decisions up to date after an input: timers,
    /// deployment progress, kills, the queue and offer suppression.
    pub(super) fn converge(&mut self, now: Now, out: &mut Out, fresh: Option<&DeploymentId>) {
        self.timers(now, out);
        self.advance(now, out, fresh);
        self.enforce(out);
        self.track_queue(now);
        self.offer_mode(now, out);
        self.advance_due = fresh.is_some();
    }

    /// Unreachable tasks become inactive (replaced) or are expunged; launch
    /// backoffs are reset by tasks that stayed ready long enough.
    fn timers(&mut self, now: Now, out: &mut Out) {
        let ids: Vec<TaskId> = self.tasks.keys().cloned().collect();
        for id in ids {
            let Some(task) = self.tasks.get(&id) else { continue };
            let Some(at) = task.unreachable_at else { continue };
            let Some(strategy) = self.definition_of(&task.app_id).map(|d| d.unreachable_strategy) else {
                continue;
            };
            if strategy
                .expunge_after()
                .is_some_and(|after| at + after <= now.instant)
            {
                self.forget(&id, out);
                continue;
            }
            if !task.inactive
                && strategy
                    .inactive_after()
                    .is_some_and(|after| at + after <= now.instant)
                && let Some(task) = self.tasks.get_mut(&id)
            {
                task.inactive = true;
                out.change(StateChange::PutTask(task.clone()));
            }
        }
        let reset_after = self.config.backoff_reset_after;
        let stable: Vec<AppId> = self
            .delays
            .iter()
            .filter(|(app, delay)| {
                self.tasks_of(app).any(|t| {
                    Some(t.version) == delay.version
                        && t.counts()
                        && t.ready_since.is_some_and(|s| s + reset_after <= now.instant)
                })
            })
            .map(|(app, _)| app.clone())
            .collect();
        for app in stable {
            self.clear_delay(&app, out);
        }
    }

    /// Kills what the plans say must go.
    fn enforce(&mut self, out: &mut Out) {
        for app in self.app_ids() {
            let kill = self.plan(&app).kill;
            for id in kill {
                self.request_kill(&id, out);
            }
        }
    }

    /// Keeps `queued_since` and `unplaced` to the apps that wait for offers.
    fn track_queue(&mut self, now: Now) {
        let waiting: Vec<AppId> = self
            .app_ids()
            .into_iter()
            .filter(|a| self.wants_launch(a))
            .collect();
        self.queued_since.retain(|a, _| waiting.contains(a));
        self.unplaced.retain(|a, _| waiting.contains(a));
        for app in waiting {
            self.queued_since.entry(app).or_insert(now.wall);
        }
    }

    /// SUPPRESS when nothing can be launched; REVIVE when something can and
    /// offers were suppressed, or more can be launched than before (new work:
    /// REVIVE also clears the filters of offers declined earlier).
    fn offer_mode(&mut self, now: Now, out: &mut Out) {
        let launchable: u32 = self.launchable(now.instant).iter().map(|(_, _, n)| n).sum();
        if self.connected {
            if launchable == 0 {
                if self.suppressed != Some(true) {
                    out.effect(Effect::Suppress);
                    self.suppressed = Some(true);
                }
            } else if self.suppressed != Some(false) || launchable > self.launchable {
                out.effect(Effect::Revive);
                self.suppressed = Some(false);
            }
        }
        self.launchable = launchable;
    }

    /// Marks a task to be killed and asks the master to kill it.
    pub(super) fn request_kill(&mut self, id: &TaskId, out: &mut Out) {
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        if !task.kill_requested {
            task.kill_requested = true;
            task.ready_since = None;
            out.change(StateChange::PutTask(task.clone()));
        }
        out.effect(Effect::Kill {
            task_id: id.clone(),
            agent_id: task.agent_id.clone(),
        });
    }

    /// Forgets a task (its end was seen, or it was expunged).
    pub(super) fn forget(&mut self, id: &TaskId, out: &mut Out) -> Option<TaskRecord> {
        let task = self.tasks.remove(id)?;
        out.change(StateChange::DeleteTask(id.clone()));
        out.effect(Effect::UnwatchHealth(id.clone()));
        Some(task)
    }

    /// Starts health checks of a running task, if its app has any.
    pub(super) fn watch_health(&self, id: &TaskId, started_at: tokio::time::Instant, out: &mut Out) {
        let Some(task) = self.tasks.get(id) else { return };
        let def = self
            .versions
            .get(&task.app_id)
            .and_then(|v| v.get(&task.version))
            .or_else(|| self.definition_of(&task.app_id));
        let Some(def) = def else { return };
        if def.health_checks.is_empty() {
            return;
        }
        out.effect(Effect::WatchHealth {
            target: CheckTarget {
                task_id: task.task_id.clone(),
                app_id: task.app_id.clone(),
                version: task.version,
                host: task.host.clone(),
                ports: task.ports.clone(),
                env: task.env.clone(),
                started_at,
            },
            checks: def.health_checks.clone(),
        });
    }

    /// Whether tasks of `app` at `version` have health checks.
    fn has_checks(&self, app: &AppId, version: Timestamp) -> bool {
        self.versions
            .get(app)
            .and_then(|v| v.get(&version))
            .or_else(|| self.definition_of(app))
            .is_some_and(|d| !d.health_checks.is_empty())
    }

    /// A task status update (also the master's answers to reconciliation).
    pub(super) fn status(&mut self, now: Now, status: v1::TaskStatus, out: &mut Out) {
        let Ok(id) = TaskId::parse(&status.task_id) else {
            return;
        };
        let Some(state) = TaskState::from_proto(status.state()) else {
            return;
        };
        let agent_id = AgentId::parse(&status.agent_id).ok();
        if !self.tasks.contains_key(&id) {
            // A task the engine does not know (a phantom: launched before a
            // crash and never recorded, or expunged): it must not run.
            if !state.is_terminal() {
                out.effect(Effect::Kill {
                    task_id: id,
                    agent_id,
                });
            }
            return;
        }
        if state.is_terminal() {
            self.task_ended(now, &id, state, &status, out);
            return;
        }
        let Some(task) = self.tasks.get(&id) else { return };
        let has_checks = self.has_checks(&task.app_id, task.version);
        let before = task.clone();
        let mut came_back_inactive = false;
        let mut started = false;
        if let Some(task) = self.tasks.get_mut(&id) {
            if agent_id.is_some() && task.agent_id.is_none() {
                task.agent_id = agent_id;
            }
            task.state = state;
            if state == TaskState::Unreachable {
                if task.unreachable_since.is_none() {
                    task.unreachable_since = Some(now.wall);
                    task.unreachable_at = Some(now.instant);
                }
                task.ready_since = None;
            } else if task.unreachable_since.is_some() {
                task.unreachable_since = None;
                task.unreachable_at = None;
                came_back_inactive = task.inactive;
            }
            if state == TaskState::Running && task.started_at.is_none() {
                task.started_at = Some(now.wall);
                started = true;
            }
            if state == TaskState::Running
                && !has_checks
                && task.ready_since.is_none()
                && !task.kill_requested
            {
                task.ready_since = Some(now.instant);
            }
            if state != TaskState::Running {
                task.ready_since = None;
            }
        }
        let Some(task) = self.tasks.get(&id) else { return };
        if *task != before {
            out.change(StateChange::PutTask(task.clone()));
        }
        if task.state != before.state {
            out.publish(ServiceEvent::StatusUpdate {
                task: self.task_view(task),
                message: status.message.clone(),
                timestamp: now.wall,
            });
        }
        if started {
            self.watch_health(&id, now.instant, out);
        }
        if came_back_inactive {
            // Replaced while it was away: it must not run twice.
            self.request_kill(&id, out);
        }
    }

    fn task_ended(
        &mut self,
        now: Now,
        id: &TaskId,
        state: TaskState,
        status: &v1::TaskStatus,
        out: &mut Out,
    ) {
        let Some(mut task) = self.forget(id, out) else {
            return;
        };
        task.state = state;
        out.publish(ServiceEvent::StatusUpdate {
            task: self.task_view(&task),
            message: status.message.clone(),
            timestamp: now.wall,
        });
        if task.kill_requested {
            return;
        }
        let reconciled = status.reason() == v1::StatusReason::ReasonReconciliation;
        let failure = match state {
            TaskState::Failed | TaskState::Error => true,
            TaskState::Lost => !reconciled,
            _ => false,
        };
        if !failure {
            return;
        }
        self.failures.insert(
            task.app_id.clone(),
            TaskFailure {
                app_id: task.app_id.clone(),
                host: task.host.clone(),
                message: status.message.clone(),
                state: state.mesos_name().to_owned(),
                task_id: task.task_id.clone(),
                timestamp: now.wall,
                version: task.version,
            },
        );
        let Some(def) = self
            .versions
            .get(&task.app_id)
            .and_then(|v| v.get(&task.version))
            .or_else(|| self.definition_of(&task.app_id))
            .cloned()
        else {
            return;
        };
        let def = AppDefinition {
            version: Some(task.version),
            ..def
        };
        let delay = match self.delays.get(&task.app_id) {
            Some(d) if d.version == Some(task.version) => d.next(&def, now.instant),
            _ => LaunchDelay::first(&def, now.instant),
        };
        self.set_delay(&task.app_id, delay, now, out);
    }

    /// A health checker's finding.
    pub(super) fn health(&mut self, now: Now, event: HealthEvent, out: &mut Out) {
        match event {
            HealthEvent::Changed {
                task_id,
                app_id,
                version,
                alive,
            } => {
                let Some(task) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                let changed = task.healthy != Some(alive);
                task.healthy = Some(alive);
                if alive && task.state == TaskState::Running && !task.kill_requested {
                    task.ready_since.get_or_insert(now.instant);
                } else {
                    task.ready_since = None;
                }
                if changed {
                    out.publish(ServiceEvent::HealthStatusChanged {
                        app_id,
                        task_id,
                        version,
                        alive,
                        timestamp: now.wall,
                    });
                }
            }
            HealthEvent::Failed {
                task_id,
                app_id,
                check,
                ..
            } => {
                out.publish(ServiceEvent::FailedHealthCheck {
                    app_id,
                    task_id,
                    check,
                    timestamp: now.wall,
                });
            }
            HealthEvent::Unhealthy {
                task_id,
                app_id,
                version,
                cause,
            } => {
                let Some(task) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                if task.kill_requested {
                    return;
                }
                task.healthy = Some(false);
                let host = task.host.clone();
                self.request_kill(&task_id, out);
                out.publish(ServiceEvent::UnhealthyTaskKill {
                    app_id,
                    task_id,
                    version,
                    reason: cause,
                    host,
                    timestamp: now.wall,
                });
            }
        }
    }

    /// The driver (re-)subscribed: reconcile everything with the master.
    pub(super) fn subscribed(&mut self, framework_id: String, out: &mut Out) {
        self.framework_id = Some(framework_id);
        self.connected = true;
        self.suppressed = None;
        self.reconcile_due(out);
    }

    /// Explicit reconciliation of every known task, then implicit (the
    /// master answers for tasks the engine does not know, which are then
    /// killed); kills not yet confirmed are sent again.
    pub(super) fn reconcile_due(&mut self, out: &mut Out) {
        if !self.tasks.is_empty() {
            out.effect(Effect::Reconcile {
                tasks: self
                    .tasks
                    .values()
                    .map(|t| (t.task_id.clone(), t.agent_id.clone()))
                    .collect(),
            });
        }
        out.effect(Effect::Reconcile { tasks: Vec::new() });
        let killing: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| t.kill_requested)
            .map(|t| t.task_id.clone())
            .collect();
        for id in killing {
            self.request_kill(&id, out);
        }
    }
}

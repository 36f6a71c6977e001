//! Deployments: the commands that change apps, the steps they are carried
//! out in (dependency order), and their progress.

use std::collections::{BTreeMap, BTreeSet};

use agora_proto::TaskId;

use super::core::{Engine, Out};
use super::reconcile::version_of;
use super::{ActionKind, Command, Deployment, DeploymentStepAction, Now, Reply, StateChange};
use crate::app::{AppDefinition, AppId, VersionInfo};
use crate::handle::{DeploymentId, DeploymentRef, KillOutcome, ServiceError, ServiceEvent};

/// Marathon's message for a change refused because of running deployments.
const LOCKED: &str = "App is locked by one or more deployments. Override with the option '?force=true'. \
                      View details at '/v2/deployments/<DEPLOYMENT_ID>'.";

fn app_not_found(id: &AppId) -> ServiceError {
    ServiceError::NotFound(format!("App '{id}' does not exist"))
}

/// How a change treats an app's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Versioning {
    /// A new version, unless only `instances` changed (Marathon's rule).
    Auto,
    /// Always a new version (restart).
    Restart,
    /// Keep the definition's own version (rollback to a stored definition).
    Keep,
}

impl Engine {
    /// Carries out a command.
    pub(super) fn command(
        &mut self,
        now: Now,
        command: Command,
        out: &mut Out,
    ) -> Result<Reply, ServiceError> {
        match command {
            Command::CreateApp(app) => {
                if self.apps.contains_key(&app.id) {
                    return Err(ServiceError::Conflict {
                        message: format!("An app with id [{}] already exists.", app.id),
                        deployments: Vec::new(),
                    });
                }
                let id = app.id.clone();
                self.deploy(now, vec![(id, Some(app))], Versioning::Auto, false, out)
                    .map(Reply::Deployment)
            }
            Command::UpdateApps { apps, force } => {
                let mut changes: BTreeMap<AppId, AppDefinition> = BTreeMap::new();
                for app in apps {
                    changes.insert(app.id.clone(), app);
                }
                let changes = changes.into_iter().map(|(id, app)| (id, Some(app))).collect();
                self.deploy(now, changes, Versioning::Auto, force, out)
                    .map(Reply::Deployment)
            }
            Command::RestartApp { id, force } => {
                let app = self.apps.get(&id).cloned().ok_or_else(|| app_not_found(&id))?;
                self.deploy(now, vec![(id, Some(app))], Versioning::Restart, force, out)
                    .map(Reply::Deployment)
            }
            Command::DeleteApps { ids, force } => {
                if let Some(missing) = ids.iter().find(|id| !self.apps.contains_key(id)) {
                    return Err(app_not_found(missing));
                }
                let changes = ids.into_iter().map(|id| (id, None)).collect();
                self.deploy(now, changes, Versioning::Auto, force, out)
                    .map(Reply::Deployment)
            }
            Command::KillTasks {
                ids,
                scale,
                wipe,
                force,
            } => self
                .kill_tasks(now, ids, scale, wipe, force, out)
                .map(Reply::Killed),
            Command::CancelDeployment { id, force } => {
                self.cancel(now, &id, force, out).map(Reply::Cancelled)
            }
            Command::ResetDelay(id) => {
                if !self.apps.contains_key(&id) {
                    return Err(app_not_found(&id));
                }
                self.clear_delay(&id, out);
                Ok(Reply::Done)
            }
        }
    }

    /// The running deployments that change any of `apps`.
    fn conflicting(&self, apps: &BTreeSet<AppId>) -> Vec<DeploymentId> {
        self.deployments
            .iter()
            .filter(|d| d.affected_apps.iter().any(|a| apps.contains(a)))
            .map(|d| d.id.clone())
            .collect()
    }

    /// Drops a deployment without undoing anything it did.
    fn drop_deployment(&mut self, now: Now, id: &DeploymentId, out: &mut Out) -> Option<Deployment> {
        let index = self.deployments.iter().position(|d| &d.id == id)?;
        let d = self.deployments.remove(index);
        out.change(StateChange::DeleteDeployment(d.id.clone()));
        out.publish(ServiceEvent::DeploymentFailed {
            plan: self.deployment_view(&d),
            timestamp: now.wall,
        });
        Some(d)
    }

    /// Starts one deployment that brings each app to its new definition
    /// (`None`: removed). Refuses with a conflict when a running deployment
    /// changes any of them, unless `force` (which supersedes it).
    fn deploy(
        &mut self,
        now: Now,
        changes: Vec<(AppId, Option<AppDefinition>)>,
        versioning: Versioning,
        force: bool,
        out: &mut Out,
    ) -> Result<DeploymentRef, ServiceError> {
        let affected: BTreeSet<AppId> = changes.iter().map(|(id, _)| id.clone()).collect();
        let conflicting = self.conflicting(&affected);
        if !conflicting.is_empty() {
            if !force {
                return Err(ServiceError::Conflict {
                    message: LOCKED.to_owned(),
                    deployments: conflicting,
                });
            }
            for id in &conflicting {
                self.drop_deployment(now, id, out);
            }
        }
        let version = self.next_version(now, affected.iter());
        let original: Vec<AppDefinition> = affected
            .iter()
            .filter_map(|id| self.apps.get(id).cloned())
            .collect();
        let mut target = Vec::new();
        let mut restart = BTreeSet::new();
        for (id, new) in changes {
            let Some(mut new) = new else { continue };
            new.id = id.clone();
            let old = self.apps.get(&id);
            match (versioning, old) {
                (Versioning::Keep, _) if new.version.is_some() => {}
                (Versioning::Auto, Some(old)) if old.is_scale_only_change(&new) => {
                    new.version = old.version;
                    new.version_info = Some(VersionInfo {
                        last_scaling_at: version,
                        last_config_change_at: old
                            .version_info
                            .map_or(version_of(old), |v| v.last_config_change_at),
                    });
                }
                _ => {
                    new.version = Some(version);
                    new.version_info = Some(VersionInfo {
                        last_scaling_at: version,
                        last_config_change_at: version,
                    });
                }
            }
            if versioning == Versioning::Restart {
                restart.insert(id.clone());
            }
            if old.and_then(|o| o.version) != new.version {
                self.clear_delay(&id, out);
            }
            let new_version = version_of(&new);
            if let std::collections::btree_map::Entry::Vacant(slot) =
                self.versions.entry(id.clone()).or_default().entry(new_version)
            {
                slot.insert(new.clone());
                out.change(StateChange::PutVersion(new.clone()));
            }
            self.apps.insert(id.clone(), new.clone());
            out.change(StateChange::PutApp(new.clone()));
            target.push(new);
        }
        let steps = self.plan_steps(&original, &target, &restart);
        let deployment = Deployment {
            id: DeploymentId::generate(),
            version,
            affected_apps: affected.into_iter().collect(),
            original,
            target,
            steps,
            current_step: 0,
        };
        out.change(StateChange::PutDeployment(deployment.clone()));
        out.publish(ServiceEvent::DeploymentInfo {
            plan: self.deployment_view(&deployment),
            current_step: 1,
            timestamp: now.wall,
        });
        let reference = DeploymentRef {
            id: deployment.id.clone(),
            version,
        };
        self.deployments.push(deployment);
        Ok(reference)
    }

    /// The longest chain of dependencies below each app (0: none), over
    /// every definition the engine knows plus `extra`. Cycles are cut.
    fn depths(&self, extra: &[AppDefinition]) -> BTreeMap<AppId, usize> {
        let mut deps: BTreeMap<AppId, Vec<AppId>> = BTreeMap::new();
        for app in self.apps.values().chain(extra.iter()) {
            deps.insert(app.id.clone(), app.dependencies.clone());
        }
        fn depth(
            id: &AppId,
            deps: &BTreeMap<AppId, Vec<AppId>>,
            memo: &mut BTreeMap<AppId, usize>,
            visiting: &mut BTreeSet<AppId>,
        ) -> usize {
            if let Some(d) = memo.get(id) {
                return *d;
            }
            if !visiting.insert(id.clone()) {
                return 0;
            }
            let d = deps
                .get(id)
                .map(|ds| {
                    ds.iter()
                        .map(|dep| depth(dep, deps, memo, visiting) + 1)
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0);
            visiting.remove(id);
            memo.insert(id.clone(), d);
            d
        }
        let mut memo = BTreeMap::new();
        let ids: Vec<AppId> = deps.keys().cloned().collect();
        for id in ids {
            depth(&id, &deps, &mut memo, &mut BTreeSet::new());
        }
        memo
    }

    /// Marathon's plan: stop removed apps (dependents first), start new apps
    /// (with no tasks), then scale or restart by dependency level
    /// (dependencies first).
    fn plan_steps(
        &self,
        original: &[AppDefinition],
        target: &[AppDefinition],
        restart: &BTreeSet<AppId>,
    ) -> Vec<Vec<DeploymentStepAction>> {
        let depths = self.depths(target);
        let level = |id: &AppId| depths.get(id).copied().unwrap_or(0);
        let mut steps: Vec<Vec<DeploymentStepAction>> = Vec::new();

        let mut stops: BTreeMap<usize, Vec<DeploymentStepAction>> = BTreeMap::new();
        for app in original.iter().filter(|o| !target.iter().any(|t| t.id == o.id)) {
            stops
                .entry(level(&app.id))
                .or_default()
                .push(DeploymentStepAction {
                    action: ActionKind::StopApplication,
                    app: app.id.clone(),
                });
        }
        steps.extend(stops.into_values().rev());

        let starts: Vec<DeploymentStepAction> = target
            .iter()
            .filter(|t| !original.iter().any(|o| o.id == t.id))
            .map(|t| DeploymentStepAction {
                action: ActionKind::StartApplication,
                app: t.id.clone(),
            })
            .collect();
        steps.push(starts);

        let mut levels: BTreeMap<usize, Vec<DeploymentStepAction>> = BTreeMap::new();
        for new in target {
            let action = match original.iter().find(|o| o.id == new.id) {
                None => ActionKind::ScaleApplication,
                Some(old) if restart.contains(&new.id) || old.version != new.version => {
                    ActionKind::RestartApplication
                }
                Some(_) => ActionKind::ScaleApplication,
            };
            levels
                .entry(level(&new.id))
                .or_default()
                .push(DeploymentStepAction {
                    action,
                    app: new.id.clone(),
                });
        }
        steps.extend(levels.into_values());
        steps.retain(|s| !s.is_empty());
        steps
    }

    /// Kills tasks; with `scale`, lowers their apps' instances in one
    /// deployment.
    fn kill_tasks(
        &mut self,
        now: Now,
        ids: Vec<TaskId>,
        scale: bool,
        wipe: bool,
        force: bool,
        out: &mut Out,
    ) -> Result<KillOutcome, ServiceError> {
        let known: Vec<TaskId> = ids
            .iter()
            .filter(|id| self.tasks.contains_key(*id))
            .cloned()
            .collect();
        if known.is_empty() {
            if let Some(id) = ids.first() {
                return Err(ServiceError::NotFound(format!("Task '{id}' does not exist")));
            }
            return Ok(KillOutcome {
                killed: Vec::new(),
                deployment: None,
            });
        }
        let mut per_app: BTreeMap<AppId, u32> = BTreeMap::new();
        for id in &known {
            if let Some(t) = self.tasks.get(id)
                && t.counts()
            {
                *per_app.entry(t.app_id.clone()).or_default() += 1;
            }
        }
        let mut deployment = None;
        if scale {
            let affected: BTreeSet<AppId> = per_app
                .keys()
                .filter(|a| self.apps.contains_key(*a))
                .cloned()
                .collect();
            let conflicting = self.conflicting(&affected);
            if !conflicting.is_empty() && !force {
                return Err(ServiceError::Conflict {
                    message: LOCKED.to_owned(),
                    deployments: conflicting,
                });
            }
        }
        let mut killed = Vec::new();
        for id in &known {
            self.request_kill(id, out);
            if let Some(t) = self.tasks.get(id) {
                killed.push(self.task_view(t));
            }
            if wipe {
                self.forget(id, out);
            }
        }
        if scale {
            let changes: Vec<(AppId, Option<AppDefinition>)> = per_app
                .into_iter()
                .filter_map(|(app, n)| {
                    let mut def = self.apps.get(&app)?.clone();
                    def.instances = def.instances.saturating_sub(n);
                    Some((app, Some(def)))
                })
                .collect();
            if !changes.is_empty() {
                deployment = Some(self.deploy(now, changes, Versioning::Auto, true, out)?);
            }
        }
        Ok(KillOutcome { killed, deployment })
    }

    /// Cancels a deployment: `force` drops it; otherwise a new deployment
    /// brings its apps back to how they were before it.
    fn cancel(
        &mut self,
        now: Now,
        id: &DeploymentId,
        force: bool,
        out: &mut Out,
    ) -> Result<Option<DeploymentRef>, ServiceError> {
        let Some(d) = self.drop_deployment(now, id, out) else {
            return Err(ServiceError::NotFound(format!(
                "DeploymentPlan {id} does not exist"
            )));
        };
        if force {
            return Ok(None);
        }
        let changes = d
            .affected_apps
            .iter()
            .filter(|app| self.apps.contains_key(*app) || d.original_of(app).is_some())
            .map(|app| (app.clone(), d.original_of(app).cloned()))
            .collect();
        self.deploy(now, changes, Versioning::Keep, false, out).map(Some)
    }

    /// Moves deployments on whose running step is done. A deployment created
    /// in this step (`fresh`) may move on but does not finish before the
    /// next step: deployments never finish inside the request that started
    /// them.
    pub(super) fn advance(&mut self, now: Now, out: &mut Out, fresh: Option<&DeploymentId>) {
        let ids: Vec<DeploymentId> = self.deployments.iter().map(|d| d.id.clone()).collect();
        for id in ids {
            while let Some(d) = self.deployments.iter().find(|d| d.id == id) {
                if d.current_step >= d.steps.len() {
                    if Some(&id) != fresh {
                        self.finish(now, &id, out);
                    }
                    break;
                }
                let actions: Vec<DeploymentStepAction> = d.current_actions().to_vec();
                if !actions.iter().all(|a| self.action_done(a)) {
                    break;
                }
                for a in &actions {
                    if a.action == ActionKind::StopApplication {
                        self.remove_app(now, &a.app, out);
                    }
                }
                let Some(d) = self.deployments.iter_mut().find(|d| d.id == id) else {
                    break;
                };
                d.current_step += 1;
                let d = d.clone();
                out.change(StateChange::PutDeployment(d.clone()));
                let view = self.deployment_view(&d);
                out.publish(ServiceEvent::DeploymentStepSuccess {
                    plan: view.clone(),
                    current_step: d.current_step as u32,
                    timestamp: now.wall,
                });
                if d.current_step < d.steps.len() {
                    out.publish(ServiceEvent::DeploymentInfo {
                        plan: view,
                        current_step: d.current_step as u32 + 1,
                        timestamp: now.wall,
                    });
                }
            }
        }
    }

    fn action_done(&self, action: &DeploymentStepAction) -> bool {
        match action.action {
            ActionKind::StartApplication => true,
            ActionKind::ScaleApplication | ActionKind::RestartApplication | ActionKind::StopApplication => {
                self.plan(&action.app).done
            }
        }
    }

    fn finish(&mut self, now: Now, id: &DeploymentId, out: &mut Out) {
        let Some(index) = self.deployments.iter().position(|d| &d.id == id) else {
            return;
        };
        let d = self.deployments.remove(index);
        out.change(StateChange::DeleteDeployment(d.id.clone()));
        out.publish(ServiceEvent::DeploymentSuccess {
            plan: self.deployment_view(&d),
            timestamp: now.wall,
        });
    }

    /// Removes an app whose tasks are gone (the end of StopApplication).
    fn remove_app(&mut self, now: Now, id: &AppId, out: &mut Out) {
        let leftovers: Vec<TaskId> = self.tasks_of(id).map(|t| t.task_id.clone()).collect();
        for task in leftovers {
            self.forget(&task, out);
        }
        self.apps.remove(id);
        self.versions.remove(id);
        self.clear_delay(id, out);
        self.failures.remove(id);
        self.queued_since.remove(id);
        self.unplaced.remove(id);
        out.change(StateChange::DeleteApp(id.clone()));
        out.publish(ServiceEvent::AppTerminated {
            app_id: id.clone(),
            timestamp: now.wall,
        });
    }
}

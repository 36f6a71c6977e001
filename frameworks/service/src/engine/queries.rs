//! Reads of the engine's state, in the handle's view types.
//!
//! Health: the engine keeps the last [`crate::health::HealthEvent::Changed`]
//! per task (for deployments and the healthy/unhealthy counts); the detailed
//! per-check results (`TaskView::health`) are left empty here and merged in
//! by the runtime from its `HealthMonitor`.

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use super::core::Engine;
use super::{Deployment, TaskRecord, TaskState};
use crate::app::{AppDefinition, AppId};
use crate::handle::{AppStatus, DeploymentView, QueueEntry, ServiceError, TaskView};

impl Engine {
    /// The view of one task.
    pub(super) fn task_view(&self, task: &TaskRecord) -> TaskView {
        TaskView {
            id: task.task_id.clone(),
            app_id: task.app_id.clone(),
            agent_id: task.agent_id.clone(),
            host: task.host.clone(),
            ports: task.ports.clone(),
            state: task.state.mesos_name().to_owned(),
            staged_at: task.staged_at,
            started_at: task.started_at,
            version: task.version,
            health: Vec::new(),
            ip_addresses: Vec::new(),
        }
    }

    /// The view of one deployment.
    pub(super) fn deployment_view(&self, d: &Deployment) -> DeploymentView {
        let total = d.steps.len() as u32;
        DeploymentView {
            id: d.id.clone(),
            version: d.version,
            affected_apps: d.affected_apps.clone(),
            steps: d
                .steps
                .iter()
                .map(|s| s.iter().map(|a| a.view()).collect())
                .collect(),
            current_actions: d.current_actions().iter().map(|a| a.view()).collect(),
            current_step: (d.current_step as u32 + 1).min(total.max(1)),
            total_steps: total,
            original: d.original.clone(),
            target: d.target.clone(),
        }
    }

    fn status_of(&self, app: &AppDefinition) -> AppStatus {
        let tasks: Vec<&TaskRecord> = self.tasks_of(&app.id).collect();
        let count = |f: &dyn Fn(&TaskRecord) -> bool| tasks.iter().filter(|t| f(t)).count() as u32;
        AppStatus {
            app: app.clone(),
            tasks: tasks.iter().map(|t| self.task_view(t)).collect(),
            tasks_staged: count(&|t| matches!(t.state, TaskState::Staging | TaskState::Starting)),
            tasks_running: count(&|t| t.state == TaskState::Running),
            tasks_healthy: count(&|t| t.state == TaskState::Running && t.healthy == Some(true)),
            tasks_unhealthy: count(&|t| t.state == TaskState::Running && t.healthy == Some(false)),
            deployments: self
                .deployments
                .iter()
                .filter(|d| d.affected_apps.contains(&app.id))
                .map(|d| d.id.clone())
                .collect(),
            last_task_failure: self.failures.get(&app.id).cloned(),
        }
    }

    /// Every app with its tasks, sorted by id.
    pub fn apps(&self) -> Vec<AppStatus> {
        self.apps.values().map(|a| self.status_of(a)).collect()
    }

    /// One app with its tasks.
    pub fn app(&self, id: &AppId) -> Result<AppStatus, ServiceError> {
        self.apps
            .get(id)
            .map(|a| self.status_of(a))
            .ok_or_else(|| ServiceError::NotFound(format!("App '{id}' does not exist")))
    }

    /// The tasks of one app, or of every app.
    pub fn tasks(&self, app: Option<&AppId>) -> Vec<TaskView> {
        self.tasks
            .values()
            .filter(|t| app.is_none_or(|a| &t.app_id == a))
            .map(|t| self.task_view(t))
            .collect()
    }

    /// The engine's record of a task.
    pub fn task(&self, id: &agora_proto::TaskId) -> Option<&TaskRecord> {
        self.tasks.get(id)
    }

    /// The running deployments, oldest first.
    pub fn deployments(&self) -> Vec<DeploymentView> {
        self.deployments.iter().map(|d| self.deployment_view(d)).collect()
    }

    /// Apps with instances waiting for offers, as of the last step.
    pub fn queue(&self) -> Vec<QueueEntry> {
        match self.last_now {
            Some(now) => self.queue_at(now.instant),
            None => Vec::new(),
        }
    }

    /// Apps with instances waiting for offers, as of `now` (for the backoff
    /// time left).
    pub fn queue_at(&self, now: Instant) -> Vec<QueueEntry> {
        let mut entries = Vec::new();
        for id in self.app_ids() {
            let plan = self.plan(&id);
            let Some(def) = plan.def else { continue };
            if plan.launch == 0 {
                continue;
            }
            let left = self
                .delay_holding(def, now)
                .map_or(Duration::ZERO, |d| d.left(now));
            let since = self
                .queued_since
                .get(&id)
                .copied()
                .unwrap_or(Timestamp::UNIX_EPOCH);
            entries.push(QueueEntry {
                app: self.apps.get(&id).unwrap_or(def).clone(),
                count: plan.launch,
                delay_seconds_left: left.as_secs_f64().ceil() as u64,
                overdue: left.is_zero(),
                since,
                unplaced_reasons: self
                    .unplaced
                    .get(&id)
                    .map(|r| r.iter().cloned().collect())
                    .unwrap_or_default(),
            });
        }
        entries
    }

    /// The stored versions of an app, newest first.
    pub fn app_versions(&self, id: &AppId) -> Result<Vec<Timestamp>, ServiceError> {
        if !self.apps.contains_key(id) {
            return Err(ServiceError::NotFound(format!("App '{id}' does not exist")));
        }
        Ok(self
            .versions
            .get(id)
            .map(|v| v.keys().rev().copied().collect())
            .unwrap_or_default())
    }

    /// One stored version of an app.
    pub fn app_version(&self, id: &AppId, version: Timestamp) -> Result<AppDefinition, ServiceError> {
        self.versions
            .get(id)
            .and_then(|v| v.get(&version))
            .cloned()
            .ok_or_else(|| ServiceError::NotFound(format!("App '{id}' does not exist in version {version}")))
    }

    /// The framework id, once subscribed.
    pub fn framework_id(&self) -> Option<&str> {
        self.framework_id.as_deref()
    }

    /// The time of the last step.
    pub fn last_now(&self) -> Option<super::Now> {
        self.last_now
    }
}

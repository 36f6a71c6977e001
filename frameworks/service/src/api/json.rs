//! Rendering: the framework's views as Marathon 1.x JSON, field for field.
//!
//! Every object here is one the `marathon` Python client (0.13) parses with
//! a fixed list of accepted fields (`MarathonApp`, `MarathonTask`,
//! `MarathonDeployment`, `MarathonQueueItem`, `MarathonGroup`,
//! `MarathonInfo`, the event classes), so nothing outside those lists is
//! emitted; the tests pin the lists.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::params::Embed;
use crate::app::{AppDefinition, AppId, timestamp_string};
use crate::handle::{
    AppStatus, DeploymentAction, DeploymentRef, DeploymentView, QueueEntry, ServiceEvent, ServiceInfo,
    TaskFailure, TaskView,
};

fn ts(t: jiff::Timestamp) -> Value {
    Value::String(timestamp_string(t))
}

/// `{"deploymentId": …, "version": …}`: what every change answers with.
pub fn deployment_result(deployment: &DeploymentRef) -> Value {
    json!({
        "deploymentId": deployment.id.as_str(),
        "version": ts(deployment.version),
    })
}

/// An app object: the definition's fields, plus what `embed` asks for.
pub fn app(status: &AppStatus, embed: Embed, now: jiff::Timestamp) -> Value {
    let mut value = status.app.to_json();
    let Some(object) = value.as_object_mut() else {
        return value;
    };
    if embed.counts {
        object.insert("tasksStaged".into(), json!(status.tasks_staged));
        object.insert("tasksRunning".into(), json!(status.tasks_running));
        object.insert("tasksHealthy".into(), json!(status.tasks_healthy));
        object.insert("tasksUnhealthy".into(), json!(status.tasks_unhealthy));
    }
    if embed.deployments {
        let ids: Vec<Value> = status
            .deployments
            .iter()
            .map(|d| json!({"id": d.as_str()}))
            .collect();
        object.insert("deployments".into(), Value::Array(ids));
    }
    if embed.readiness {
        object.insert("readinessCheckResults".into(), json!([]));
    }
    if embed.tasks {
        let tasks: Vec<Value> = status.tasks.iter().map(|t| task(t, Some(&status.app))).collect();
        object.insert("tasks".into(), Value::Array(tasks));
    }
    if embed.last_task_failure
        && let Some(failure) = &status.last_task_failure
    {
        object.insert("lastTaskFailure".into(), task_failure(failure));
    }
    if embed.task_stats {
        object.insert("taskStats".into(), task_stats(status, now));
    }
    value
}

/// The service ports of an app: its port definitions' ports, or its
/// container port mappings' service ports.
pub fn service_ports(app: &AppDefinition) -> Vec<u16> {
    let mappings = app.port_mappings();
    if mappings.is_empty() {
        app.port_definitions.iter().map(|p| p.port).collect()
    } else {
        mappings.iter().map(|m| m.service_port).collect()
    }
}

fn ip_address(address: &str) -> Value {
    let protocol = if address.contains(':') { "IPv6" } else { "IPv4" };
    json!({"ipAddress": address, "protocol": protocol})
}

/// A task object; `app` supplies the service ports and role when known.
pub fn task(task: &TaskView, app: Option<&AppDefinition>) -> Value {
    let mut object = Map::new();
    object.insert("appId".into(), json!(task.app_id.as_str()));
    object.insert(
        "healthCheckResults".into(),
        serde_json::to_value(&task.health).unwrap_or_else(|_| json!([])),
    );
    object.insert("host".into(), json!(task.host));
    object.insert("id".into(), json!(task.id.as_str()));
    object.insert(
        "ipAddresses".into(),
        Value::Array(task.ip_addresses.iter().map(|a| ip_address(a)).collect()),
    );
    object.insert("ports".into(), json!(task.ports));
    object.insert(
        "servicePorts".into(),
        json!(app.map(service_ports).unwrap_or_default()),
    );
    if let Some(agent) = &task.agent_id {
        object.insert("slaveId".into(), json!(agent.as_str()));
    }
    object.insert("state".into(), json!(task.state));
    object.insert("stagedAt".into(), ts(task.staged_at));
    if let Some(started) = task.started_at {
        object.insert("startedAt".into(), ts(started));
    }
    object.insert("version".into(), ts(task.version));
    object.insert("localVolumes".into(), json!([]));
    if let Some(app) = app {
        object.insert("role".into(), json!(app.role.as_deref().unwrap_or("*")));
    }
    Value::Object(object)
}

/// `lastTaskFailure`.
pub fn task_failure(failure: &TaskFailure) -> Value {
    json!({
        "appId": failure.app_id.as_str(),
        "host": failure.host,
        "message": failure.message,
        "state": failure.state,
        "taskId": failure.task_id.as_str(),
        "timestamp": ts(failure.timestamp),
        "version": ts(failure.version),
    })
}

fn is_healthy(task: &TaskView) -> bool {
    !task.health.is_empty() && task.health.iter().all(|h| h.alive)
}

fn is_unhealthy(task: &TaskView) -> bool {
    task.health.iter().any(|h| !h.alive)
}

/// One `taskStats` group (`{"stats": {"counts": …, "lifeTime": …}}`), or
/// `None` without tasks, as Marathon leaves empty groups out.
fn stats_of(tasks: &[&TaskView], now: jiff::Timestamp) -> Option<Value> {
    if tasks.is_empty() {
        return None;
    }
    let count = |pred: &dyn Fn(&TaskView) -> bool| tasks.iter().filter(|t| pred(t)).count();
    let counts = json!({
        "staged": count(&|t| t.state == "TASK_STAGING" || t.state == "TASK_STARTING"),
        "running": count(&|t| t.state == "TASK_RUNNING"),
        "healthy": count(&is_healthy),
        "unhealthy": count(&is_unhealthy),
    });
    let mut lives: Vec<f64> = tasks
        .iter()
        .filter_map(|t| t.started_at)
        .map(|started| (now.as_millisecond() - started.as_millisecond()).max(0) as f64 / 1000.0)
        .collect();
    let mut stats = json!({ "counts": counts });
    if !lives.is_empty() {
        lives.sort_by(f64::total_cmp);
        let average = lives.iter().sum::<f64>() / lives.len() as f64;
        let mid = lives.len() / 2;
        let median = if lives.len().is_multiple_of(2) {
            (lives[mid - 1] + lives[mid]) / 2.0
        } else {
            lives[mid]
        };
        stats["lifeTime"] = json!({"averageSeconds": average, "medianSeconds": median});
    }
    Some(json!({ "stats": stats }))
}

/// `taskStats`: counts and lifetimes of all tasks, of those on the current
/// version, those on older versions, and those started since the last scale.
pub fn task_stats(status: &AppStatus, now: jiff::Timestamp) -> Value {
    let all: Vec<&TaskView> = status.tasks.iter().collect();
    let current = status.app.version;
    let latest: Vec<&TaskView> = all
        .iter()
        .copied()
        .filter(|t| Some(t.version) == current)
        .collect();
    let outdated: Vec<&TaskView> = all
        .iter()
        .copied()
        .filter(|t| Some(t.version) != current)
        .collect();
    let since_scale: Vec<&TaskView> = match status.app.version_info.map(|v| v.last_scaling_at) {
        Some(scaled) => all.iter().copied().filter(|t| t.staged_at >= scaled).collect(),
        None => all.clone(),
    };
    let mut object = Map::new();
    for (name, tasks) in [
        ("startedAfterLastScaling", since_scale),
        ("withLatestConfig", latest),
        ("withOutdatedConfig", outdated),
        ("totalSummary", all),
    ] {
        if let Some(stats) = stats_of(&tasks, now) {
            object.insert(name.into(), stats);
        }
    }
    Value::Object(object)
}

fn action(action: &DeploymentAction) -> Value {
    json!({"action": action.action, "app": action.app.as_str()})
}

/// One deployment step, `{"actions": [{"action", "app"}]}`.
pub fn step(actions: &[DeploymentAction]) -> Value {
    json!({"actions": actions.iter().map(action).collect::<Vec<_>>()})
}

/// A running deployment (`GET /v2/deployments` item).
pub fn deployment(d: &DeploymentView) -> Value {
    json!({
        "id": d.id.as_str(),
        "version": ts(d.version),
        "affectedApps": d.affected_apps.iter().map(AppId::as_str).collect::<Vec<_>>(),
        "affectedPods": [],
        "steps": d.steps.iter().map(|s| step(s)).collect::<Vec<_>>(),
        "currentActions": d.current_actions.iter().map(|a| json!({
            "action": a.action,
            "app": a.app.as_str(),
            "readinessCheckResults": [],
        })).collect::<Vec<_>>(),
        "currentStep": d.current_step,
        "totalSteps": d.total_steps,
    })
}

/// A root group holding `apps` (a plan's `original`/`target`).
fn plan_group(apps: &[AppDefinition], version: jiff::Timestamp) -> Value {
    json!({
        "id": "/",
        "apps": apps.iter().map(AppDefinition::to_json).collect::<Vec<_>>(),
        "groups": [],
        "pods": [],
        "dependencies": [],
        "version": ts(version),
    })
}

/// A deployment plan as events carry it: `id`, `version`, `original` and
/// `target` (root groups of the affected apps before and after) and `steps`.
pub fn plan(d: &DeploymentView) -> Value {
    json!({
        "id": d.id.as_str(),
        "version": ts(d.version),
        "original": plan_group(&d.original, d.version),
        "target": plan_group(&d.target, d.version),
        "steps": d.steps.iter().map(|s| step(s)).collect::<Vec<_>>(),
    })
}

/// The step `current` (counted from 1) of a plan, as an event's `currentStep`.
fn current_step(d: &DeploymentView, current: u32) -> Value {
    let index = (current as usize).saturating_sub(1);
    d.steps.get(index).map_or_else(|| step(&[]), |s| step(s))
}

/// `GET /v2/queue`: `{"queue": [...]}`.
pub fn queue(entries: &[QueueEntry], embed_last_unused_offers: bool) -> Value {
    let items: Vec<Value> = entries
        .iter()
        .map(|entry| {
            let reasons: Vec<Value> = entry
                .unplaced_reasons
                .iter()
                .map(|r| json!({"reason": r, "declined": 1, "processed": 1}))
                .collect();
            let mut item = json!({
                "app": entry.app.to_json(),
                "count": entry.count,
                "delay": {"timeLeftSeconds": entry.delay_seconds_left, "overdue": entry.overdue},
                "since": ts(entry.since),
                "processedOffersSummary": {
                    "processedOffersCount": entry.unplaced_reasons.len(),
                    "unusedOffersCount": entry.unplaced_reasons.len(),
                    "rejectSummaryLastOffers": reasons,
                },
            });
            if embed_last_unused_offers {
                item["lastUnusedOffers"] = json!([]);
            }
            item
        })
        .collect();
    json!({ "queue": items })
}

/// The host and port of a `host:port` address.
fn split_host_port(address: &str) -> (String, Option<u16>) {
    match address.rsplit_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(port) => (host.trim_matches(['[', ']']).to_owned(), Some(port)),
            Err(_) => (address.to_owned(), None),
        },
        None => (address.to_owned(), None),
    }
}

/// `GET /v2/info`.
pub fn info(info: &ServiceInfo) -> Value {
    let (hostname, port) = split_host_port(&info.leader);
    json!({
        "name": info.name,
        "version": info.version,
        "buildref": format!("agora-{}", info.version),
        "elected": !info.leader.is_empty(),
        "leader": info.leader,
        "frameworkId": info.framework_id,
        "marathon_config": {
            "master": info.master,
            "framework_name": info.name,
            "hostname": hostname,
            "checkpoint": true,
            "ha": false,
            "features": [],
        },
        "zookeeper_config": {},
        "http_config": {"http_port": port.unwrap_or(0), "https_port": 0},
        "event_subscriber": null,
    })
}

/// Every group id implied by the app ids (every ancestor path, `/` included).
fn group_ids<'a>(apps: impl Iterator<Item = &'a AppId>) -> BTreeSet<String> {
    let mut ids = BTreeSet::from(["/".to_owned()]);
    for id in apps {
        let mut path = String::new();
        let segments: Vec<&str> = id.segments().collect();
        for segment in &segments[..segments.len().saturating_sub(1)] {
            path.push('/');
            path.push_str(segment);
            ids.insert(path.clone());
        }
    }
    ids
}

/// The parent of a group id (`/shop` for `/shop/eu`, `/` for `/shop`).
fn parent_group(id: &str) -> String {
    match id.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => id[..i].to_owned(),
    }
}

/// True when `app` lies inside group `group` (at any depth).
pub fn in_group(app: &AppId, group: &str) -> bool {
    group == "/"
        || app
            .as_str()
            .strip_prefix(group)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// True when `group` is a group of this tree (the root, or an ancestor of an app).
pub fn group_exists(apps: &[AppDefinition], group: &str) -> bool {
    group == "/" || apps.iter().any(|a| in_group(&a.id, group))
}

/// A group object (`id`, `apps`, `groups`, `pods`, `dependencies`,
/// `version`) with its subgroups nested, derived from the app ids: the group
/// of `/shop/eu/web` is `/shop/eu`, inside `/shop`, inside `/`.
pub fn group(apps: &[AppDefinition], id: &str, now: jiff::Timestamp) -> Value {
    let all = group_ids(apps.iter().map(|a| &a.id));
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for g in all.iter().filter(|g| g.as_str() != "/") {
        children.entry(parent_group(g)).or_default().push(g.clone());
    }
    group_node(apps, id, &children, now)
}

fn group_node(
    apps: &[AppDefinition],
    id: &str,
    children: &BTreeMap<String, Vec<String>>,
    now: jiff::Timestamp,
) -> Value {
    let direct: Vec<Value> = apps
        .iter()
        .filter(|a| a.id.group() == id)
        .map(AppDefinition::to_json)
        .collect();
    let groups: Vec<Value> = children
        .get(id)
        .map(|ids| ids.iter().map(|g| group_node(apps, g, children, now)).collect())
        .unwrap_or_default();
    let version = apps
        .iter()
        .filter(|a| in_group(&a.id, id))
        .filter_map(|a| a.version)
        .max()
        .unwrap_or(now);
    json!({
        "id": id,
        "apps": direct,
        "groups": groups,
        "pods": [],
        "dependencies": [],
        "version": ts(version),
    })
}

fn object(pairs: Vec<(&str, Value)>, event: &ServiceEvent) -> Value {
    let mut object: Map<String, Value> = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    object.insert("eventType".into(), json!(event.event_type()));
    object.insert("timestamp".into(), ts(event.timestamp()));
    Value::Object(object)
}

/// An event's JSON on `/v2/events`: Marathon's fields, `eventType` and `timestamp`.
pub fn event(event: &ServiceEvent) -> Value {
    match event {
        ServiceEvent::ApiPost { uri, app, .. } => {
            object(vec![("uri", json!(uri)), ("appDefinition", app.to_json())], event)
        }
        ServiceEvent::StatusUpdate { task, message, .. } => object(
            vec![
                (
                    "slaveId",
                    json!(task.agent_id.as_ref().map_or("", |a| a.as_str())),
                ),
                ("taskId", json!(task.id.as_str())),
                ("taskStatus", json!(task.state)),
                ("message", json!(message)),
                ("appId", json!(task.app_id.as_str())),
                ("host", json!(task.host)),
                (
                    "ipAddresses",
                    Value::Array(task.ip_addresses.iter().map(|a| ip_address(a)).collect()),
                ),
                ("ports", json!(task.ports)),
                ("version", ts(task.version)),
            ],
            event,
        ),
        ServiceEvent::DeploymentInfo {
            plan: p,
            current_step: c,
            ..
        } => object(
            vec![("plan", plan(p)), ("currentStep", current_step(p, *c))],
            event,
        ),
        ServiceEvent::DeploymentStepSuccess {
            plan: p,
            current_step: c,
            ..
        } => object(
            vec![("plan", plan(p)), ("currentStep", current_step(p, *c))],
            event,
        ),
        ServiceEvent::DeploymentSuccess { plan: p, .. } | ServiceEvent::DeploymentFailed { plan: p, .. } => {
            object(vec![("id", json!(p.id.as_str())), ("plan", plan(p))], event)
        }
        ServiceEvent::HealthStatusChanged {
            app_id,
            task_id,
            version,
            alive,
            ..
        } => object(
            vec![
                ("appId", json!(app_id.as_str())),
                ("taskId", json!(task_id.as_str())),
                ("instanceId", json!(task_id.as_str())),
                ("version", ts(*version)),
                ("alive", json!(alive)),
            ],
            event,
        ),
        ServiceEvent::FailedHealthCheck {
            app_id,
            task_id,
            check,
            ..
        } => object(
            vec![
                ("appId", json!(app_id.as_str())),
                ("taskId", json!(task_id.as_str())),
                ("instanceId", json!(task_id.as_str())),
                ("healthCheck", serde_json::to_value(check).unwrap_or(Value::Null)),
            ],
            event,
        ),
        ServiceEvent::UnhealthyTaskKill {
            app_id,
            task_id,
            version,
            reason,
            host,
            ..
        } => object(
            vec![
                ("appId", json!(app_id.as_str())),
                ("taskId", json!(task_id.as_str())),
                ("instanceId", json!(task_id.as_str())),
                ("version", ts(*version)),
                ("reason", json!(reason)),
                ("host", json!(host)),
            ],
            event,
        ),
        ServiceEvent::AppTerminated { app_id, .. } => object(vec![("appId", json!(app_id.as_str()))], event),
    }
}

/// The `event_stream_attached` event a new `/v2/events` stream starts with.
pub fn event_stream_attached(remote_address: &str, now: jiff::Timestamp) -> Value {
    json!({
        "remoteAddress": remote_address,
        "eventType": "event_stream_attached",
        "timestamp": ts(now),
    })
}

#[cfg(test)]
mod tests {
    //! The accepted-field lists below are copied from the marathon 0.13
    //! Python client (`models/*.py`, constructor parameters in camelCase):
    //! the client raises on any other field.

    use super::*;
    use crate::app::{HealthCheck, PortDefinition};
    use crate::handle::DeploymentId;
    use crate::health::HealthCheckResult;
    use agora_proto::{AgentId, TaskId};

    /// The keys the marathon 0.13 client's `MarathonApp` accepts (pinned once, in the app module).
    const APP_FIELDS: &[&str] = &crate::app::tests::MARATHON_0_13_APP_PARAMS;
    const TASK_FIELDS: &[&str] = &[
        "appId",
        "healthCheckResults",
        "host",
        "id",
        "ports",
        "servicePorts",
        "slaveId",
        "stagedAt",
        "startedAt",
        "version",
        "ipAddresses",
        "state",
        "localVolumes",
        "region",
        "zone",
        "role",
    ];
    const IP_FIELDS: &[&str] = &["ipAddress", "protocol"];
    const HEALTH_RESULT_FIELDS: &[&str] = &[
        "alive",
        "consecutiveFailures",
        "firstSuccess",
        "lastFailure",
        "lastSuccess",
        "taskId",
        "lastFailureCause",
        "instanceId",
    ];
    const TASK_FAILURE_FIELDS: &[&str] = &[
        "appId",
        "host",
        "message",
        "taskId",
        "instanceId",
        "slaveId",
        "state",
        "timestamp",
        "version",
    ];
    const DEPLOYMENT_FIELDS: &[&str] = &[
        "affectedApps",
        "currentActions",
        "currentStep",
        "id",
        "steps",
        "totalSteps",
        "version",
        "affectedPods",
    ];
    const ACTION_FIELDS: &[&str] = &["action", "app", "apps", "type", "readinessCheckResults", "pod"];
    const PLAN_FIELDS: &[&str] = &["original", "target", "steps", "id", "version"];
    const PLAN_GROUP_FIELDS: &[&str] = &["dependencies", "apps", "id", "version", "groups", "pods"];
    const QUEUE_ITEM_FIELDS: &[&str] = &[
        "app",
        "overdue",
        "count",
        "delay",
        "since",
        "processedOffersSummary",
        "lastUnusedOffers",
    ];
    const QUEUE_DELAY_FIELDS: &[&str] = &["timeLeftSeconds", "overdue"];
    const GROUP_FIELDS: &[&str] = &["apps", "dependencies", "groups", "id", "pods", "version"];
    const INFO_FIELDS: &[&str] = &[
        "event_subscriber",
        "frameworkId",
        "http_config",
        "leader",
        "marathon_config",
        "name",
        "version",
        "elected",
        "zookeeper_config",
        "buildref",
    ];
    const MARATHON_CONFIG_FIELDS: &[&str] = &[
        "checkpoint",
        "executor",
        "failover_timeout",
        "framework_name",
        "ha",
        "hostname",
        "leader_proxy_connection_timeout_ms",
        "leader_proxy_read_timeout_ms",
        "local_port_min",
        "local_port_max",
        "maintenance_mode",
        "master",
        "mesos_leader_ui_url",
        "mesos_role",
        "mesos_user",
        "new_group_enforce_role",
        "webui_url",
        "reconciliation_initial_delay",
        "reconciliation_interval",
        "task_launch_timeout",
        "marathon_store_timeout",
        "task_reservation_timeout",
        "features",
        "access_control_allow_origin",
        "decline_offer_duration",
        "default_network_name",
        "env_vars_prefix",
        "launch_token",
        "launch_token_refresh_interval",
        "max_instances_per_offer",
        "mesos_bridge_name",
        "mesos_heartbeat_failure_threshold",
        "mesos_heartbeat_interval",
        "min_revive_offers_interval",
        "offer_matching_timeout",
        "on_elected_prepare_timeout",
        "revive_offers_for_new_apps",
        "revive_offers_repetitions",
        "scale_apps_initial_delay",
        "scale_apps_interval",
        "store_cache",
        "task_launch_confirm_timeout",
        "task_lost_expunge_initial_delay",
        "task_lost_expunge_interval",
    ];
    const HTTP_CONFIG_FIELDS: &[&str] = &["assets_path", "http_port", "https_port"];
    const TASK_STATS_FIELDS: &[&str] = &[
        "startedAfterLastScaling",
        "withLatestConfig",
        "withOutdatedConfig",
        "totalSummary",
    ];

    /// Every key of `value` (an object) is in `accepted`.
    fn assert_fields(value: &Value, accepted: &[&str], what: &str) {
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("{what} is not an object: {value}"));
        for key in object.keys() {
            assert!(
                accepted.contains(&key.as_str()),
                "{what} has field {key:?} the 0.13 client rejects"
            );
        }
    }

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn web() -> AppDefinition {
        let mut app = AppDefinition::new(AppId::parse("/shop/web").unwrap(), "sleep 1000");
        app.port_definitions = vec![PortDefinition {
            port: 10001,
            protocol: "tcp".into(),
            name: Some("http".into()),
            labels: BTreeMap::new(),
        }];
        app.health_checks = vec![HealthCheck::default()];
        app.versioned(t("2026-01-02T03:04:05.678Z"), None)
    }

    fn running_task() -> TaskView {
        TaskView {
            id: TaskId::new_unchecked("shop_web.1"),
            app_id: AppId::parse("/shop/web").unwrap(),
            agent_id: Some(AgentId::new_unchecked("agent-1")),
            host: "host-a".into(),
            ports: vec![31001],
            state: "TASK_RUNNING".into(),
            staged_at: t("2026-01-02T03:04:06Z"),
            started_at: Some(t("2026-01-02T03:04:07Z")),
            version: t("2026-01-02T03:04:05.678Z"),
            health: vec![HealthCheckResult {
                alive: true,
                consecutive_failures: 0,
                first_success: Some(t("2026-01-02T03:04:08Z")),
                last_failure: None,
                last_success: Some(t("2026-01-02T03:04:08Z")),
                last_failure_cause: None,
                task_id: TaskId::new_unchecked("shop_web.1"),
            }],
            ip_addresses: vec!["127.0.0.1".into()],
        }
    }

    fn status() -> AppStatus {
        AppStatus {
            app: web(),
            tasks: vec![running_task()],
            tasks_staged: 0,
            tasks_running: 1,
            tasks_healthy: 1,
            tasks_unhealthy: 0,
            deployments: vec![DeploymentId::new("d-1")],
            last_task_failure: Some(TaskFailure {
                app_id: AppId::parse("/shop/web").unwrap(),
                host: "host-a".into(),
                message: "exited 1".into(),
                state: "TASK_FAILED".into(),
                task_id: TaskId::new_unchecked("shop_web.0"),
                timestamp: t("2026-01-02T03:04:00Z"),
                version: t("2026-01-02T03:04:05.678Z"),
            }),
        }
    }

    fn every_embed() -> Embed {
        Embed {
            tasks: true,
            counts: true,
            deployments: true,
            readiness: true,
            last_task_failure: true,
            task_stats: true,
        }
    }

    fn deployment_view() -> DeploymentView {
        let action = DeploymentAction {
            action: "StartApplication".into(),
            app: AppId::parse("/shop/web").unwrap(),
        };
        DeploymentView {
            id: DeploymentId::new("d-1"),
            version: t("2026-01-02T03:04:05.678Z"),
            affected_apps: vec![AppId::parse("/shop/web").unwrap()],
            steps: vec![vec![action.clone()], vec![action.clone()]],
            current_actions: vec![action],
            current_step: 2,
            total_steps: 2,
            original: vec![],
            target: vec![web()],
        }
    }

    #[test]
    fn an_app_with_every_embed_has_only_fields_the_client_accepts() {
        let value = app(&status(), every_embed(), t("2026-01-02T04:00:00Z"));
        assert_fields(&value, APP_FIELDS, "app");
        for task in value["tasks"].as_array().unwrap() {
            assert_fields(task, TASK_FIELDS, "task");
            for ip in task["ipAddresses"].as_array().unwrap() {
                assert_fields(ip, IP_FIELDS, "ipAddress");
            }
            for result in task["healthCheckResults"].as_array().unwrap() {
                assert_fields(result, HEALTH_RESULT_FIELDS, "healthCheckResult");
            }
        }
        assert_fields(&value["lastTaskFailure"], TASK_FAILURE_FIELDS, "lastTaskFailure");
        assert_fields(&value["taskStats"], TASK_STATS_FIELDS, "taskStats");
    }

    #[test]
    fn an_app_embeds_counts_deployments_tasks_and_its_last_failure() {
        let value = app(&status(), every_embed(), t("2026-01-02T04:00:00Z"));
        assert_eq!(value["tasksRunning"], 1);
        assert_eq!(value["tasksHealthy"], 1);
        assert_eq!(value["tasksStaged"], 0);
        assert_eq!(value["tasksUnhealthy"], 0);
        assert_eq!(value["deployments"], json!([{"id": "d-1"}]));
        assert_eq!(value["tasks"][0]["id"], "shop_web.1");
        assert_eq!(value["lastTaskFailure"]["state"], "TASK_FAILED");
        assert_eq!(value["lastTaskFailure"]["timestamp"], "2026-01-02T03:04:00.000Z");
        assert_eq!(value["version"], "2026-01-02T03:04:05.678Z");
    }

    #[test]
    fn an_app_without_embeds_has_no_status_fields() {
        let value = app(&status(), Embed::default(), t("2026-01-02T04:00:00Z"));
        for field in [
            "tasks",
            "tasksRunning",
            "deployments",
            "lastTaskFailure",
            "taskStats",
        ] {
            assert!(value.get(field).is_none(), "{field} present: {value}");
        }
    }

    #[test]
    fn a_task_has_marathons_fields_and_timestamps() {
        let app = web();
        let value = task(&running_task(), Some(&app));
        assert_eq!(
            value,
            json!({
                "appId": "/shop/web",
                "healthCheckResults": [{
                    "alive": true, "consecutiveFailures": 0,
                    "firstSuccess": "2026-01-02T03:04:08.000Z", "lastFailure": null,
                    "lastSuccess": "2026-01-02T03:04:08.000Z", "lastFailureCause": null,
                    "taskId": "shop_web.1"
                }],
                "host": "host-a",
                "id": "shop_web.1",
                "ipAddresses": [{"ipAddress": "127.0.0.1", "protocol": "IPv4"}],
                "ports": [31001],
                "servicePorts": [10001],
                "slaveId": "agent-1",
                "state": "TASK_RUNNING",
                "stagedAt": "2026-01-02T03:04:06.000Z",
                "startedAt": "2026-01-02T03:04:07.000Z",
                "version": "2026-01-02T03:04:05.678Z",
                "localVolumes": [],
                "role": "*",
            })
        );
    }

    #[test]
    fn a_staging_task_has_no_started_at() {
        let mut staging = running_task();
        staging.started_at = None;
        staging.state = "TASK_STAGING".into();
        assert!(task(&staging, None).get("startedAt").is_none());
    }

    #[test]
    fn task_stats_count_and_time_tasks() {
        let value = task_stats(&status(), t("2026-01-02T03:05:07Z"));
        let total = &value["totalSummary"]["stats"];
        assert_eq!(
            total["counts"],
            json!({"staged": 0, "running": 1, "healthy": 1, "unhealthy": 0})
        );
        assert_eq!(total["lifeTime"]["averageSeconds"], 60.0);
        assert_eq!(total["lifeTime"]["medianSeconds"], 60.0);
        assert!(
            value.get("withOutdatedConfig").is_none(),
            "no outdated tasks: {value}"
        );
    }

    #[test]
    fn a_deployment_has_marathons_fields() {
        let value = deployment(&deployment_view());
        assert_fields(&value, DEPLOYMENT_FIELDS, "deployment");
        for step in value["steps"].as_array().unwrap() {
            assert_fields(step, &["actions"], "step");
            for action in step["actions"].as_array().unwrap() {
                assert_fields(action, ACTION_FIELDS, "action");
            }
        }
        for action in value["currentActions"].as_array().unwrap() {
            assert_fields(action, ACTION_FIELDS, "currentAction");
        }
        assert_eq!(value["affectedApps"], json!(["/shop/web"]));
        assert_eq!(value["currentStep"], 2);
        assert_eq!(value["totalSteps"], 2);
        assert_eq!(
            value["steps"][0],
            json!({"actions": [{"action": "StartApplication", "app": "/shop/web"}]})
        );
    }

    #[test]
    fn a_plan_has_original_and_target_groups() {
        let value = plan(&deployment_view());
        assert_fields(&value, PLAN_FIELDS, "plan");
        assert_fields(&value["original"], PLAN_GROUP_FIELDS, "original");
        assert_fields(&value["target"], PLAN_GROUP_FIELDS, "target");
        assert_eq!(value["target"]["apps"][0]["id"], "/shop/web");
        assert_eq!(value["original"]["apps"], json!([]));
    }

    #[test]
    fn a_queue_item_has_marathons_fields_and_no_role() {
        let entry = QueueEntry {
            app: web(),
            count: 2,
            delay_seconds_left: 3,
            overdue: false,
            since: t("2026-01-02T03:04:05Z"),
            unplaced_reasons: vec!["UnfulfilledConstraint: hostname UNIQUE".into()],
        };
        let value = queue(&[entry], true);
        let item = &value["queue"][0];
        assert_fields(item, QUEUE_ITEM_FIELDS, "queue item");
        assert_fields(&item["delay"], QUEUE_DELAY_FIELDS, "delay");
        assert_fields(&item["app"], APP_FIELDS, "queued app");
        assert_eq!(item["count"], 2);
        assert_eq!(item["delay"]["timeLeftSeconds"], 3);
        assert_eq!(
            item["processedOffersSummary"]["rejectSummaryLastOffers"][0]["reason"],
            "UnfulfilledConstraint: hostname UNIQUE"
        );
    }

    #[test]
    fn info_has_every_config_object_the_client_requires() {
        let value = info(&ServiceInfo {
            framework_id: Some("fw-1".into()),
            leader: "127.0.0.1:8080".into(),
            master: "127.0.0.1:5050".into(),
            name: "agora-service".into(),
            version: "0.1.0".into(),
        });
        assert_fields(&value, INFO_FIELDS, "info");
        assert_fields(
            &value["marathon_config"],
            MARATHON_CONFIG_FIELDS,
            "marathon_config",
        );
        assert_fields(&value["http_config"], HTTP_CONFIG_FIELDS, "http_config");
        // The client parses these three unconditionally: null would crash it.
        assert!(value["zookeeper_config"].is_object());
        assert_eq!(value["http_config"]["http_port"], 8080);
        assert_eq!(value["frameworkId"], "fw-1");
        assert_eq!(value["marathon_config"]["hostname"], "127.0.0.1");
    }

    #[test]
    fn groups_are_derived_from_app_ids() {
        let mut db = AppDefinition::new(AppId::parse("/shop/db").unwrap(), "sleep 1");
        db.version = Some(t("2026-01-03T00:00:00Z"));
        let top = AppDefinition::new(AppId::parse("/top").unwrap(), "sleep 1");
        let eu = AppDefinition::new(AppId::parse("/shop/eu/web").unwrap(), "sleep 1");
        let apps = vec![web(), db, top, eu];
        let root = group(&apps, "/", t("2026-01-04T00:00:00Z"));
        assert_fields(&root, GROUP_FIELDS, "root group");
        assert_eq!(root["id"], "/");
        assert_eq!(root["apps"].as_array().unwrap().len(), 1);
        assert_eq!(root["apps"][0]["id"], "/top");
        let shop = &root["groups"][0];
        assert_fields(shop, GROUP_FIELDS, "group");
        assert_eq!(shop["id"], "/shop");
        let ids: Vec<&str> = shop["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["/shop/web", "/shop/db"]);
        assert_eq!(shop["groups"][0]["id"], "/shop/eu");
        assert_eq!(shop["version"], "2026-01-03T00:00:00.000Z");
        assert!(group_exists(&apps, "/shop/eu"));
        assert!(!group_exists(&apps, "/sho"));
    }

    #[test]
    fn in_group_matches_whole_segments() {
        let id = AppId::parse("/shop/web").unwrap();
        assert!(in_group(&id, "/shop"));
        assert!(in_group(&id, "/"));
        assert!(!in_group(&id, "/sho"));
        assert!(!in_group(&id, "/shop/web"));
    }

    fn assert_event(value: &Value, known: &[&str], event_type: &str) {
        let mut accepted = known.to_vec();
        accepted.extend(["eventType", "timestamp"]);
        assert_fields(value, &accepted, event_type);
        assert_eq!(value["eventType"], event_type);
        assert!(value["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn events_carry_marathons_fields() {
        let now = t("2026-01-02T05:00:00Z");
        let task_id = TaskId::new_unchecked("shop_web.1");
        let app_id = AppId::parse("/shop/web").unwrap();
        let cases: Vec<(ServiceEvent, &[&str])> = vec![
            (
                ServiceEvent::ApiPost {
                    uri: "/v2/apps".into(),
                    app: web(),
                    timestamp: now,
                },
                &["clientIp", "appDefinition", "uri"],
            ),
            (
                ServiceEvent::StatusUpdate {
                    task: running_task(),
                    message: String::new(),
                    timestamp: now,
                },
                &[
                    "slaveId",
                    "taskId",
                    "taskStatus",
                    "appId",
                    "host",
                    "ports",
                    "version",
                    "message",
                    "ipAddresses",
                ],
            ),
            (
                ServiceEvent::DeploymentInfo {
                    plan: deployment_view(),
                    current_step: 1,
                    timestamp: now,
                },
                &["plan", "currentStep"],
            ),
            (
                ServiceEvent::DeploymentSuccess {
                    plan: deployment_view(),
                    timestamp: now,
                },
                &["id", "plan"],
            ),
            (
                ServiceEvent::DeploymentFailed {
                    plan: deployment_view(),
                    timestamp: now,
                },
                &["id", "plan"],
            ),
            (
                ServiceEvent::DeploymentStepSuccess {
                    plan: deployment_view(),
                    current_step: 1,
                    timestamp: now,
                },
                &["plan", "currentStep"],
            ),
            (
                ServiceEvent::HealthStatusChanged {
                    app_id: app_id.clone(),
                    task_id: task_id.clone(),
                    version: now,
                    alive: false,
                    timestamp: now,
                },
                &["appId", "healthCheck", "taskId", "instanceId", "alive", "version"],
            ),
            (
                ServiceEvent::FailedHealthCheck {
                    app_id: app_id.clone(),
                    task_id: task_id.clone(),
                    check: HealthCheck::default(),
                    timestamp: now,
                },
                &["appId", "healthCheck", "taskId", "instanceId"],
            ),
            (
                ServiceEvent::UnhealthyTaskKill {
                    app_id: app_id.clone(),
                    task_id: task_id.clone(),
                    version: now,
                    reason: "3 failures".into(),
                    host: "host-a".into(),
                    timestamp: now,
                },
                &[
                    "appId",
                    "taskId",
                    "instanceId",
                    "version",
                    "reason",
                    "host",
                    "slaveId",
                ],
            ),
            (
                ServiceEvent::AppTerminated {
                    app_id: app_id.clone(),
                    timestamp: now,
                },
                &["appId"],
            ),
        ];
        for (event, known) in cases {
            let value = super::event(&event);
            assert_event(&value, known, event.event_type());
            if let Some(plan) = value.get("plan") {
                assert_fields(plan, PLAN_FIELDS, "event plan");
            }
        }
    }

    #[test]
    fn deployment_info_names_its_current_step() {
        let value = event(&ServiceEvent::DeploymentInfo {
            plan: deployment_view(),
            current_step: 1,
            timestamp: t("2026-01-02T05:00:00Z"),
        });
        assert_eq!(
            value["currentStep"],
            json!({"actions": [{"action": "StartApplication", "app": "/shop/web"}]})
        );
        assert_eq!(value["plan"]["id"], "d-1");
    }

    #[test]
    fn a_status_update_names_the_task_and_its_state() {
        let value = event(&ServiceEvent::StatusUpdate {
            task: running_task(),
            message: "started".into(),
            timestamp: t("2026-01-02T05:00:00Z"),
        });
        assert_eq!(value["taskStatus"], "TASK_RUNNING");
        assert_eq!(value["slaveId"], "agent-1");
        assert_eq!(value["appId"], "/shop/web");
        assert_eq!(value["ports"], json!([31001]));
        assert_eq!(value["timestamp"], "2026-01-02T05:00:00.000Z");
    }

    #[test]
    fn the_attached_event_names_the_client() {
        let value = event_stream_attached("10.0.0.1", t("2026-01-02T05:00:00Z"));
        assert_event(&value, &["remoteAddress"], "event_stream_attached");
        assert_eq!(value["remoteAddress"], "10.0.0.1");
    }

    #[test]
    fn a_deployment_result_has_id_and_version() {
        let value = deployment_result(&DeploymentRef {
            id: DeploymentId::new("d-9"),
            version: t("2026-01-02T03:04:05.6789Z"),
        });
        assert_eq!(
            value,
            json!({"deploymentId": "d-9", "version": "2026-01-02T03:04:05.678Z"})
        );
    }
}

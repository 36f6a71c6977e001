//! `/v2/info`, `/v2/leader`, `/ping` and `/metrics`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};

use super::{Api, json, wants_json};

/// `GET /v2/info`.
pub(crate) async fn info(State(api): State<Api>) -> Response {
    Json(json::info(&api.handle.info().await)).into_response()
}

/// `GET /v2/leader`: `{"leader": "host:port"}`, 404 when there is none.
pub(crate) async fn leader(State(api): State<Api>) -> Response {
    let info = api.handle.info().await;
    if info.leader.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "There is no leader"})),
        )
            .into_response();
    }
    Json(json!({ "leader": info.leader })).into_response()
}

/// `GET /ping`: `pong`.
pub(crate) async fn ping() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "pong").into_response()
}

/// The figures `/metrics` reports, read from the framework at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Apps declared.
    pub apps: i64,
    /// Instances asked for, summed over apps.
    pub instances: i64,
    /// Tasks by state (`TASK_RUNNING`, …).
    pub tasks: BTreeMap<String, i64>,
    /// Deployments running.
    pub deployments: i64,
    /// Instances waiting for offers.
    pub queued: i64,
    /// Attached `/v2/events` streams.
    pub event_subscribers: i64,
}

impl MetricsSnapshot {
    /// Reads the figures from the framework.
    async fn read(api: &Api) -> Self {
        let apps = api.handle.apps().await;
        let mut tasks = BTreeMap::new();
        for task in apps.iter().flat_map(|a| a.tasks.iter()) {
            *tasks.entry(task.state.clone()).or_insert(0) += 1;
        }
        Self {
            apps: apps.len() as i64,
            instances: apps.iter().map(|a| i64::from(a.app.instances)).sum(),
            tasks,
            deployments: api.handle.deployments().await.len() as i64,
            queued: api.handle.queue().await.iter().map(|q| i64::from(q.count)).sum(),
            event_subscribers: api.handle.event_subscribers() as i64,
        }
    }

    /// The Prometheus text form, every metric prefixed `agora_service_`.
    pub fn prometheus(&self) -> String {
        let mut registry = Registry::with_prefix("agora_service");
        let gauge = |value: i64| {
            let g: Gauge = Gauge::default();
            g.set(value);
            g
        };
        registry.register("apps", "Apps declared", gauge(self.apps));
        registry.register(
            "instances",
            "Instances asked for, summed over apps",
            gauge(self.instances),
        );
        let tasks = Family::<Vec<(String, String)>, Gauge>::default();
        for (state, count) in &self.tasks {
            tasks
                .get_or_create(&vec![("state".to_owned(), state.clone())])
                .set(*count);
        }
        registry.register("tasks", "Tasks by state", tasks);
        registry.register("deployments", "Deployments running", gauge(self.deployments));
        registry.register(
            "queued_instances",
            "Instances waiting for offers",
            gauge(self.queued),
        );
        registry.register(
            "event_subscribers",
            "Attached /v2/events streams",
            gauge(self.event_subscribers),
        );
        let mut out = String::new();
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }

    /// Marathon's JSON form (Dropwizard's layout: `gauges` of `{"value": n}`).
    pub fn marathon_json(&self) -> Value {
        let mut gauges = Map::new();
        let mut put = |name: String, value: i64| {
            gauges.insert(name, json!({ "value": value }));
        };
        put("agora.service.apps".into(), self.apps);
        put("agora.service.instances".into(), self.instances);
        for (state, count) in &self.tasks {
            put(format!("agora.service.tasks.{state}"), *count);
        }
        put("agora.service.deployments".into(), self.deployments);
        put("agora.service.queued-instances".into(), self.queued);
        put("agora.service.event-subscribers".into(), self.event_subscribers);
        json!({
            "version": "4.0.0",
            "gauges": gauges,
            "counters": {},
            "histograms": {},
            "meters": {},
            "timers": {},
        })
    }
}

/// `GET /metrics`: Prometheus text, or Marathon's JSON for `Accept: application/json`
/// (what the Python client's `get_metrics` asks for).
pub(crate) async fn metrics(State(api): State<Api>, headers: HeaderMap) -> Response {
    let snapshot = MetricsSnapshot::read(&api).await;
    if wants_json(&headers) {
        return Json(snapshot.marathon_json()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        snapshot.prometheus(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> MetricsSnapshot {
        MetricsSnapshot {
            apps: 2,
            instances: 5,
            tasks: BTreeMap::from([("TASK_RUNNING".to_owned(), 4), ("TASK_STAGING".to_owned(), 1)]),
            deployments: 1,
            queued: 1,
            event_subscribers: 3,
        }
    }

    #[test]
    fn prometheus_text_has_apps_tasks_by_state_deployments_and_subscribers() {
        let text = snapshot().prometheus();
        for line in [
            "agora_service_apps 2",
            "agora_service_instances 5",
            "agora_service_tasks{state=\"TASK_RUNNING\"} 4",
            "agora_service_tasks{state=\"TASK_STAGING\"} 1",
            "agora_service_deployments 1",
            "agora_service_queued_instances 1",
            "agora_service_event_subscribers 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn marathon_json_lists_gauges() {
        let value = snapshot().marathon_json();
        assert_eq!(value["gauges"]["agora.service.apps"]["value"], 2);
        assert_eq!(value["gauges"]["agora.service.tasks.TASK_RUNNING"]["value"], 4);
        assert!(value["counters"].is_object());
    }
}

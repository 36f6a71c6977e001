//! The master's Prometheus metrics, on an explicit registry (no globals).
//!
//! Counters are bumped by the master as things happen; gauges are set from
//! the master's state just before each scrape.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set: a list of (name, value) pairs.
pub type Labels = Vec<(String, String)>;

/// A gauge holding a fractional value (cores, MiB).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// Handles on every metric of the master. Cloning shares the metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Agents by status (`active`, `unreachable`).
    pub agents: Family<Labels, Gauge>,
    /// Frameworks with an open event stream.
    pub frameworks_connected: Gauge,
    /// Frameworks known (connected or not).
    pub frameworks: Gauge,
    /// Live tasks by state (`TASK_RUNNING`, ...).
    pub tasks: Family<Labels, Gauge>,
    /// Offers made and neither accepted, declined nor rescinded yet.
    pub offers_outstanding: Gauge,
    /// Offers made.
    pub offers_made: Counter,
    /// Offers declined.
    pub offers_declined: Counter,
    /// Offers accepted.
    pub offers_accepted: Counter,
    /// Offers rescinded (timeout, agent lost, framework gone).
    pub offers_rescinded: Counter,
    /// Status updates received from agents.
    pub status_updates: Counter,
    /// How long allocation passes take, in seconds.
    pub allocation_seconds: Histogram,
    /// Cores the agent's tasks use (latest sample), by `agent_id`.
    pub agent_cpus_used: Family<Labels, FloatGauge>,
    /// MiB of memory the agent's tasks use (latest sample), by `agent_id`.
    pub agent_mem_used_mib: Family<Labels, FloatGauge>,
    /// Cores allocated to the agent's live tasks, by `agent_id`.
    pub agent_cpus_allocated: Family<Labels, FloatGauge>,
    /// MiB of memory allocated to the agent's live tasks, by `agent_id`.
    pub agent_mem_allocated_mib: Family<Labels, FloatGauge>,
    /// Cores a live task uses (latest sample), by `framework_id` and `task_id`.
    pub task_cpus_used: Family<Labels, FloatGauge>,
    /// MiB of memory a live task uses (latest sample), by `framework_id` and `task_id`.
    pub task_mem_used_mib: Family<Labels, FloatGauge>,
    /// A framework's dominant share (DRF), by `framework_id`.
    pub framework_dominant_share: Family<Labels, FloatGauge>,
    /// What a role's subtree is allocated (used + offered), by `role` and `resource`.
    pub role_allocated: Family<Labels, FloatGauge>,
    /// A role's dominant share divided by its weight, by `role`.
    pub role_weighted_share: Family<Labels, FloatGauge>,
}

impl Metrics {
    /// Creates every metric and registers it under the `agora_master_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agora_master");
        let agents = Family::<Labels, Gauge>::default();
        let frameworks_connected = Gauge::default();
        let frameworks = Gauge::default();
        let tasks = Family::<Labels, Gauge>::default();
        let offers_outstanding = Gauge::default();
        let offers_made = Counter::default();
        let offers_declined = Counter::default();
        let offers_accepted = Counter::default();
        let offers_rescinded = Counter::default();
        let status_updates = Counter::default();
        let allocation_seconds = Histogram::new(exponential_buckets(0.000_01, 4.0, 12));
        registry.register("agents", "Agents by status", agents.clone());
        registry.register(
            "frameworks_connected",
            "Frameworks with an open event stream",
            frameworks_connected.clone(),
        );
        registry.register("frameworks", "Frameworks known to the master", frameworks.clone());
        registry.register("tasks", "Live tasks by state", tasks.clone());
        registry.register(
            "offers_outstanding",
            "Offers not yet accepted, declined or rescinded",
            offers_outstanding.clone(),
        );
        registry.register("offers_made", "Offers made to frameworks", offers_made.clone());
        registry.register(
            "offers_declined",
            "Offers declined by frameworks",
            offers_declined.clone(),
        );
        registry.register(
            "offers_accepted",
            "Offers accepted by frameworks",
            offers_accepted.clone(),
        );
        registry.register(
            "offers_rescinded",
            "Offers rescinded by the master",
            offers_rescinded.clone(),
        );
        registry.register(
            "status_updates",
            "Task status updates received from agents",
            status_updates.clone(),
        );
        registry.register(
            "allocation_pass_seconds",
            "Duration of allocation passes",
            allocation_seconds.clone(),
        );
        let agent_cpus_used = Family::<Labels, FloatGauge>::default();
        let agent_mem_used_mib = Family::<Labels, FloatGauge>::default();
        let agent_cpus_allocated = Family::<Labels, FloatGauge>::default();
        let agent_mem_allocated_mib = Family::<Labels, FloatGauge>::default();
        let task_cpus_used = Family::<Labels, FloatGauge>::default();
        let task_mem_used_mib = Family::<Labels, FloatGauge>::default();
        registry.register(
            "agent_cpus_used",
            "Cores the agent's tasks use, as last sampled",
            agent_cpus_used.clone(),
        );
        registry.register(
            "agent_mem_used_mib",
            "MiB of memory the agent's tasks use, as last sampled",
            agent_mem_used_mib.clone(),
        );
        registry.register(
            "agent_cpus_allocated",
            "Cores allocated to the agent's live tasks",
            agent_cpus_allocated.clone(),
        );
        registry.register(
            "agent_mem_allocated_mib",
            "MiB of memory allocated to the agent's live tasks",
            agent_mem_allocated_mib.clone(),
        );
        registry.register(
            "task_cpus_used",
            "Cores a live task uses, as last sampled",
            task_cpus_used.clone(),
        );
        registry.register(
            "task_mem_used_mib",
            "MiB of memory a live task uses, as last sampled",
            task_mem_used_mib.clone(),
        );
        let framework_dominant_share = Family::<Labels, FloatGauge>::default();
        let role_allocated = Family::<Labels, FloatGauge>::default();
        let role_weighted_share = Family::<Labels, FloatGauge>::default();
        registry.register(
            "framework_dominant_share",
            "A framework's dominant share of the cluster (DRF)",
            framework_dominant_share.clone(),
        );
        registry.register(
            "role_allocated",
            "Resources a role's subtree is allocated (used + offered)",
            role_allocated.clone(),
        );
        registry.register(
            "role_weighted_share",
            "A role's dominant share divided by its weight",
            role_weighted_share.clone(),
        );
        Self {
            registry: Arc::new(registry),
            framework_dominant_share,
            role_allocated,
            role_weighted_share,
            agent_cpus_used,
            agent_mem_used_mib,
            agent_cpus_allocated,
            agent_mem_allocated_mib,
            task_cpus_used,
            task_mem_used_mib,
            agents,
            frameworks_connected,
            frameworks,
            tasks,
            offers_outstanding,
            offers_made,
            offers_declined,
            offers_accepted,
            offers_rescinded,
            status_updates,
            allocation_seconds,
        }
    }

    /// The metrics in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A label set with one label.
pub fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_owned(), value.to_owned())]
}

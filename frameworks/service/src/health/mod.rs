//! Health checks of running tasks: HTTP, TCP and COMMAND probes on the
//! schedule Marathon's `healthChecks` describe, reported as [`HealthEvent`]s.
//!
//! - **Timing.** A task's first probe runs as soon as it is RUNNING
//!   (`CheckTarget::started_at`), so it can turn healthy within its grace
//!   period; until it first passes, one probe is also due exactly when
//!   `gracePeriodSeconds` end (not one interval later). Then one every
//!   `intervalSeconds` (counted between probe starts; a probe
//!   still running when the next is due delays it). Each probe is bounded by
//!   `timeoutSeconds`. A failure of a probe begun within the grace period,
//!   before the task's first success, does not count (Marathon's rule).
//! - **Decisions.** Every counted failure is a [`HealthEvent::Failed`]; every
//!   change of the task's health (alive = every check has passed its last
//!   probe) is a [`HealthEvent::Changed`] (a task starts as not alive, so a
//!   first failure is no change); `maxConsecutiveFailures` counted failures in
//!   a row is one [`HealthEvent::Unhealthy`] per task (0 = never), upon which
//!   the runtime kills and replaces the task. This logic is pure and lives in
//!   [`decision`]; the monitor only runs probes and feeds it.
//! - **Probes.** HTTP: `GET http://host:port{path}`, 200–399 healthy, no
//!   redirects followed, a fresh connection each time; a 1xx answer is
//!   discarded with `ignoreHttp1xx` and a failure without it. TCP: a connection
//!   is accepted. COMMAND: `sh -c value`, exit 0 healthy, killed (its whole
//!   process group) at the timeout. The port is the check's fixed `port`, else
//!   the task's `ports[portIndex]` (index 0 when unset).
//! - **COMMAND checks run on the framework's host, not inside the task's
//!   container or sandbox** — a departure from Marathon, whose executor runs
//!   them next to the task. The command gets the framework's environment plus
//!   `HOST`, `PORT`, `PORT0..`, `PORTS` and the task's own variables
//!   (`CheckTarget::env`), so it can reach the task over the network.
//! - **HTTPS is not probed**: this build of the HTTP client has no TLS, so an
//!   HTTPS check fails every probe with a cause saying so (app validation may
//!   refuse such checks up front).
//!
//! Invariant: each watched task's probes run in one tokio task owned by the
//! [`HealthMonitor`]; `unwatch` or dropping the monitor aborts it, and with it
//! any probe in flight (a running command's process group is killed).

pub mod decision;
mod monitor;
mod probe;

use agora_proto::TaskId;
use serde::{Serialize, Serializer};
use tokio::time::Instant;

use crate::app::{AppId, HealthCheck, HealthCheckProtocol, timestamp_string};
pub use decision::{CheckTiming, ProbeOutcome};
pub use monitor::HealthMonitor;
use probe::Probe;

/// A running task to health-check: where it is and when it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTarget {
    /// The task.
    pub task_id: TaskId,
    /// Its app.
    pub app_id: AppId,
    /// The app version the task runs.
    pub version: jiff::Timestamp,
    /// The host (agent hostname or address) the task runs on.
    pub host: String,
    /// The task's host ports, in `portIndex` order.
    pub ports: Vec<u16>,
    /// The task's environment (given to COMMAND checks).
    pub env: Vec<(String, String)>,
    /// When the task started running; the grace period counts from here.
    pub started_at: Instant,
}

/// What the monitor reports about a watched task.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthEvent {
    /// The task's health changed (alive = every check passed its last probe).
    Changed {
        /// The task.
        task_id: TaskId,
        /// Its app.
        app_id: AppId,
        /// The app version the task runs.
        version: jiff::Timestamp,
        /// The new health.
        alive: bool,
    },
    /// A probe failed, and the failure counts (not within the grace period).
    Failed {
        /// The task.
        task_id: TaskId,
        /// Its app.
        app_id: AppId,
        /// The app version the task runs.
        version: jiff::Timestamp,
        /// The check that failed.
        check: HealthCheck,
        /// Why it failed.
        cause: String,
    },
    /// A check failed `maxConsecutiveFailures` times in a row after the grace
    /// period: the runtime kills and replaces the task. At most once per watch.
    Unhealthy {
        /// The task.
        task_id: TaskId,
        /// Its app.
        app_id: AppId,
        /// The app version the task runs.
        version: jiff::Timestamp,
        /// The last failure's cause.
        cause: String,
    },
}

impl HealthEvent {
    /// The task the event is about.
    pub fn task_id(&self) -> &TaskId {
        match self {
            Self::Changed { task_id, .. }
            | Self::Failed { task_id, .. }
            | Self::Unhealthy { task_id, .. } => task_id,
        }
    }
}

/// One check's result for one task: an item of Marathon's `healthCheckResults`
/// (exactly the fields the marathon 0.13 client accepts; absent times are `null`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckResult {
    /// Whether the last counted probe passed.
    pub alive: bool,
    /// Counted failures since the last success.
    pub consecutive_failures: u32,
    /// When a probe first passed.
    #[serde(serialize_with = "optional_timestamp")]
    pub first_success: Option<jiff::Timestamp>,
    /// When a counted probe last failed.
    #[serde(serialize_with = "optional_timestamp")]
    pub last_failure: Option<jiff::Timestamp>,
    /// When a probe last passed.
    #[serde(serialize_with = "optional_timestamp")]
    pub last_success: Option<jiff::Timestamp>,
    /// Why the last counted probe failed.
    pub last_failure_cause: Option<String>,
    /// The task.
    pub task_id: TaskId,
}

fn optional_timestamp<S: Serializer>(t: &Option<jiff::Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&timestamp_string(*t)),
        None => s.serialize_none(),
    }
}

/// Shortest interval between two probes of one check; a guard against a busy loop
/// should an interval of 0 (refused by app validation) ever get here.
const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The timing parameters of a health check (interval at least 1 s).
pub fn timing(check: &HealthCheck) -> CheckTiming {
    CheckTiming {
        grace_period: check.grace_period(),
        interval: check.interval().max(MIN_INTERVAL),
        timeout: check.timeout(),
        max_consecutive_failures: check.max_consecutive_failures,
    }
}

/// The probe a check runs against a task: its fixed `port`, else the task's
/// `ports[portIndex]`; a check that cannot run becomes [`Probe::Unavailable`].
fn probe_for(check: &HealthCheck, target: &CheckTarget) -> Probe {
    let port = || -> Result<u16, String> {
        if let Some(port) = check.port {
            return Ok(port);
        }
        let index = check.port_index.unwrap_or(0);
        usize::try_from(index)
            .ok()
            .and_then(|i| target.ports.get(i).copied())
            .ok_or_else(|| {
                format!(
                    "portIndex {index} is out of range: the task has {} port(s)",
                    target.ports.len()
                )
            })
    };
    match check.protocol {
        HealthCheckProtocol::Http => match port() {
            Ok(port) => Probe::http(&target.host, port, check.http_path(), check.ignore_http1xx),
            Err(cause) => Probe::Unavailable(cause),
        },
        HealthCheckProtocol::Https => {
            Probe::Unavailable("HTTPS health checks are not supported: this build has no TLS".to_owned())
        }
        HealthCheckProtocol::Tcp => match port() {
            Ok(port) => Probe::Tcp {
                host: target.host.clone(),
                port,
            },
            Err(cause) => Probe::Unavailable(cause),
        },
        HealthCheckProtocol::Command => match &check.command {
            Some(command) => Probe::Command {
                value: command.value.clone(),
                env: probe::command_env(&target.host, &target.ports, &target.env),
            },
            None => Probe::Unavailable("a COMMAND health check needs command.value".to_owned()),
        },
    }
}

#[cfg(test)]
mod tests;

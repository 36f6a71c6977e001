//! What the e2e tests of the frameworks share: URLs of a framework process,
//! polling, the Marathon task listing, and the gated rolling update both the
//! restart and the failover tests interrupt half way.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::harness::Process;

/// Task states after which a task is gone for good.
pub const TERMINAL: &[&str] = &[
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
];

pub fn url(process: &Process, path: &str) -> String {
    format!("http://{}{path}", process.addr)
}

/// Polls `probe` until it answers `Some`, at most `within`.
pub async fn until<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(100)).await;
    }
}

/// A task of the app, as `/v2/apps/{id}/tasks` lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AppTask {
    pub id: String,
    pub state: String,
    pub version: String,
}

/// The tasks in a `/v2/apps/{id}/tasks` answer's `tasks` array, sorted.
pub fn app_tasks_in(tasks: &[Value]) -> Vec<AppTask> {
    let mut tasks: Vec<AppTask> = tasks
        .iter()
        .map(|t| AppTask {
            id: t["id"].as_str().unwrap_or_default().to_owned(),
            state: t["state"].as_str().unwrap_or_default().to_owned(),
            version: t["version"].as_str().unwrap_or_default().to_owned(),
        })
        .collect();
    tasks.sort();
    tasks
}

pub fn ids(tasks: &[AppTask]) -> BTreeSet<String> {
    tasks.iter().map(|t| t.id.clone()).collect()
}

/// A rolling update (new command, half the capacity kept) whose new tasks turn
/// healthy only once the file `gate` exists, so it stops half way: 2 of 4 old
/// tasks killed, 2 new ones running but not yet healthy.
pub fn gated_update(gate: &Path) -> Value {
    json!({
        "cmd": "echo $$ > pid; exec sleep 1001",
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.0},
        "healthChecks": [{
            "protocol": "COMMAND",
            "command": {"value": format!("test -e {}", gate.display())},
            "gracePeriodSeconds": 300,
            "intervalSeconds": 1,
            "timeoutSeconds": 5,
            "maxConsecutiveFailures": 0,
        }],
    })
}

//! The cron framework as its own process (`agora cron`) beside a real master and agent:
//! a SIGKILL of the framework in the middle of runs, and a restart of the master in the
//! middle of a run. The run history (`GET /scheduler/job/{name}/runs`) must show one run per
//! scheduled instant, no gap and no duplicate, and the agent must have launched every task
//! once (one sandbox per task).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use agora_cron::handle::{RunRecord, RunState, Trigger};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use tokio::time::{Instant, sleep};

use crate::harness::*;

/// How long a cron test waits for runs to happen (several instants, a restart, a failover).
const RUNS_WAIT: Duration = Duration::from_secs(60);

/// Starts `agora cron` against the cluster's master, its state in the test dir.
async fn start_cron(cluster: &Cluster) -> Process {
    let args = vec![
        "cron".to_string(),
        "--master".into(),
        cluster.master.addr.to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--work-dir".into(),
        cluster.dir.path().join("cron").display().to_string(),
        "--hostname".into(),
        "cron-host".into(),
        "--retry-backoff".into(),
        "500ms".into(),
    ];
    Process::start(cluster.dir.path(), "cron", args).await
}

fn api(cron: &Process) -> String {
    format!("http://{}", cron.addr)
}

/// The first whole second at least `lead` from now.
fn start_in(lead: Duration) -> Timestamp {
    let at = Timestamp::now() + SignedDuration::try_from(lead).expect("a short lead");
    Timestamp::from_second(at.as_second() + 1).expect("a valid second")
}

async fn add_job(cron: &Process, job: serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/scheduler/iso8601", api(cron)))
        .json(&job)
        .send()
        .await
        .expect("POST /scheduler/iso8601");
    let status = response.status();
    assert_eq!(status, 204, "{}", response.text().await.unwrap_or_default());
}

/// The job's run history, oldest first.
async fn runs(cron: &Process, job: &str) -> Vec<RunRecord> {
    reqwest::get(format!("{}/scheduler/job/{job}/runs", api(cron)))
        .await
        .expect("GET runs")
        .json()
        .await
        .expect("the run history is JSON")
}

/// Polls the job's run history until `done` holds; panics naming `what` after [`RUNS_WAIT`].
async fn wait_runs(cron: &Process, job: &str, what: &str, done: impl Fn(&[RunRecord]) -> bool) {
    let deadline = Instant::now() + RUNS_WAIT;
    loop {
        let history = runs(cron, job).await;
        if done(&history) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}: {history:#?}"
        );
        sleep(Duration::from_millis(200)).await;
    }
}

/// Every task the agent with work dir `agent_dir` launched, with how many times (sandboxes).
fn launches(agent_dir: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let Ok(frameworks) = std::fs::read_dir(agent_dir.join("sandboxes")) else {
        return out;
    };
    for framework in frameworks.flatten() {
        for task in std::fs::read_dir(framework.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let count = std::fs::read_dir(task.path()).map(|r| r.count()).unwrap_or(0);
            *out.entry(task.file_name().to_string_lossy().into_owned())
                .or_default() += count;
        }
    }
    out
}

/// One run per scheduled instant `start + k·period_s`, k = 0, 1, …: no gap, no duplicate.
fn assert_one_run_per_instant(history: &[RunRecord], start: Timestamp, period_s: i64) {
    let instants: Vec<Timestamp> = history.iter().filter_map(|r| r.scheduled_at).collect();
    assert_eq!(
        instants.len(),
        history.len(),
        "only scheduled runs expected: {history:#?}"
    );
    let distinct: BTreeSet<Timestamp> = instants.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        instants.len(),
        "an instant ran twice: {instants:?}"
    );
    let expected: Vec<Timestamp> = (0..instants.len() as i64)
        .map(|k| start + SignedDuration::from_secs(k * period_s))
        .collect();
    assert_eq!(instants, expected, "a gap in the instants");
}

#[tokio::test]
async fn a_cron_framework_killed_mid_run_adopts_its_runs_and_misses_or_doubles_no_instant() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut cron = start_cron(&cluster).await;
    let start = start_in(Duration::from_secs(2));
    add_job(
        &cron,
        json!({"name": "every2", "command": "sleep 3", "schedule": format!("R/{start}/PT2S"),
               "concurrencyPolicy": "ALLOW", "retries": 0, "cpus": 0.1, "mem": 32}),
    )
    .await;

    // Let a few runs start, then SIGKILL the framework while some are running.
    wait_runs(
        &cron,
        "every2",
        "three runs were launched and one is running",
        |r| {
            r.iter().filter(|r| r.task_id.is_some()).count() >= 3
                && r.iter().any(|r| r.state == RunState::Running)
        },
    )
    .await;
    let before = runs(&cron, "every2").await;
    cron.crash();
    let in_flight: Vec<RunRecord> = before
        .iter()
        .filter(|r| r.state == RunState::Running)
        .cloned()
        .collect();
    assert!(
        !in_flight.is_empty(),
        "no run was in flight at the crash: {before:#?}"
    );

    // Down across at least two instants, then back on the same work dir.
    sleep(Duration::from_secs(5)).await;
    cron.restart().await;
    let restarted_at = Timestamp::now();
    wait_runs(&cron, "every2", "runs after the restart succeeded", |r| {
        r.iter()
            .filter(|r| r.scheduled_at.is_some_and(|s| s > restarted_at) && r.state == RunState::Succeeded)
            .count()
            >= 2
    })
    .await;
    wait_runs(&cron, "every2", "the runs in flight at the crash finished", |r| {
        in_flight
            .iter()
            .all(|f| r.iter().any(|r| r.run_id == f.run_id && r.state.is_terminal()))
    })
    .await;
    let history = runs(&cron, "every2").await;
    cron.crash();

    assert_one_run_per_instant(&history, start, 2);
    let launched = launches(&cluster.dir.path().join("agent-0"));
    for adopted in &in_flight {
        let after = history.iter().find(|r| r.run_id == adopted.run_id).expect("kept");
        assert_eq!(after.task_id, adopted.task_id, "the adopted run got another task");
        assert_eq!(
            (after.state, after.attempt),
            (RunState::Succeeded, 0),
            "{after:#?}"
        );
        let task = adopted.task_id.as_ref().expect("launched").to_string();
        assert_eq!(
            launched.get(&task),
            Some(&1),
            "{task} was not launched exactly once"
        );
    }
    for run in history.iter().filter(|r| r.state.is_terminal()) {
        assert_eq!((run.state, run.attempt), (RunState::Succeeded, 0), "{run:#?}");
        let task = run
            .task_id
            .as_ref()
            .expect("a finished run had a task")
            .to_string();
        assert_eq!(
            launched.get(&task),
            Some(&1),
            "{task} was not launched exactly once"
        );
    }
    assert!(
        launched.values().all(|n| *n == 1),
        "a task was launched twice: {launched:?}"
    );
    assert!(
        history.iter().any(|r| r.trigger == Trigger::CatchUp),
        "the instants missed while down ran as catch-up: {history:#?}"
    );
}

#[tokio::test]
async fn a_master_restart_in_the_middle_of_a_run_neither_doubles_nor_loses_it() {
    let mut cluster = Cluster::start(ClusterSpec::default()).await;
    let cron = start_cron(&cluster).await;
    let start = start_in(Duration::from_secs(1));
    // Chronos' default retries (2): a second launch would show as another attempt.
    add_job(
        &cron,
        json!({"name": "long", "command": "sleep 10", "schedule": format!("R1/{start}/PT1M"),
               "cpus": 0.1, "mem": 32}),
    )
    .await;
    wait_runs(&cron, "long", "the run is running", |r| {
        r.first().is_some_and(|r| r.state == RunState::Running)
    })
    .await;
    let task = runs(&cron, "long").await[0].task_id.clone().expect("launched");
    let deadline = Instant::now() + SOON;
    loop {
        let state = cluster.state().await;
        let running = state["tasks"].as_array().is_some_and(|tasks| {
            tasks
                .iter()
                .any(|t| t["id"] == task.as_str() && t["state"] == "TASK_RUNNING")
        });
        if running {
            break;
        }
        assert!(Instant::now() < deadline, "the task never ran: {state:#}");
        sleep(Duration::from_millis(100)).await;
    }

    // The master restarts, and the agent is slow to come back (its task keeps running):
    // the cron framework re-subscribes and reconciles while the master knows no agent, so
    // the master answers that it does not know the task.
    cluster.agents[0].crash();
    cluster.master.restart().await;
    let deadline = Instant::now() + SOON;
    loop {
        let state = cluster.state().await;
        let back = state["frameworks"].as_array().is_some_and(|f| {
            f.iter()
                .any(|f| f["name"] == "agora-cron" && f["status"] == "connected")
        });
        if back {
            assert!(
                state["tasks"].as_array().is_none_or(|t| t.is_empty()),
                "the restarted master knows tasks before any agent re-registered: {state:#}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cron framework never re-subscribed: {state:#}"
        );
        sleep(Duration::from_millis(100)).await;
    }
    // Several reconciliations are answered "unknown" meanwhile.
    sleep(Duration::from_secs(3)).await;
    let during = runs(&cron, "long").await;
    assert_eq!(during.len(), 1, "{during:#?}");
    assert_eq!(
        (during[0].state, during[0].task_id.as_ref()),
        (RunState::Running, Some(&task)),
        "the run was given up or relaunched while its agent was away: {during:#?}"
    );

    cluster.agents[0].restart().await;
    wait_runs(&cron, "long", "the run finished", |r| {
        r.first().is_some_and(|r| r.state.is_terminal())
    })
    .await;
    let history = runs(&cron, "long").await;
    assert_eq!(history.len(), 1, "{history:#?}");
    let run = &history[0];
    assert_eq!(
        (run.state, run.attempt, run.task_id.as_ref(), run.exit_code),
        (RunState::Succeeded, 0, Some(&task), Some(0)),
        "{run:#?}"
    );
    let launched = launches(&cluster.dir.path().join("agent-0"));
    assert_eq!(
        launched,
        BTreeMap::from([(task.to_string(), 1)]),
        "the agent launched another task"
    );
}

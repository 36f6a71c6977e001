//! The cron framework against a real master and agent in this process: scheduled runs,
//! dependent runs, and restarts of the framework in the middle of runs.
#![allow(clippy::unwrap_used)] // a test binary: unwrap is the assertion

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use agora_cron::handle::{RunRecord, RunState, Trigger};
use jiff::Timestamp;
use serde_json::json;
use support::{Cluster, job, name, runs, start_in, wait_until};

fn period(seconds: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_secs(seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_every_two_seconds_runs_each_instant_with_its_result_recorded() {
    let mut cluster = Cluster::start().await;
    let cron = cluster.start_cron().await;
    let start = start_in(Duration::from_secs(2));
    cron.put_job(job(json!({
        "name": "tick", "command": "echo tick", "schedule": format!("R3/{start}/PT2S"),
    })))
    .await
    .unwrap();

    wait_until("three runs succeeded", || async {
        runs(&cron, "tick")
            .await
            .iter()
            .filter(|r| r.state == RunState::Succeeded)
            .count()
            == 3
    })
    .await;
    let r = runs(&cron, "tick").await;
    let instants: Vec<Option<Timestamp>> = r.iter().map(|r| r.scheduled_at).collect();
    assert_eq!(
        instants,
        vec![Some(start), Some(start + period(2)), Some(start + period(4))]
    );
    for run in &r {
        assert_eq!(
            (run.trigger, run.attempt, run.exit_code),
            (Trigger::Schedule, 0, Some(0))
        );
        let started = run.started_at.unwrap();
        let late = started.duration_since(run.scheduled_at.unwrap());
        assert!(late < period(1), "launched {late} after its instant");
        assert!(run.finished_at.unwrap() >= started);
    }
    let status = cron.job(&name("tick")).await.unwrap();
    assert_eq!((status.stats.success_count, status.stats.error_count), (3, 0));
    assert_eq!(status.next_run, None);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_job_runs_after_its_parent_succeeded() {
    let mut cluster = Cluster::start().await;
    let cron = cluster.start_cron().await;
    let start = start_in(Duration::from_secs(1));
    cron.put_job(job(json!({
        "name": "extract", "command": "sleep 0.5", "schedule": format!("R1/{start}/PT1M"),
    })))
    .await
    .unwrap();
    cron.put_job(job(
        json!({"name": "load", "command": "true", "parents": ["extract"]}),
    ))
    .await
    .unwrap();

    wait_until("the child succeeded", || async {
        runs(&cron, "load")
            .await
            .iter()
            .any(|r| r.state == RunState::Succeeded)
    })
    .await;
    let parent = runs(&cron, "extract").await;
    let child = runs(&cron, "load").await;
    assert_eq!((parent.len(), child.len()), (1, 1));
    assert_eq!(parent[0].state, RunState::Succeeded);
    assert_eq!(child[0].trigger, Trigger::Dependency);
    assert!(child[0].started_at.unwrap() >= parent[0].finished_at.unwrap());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_is_retried_then_recorded_as_failed() {
    let mut cluster = Cluster::start().await;
    let cron = cluster.start_cron().await;
    let start = start_in(Duration::from_secs(1));
    cron.put_job(job(json!({
        "name": "flaky", "command": "exit 3", "retries": 1, "schedule": format!("R1/{start}/PT1M"),
    })))
    .await
    .unwrap();
    wait_until("the run failed", || async {
        runs(&cron, "flaky")
            .await
            .iter()
            .any(|r| r.state == RunState::Failed)
    })
    .await;
    let r = runs(&cron, "flaky").await;
    assert_eq!((r.len(), r[0].attempt, r[0].exit_code), (1, 1, Some(3)));
    assert_eq!(cron.job(&name("flaky")).await.unwrap().stats.error_count, 1);
    cluster.shutdown().await;
}

/// Checks the history of a job every `period_s` seconds from `start`: exactly one run per
/// scheduled instant from `start` on, no gap, no duplicate.
fn assert_one_run_per_instant(history: &[RunRecord], start: Timestamp, period_s: i64) {
    let instants: Vec<Timestamp> = history.iter().filter_map(|r| r.scheduled_at).collect();
    assert_eq!(instants.len(), history.len(), "only scheduled runs expected");
    let distinct: BTreeSet<Timestamp> = instants.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        instants.len(),
        "a duplicated instant: {instants:?}"
    );
    let expected: Vec<Timestamp> = (0..instants.len() as i64)
        .map(|k| start + period(k * period_s))
        .collect();
    assert_eq!(instants, expected, "a gap in the instants");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_runs_adopts_them_and_leaves_no_gap_and_no_duplicate() {
    let mut cluster = Cluster::start().await;
    let cron = cluster.start_cron().await;
    let start = start_in(Duration::from_secs(2));
    cron.put_job(job(json!({
        "name": "every2", "command": "sleep 3", "schedule": format!("R/{start}/PT2S"),
        "concurrencyPolicy": "ALLOW", "retries": 0,
    })))
    .await
    .unwrap();

    // Let a few runs start; stop the framework while some are running.
    wait_until("three runs were launched", || async {
        runs(&cron, "every2")
            .await
            .iter()
            .filter(|r| r.task_id.is_some())
            .count()
            >= 3
    })
    .await;
    let before = runs(&cron, "every2").await;
    cluster.stop_cron().await;
    let in_flight: Vec<RunRecord> = before
        .iter()
        .filter(|r| r.state == RunState::Running)
        .cloned()
        .collect();
    assert!(
        !in_flight.is_empty(),
        "no run was in flight at the stop: {before:?}"
    );

    // Down across at least two instants, then back on the same work dir.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cron = cluster.start_cron().await;
    let restarted_at = Timestamp::now();
    wait_until("runs after the restart succeeded", || async {
        let r = runs(&cron, "every2").await;
        r.iter()
            .filter(|r| r.scheduled_at.is_some_and(|s| s > restarted_at) && r.state == RunState::Succeeded)
            .count()
            >= 2
    })
    .await;
    wait_until("the adopted runs finished", || async {
        let r = runs(&cron, "every2").await;
        in_flight
            .iter()
            .all(|f| r.iter().any(|r| r.run_id == f.run_id && r.state.is_terminal()))
    })
    .await;
    let mut history = runs(&cron, "every2").await;
    cluster.stop_cron().await;
    history.retain(|r| r.scheduled_at.is_some());

    assert_one_run_per_instant(&history, start, 2);
    for adopted in &in_flight {
        let after = history.iter().find(|r| r.run_id == adopted.run_id).unwrap();
        assert_eq!(
            after.task_id, adopted.task_id,
            "the in-flight run got another task"
        );
        assert_eq!((after.state, after.attempt), (RunState::Succeeded, 0));
        let task = adopted.task_id.as_ref().unwrap();
        assert_eq!(
            cluster.task_launches(task.as_str()),
            1,
            "{task} was launched again"
        );
    }
    assert!(
        history.iter().any(|r| r.trigger == Trigger::CatchUp),
        "the instants missed while down ran as catch-up: {history:?}"
    );
    assert!(
        history
            .iter()
            .all(|r| r.state != RunState::Skipped && r.attempt == 0)
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_parent_over_rest_hands_its_schedule_to_its_child_for_good() {
    let mut cluster = Cluster::start().await;
    cluster.start_cron().await;
    let url = cluster.cron_url();
    let client = reqwest::Client::new();
    let schedule = "R/2099-01-01T00:00:00Z/P1D";
    for (path, body) in [
        (
            "/scheduler/iso8601",
            json!({"name": "extract", "command": "true", "schedule": schedule,
                   "scheduleTimeZone": "Asia/Tokyo"}),
        ),
        (
            "/scheduler/dependency",
            json!({"name": "load", "command": "true", "parents": ["extract"]}),
        ),
    ] {
        let response = client
            .post(format!("{url}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{path}");
    }
    let response = client
        .delete(format!("{url}/v1/scheduler/job/extract"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    let check = |jobs: serde_json::Value| {
        let jobs = jobs.as_array().unwrap().clone();
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        let load = &jobs[0];
        assert_eq!(load["name"], "load");
        assert_eq!(load["schedule"], schedule, "{load}");
        assert_eq!(load["scheduleTimeZone"], "Asia/Tokyo", "{load}");
        assert!(
            load.get("parents")
                .is_none_or(|p| p.as_array().is_some_and(|p| p.is_empty())),
            "{load}"
        );
    };
    let jobs: serde_json::Value = client
        .get(format!("{url}/scheduler/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    check(jobs);
    let csv = client
        .get(format!("{url}/scheduler/graph/csv"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!csv.contains("link,"), "{csv}");

    // Stored so: the same after a restart.
    cluster.stop_cron().await;
    cluster.start_cron().await;
    let url = cluster.cron_url();
    let jobs: serde_json::Value = client
        .get(format!("{url}/scheduler/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    check(jobs);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restart_while_the_agent_is_away_neither_doubles_nor_loses_the_run() {
    let mut cluster = Cluster::start().await;
    let cron = cluster.start_cron().await;
    let start = start_in(Duration::from_secs(1));
    // Chronos' default retries (2): a second launch would show as another attempt.
    cron.put_job(job(json!({
        "name": "long", "command": "sleep 8", "schedule": format!("R1/{start}/PT1M"),
    })))
    .await
    .unwrap();
    wait_until("the run is running", || async {
        runs(&cron, "long")
            .await
            .first()
            .is_some_and(|r| r.state == RunState::Running && r.exit_code.is_none())
    })
    .await;
    let task = runs(&cron, "long").await[0].task_id.clone().unwrap();
    wait_until("the agent runs the task", || async {
        cluster.task_launches(task.as_str()) == 1
    })
    .await;

    // The master restarts and the agent is slow to come back: the framework re-subscribes
    // and reconciles while the master knows no agent, and is told the task is unknown.
    cluster.stop_agent().await;
    cluster.stop_master().await;
    cluster.start_master().await;
    wait_until("the framework re-subscribed", || async {
        let Some(state) = cluster.master_state().await else {
            return false;
        };
        state["frameworks"].as_array().is_some_and(|f| {
            f.iter()
                .any(|f| f["name"] == "agora-cron" && f["status"] == "connected")
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = runs(&cron, "long").await;
    assert_eq!(
        (during.len(), during[0].state, during[0].task_id.as_ref()),
        (1, RunState::Running, Some(&task)),
        "the run was given up or relaunched while its agent was away: {during:?}"
    );

    cluster.start_agent().await;
    wait_until("the run finished", || async {
        runs(&cron, "long")
            .await
            .first()
            .is_some_and(|r| r.state.is_terminal())
    })
    .await;
    let history = runs(&cron, "long").await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(
        (history[0].state, history[0].attempt, history[0].task_id.as_ref()),
        (RunState::Succeeded, 0, Some(&task)),
        "{history:?}"
    );
    assert_eq!(
        cluster.task_launches(task.as_str()),
        1,
        "{task} was launched again"
    );
    cluster.shutdown().await;
}

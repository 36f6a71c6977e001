//! The cron framework highly available: two instances on one real ZooKeeper (`--zk`), a real
//! master and agent in this process. The standby forwards REST calls to the leader; when the
//! leader dies while jobs fire every one and two seconds, the standby takes over: every
//! instant runs exactly once and the runs in flight are adopted under their task ids.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: unwrap is the assertion

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use agora_cron::handle::{RunRecord, RunState};
use agora_cron::runtime::{CronConfig, RuntimeError};
use agora_store::ZkUrl;
use agora_store::zk_server::ZkServer;
use jiff::Timestamp;
use serde_json::{Value, json};
use support::{Cluster, start_in, wait_until};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One `agora cron --zk …` instance in this process.
struct Instance {
    address: String,
    stop: Option<oneshot::Sender<()>>,
    run: Option<JoinHandle<Result<(), RuntimeError>>>,
}

impl Instance {
    async fn start(cluster: &Cluster, zk_url: &str, name: &str) -> Instance {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = CronConfig::new(
            vec![cluster.master.to_string()],
            addr,
            cluster.dir.path().join(name),
        );
        config.hostname = Some("test-host".into());
        config.retry_backoff = Duration::from_millis(500);
        config.zk = Some(ZkUrl::parse(zk_url).unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let run = tokio::spawn(agora_cron::runtime::serve(config, listener, async {
            let _ = stopped.await;
        }));
        Instance {
            address: addr.to_string(),
            stop: Some(stop),
            run: Some(run),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Ends the instance at once, as a crash would: everything it runs is dropped, nothing is
    /// stopped cleanly, the framework is not torn down.
    fn kill(&mut self) {
        if let Some(run) = self.run.take() {
            run.abort();
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let run = self.run.take().unwrap();
        tokio::time::timeout(support::WAIT, run)
            .await
            .expect("the instance stops in time")
            .unwrap()
            .unwrap();
    }

    /// Waits until this instance answers (itself or forwarded) that `leader` leads.
    async fn wait_leader(&self, leader: &Instance) {
        wait_until(
            &format!("{} reports {} as the leader", self.address, leader.address),
            || async {
                let Ok(response) = reqwest::get(self.url("/leader")).await else {
                    return false;
                };
                let Ok(answer) = response.json::<Value>().await else {
                    return false;
                };
                answer["leader"] == leader.address.as_str()
            },
        )
        .await;
    }

    /// A job's runs, as this instance answers (itself or forwarded); empty when unanswered.
    async fn runs(&self, job: &str) -> Vec<RunRecord> {
        let Ok(response) = reqwest::get(self.url(&format!("/scheduler/job/{job}/runs"))).await else {
            return Vec::new();
        };
        if !response.status().is_success() {
            return Vec::new();
        }
        response.json().await.unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Exactly one run per scheduled instant from `start` on, every `period_s` seconds: no gap, no
/// duplicate.
fn assert_one_run_per_instant(job: &str, history: &[RunRecord], start: Timestamp, period_s: i64) {
    let instants: Vec<Timestamp> = history.iter().filter_map(|r| r.scheduled_at).collect();
    assert_eq!(
        instants.len(),
        history.len(),
        "{job}: only scheduled runs expected"
    );
    let distinct: BTreeSet<Timestamp> = instants.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        instants.len(),
        "{job}: a duplicated instant: {instants:?}"
    );
    let expected: Vec<Timestamp> = (0..instants.len() as i64)
        .map(|k| start + jiff::SignedDuration::from_secs(k * period_s))
        .collect();
    assert_eq!(instants, expected, "{job}: a gap in the instants");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_while_jobs_fire_leaves_no_gap_no_duplicate_and_adopts_runs_in_flight() {
    let zk = ZkServer::launch().await.unwrap();
    let zk_url = zk.url("/agora-cron");
    let cluster = Cluster::start().await;
    let mut a = Instance::start(&cluster, &zk_url, "a").await;
    a.wait_leader(&a).await;
    let b = Instance::start(&cluster, &zk_url, "b").await;
    b.wait_leader(&a).await;
    let start = start_in(Duration::from_secs(2));
    let client = reqwest::Client::new();
    for body in [
        json!({"name": "every2", "command": "sleep 3", "schedule": format!("R/{start}/PT2S"),
               "concurrencyPolicy": "ALLOW", "retries": 0}),
        json!({"name": "every1", "command": "sleep 0.3", "schedule": format!("R/{start}/PT1S"),
               "concurrencyPolicy": "ALLOW", "retries": 0}),
    ] {
        // Through the standby: the leader gets it.
        let response = client
            .post(b.url("/scheduler/iso8601"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{body}");
    }
    wait_until("three runs of every2 were launched", || async {
        a.runs("every2")
            .await
            .iter()
            .filter(|r| r.task_id.is_some())
            .count()
            >= 3
    })
    .await;
    let in_flight: Vec<RunRecord> = a
        .runs("every2")
        .await
        .into_iter()
        .filter(|r| r.state == RunState::Running)
        .collect();
    assert!(!in_flight.is_empty(), "no run of every2 in flight at the kill");

    a.kill();

    b.wait_leader(&b).await;
    let taken_over = Timestamp::now();
    wait_until("runs scheduled after the take-over succeeded", || async {
        let later = |runs: Vec<RunRecord>| {
            runs.iter()
                .filter(|r| r.scheduled_at.is_some_and(|s| s > taken_over) && r.state == RunState::Succeeded)
                .count()
        };
        later(b.runs("every2").await) >= 2 && later(b.runs("every1").await) >= 3
    })
    .await;
    wait_until("the adopted runs finished", || async {
        let runs = b.runs("every2").await;
        in_flight
            .iter()
            .all(|f| runs.iter().any(|r| r.run_id == f.run_id && r.state.is_terminal()))
    })
    .await;
    let every2 = b.runs("every2").await;
    let every1 = b.runs("every1").await;
    b.stop().await;

    assert_one_run_per_instant("every2", &every2, start, 2);
    assert_one_run_per_instant("every1", &every1, start, 1);
    for adopted in &in_flight {
        let after = every2.iter().find(|r| r.run_id == adopted.run_id).unwrap();
        assert_eq!(
            after.task_id, adopted.task_id,
            "the in-flight run got another task"
        );
        assert_eq!((after.state, after.attempt), (RunState::Succeeded, 0));
    }
    for run in every2.iter().chain(&every1) {
        assert_ne!(run.state, RunState::Skipped, "{run:?}");
        assert_eq!(run.attempt, 0, "{run:?}");
        if let Some(task) = &run.task_id {
            assert_eq!(
                cluster.task_launches(task.as_str()),
                1,
                "{task} was launched again"
            );
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_zookeeper_stops_acting_and_the_standby_runs_the_next_instants() {
    let zk = ZkServer::launch().await.unwrap();
    let proxy = agora_store::zk_server::ZkProxy::start(&zk.connect_string())
        .await
        .unwrap();
    let cluster = Cluster::start().await;
    let a = Instance::start(&cluster, &proxy.url("/agora-cron"), "a").await;
    a.wait_leader(&a).await;
    let b = Instance::start(&cluster, &zk.url("/agora-cron"), "b").await;
    b.wait_leader(&a).await;
    let start = start_in(Duration::from_secs(1));
    let body = json!({"name": "tick", "command": "true", "schedule": format!("R/{start}/PT1S"),
                      "concurrencyPolicy": "ALLOW", "retries": 0});
    let response = reqwest::Client::new()
        .post(a.url("/scheduler/iso8601"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    wait_until("two runs succeeded", || async {
        a.runs("tick")
            .await
            .iter()
            .filter(|r| r.state == RunState::Succeeded)
            .count()
            >= 2
    })
    .await;

    proxy.cut();

    wait_until("the cut-off leader stops answering", || async {
        reqwest::get(a.url("/scheduler/jobs"))
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    b.wait_leader(&b).await;
    let taken_over = Timestamp::now();
    wait_until("the new leader ran three more instants", || async {
        b.runs("tick")
            .await
            .iter()
            .filter(|r| r.scheduled_at.is_some_and(|s| s > taken_over) && r.state == RunState::Succeeded)
            .count()
            >= 3
    })
    .await;
    proxy.restore();
    a.wait_leader(&b).await;
    let history = a.runs("tick").await;
    b.stop().await;
    a.stop().await;

    assert_one_run_per_instant("tick", &history, start, 1);
    for run in &history {
        if let Some(task) = &run.task_id {
            assert_eq!(
                cluster.task_launches(task.as_str()),
                1,
                "{task} was launched twice"
            );
        }
    }
    cluster.shutdown().await;
}

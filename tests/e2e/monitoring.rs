//! Task logs through `agora logs`, and resource usage as the master's
//! `/state`, `/metrics` and `agora state` show it.

use std::process::Command;
use std::time::Duration;

use agora_proto::v1::TaskState;
use tokio::time::{Instant, sleep};

use crate::harness::*;

/// A cluster whose agent samples usage every 500 ms.
async fn sampled_cluster() -> Cluster {
    Cluster::start(ClusterSpec {
        agent_args: vec!["--usage-interval".into(), "500ms".into()],
        ..ClusterSpec::default()
    })
    .await
}

fn agora(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(agora_bin()).args(args).output().expect("run agora");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn agora_logs_prints_a_finished_tasks_output() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let master = cluster.master.addr.to_string();
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![shell_task(
            "talker",
            "echo hello; echo oops >&2; echo world",
            0.1,
            32.0,
        )],
    )
    .await;
    fw.update("talker", TaskState::Finished).await;

    let (ok, out, err) = agora(&["logs", "talker", "--master", &master]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello\nworld\n");
    let (_, tail, _) = agora(&["logs", "talker", "--tail", "1", "--master", &master]);
    assert_eq!(tail, "world\n");
    let (_, stderr, _) = agora(&["logs", "talker", "--stderr", "--master", &master]);
    assert_eq!(stderr, "oops\n");
}

#[tokio::test]
async fn agora_logs_follow_prints_until_the_task_ends() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let master = cluster.master.addr.to_string();
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![shell_task("slow", "echo first; sleep 1; echo last", 0.1, 32.0)],
    )
    .await;
    fw.update("slow", TaskState::Running).await;

    let (ok, out, err) = agora(&["logs", "slow", "--follow", "--master", &master]);
    assert!(ok, "{err}");
    assert_eq!(out, "first\nlast\n");
}

#[tokio::test]
async fn agora_logs_of_an_unknown_task_fails_naming_it() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let (ok, _, err) = agora(&["logs", "ghost", "--master", &cluster.master.addr.to_string()]);
    assert!(!ok);
    assert!(err.contains("ghost"), "{err}");
}

#[tokio::test]
async fn the_master_shows_a_busy_tasks_usage_against_its_allocation() {
    let cluster = sampled_cluster().await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![shell_task("busy", "while :; do :; done", 1.0, 64.0)],
    )
    .await;
    fw.update("busy", TaskState::Running).await;

    let deadline = Instant::now() + SOON;
    let state = loop {
        let state = cluster.state().await;
        let task_cpus = state["tasks"][0]["usage"]["cpus_used"].as_f64().unwrap_or(0.0);
        if task_cpus > 0.5 {
            break state;
        }
        assert!(Instant::now() < deadline, "no busy usage shown: {state:#}");
        sleep(Duration::from_millis(200)).await;
    };
    let agent = &state["agents"][0];
    assert_eq!(agent["used"]["cpus"], 1.0, "allocated: {agent:#}");
    assert!(
        agent["usage"]["cpus_used"].as_f64().unwrap() > 0.5,
        "used: {agent:#}"
    );
    assert!(
        agent["usage"]["host"]["cpus_total"].as_f64().unwrap() >= 1.0,
        "{agent:#}"
    );
    assert!(state["tasks"][0]["usage"]["mem_used_mib"].as_f64().unwrap() > 0.0);

    let metrics = reqwest::get(format!("{}/metrics", cluster.master_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("agora_master_agent_cpus_allocated{"),
        "{metrics}"
    );
    assert!(metrics.contains("agora_master_agent_cpus_used{"), "{metrics}");
    assert!(metrics.contains("task_id=\"busy\""), "{metrics}");

    let (ok, out, err) = agora(&["state", "--master", &cluster.master.addr.to_string()]);
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.contains("busy")).expect("task listed");
    assert!(line.contains("TASK_RUNNING"), "{out}");
    assert!(out.contains("CPU USED"), "{out}");
    let used: f64 = line
        .split_whitespace()
        .nth(2)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no cpu usage in {line:?}"));
    assert!(used > 0.5, "{out}");
}

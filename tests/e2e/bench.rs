//! `agora bench cluster` and `agora bench failover`: the benchmarks run end
//! to end at a small scale and report what they measured.

use std::process::Command;

use crate::harness::*;

#[tokio::test]
async fn bench_cluster_finishes_every_task_and_reports_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("bench").display().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(agora_bin())
            .args([
                "bench",
                "cluster",
                "--agents",
                "20",
                "--frameworks",
                "2",
                "--tasks",
                "200",
            ])
            .args([
                "--task-duration",
                "10ms",
                "--timeout-secs",
                "60",
                "--json",
                "--work-dir",
                &work,
            ])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run agora bench cluster")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(report["finished"], 200, "{report:#}");
    assert_eq!(report["launched"], 200, "{report:#}");
    assert_eq!(report["offer_to_launch_ms"]["samples"], 200, "{report:#}");
    assert!(
        report["tasks_per_second"].as_f64().unwrap_or(0.0) > 0.0,
        "{report:#}"
    );
    assert!(
        report["master_peak_rss_bytes"].as_u64().unwrap_or(0) > 0,
        "{report:#}"
    );
    assert!(
        report["allocation"]["passes"].as_u64().unwrap_or(0) > 0,
        "{report:#}"
    );
}

/// Runs `agora bench failover --json` with `flags` in a fresh work dir and
/// returns its summary.
async fn bench_failover(flags: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("bench").display().to_string();
    let flags: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(agora_bin())
            .args(["bench", "failover"])
            .args(&flags)
            .args(["--timeout-secs", "90", "--json", "--work-dir", &work])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run agora bench failover")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

/// The figures every failover summary has, one sample per kill.
fn assert_failover_figures(report: &serde_json::Value, kills: u64) {
    for figure in [
        "elected_ms",
        "leading_ms",
        "agents_reregistered_ms",
        "frameworks_resubscribed_ms",
        "frameworks_offered_ms",
    ] {
        assert_eq!(report[figure]["samples"], kills, "{figure}: {report:#}");
        for q in ["p50", "p99", "max"] {
            assert!(
                report[figure][q].as_f64().unwrap_or(0.0) > 0.0,
                "{figure}.{q}: {report:#}"
            );
        }
    }
    assert_eq!(
        report["rounds"].as_array().map(Vec::len),
        Some(kills as usize),
        "{report:#}"
    );
    assert!(report["target_met"].is_boolean(), "{report:#}");
    assert_eq!(report["tasks_ended"], 0, "a failover ended tasks: {report:#}");
}

#[tokio::test]
async fn bench_failover_with_real_agents_reports_every_figure_per_kill() {
    let report = bench_failover(&["--kills", "2", "--agents", "2"]).await;
    assert_failover_figures(&report, 2);
    assert_eq!(report["zk_session_timeout_ms"], 2000.0, "{report:#}");
    for round in report["rounds"].as_array().into_iter().flatten() {
        assert_ne!(round["killed"], round["new_leader"], "{report:#}");
    }
}

#[tokio::test]
async fn bench_failover_simulated_agents_re_register_with_the_new_leader() {
    let report = bench_failover(&[
        "--kills",
        "1",
        "--agents",
        "0",
        "--sim-agents",
        "20",
        "--tasks",
        "20",
        "--connections",
        "4",
    ])
    .await;
    assert_failover_figures(&report, 1);
    assert_eq!(report["sim_agents_registered_ms"]["samples"], 1, "{report:#}");
}

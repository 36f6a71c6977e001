//! `agora bench cluster`: the simulated-cluster harness runs end to end at
//! a small scale and reports what it measured.

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

//! The `agora` command line: `local`, `state`, and complete `--help`.

use std::process::Command;

use agora_proto::v1::TaskState;

use crate::harness::*;

#[tokio::test]
async fn agora_local_runs_a_master_and_two_agents_with_disjoint_ports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _sweep = Sweep(dir.path().to_path_buf());
    let work = dir.path().join("data").display().to_string();
    let local = Process::start(
        dir.path(),
        "local",
        vec![
            "local".into(),
            "--work-dir".into(),
            work,
            "--master-listen".into(),
            "127.0.0.1:0".into(),
            "--agent-base-port".into(),
            "0".into(),
            "--no-frameworks".into(),
        ],
    )
    .await;
    let url = format!("http://{}/state", local.addr);
    let deadline = tokio::time::Instant::now() + SOON;
    let agents = loop {
        let state = http_json(&url).await;
        let agents = state["agents"].as_array().cloned().unwrap_or_default();
        if agents.len() == 2 {
            break agents;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agents never registered: {state:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let ports: Vec<String> = agents
        .iter()
        .map(|a| a["resources"]["ports"].to_string())
        .collect();
    assert_ne!(ports[0], ports[1], "both agents offer the same ports");

    // And it runs tasks.
    let mut fw = Framework::subscribe(local.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(&[&offers[0]], vec![shell_task("t1", "true", 0.1, 16.0)])
        .await;
    fw.update("t1", TaskState::Finished).await;
}

#[tokio::test]
async fn agora_state_summarises_agents_frameworks_and_tasks() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.wait_agents(1).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("summary-fw", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![shell_task("shown", "exec sleep 300", 0.5, 64.0)],
    )
    .await;
    fw.update("shown", TaskState::Running).await;

    let out = Command::new(agora_bin())
        .args(["state", "--master", &cluster.master.addr.to_string()])
        .output()
        .expect("run agora state");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&offers[0].agent_id), "{text}");
    assert!(text.contains("0.5/4"), "used/total cpus shown: {text}");
    assert!(text.contains("summary-fw"), "{text}");
    assert!(text.contains("shown") && text.contains("TASK_RUNNING"), "{text}");
}

#[test]
fn agora_state_against_no_master_fails_with_a_clear_message() {
    let out = Command::new(agora_bin())
        .args(["state", "--master", "127.0.0.1:1"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the master"), "{err}");
}

#[test]
fn every_command_documents_its_flags() {
    for (cmd, flags) in [
        (
            "master",
            &["--listen", "--work-dir", "--agent-timeout", "--offer-timeout"][..],
        ),
        (
            "agent",
            &[
                "--master",
                "--listen",
                "--work-dir",
                "--resources",
                "--attributes",
            ][..],
        ),
        ("local", &["--work-dir", "--agents"][..]),
        ("state", &["--master"][..]),
    ] {
        let out = Command::new(agora_bin())
            .args([cmd, "--help"])
            .output()
            .expect("run");
        assert!(out.status.success(), "{cmd} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        for f in flags {
            assert!(
                text.contains(f),
                "`agora {cmd} --help` does not document {f}:\n{text}"
            );
        }
    }
}

#[test]
fn bad_flags_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(agora_bin())
        .args([
            "agent",
            "--master",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
            "--resources",
            "cpus:lots",
        ])
        .arg("--work-dir")
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cpus"), "the error names the bad resource: {err}");
}

#[tokio::test]
async fn a_restarted_agora_local_picks_up_its_running_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _sweep = Sweep(dir.path().to_path_buf());
    let work = dir.path().join("data").display().to_string();
    let args = [
        "local",
        "--work-dir",
        &work,
        "--master-listen",
        "127.0.0.1:0",
        "--agent-base-port",
        "0",
        "--no-frameworks",
    ];
    let mut local = Process::start(dir.path(), "local", args.iter().map(|s| s.to_string()).collect()).await;
    let mut fw = Framework::subscribe(local.addr, framework_info("e2e", 300.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![shell_task("t1", "echo $$ > pid; exec sleep 300", 0.1, 16.0)],
    )
    .await;
    fw.update("t1", TaskState::Running).await;
    let id = fw.id.clone();
    drop(fw);

    local.restart().await;
    let mut info = framework_info("e2e", 300.0);
    info.id = id;
    let mut fw = Framework::subscribe(local.addr, info).await;
    // The agents re-register on their own; reconcile until the task is known again.
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        fw.reconcile(&["t1"]).await;
        let st = fw.next_update("t1", SOON).await.expect("reconciliation answer");
        if st.state() == TaskState::Running {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task not recovered: {st:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn agora_local_runs_the_service_and_cron_frameworks_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _sweep = Sweep(dir.path().to_path_buf());
    let work = dir.path().join("data").display().to_string();
    let args = [
        "local",
        "--work-dir",
        &work,
        "--master-listen",
        "127.0.0.1:0",
        "--agent-base-port",
        "0",
        "--service-listen",
        "127.0.0.1:0",
        "--cron-listen",
        "127.0.0.1:0",
    ];
    let local = Process::start(dir.path(), "local", args.iter().map(|s| s.to_string()).collect()).await;
    let service = logged_address(&local.log, "service framework API listening").await;
    let cron = logged_address(&local.log, "cron framework listening").await;
    let http = reqwest::Client::new();

    // An app through the Marathon API reaches RUNNING.
    let created = http
        .post(format!("http://{service}/v2/apps"))
        .json(&serde_json::json!({"id": "/e2e/sleeper", "cmd": "sleep 300", "cpus": 0.1, "mem": 16}))
        .send()
        .await
        .expect("POST /v2/apps");
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let app = http_json(&format!("http://{service}/v2/apps/e2e/sleeper")).await;
        if app["app"]["tasksRunning"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "app never ran: {app:#}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A job through the Chronos API runs and succeeds.
    let added = http
        .post(format!("http://{cron}/scheduler/iso8601"))
        .json(&serde_json::json!({
            "name": "e2e-once", "command": "true", "schedule": "R1//PT1S",
            "cpus": 0.1, "mem": 16, "disk": 0, "owner": "e2e@example.com"
        }))
        .send()
        .await
        .expect("POST /scheduler/iso8601");
    assert_eq!(added.status(), 204, "{:?}", added.text().await);
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let jobs = http_json(&format!("http://{cron}/scheduler/jobs")).await;
        if jobs[0]["successCount"] == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never succeeded: {jobs:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn agora_local_with_a_relative_work_dir_kills_tasks() {
    // The default `--work-dir` is relative (./agora-data); supervisors change
    // into their sandboxes, so sandbox paths must not be.
    let dir = tempfile::tempdir().expect("tempdir");
    let _sweep = Sweep(dir.path().to_path_buf());
    let args = [
        "local",
        "--work-dir",
        "relative-data",
        "--master-listen",
        "127.0.0.1:0",
        "--agent-base-port",
        "0",
        "--no-frameworks",
    ];
    let local = Process::start(dir.path(), "local", args.iter().map(|s| s.to_string()).collect()).await;
    let mut fw = Framework::subscribe(local.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(&[&offers[0]], vec![shell_task("t1", "exec sleep 300", 0.1, 16.0)])
        .await;
    fw.update("t1", TaskState::Running).await;
    fw.kill("t1").await;
    fw.update("t1", TaskState::Killed).await;
}

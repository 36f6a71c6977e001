//! The marathon Python client (0.13 from PyPI, unchanged) against the
//! service framework's REST API on a real master and agent: the script
//! `tests/compat/marathon_client.py` creates, lists, scales, kills with
//! scale, updates, rolls back, restarts, deletes, reads the event stream and
//! checks the error answers.
//!
//! Without `python3` or the `marathon` module the test is skipped with a
//! message, unless the environment variable `CI` is set: then it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: panics are the failure report

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use support::{Cluster, serve_http};

/// How long the whole Python script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// Why the Python side cannot run, if it cannot.
fn python_missing() -> Option<String> {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import marathon"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match probe {
        Err(e) => Some(format!("python3 cannot be run: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "the marathon module is missing (pip install marathon==0.13.0): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/compat/marathon_client.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marathon_python_client_works_unchanged() {
    if let Some(why) = python_missing() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set, so this must run: {why}"
        );
        eprintln!("SKIPPED the_marathon_python_client_works_unchanged: {why}");
        return;
    }
    let cluster = Cluster::start().await;
    let (base, stop, run) = serve_http(&cluster, &cluster.service_dir()).await;

    let child = tokio::process::Command::new("python3")
        .arg(script())
        .arg(&base)
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start python3");
    let outcome = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output()).await;

    let _ = stop.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(30), run).await;

    let output = outcome
        .unwrap_or_else(|_| panic!("the script did not finish within {SCRIPT_TIMEOUT:?}"))
        .expect("wait for python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "marathon_client.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    assert!(stdout.contains("all marathon client checks passed"), "{stdout}");
    stopped
        .expect("the service framework stops in time")
        .expect("the service task")
        .expect("the service framework ran without error");
}

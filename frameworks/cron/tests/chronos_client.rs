//! The unchanged chronos-python 1.2.1 client against the cron framework on a real master
//! and agent in this process: `tests/compat/chronos_client.py` runs its scenario with the
//! client's default `/v1` prefix and without a prefix.
//!
//! Needs `python3` with chronos-python 1.2.1 (scripts/test.sh installs it). In CI (env
//! `CI` set) a missing client fails the test; elsewhere the test is skipped with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking is the report

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::Cluster;

/// How long the Python scenario (both prefixes, a few real runs each) may take.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(300);

/// `python3`, if it can import chronos-python 1.2.1; otherwise why not.
fn python_with_chronos() -> Result<&'static str, String> {
    let check = "import importlib.metadata as m, chronos; \
                 v = m.version('chronos-python'); \
                 assert v == '1.2.1', 'chronos-python ' + v + ' is installed, not 1.2.1'";
    match std::process::Command::new("python3").args(["-c", check]).output() {
        Ok(out) if out.status.success() => Ok("python3"),
        Ok(out) => Err(format!(
            "python3 cannot use chronos-python 1.2.1: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run python3: {e}")),
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/compat/chronos_client.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chronos_python_works_unchanged_with_and_without_the_v1_prefix() {
    let python = match python_with_chronos() {
        Ok(python) => python,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{why} (CI requires it: scripts/test.sh installs chronos-python==1.2.1)")
        }
        Err(why) => {
            eprintln!("SKIPPED chronos_python_works_unchanged…: {why}");
            return;
        }
    };
    let mut cluster = Cluster::start().await;
    cluster.start_cron().await;
    let url = cluster.cron_url();
    let address = url.trim_start_matches("http://").to_owned();

    let run = tokio::process::Command::new(python)
        .arg(script())
        .arg(&address)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCENARIO_TIMEOUT, run).await;
    cluster.shutdown().await;

    let output = output
        .expect("the Python scenario finishes in time")
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "chronos_client.py failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("scenario v1: ok"), "{stdout}");
    assert!(stdout.contains("scenario no prefix: ok"), "{stdout}");
}

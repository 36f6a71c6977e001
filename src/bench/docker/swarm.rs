//! Docker's own orchestrator on the same engine: `docker service create
//! --replicas N` in Swarm mode, timed until N containers of the service run.

use std::time::Duration;

use anyhow::Context;
use tokio::process::Command;
use tokio::time::Instant;

use super::Workload;
use super::engine::{BENCH_LABEL, Engine};

/// Runs the `docker` CLI; its trimmed stdout, or an error with its stderr.
async fn docker_cli(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .await
        .context("cannot run the docker CLI")?;
    anyhow::ensure!(
        out.status.success(),
        "`docker {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Swarm mode for the benchmark: entered if the engine was not in a swarm,
/// and left by [`Swarm::release`] only in that case.
#[derive(Debug)]
pub struct Swarm {
    initialised_here: bool,
}

impl Swarm {
    /// Makes sure the engine is a swarm manager.
    pub async fn join() -> anyhow::Result<Self> {
        let state = docker_cli(&["info", "--format", "{{.Swarm.LocalNodeState}}"]).await?;
        if state == "active" {
            return Ok(Self {
                initialised_here: false,
            });
        }
        tracing::info!(%state, "initialising a single-node swarm for the benchmark");
        docker_cli(&["swarm", "init", "--advertise-addr", "127.0.0.1"]).await?;
        Ok(Self {
            initialised_here: true,
        })
    }

    /// Leaves the swarm if [`Swarm::join`] created it.
    pub async fn release(self) -> anyhow::Result<()> {
        if self.initialised_here {
            docker_cli(&["swarm", "leave", "--force"]).await?;
        }
        Ok(())
    }
}

/// The `docker service create` arguments of one measurement.
pub fn service_create_args(workload: &Workload, name: &str, label_value: &str) -> Vec<String> {
    let label = format!("{BENCH_LABEL}={label_value}");
    let mut args: Vec<String> = [
        "service",
        "create",
        "--detach",
        "--quiet",
        "--no-resolve-image",
        "--name",
        name,
        "--replicas",
        &workload.containers.to_string(),
        "--label",
        &label,
        "--container-label",
        &label,
        "--limit-cpu",
        &workload.cpus.to_string(),
        "--limit-memory",
        &format!("{}M", workload.mem_mib),
        // `sleep` as pid 1 ignores SIGTERM: do not wait 10 s for each at cleanup.
        "--stop-grace-period",
        "1s",
        &workload.image,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(workload.argv());
    args
}

/// Creates the service and waits until all its replicas run; removes the
/// service and its containers whatever happens.
pub async fn measure(
    engine: &Engine,
    workload: &Workload,
    label_value: &str,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let name = format!("agora-bench-{label_value}");
    let args = service_create_args(workload, &name, label_value);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let began = Instant::now();
    let result = async {
        docker_cli(&args).await?;
        engine
            .wait_running(label_value, workload.containers, began + timeout)
            .await?;
        anyhow::Ok(began.elapsed())
    }
    .await;
    if let Err(err) = docker_cli(&["service", "rm", &name]).await {
        tracing::debug!(%err, "service removal failed (never created?)");
    }
    engine.clean_up(label_value, Duration::from_secs(60)).await?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_carries_the_label_limits_and_command() {
        let workload = Workload::for_test(50);
        let args = service_create_args(&workload, "agora-bench-x", "x").join(" ");
        assert!(args.contains("--replicas 50"), "{args}");
        assert!(args.contains("--container-label agora.bench=x"), "{args}");
        assert!(args.contains("--limit-cpu 0.01 --limit-memory 16M"), "{args}");
        assert!(args.ends_with("agora-test/busybox:latest sleep 3600"), "{args}");
    }
}

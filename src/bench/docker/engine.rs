//! The engine as the benchmark sees it: containers found by the benchmark
//! label, removed by it, counted by it; and the machine's load, so that a
//! measurement starts on a quiet machine.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use futures::future::join_all;
use tokio::time::Instant;

/// The label key every benchmark container carries; its value names one
/// measurement, so cleanup never touches anything else.
pub const BENCH_LABEL: &str = "agora.bench";

/// How often the engine is polled while waiting for containers.
const POLL: Duration = Duration::from_millis(100);

/// The local engine (`DOCKER_HOST` or the default socket).
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

impl Engine {
    /// Connects to the local engine and pings it.
    pub async fn connect() -> anyhow::Result<Self> {
        let docker = Docker::connect_with_local_defaults()
            .context("cannot connect to the Docker engine")?
            .negotiate_version()
            .await
            .context("cannot negotiate the Docker API version")?;
        docker.ping().await.context("the Docker engine does not answer")?;
        Ok(Self { docker })
    }

    /// The bollard client.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Whether `image` is present locally.
    pub async fn has_image(&self, image: &str) -> bool {
        self.docker.inspect_image(image).await.is_ok()
    }

    /// Ids of the containers (any state) whose [`BENCH_LABEL`] is `value`,
    /// or carry the label at all when `value` is `None`.
    pub async fn labelled(&self, value: Option<&str>, running_only: bool) -> anyhow::Result<Vec<String>> {
        let label = match value {
            Some(v) => format!("{BENCH_LABEL}={v}"),
            None => BENCH_LABEL.to_owned(),
        };
        let mut filters = HashMap::from([("label".to_owned(), vec![label])]);
        if running_only {
            filters.insert("status".to_owned(), vec!["running".to_owned()]);
        }
        let options = ListContainersOptions {
            all: !running_only,
            filters: Some(filters),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .context("cannot list containers")?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Waits until `want` containers labelled `value` run; polls every 100 ms.
    pub async fn wait_running(&self, value: &str, want: usize, deadline: Instant) -> anyhow::Result<()> {
        loop {
            let running = self.labelled(Some(value), true).await?.len();
            if running >= want {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {running} of {want} containers were running at the deadline"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to `patience` for the containers labelled `value` to go
    /// by themselves, then force-removes whatever is left, and checks none
    /// remains. Returns how many had to be force-removed.
    pub async fn clean_up(&self, value: &str, patience: Duration) -> anyhow::Result<usize> {
        let until = Instant::now() + patience;
        let mut left = self.labelled(Some(value), false).await?;
        while !left.is_empty() && Instant::now() < until {
            tokio::time::sleep(POLL).await;
            left = self.labelled(Some(value), false).await?;
        }
        let forced = left.len();
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        join_all(left.iter().map(|id| {
            let options = options.clone();
            async move {
                if let Err(err) = self.docker.remove_container(id, Some(options)).await {
                    tracing::debug!(container = %id, %err, "cannot remove container (already gone?)");
                }
            }
        }))
        .await;
        let still = self.labelled(Some(value), false).await?;
        anyhow::ensure!(
            still.is_empty(),
            "{} containers labelled {BENCH_LABEL}={value} could not be removed",
            still.len()
        );
        Ok(forced)
    }
}

/// The one-minute load average (`/proc/loadavg`), if the system has one.
pub fn load_average() -> Option<f64> {
    parse_load_average(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// The first field of `/proc/loadavg`.
pub fn parse_load_average(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Waits (up to `patience`) for the one-minute load average to fall below
/// `max`; returns the load at the start of the measurement.
pub async fn wait_for_quiet(max: f64, patience: Duration) -> Option<f64> {
    let until = Instant::now() + patience;
    loop {
        let load = load_average()?;
        if load < max {
            return Some(load);
        }
        if Instant::now() >= until {
            tracing::warn!(load, max, "the machine stayed busy; measuring anyway");
            return Some(load);
        }
        tracing::info!(load, max, "waiting for the load average to fall");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_average_is_the_first_field_of_proc_loadavg() {
        assert_eq!(parse_load_average("1.32 1.78 2.82 3/412 12345\n"), Some(1.32));
        assert_eq!(parse_load_average(""), None);
        assert_eq!(parse_load_average("busy"), None);
    }
}

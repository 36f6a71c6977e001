//! The raw engine: every container created and started by its own tokio
//! task through bollard, with no scheduler in between.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, StartContainerOptions};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Workload;
use super::engine::{BENCH_LABEL, Engine};

/// The create body of one container: the same limits the agent sets for a
/// task of `workload` (cpu quota, memory), on the default bridge network.
pub fn create_body(workload: &Workload, label_value: &str) -> ContainerCreateBody {
    let memory = (workload.mem_mib * 1024.0 * 1024.0) as i64;
    ContainerCreateBody {
        image: Some(workload.image.clone()),
        cmd: Some(workload.argv()),
        labels: Some(HashMap::from([(BENCH_LABEL.to_owned(), label_value.to_owned())])),
        host_config: Some(HostConfig {
            network_mode: Some("bridge".to_owned()),
            cpu_quota: Some(((workload.cpus * 100_000.0) as i64).max(1000)),
            cpu_period: Some(100_000),
            memory: Some(memory),
            memory_swap: Some(memory),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates and starts `workload.containers` containers at once; the time
/// until the last start call returned.
pub async fn measure(engine: &Engine, workload: &Workload, label_value: &str) -> anyhow::Result<Duration> {
    let body = create_body(workload, label_value);
    let began = Instant::now();
    let mut calls = JoinSet::new();
    for i in 0..workload.containers {
        let docker = engine.client().clone();
        let body = body.clone();
        let name = format!("agora-bench-raw-{label_value}-{i}");
        calls.spawn(async move {
            let options = CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            };
            docker
                .create_container(Some(options), body)
                .await
                .with_context(|| format!("cannot create {name}"))?;
            docker
                .start_container(&name, None::<StartContainerOptions>)
                .await
                .with_context(|| format!("cannot start {name}"))?;
            anyhow::Ok(())
        });
    }
    while let Some(done) = calls.join_next().await {
        done.context("a create+start task panicked")??;
    }
    Ok(began.elapsed())
}

//! How a task becomes a Docker container: the pure translation of a
//! [`v1::TaskInfo`] into the engine's create body (API 1.41 fields only).
//!
//! Decisions:
//! - The sandbox is bind-mounted read-write at [`SANDBOX_MOUNT`];
//!   `MESOS_SANDBOX` and `AGORA_SANDBOX` point there.
//! - `PORT0..` / `PORT` are the task's *host* ports, as Marathon sets them,
//!   also inside BRIDGE containers: a task announces the address others reach
//!   it on; the container port is in the port mapping the task itself declared.
//! - The agent's own `PATH` is not passed in: the image's (or Docker's
//!   default) `PATH` applies.
//! - A volume with an empty host path is a directory of the sandbox named
//!   after the container path (`volumes/<path with / as _>`).
//! - cpus → `CpuShares` (1024 per core) and a CFS quota (`CpuQuota` over a
//!   100 ms `CpuPeriod`); mem → `Memory` = `MemorySwap` (no swap), so going
//!   over the limit is an OOM kill.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use agora_proto::v1;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, PortBinding};

/// Where the sandbox appears inside a container.
pub(crate) const SANDBOX_MOUNT: &str = "/mnt/mesos/sandbox";
/// Label keys the agent puts on its containers.
pub(crate) const LABEL_TASK: &str = "agora.task_id";
pub(crate) const LABEL_FRAMEWORK: &str = "agora.framework_id";
pub(crate) const LABEL_AGENT: &str = "agora.agent_id";
pub(crate) const LABEL_SANDBOX: &str = "agora.sandbox";
/// The agent's work dir: tells apart agents sharing one engine.
pub(crate) const LABEL_WORK_DIR: &str = "agora.work_dir";
/// The pod a container belongs to, if any.
pub(crate) const LABEL_GROUP: &str = "agora.group_id";
/// The GPUs (uuids, comma-separated) assigned to the container, if any:
/// a restarted agent reads them back so it does not hand them out again.
pub(crate) const LABEL_GPUS: &str = "agora.gpus";
/// CFS period used with the cpu quota, in microseconds.
const CPU_PERIOD_US: i64 = 100_000;
/// Fewest cpu shares Docker accepts.
const MIN_CPU_SHARES: i64 = 2;

/// Everything that decides a container's create body.
#[derive(Debug, Clone)]
pub(crate) struct ContainerPlan<'a> {
    pub task: &'a v1::TaskInfo,
    pub framework_id: &'a str,
    pub agent_id: &'a str,
    pub work_dir: &'a Path,
    /// The run's sandbox on the host.
    pub sandbox: &'a Path,
    /// The task environment as the process containerizer builds it.
    pub env: &'a [(String, String)],
    /// Join this container's network namespace instead of the task's own
    /// networking (pods).
    pub join_network_of: Option<&'a str>,
    /// Extra `host:container[:ro]` binds (a pod's shared scratch volume).
    pub extra_binds: Vec<String>,
    /// Extra labels (a pod's group id).
    pub extra_labels: Vec<(String, String)>,
    /// GPU device ids (uuids) assigned to the task.
    pub gpus: Vec<String>,
}

/// The task's Docker settings; `None` if it has no Docker container.
pub(crate) fn docker_info(task: &v1::TaskInfo) -> Option<&v1::DockerInfo> {
    match task.container.as_ref()?.kind.as_ref()? {
        v1::container_info::Kind::Docker(docker) => Some(docker),
    }
}

/// The sum of a scalar resource of the task.
pub(crate) fn scalar(task: &v1::TaskInfo, name: &str) -> f64 {
    task.resources
        .iter()
        .filter(|r| r.name == name)
        .filter_map(|r| match r.value {
            Some(v1::resource::Value::Scalar(v)) if v.is_finite() && v > 0.0 => Some(v),
            _ => None,
        })
        .sum()
}

/// The host directory backing a volume of the task.
pub(crate) fn volume_host_path(sandbox: &Path, volume: &v1::Volume) -> PathBuf {
    if volume.host_path.is_empty() {
        let name = volume.container_path.trim_matches('/').replace('/', "_");
        sandbox
            .join("volumes")
            .join(if name.is_empty() { "root".to_owned() } else { name })
    } else {
        PathBuf::from(&volume.host_path)
    }
}

/// The CPU limit in cores that a CFS quota over a period sets; `None` when
/// the container is not limited (no or a non-positive quota or period).
pub(crate) fn cpus_limit(cpu_quota: Option<i64>, cpu_period: Option<i64>) -> Option<f64> {
    let quota = cpu_quota.filter(|q| *q > 0)?;
    let period = cpu_period.filter(|p| *p > 0).unwrap_or(CPU_PERIOD_US);
    Some(quota as f64 / period as f64)
}

/// The container's environment: the task environment without the agent's
/// `PATH`, with the sandbox variables pointing at [`SANDBOX_MOUNT`].
pub(crate) fn container_env(env: &[(String, String)]) -> Vec<String> {
    env.iter()
        .filter(|(name, _)| name != "PATH")
        .map(|(name, value)| match name.as_str() {
            "MESOS_SANDBOX" | "AGORA_SANDBOX" => format!("{name}={SANDBOX_MOUNT}"),
            _ => format!("{name}={value}"),
        })
        .collect()
}

/// The container's labels: the task's own, then the agent's (which win).
pub(crate) fn labels(plan: &ContainerPlan<'_>) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = plan
        .task
        .labels
        .iter()
        .map(|l| (l.key.clone(), l.value.clone()))
        .collect();
    labels.insert(LABEL_TASK.to_owned(), plan.task.task_id.clone());
    labels.insert(LABEL_FRAMEWORK.to_owned(), plan.framework_id.to_owned());
    labels.insert(LABEL_AGENT.to_owned(), plan.agent_id.to_owned());
    labels.insert(LABEL_SANDBOX.to_owned(), plan.sandbox.display().to_string());
    labels.insert(LABEL_WORK_DIR.to_owned(), plan.work_dir.display().to_string());
    if !plan.gpus.is_empty() {
        labels.insert(LABEL_GPUS.to_owned(), super::gpu::gpus_label(&plan.gpus));
    }
    labels.extend(plan.extra_labels.iter().cloned());
    labels
}

/// The engine's create body for the plan.
pub(crate) fn create_body(plan: &ContainerPlan<'_>, image: &str) -> ContainerCreateBody {
    let task = plan.task;
    let docker = docker_info(task);
    let container = task.container.as_ref();
    let (entrypoint, cmd) = match task.command.as_ref().and_then(|c| c.command.as_ref()) {
        Some(v1::command_info::Command::Shell(line)) => (
            Some(vec!["/bin/sh".to_owned(), "-c".to_owned()]),
            Some(vec![line.clone()]),
        ),
        Some(v1::command_info::Command::Argv(argv)) if !argv.args.is_empty() => {
            (Some(argv.args[..1].to_vec()), Some(argv.args[1..].to_vec()))
        }
        // No command: the image's entrypoint and cmd.
        _ => (None, None),
    };
    let user = task
        .command
        .as_ref()
        .map(|c| c.user.clone())
        .filter(|u| !u.is_empty());
    let working_dir = container.map(|c| c.working_dir.clone()).filter(|w| !w.is_empty());

    let mut binds = vec![format!("{}:{SANDBOX_MOUNT}:rw", plan.sandbox.display())];
    for volume in container.map(|c| c.volumes.as_slice()).unwrap_or_default() {
        let host = volume_host_path(plan.sandbox, volume);
        let mode = if volume.read_only { "ro" } else { "rw" };
        binds.push(format!("{}:{}:{mode}", host.display(), volume.container_path));
    }
    binds.extend(plan.extra_binds.iter().cloned());

    let network = docker
        .and_then(|d| v1::NetworkMode::try_from(d.network).ok())
        .unwrap_or(v1::NetworkMode::Unspecified);
    let mut exposed_ports = Vec::new();
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let network_mode = match plan.join_network_of {
        Some(owner) => format!("container:{owner}"),
        None => match network {
            v1::NetworkMode::Host => "host".to_owned(),
            v1::NetworkMode::None => "none".to_owned(),
            v1::NetworkMode::Bridge | v1::NetworkMode::Unspecified => {
                for mapping in docker.map(|d| d.port_mappings.as_slice()).unwrap_or_default() {
                    let key = format!(
                        "{}/{}",
                        mapping.container_port,
                        agora_proto::container::protocol(mapping)
                    );
                    exposed_ports.push(key.clone());
                    port_bindings
                        .entry(key)
                        .or_insert_with(|| Some(Vec::new()))
                        .get_or_insert_with(Vec::new)
                        .push(PortBinding {
                            host_ip: None,
                            host_port: Some(mapping.host_port.to_string()),
                        });
                }
                "bridge".to_owned()
            }
        },
    };

    let cpus = scalar(task, "cpus");
    let mem_mib = scalar(task, "mem");
    let memory = (mem_mib > 0.0).then_some((mem_mib * 1024.0 * 1024.0) as i64);
    let device_requests = (!plan.gpus.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".to_owned()),
            count: None,
            device_ids: Some(plan.gpus.clone()),
            capabilities: Some(vec![vec!["gpu".to_owned()]]),
            options: None,
        }]
    });
    let host_config = HostConfig {
        binds: Some(binds),
        network_mode: Some(network_mode),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        cpu_shares: (cpus > 0.0).then(|| ((cpus * 1024.0) as i64).max(MIN_CPU_SHARES)),
        cpu_period: (cpus > 0.0).then_some(CPU_PERIOD_US),
        cpu_quota: (cpus > 0.0).then(|| ((cpus * CPU_PERIOD_US as f64) as i64).max(1000)),
        memory,
        memory_swap: memory,
        privileged: docker.map(|d| d.privileged).filter(|p| *p),
        device_requests,
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint,
        cmd,
        env: Some(container_env(plan.env)),
        labels: Some(labels(plan)),
        working_dir,
        user,
        exposed_ports: (!exposed_ports.is_empty()).then_some(exposed_ports),
        host_config: Some(host_config),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(configure: impl FnOnce(&mut v1::TaskInfo, &mut v1::DockerInfo)) -> v1::TaskInfo {
        let mut task = v1::TaskInfo {
            name: "web".into(),
            task_id: "t1".into(),
            resources: agora_proto::Resources::parse("cpus:0.5;mem:64;ports:[31000-31000]")
                .unwrap()
                .to_proto(),
            command: Some(v1::CommandInfo {
                command: Some(v1::command_info::Command::Shell("echo hi".into())),
                ..Default::default()
            }),
            labels: vec![v1::Label {
                key: "team".into(),
                value: "a".into(),
            }],
            ..Default::default()
        };
        let mut docker = v1::DockerInfo {
            image: "busybox".into(),
            ..Default::default()
        };
        configure(&mut task, &mut docker);
        task.container.get_or_insert_with(Default::default).kind =
            Some(v1::container_info::Kind::Docker(docker));
        task
    }

    fn body(task: &v1::TaskInfo) -> ContainerCreateBody {
        let env = vec![
            ("PATH".to_owned(), "/agent/path".to_owned()),
            ("MESOS_SANDBOX".to_owned(), "/work/s".to_owned()),
            ("PORT0".to_owned(), "31000".to_owned()),
        ];
        let plan = ContainerPlan {
            task,
            framework_id: "fw",
            agent_id: "ag",
            work_dir: Path::new("/work"),
            sandbox: Path::new("/work/s"),
            env: &env,
            join_network_of: None,
            extra_binds: vec![],
            extra_labels: vec![],
            gpus: vec![],
        };
        create_body(&plan, "busybox")
    }

    #[test]
    fn a_shell_command_runs_under_sh() {
        let b = body(&task(|_, _| {}));
        assert_eq!(b.entrypoint, Some(vec!["/bin/sh".to_owned(), "-c".to_owned()]));
        assert_eq!(b.cmd, Some(vec!["echo hi".to_owned()]));
    }

    #[test]
    fn no_command_keeps_the_images_entrypoint() {
        let b = body(&task(|t, _| t.command = None));
        assert_eq!(b.entrypoint, None);
        assert_eq!(b.cmd, None);
    }

    #[test]
    fn the_sandbox_is_mounted_and_env_points_there_without_the_agents_path() {
        let b = body(&task(|_, _| {}));
        let env = b.env.unwrap();
        assert!(env.contains(&format!("MESOS_SANDBOX={SANDBOX_MOUNT}")));
        assert!(env.contains(&"PORT0=31000".to_owned()));
        assert!(!env.iter().any(|e| e.starts_with("PATH=")));
        let binds = b.host_config.unwrap().binds.unwrap();
        assert_eq!(binds[0], format!("/work/s:{SANDBOX_MOUNT}:rw"));
    }

    #[test]
    fn labels_name_the_task_framework_agent_and_sandbox() {
        let labels = body(&task(|_, _| {})).labels.unwrap();
        assert_eq!(labels[LABEL_TASK], "t1");
        assert_eq!(labels[LABEL_FRAMEWORK], "fw");
        assert_eq!(labels[LABEL_AGENT], "ag");
        assert_eq!(labels[LABEL_SANDBOX], "/work/s");
        assert_eq!(labels["team"], "a");
    }

    #[test]
    fn assigned_gpus_are_requested_and_labelled() {
        let task = task(|_, _| {});
        let plan = ContainerPlan {
            task: &task,
            framework_id: "fw",
            agent_id: "ag",
            work_dir: Path::new("/work"),
            sandbox: Path::new("/work/s"),
            env: &[],
            join_network_of: None,
            extra_binds: vec![],
            extra_labels: vec![],
            gpus: vec!["GPU-a".into(), "GPU-b".into()],
        };
        let b = create_body(&plan, "busybox");
        assert_eq!(b.labels.unwrap()[LABEL_GPUS], "GPU-a,GPU-b");
        let requests = b.host_config.unwrap().device_requests.unwrap();
        assert_eq!(
            requests[0].device_ids,
            Some(vec!["GPU-a".to_owned(), "GPU-b".to_owned()])
        );
    }

    #[test]
    fn limits_come_from_cpus_and_mem() {
        let hc = body(&task(|_, _| {})).host_config.unwrap();
        assert_eq!(hc.cpu_shares, Some(512));
        assert_eq!(hc.cpu_quota, Some(50_000));
        assert_eq!(hc.memory, Some(64 * 1024 * 1024));
        assert_eq!(hc.memory_swap, hc.memory);
    }

    #[test]
    fn the_cpu_limit_is_the_quota_over_the_period() {
        let hc = body(&task(|_, _| {})).host_config.unwrap();
        assert_eq!(cpus_limit(hc.cpu_quota, hc.cpu_period), Some(0.5));
        assert_eq!(cpus_limit(None, Some(100_000)), None);
        assert_eq!(cpus_limit(Some(-1), Some(100_000)), None);
    }

    #[test]
    fn bridge_port_mappings_publish_the_host_port() {
        let b = body(&task(|_, d| {
            d.port_mappings.push(v1::PortMapping {
                host_port: 31000,
                container_port: 8080,
                protocol: String::new(),
            })
        }));
        assert_eq!(b.exposed_ports, Some(vec!["8080/tcp".to_owned()]));
        let hc = b.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("bridge"));
        let bindings = hc.port_bindings.unwrap();
        assert_eq!(
            bindings["8080/tcp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("31000")
        );
    }

    #[test]
    fn host_networking_publishes_nothing() {
        let hc = body(&task(|_, d| d.network = v1::NetworkMode::Host as i32))
            .host_config
            .unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert!(hc.port_bindings.is_none());
    }

    #[test]
    fn an_empty_host_path_is_a_sandbox_directory() {
        let b = body(&task(|t, _| {
            t.container.get_or_insert_with(Default::default).volumes = vec![
                v1::Volume {
                    container_path: "/data/x".into(),
                    host_path: String::new(),
                    read_only: false,
                },
                v1::Volume {
                    container_path: "/etc/conf".into(),
                    host_path: "/srv/conf".into(),
                    read_only: true,
                },
            ]
        }));
        let binds = b.host_config.unwrap().binds.unwrap();
        assert_eq!(binds[1], "/work/s/volumes/data_x:/data/x:rw");
        assert_eq!(binds[2], "/srv/conf:/etc/conf:ro");
    }
}

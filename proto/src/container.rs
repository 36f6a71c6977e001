//! Validation of a task's container settings, shared by the master (ACCEPT
//! validation) and the agent (defence in depth before anything is created).
//! Pure functions: each error is a message that starts with the offending
//! field's path, e.g. `container.docker.port_mappings[0].host_port: 8080 is
//! not in the task's ports`.

use std::collections::BTreeSet;

use crate::v1;

/// The smallest memory limit (MiB) a container may be given; Docker refuses
/// anything below 6 MiB on newer engines and containers cannot start with less.
pub const MIN_CONTAINER_MEM_MIB: f64 = 4.0;

/// Checks a task's `container` section; `Ok` for tasks without one.
pub fn validate_container(task: &v1::TaskInfo) -> Result<(), String> {
    let Some(container) = &task.container else {
        return Ok(());
    };
    let Some(v1::container_info::Kind::Docker(docker)) = &container.kind else {
        return Err("container.docker: must be set (only Docker containers are supported)".to_owned());
    };
    if docker.image.trim().is_empty() {
        return Err("container.docker.image: must not be empty".to_owned());
    }
    if let Some(mem) = scalar(task, "mem")
        && mem < MIN_CONTAINER_MEM_MIB
    {
        return Err(format!(
            "resources.mem: {mem} MiB is below the {MIN_CONTAINER_MEM_MIB} MiB a container needs"
        ));
    }
    for (i, volume) in container.volumes.iter().enumerate() {
        if !volume.container_path.starts_with('/') {
            return Err(format!(
                "container.volumes[{i}].container_path: {:?} is not an absolute path",
                volume.container_path
            ));
        }
        if !volume.host_path.is_empty() && !volume.host_path.starts_with('/') {
            return Err(format!(
                "container.volumes[{i}].host_path: {:?} is not an absolute path",
                volume.host_path
            ));
        }
    }
    if !container.working_dir.is_empty() && !container.working_dir.starts_with('/') {
        return Err(format!(
            "container.working_dir: {:?} is not an absolute path",
            container.working_dir
        ));
    }
    let network = v1::NetworkMode::try_from(docker.network).unwrap_or(v1::NetworkMode::Unspecified);
    let bridge = matches!(network, v1::NetworkMode::Bridge | v1::NetworkMode::Unspecified);
    if !bridge && !docker.port_mappings.is_empty() {
        return Err(format!(
            "container.docker.port_mappings: only allowed with BRIDGE networking, not {}",
            network.as_str_name()
        ));
    }
    let mut used = BTreeSet::new();
    for (i, mapping) in docker.port_mappings.iter().enumerate() {
        let field = format!("container.docker.port_mappings[{i}]");
        if !has_port(task, u64::from(mapping.host_port)) {
            return Err(format!(
                "{field}.host_port: {} is not in the task's ports",
                mapping.host_port
            ));
        }
        if mapping.container_port == 0 || mapping.container_port > 65535 {
            return Err(format!(
                "{field}.container_port: {} is not a port (1-65535)",
                mapping.container_port
            ));
        }
        let protocol = protocol(mapping);
        if protocol != "tcp" && protocol != "udp" {
            return Err(format!(
                "{field}.protocol: {:?} is neither tcp nor udp",
                mapping.protocol
            ));
        }
        if !used.insert((mapping.host_port, protocol)) {
            return Err(format!(
                "{field}.host_port: {} is mapped twice",
                mapping.host_port
            ));
        }
    }
    Ok(())
}

/// Checks a task group (pod): every task's container, and that no two tasks
/// share a name (the name is the container's name within the pod).
pub fn validate_group(tasks: &[v1::TaskInfo]) -> Result<(), String> {
    if tasks.is_empty() {
        return Err("tasks: a task group needs at least one task".to_owned());
    }
    let mut names = BTreeSet::new();
    for (i, task) in tasks.iter().enumerate() {
        validate_container(task).map_err(|e| format!("tasks[{i}].{e}"))?;
        if !names.insert(task.name.as_str()) {
            return Err(format!(
                "tasks[{i}].name: {:?} is used by another container of the pod",
                task.name
            ));
        }
    }
    Ok(())
}

/// A port mapping's protocol, lower-cased; empty means tcp.
pub fn protocol(mapping: &v1::PortMapping) -> String {
    if mapping.protocol.is_empty() {
        "tcp".to_owned()
    } else {
        mapping.protocol.to_ascii_lowercase()
    }
}

/// The sum of a scalar resource of the task, if it has any.
fn scalar(task: &v1::TaskInfo, name: &str) -> Option<f64> {
    let mut total = None;
    for r in task.resources.iter().filter(|r| r.name == name) {
        if let Some(v1::resource::Value::Scalar(v)) = r.value {
            total = Some(total.unwrap_or(0.0) + v);
        }
    }
    total
}

fn has_port(task: &v1::TaskInfo, port: u64) -> bool {
    task.resources
        .iter()
        .filter(|r| r.name == "ports")
        .any(|r| match &r.value {
            Some(v1::resource::Value::Ranges(ranges)) => {
                ranges.range.iter().any(|g| g.begin <= port && port <= g.end)
            }
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker_task(configure: impl FnOnce(&mut v1::TaskInfo, &mut v1::DockerInfo)) -> v1::TaskInfo {
        let mut task = v1::TaskInfo {
            name: "web".into(),
            task_id: "t1".into(),
            resources: crate::Resources::parse("cpus:0.1;mem:32;ports:[31000-31001]")
                .map(|r| r.to_proto())
                .unwrap_or_default(),
            ..Default::default()
        };
        let mut docker = v1::DockerInfo {
            image: "busybox".into(),
            ..Default::default()
        };
        configure(&mut task, &mut docker);
        let container = task.container.get_or_insert_with(Default::default);
        container.kind = Some(v1::container_info::Kind::Docker(docker));
        task
    }

    #[test]
    fn a_task_without_a_container_is_valid() {
        assert_eq!(validate_container(&v1::TaskInfo::default()), Ok(()));
    }

    #[test]
    fn a_plain_docker_task_is_valid() {
        assert_eq!(validate_container(&docker_task(|_, _| {})), Ok(()));
    }

    #[test]
    fn an_empty_image_is_refused() {
        let task = docker_task(|_, d| d.image = " ".into());
        assert_eq!(
            validate_container(&task),
            Err("container.docker.image: must not be empty".into())
        );
    }

    #[test]
    fn memory_below_four_mib_is_refused() {
        let task = docker_task(|t, _| {
            t.resources = crate::Resources::parse("mem:2")
                .map(|r| r.to_proto())
                .unwrap_or_default()
        });
        let err = validate_container(&task).unwrap_err();
        assert!(err.starts_with("resources.mem: 2 MiB"), "{err}");
    }

    #[test]
    fn a_relative_volume_path_is_refused() {
        let mut task = docker_task(|_, _| {});
        if let Some(c) = task.container.as_mut() {
            c.volumes.push(v1::Volume {
                container_path: "/data".into(),
                host_path: "data".into(),
                read_only: false,
            });
        }
        let err = validate_container(&task).unwrap_err();
        assert!(err.starts_with("container.volumes[0].host_path:"), "{err}");
    }

    #[test]
    fn a_host_port_outside_the_tasks_ports_is_refused() {
        let task = docker_task(|_, d| {
            d.port_mappings.push(v1::PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: String::new(),
            })
        });
        assert_eq!(
            validate_container(&task),
            Err("container.docker.port_mappings[0].host_port: 8080 is not in the task's ports".into())
        );
    }

    #[test]
    fn a_host_port_from_the_tasks_ports_is_accepted() {
        let task = docker_task(|_, d| {
            d.port_mappings.push(v1::PortMapping {
                host_port: 31001,
                container_port: 80,
                protocol: "TCP".into(),
            })
        });
        assert_eq!(validate_container(&task), Ok(()));
    }

    #[test]
    fn port_mappings_need_bridge_networking() {
        let task = docker_task(|_, d| {
            d.network = v1::NetworkMode::Host as i32;
            d.port_mappings.push(v1::PortMapping {
                host_port: 31000,
                container_port: 80,
                protocol: String::new(),
            })
        });
        let err = validate_container(&task).unwrap_err();
        assert!(err.starts_with("container.docker.port_mappings:"), "{err}");
    }

    #[test]
    fn a_pod_with_two_containers_of_the_same_name_is_refused() {
        let a = docker_task(|_, _| {});
        let mut b = a.clone();
        b.task_id = "t2".into();
        assert_eq!(
            validate_group(&[a, b]),
            Err("tasks[1].name: \"web\" is used by another container of the pod".into())
        );
    }

    #[test]
    fn a_pod_names_the_task_of_an_invalid_container() {
        let a = docker_task(|_, _| {});
        let mut b = docker_task(|_, d| d.image = String::new());
        b.name = "side".into();
        assert_eq!(
            validate_group(&[a, b]),
            Err("tasks[1].container.docker.image: must not be empty".into())
        );
    }
}

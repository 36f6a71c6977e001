//! One task of an app, built from an offer: the resources it takes (roles
//! as `acceptedResourceRoles`/`role` allow), its host ports, its
//! environment (Marathon's `PORT0..`, `PORTS`, `HOST`, `MARATHON_APP_*`,
//! `MESOS_TASK_ID`), its container and kill policy.
//!
//! Constraints are not checked here: the engine checks them with
//! [`super::constraints::accepts`] before it calls [`task_info`].

use std::collections::BTreeMap;

use agora_proto::v1;
use agora_proto::{Resources, TaskId};

use super::definition::{AppDefinition, ContainerType, NetworkMode, VolumeMode};
use super::timestamp::timestamp_string;

/// The role name of unreserved resources.
const UNRESERVED: &str = "*";

/// Why an offer cannot take a task of an app. `Display` is Marathon's
/// reason name as `/v2/queue` shows it (`InsufficientCpus`, …);
/// [`Unfit::detail`] says how much was needed and offered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unfit {
    /// Not enough cpus in roles the app may use.
    #[error("InsufficientCpus")]
    InsufficientCpus {
        /// Needed by one task.
        needed: f64,
        /// Usable in the offer.
        offered: f64,
    },
    /// Not enough memory.
    #[error("InsufficientMemory")]
    InsufficientMemory {
        /// Needed by one task, MiB.
        needed: f64,
        /// Usable in the offer, MiB.
        offered: f64,
    },
    /// Not enough disk.
    #[error("InsufficientDisk")]
    InsufficientDisk {
        /// Needed by one task, MiB.
        needed: f64,
        /// Usable in the offer, MiB.
        offered: f64,
    },
    /// Not enough GPUs.
    #[error("InsufficientGpus")]
    InsufficientGpus {
        /// Needed by one task.
        needed: f64,
        /// Usable in the offer.
        offered: f64,
    },
    /// Not enough free ports, or a required port is not offered.
    #[error("InsufficientPorts")]
    InsufficientPorts {
        /// Ports one task needs.
        needed: usize,
        /// A required fixed port that is missing, if that is the reason.
        missing: Option<u16>,
    },
    /// The offer has the resources, but not in roles the app may use.
    #[error("UnfulfilledRole")]
    UnfulfilledRole {
        /// The roles the app may use.
        accepted: Vec<String>,
    },
    /// The offer itself is malformed.
    #[error("InvalidOffer")]
    InvalidOffer(String),
}

impl Unfit {
    /// A sentence for logs and messages.
    pub fn detail(&self) -> String {
        match self {
            Self::InsufficientCpus { needed, offered } => format!("needs {needed} cpus, offer has {offered}"),
            Self::InsufficientMemory { needed, offered } => {
                format!("needs {needed} MiB mem, offer has {offered}")
            }
            Self::InsufficientDisk { needed, offered } => {
                format!("needs {needed} MiB disk, offer has {offered}")
            }
            Self::InsufficientGpus { needed, offered } => format!("needs {needed} gpus, offer has {offered}"),
            Self::InsufficientPorts {
                needed,
                missing: Some(p),
            } => {
                format!("needs {needed} ports including {p}, which is not offered")
            }
            Self::InsufficientPorts {
                needed,
                missing: None,
            } => format!("needs {needed} free ports"),
            Self::UnfulfilledRole { accepted } => {
                format!("the offer's resources are not in the accepted roles {accepted:?}")
            }
            Self::InvalidOffer(why) => format!("invalid offer: {why}"),
        }
    }
}

/// Which offered roles an app may take resources from.
struct RoleFilter<'a> {
    accepted: Option<&'a [String]>,
    role: Option<&'a str>,
}

impl RoleFilter<'_> {
    fn of(app: &AppDefinition) -> RoleFilter<'_> {
        RoleFilter {
            accepted: app.accepted_resource_roles.as_deref(),
            role: app.role.as_deref(),
        }
    }

    /// `role` is a resource's role, `*` for unreserved.
    fn allows(&self, role: &str) -> bool {
        let accepted = self.accepted.is_none_or(|list| list.iter().any(|r| r == role));
        let own = self.role.is_none_or(|r| role == UNRESERVED || role == r);
        accepted && own
    }

    fn accepted(&self) -> Vec<String> {
        match (self.accepted, self.role) {
            (Some(list), _) => list.to_vec(),
            (None, Some(role)) => vec![UNRESERVED.to_owned(), role.to_owned()],
            (None, None) => vec![UNRESERVED.to_owned()],
        }
    }
}

/// One offered resource entry, its role normalised (`*` for unreserved).
struct Entry {
    name: String,
    role: String,
    value: Option<v1::resource::Value>,
}

fn role_of(r: &v1::Resource) -> String {
    if r.role.is_empty() {
        UNRESERVED.to_owned()
    } else {
        r.role.clone()
    }
}

fn proto_role(role: &str) -> String {
    if role == UNRESERVED {
        String::new()
    } else {
        role.to_owned()
    }
}

/// Takes `amount` of scalar `name` from `entries` (reserved roles first),
/// appending the taken pieces to `out`. `Err((usable, total))` when the
/// allowed roles do not hold enough.
fn take_scalar(
    entries: &[Entry],
    filter: &RoleFilter<'_>,
    name: &str,
    amount: f64,
    out: &mut Vec<v1::Resource>,
) -> Result<(), (f64, f64)> {
    let want = (amount * 1000.0).round() as i64;
    if want <= 0 {
        return Ok(());
    }
    let millis = |e: &Entry| match e.value {
        Some(v1::resource::Value::Scalar(s)) => (s * 1000.0).round() as i64,
        _ => 0,
    };
    let of_name = || entries.iter().filter(|e| e.name == name);
    let total: i64 = of_name().map(millis).sum();
    let mut usable: Vec<&Entry> = of_name().filter(|e| filter.allows(&e.role)).collect();
    // Reserved resources first, as Marathon does; unreserved last.
    usable.sort_by_key(|e| e.role == UNRESERVED);
    let usable_total: i64 = usable.iter().map(|e| millis(e)).sum();
    if usable_total < want {
        return Err((usable_total as f64 / 1000.0, total as f64 / 1000.0));
    }
    let mut left = want;
    for e in usable {
        if left == 0 {
            break;
        }
        let take = millis(e).min(left);
        if take > 0 {
            out.push(v1::Resource {
                name: name.to_owned(),
                role: proto_role(&e.role),
                value: Some(v1::resource::Value::Scalar(take as f64 / 1000.0)),
            });
            left -= take;
        }
    }
    Ok(())
}

/// What a task asks for in ports: each entry a fixed host port or any.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PortAsk {
    Fixed(u16),
    Any,
}

/// The host ports one task of `app` needs, in `PORT0..` order, each with
/// the port it declares (service or container port) and its name.
fn port_asks(app: &AppDefinition) -> Vec<(PortAsk, u16, Option<&str>)> {
    match app.network_mode() {
        NetworkMode::Host => app
            .port_definitions
            .iter()
            .map(|d| {
                let ask = if app.require_ports && d.port != 0 {
                    PortAsk::Fixed(d.port)
                } else {
                    PortAsk::Any
                };
                (ask, d.port, d.name.as_deref())
            })
            .collect(),
        NetworkMode::ContainerBridge | NetworkMode::Container => app
            .port_mappings()
            .iter()
            .filter_map(|m| {
                let ask = match m.host_port? {
                    0 => PortAsk::Any,
                    p => PortAsk::Fixed(p),
                };
                Some((ask, m.container_port, m.name.as_deref()))
            })
            .collect(),
    }
}

/// Picks host ports for `asks` from the offered `ports` ranges of allowed
/// roles: fixed ones first, then the lowest free ones. Returns
/// `(port, role)` in ask order.
fn pick_ports(
    entries: &[Entry],
    filter: &RoleFilter<'_>,
    asks: &[PortAsk],
) -> Result<Vec<(u16, String)>, Unfit> {
    let needed = asks.len();
    let mut ranges: Vec<(u64, u64, &str)> = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.name == "ports" && filter.allows(&e.role))
    {
        if let Some(v1::resource::Value::Ranges(rs)) = &e.value {
            ranges.extend(rs.range.iter().map(|r| (r.begin, r.end, e.role.as_str())));
        }
    }
    ranges.sort_by_key(|r| (r.2 == UNRESERVED, r.0));
    let role_of_port = |p: u16| {
        ranges
            .iter()
            .find(|(b, e, _)| (*b..=*e).contains(&u64::from(p)))
            .map(|(_, _, role)| (*role).to_owned())
    };
    let mut taken: BTreeMap<u16, String> = BTreeMap::new();
    let mut picked: Vec<Option<(u16, String)>> = vec![None; needed];
    for (i, ask) in asks.iter().enumerate() {
        if let PortAsk::Fixed(p) = ask {
            match role_of_port(*p) {
                Some(role) if !taken.contains_key(p) => {
                    taken.insert(*p, role.clone());
                    picked[i] = Some((*p, role));
                }
                _ => {
                    return Err(Unfit::InsufficientPorts {
                        needed,
                        missing: Some(*p),
                    });
                }
            }
        }
    }
    let mut free = ranges
        .iter()
        .flat_map(|(b, e, role)| (*b..=*e).filter_map(move |p| u16::try_from(p).ok().map(|p| (p, *role))));
    for (i, ask) in asks.iter().enumerate() {
        if *ask == PortAsk::Any {
            let (port, role) =
                free.by_ref()
                    .find(|(p, _)| !taken.contains_key(p))
                    .ok_or(Unfit::InsufficientPorts {
                        needed,
                        missing: None,
                    })?;
            taken.insert(port, role.to_owned());
            picked[i] = Some((port, role.to_owned()));
        }
    }
    Ok(picked.into_iter().flatten().collect())
}

/// The `ports` resources for the picked ports, one entry per role with
/// adjacent ports merged into ranges.
fn port_resources(picked: &[(u16, String)]) -> Vec<v1::Resource> {
    let mut by_role: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (port, role) in picked {
        by_role.entry(role.as_str()).or_default().push(u64::from(*port));
    }
    by_role
        .into_iter()
        .map(|(role, mut ports)| {
            ports.sort_unstable();
            let mut ranges: Vec<v1::Range> = Vec::new();
            for p in ports {
                match ranges.last_mut() {
                    Some(r) if r.end + 1 == p => r.end = p,
                    _ => ranges.push(v1::Range { begin: p, end: p }),
                }
            }
            v1::Resource {
                name: "ports".to_owned(),
                role: proto_role(role),
                value: Some(v1::resource::Value::Ranges(v1::Ranges { range: ranges })),
            }
        })
        .collect()
}

/// An environment variable name made of a port name: upper case, other
/// characters than letters and digits as `_` (Marathon's `PORT_<NAME>`).
fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Builds the `TaskInfo` of one task of `app` from `offer`, or says why the
/// offer cannot take it. The task takes `cpus`, `mem`, `disk`, `gpus` and
/// its host ports from the offer's resources in the roles the app may use
/// (reserved ones first).
pub fn task_info(app: &AppDefinition, task_id: &TaskId, offer: &v1::Offer) -> Result<v1::TaskInfo, Unfit> {
    let filter = RoleFilter::of(app);
    if let Some(role) = &app.role
        && !offer.allocation_role.is_empty()
        && offer.allocation_role != *role
        && offer.allocation_role != UNRESERVED
    {
        return Err(Unfit::UnfulfilledRole {
            accepted: filter.accepted(),
        });
    }
    let offered = Resources::from_proto(&offer.resources).map_err(|e| Unfit::InvalidOffer(e.to_string()))?;
    let entries: Vec<Entry> = offered
        .to_proto()
        .into_iter()
        .map(|r| Entry {
            role: role_of(&r),
            name: r.name,
            value: r.value,
        })
        .collect();

    let mut resources = Vec::new();
    type MakeUnfit = fn(f64, f64) -> Unfit;
    let scalars: [(&str, f64, MakeUnfit); 4] = [
        ("cpus", app.cpus, |needed, offered| Unfit::InsufficientCpus {
            needed,
            offered,
        }),
        ("mem", app.mem, |needed, offered| Unfit::InsufficientMemory {
            needed,
            offered,
        }),
        ("disk", app.disk, |needed, offered| Unfit::InsufficientDisk {
            needed,
            offered,
        }),
        ("gpus", f64::from(app.gpus), |needed, offered| {
            Unfit::InsufficientGpus { needed, offered }
        }),
    ];
    for (name, amount, unfit) in scalars {
        if let Err((usable, total)) = take_scalar(&entries, &filter, name, amount, &mut resources) {
            let wanted = (amount * 1000.0).round() / 1000.0;
            return Err(if total >= wanted {
                Unfit::UnfulfilledRole {
                    accepted: filter.accepted(),
                }
            } else {
                unfit(amount, usable)
            });
        }
    }
    let asks = port_asks(app);
    let kinds: Vec<PortAsk> = asks.iter().map(|(k, _, _)| *k).collect();
    let picked = pick_ports(&entries, &filter, &kinds)?;
    resources.extend(port_resources(&picked));
    let host_ports: Vec<u16> = picked.iter().map(|(p, _)| *p).collect();

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (i, port) in host_ports.iter().enumerate() {
        env.insert(format!("PORT{i}"), port.to_string());
        let (_, declared, name) = asks[i];
        if declared != 0 {
            env.insert(format!("PORT_{declared}"), port.to_string());
        }
        if let Some(name) = name {
            env.insert(format!("PORT_{}", env_name(name)), port.to_string());
        }
    }
    if let Some(first) = host_ports.first() {
        env.insert("PORT".into(), first.to_string());
    }
    env.insert(
        "PORTS".into(),
        host_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    env.insert("HOST".into(), offer.hostname.clone());
    env.insert("MESOS_TASK_ID".into(), task_id.to_string());
    env.insert("MARATHON_APP_ID".into(), app.id.to_string());
    env.insert(
        "MARATHON_APP_VERSION".into(),
        app.version.map(timestamp_string).unwrap_or_default(),
    );
    env.insert("MARATHON_APP_RESOURCE_CPUS".into(), app.cpus.to_string());
    env.insert("MARATHON_APP_RESOURCE_MEM".into(), app.mem.to_string());
    env.insert("MARATHON_APP_RESOURCE_DISK".into(), app.disk.to_string());
    env.insert("MARATHON_APP_RESOURCE_GPUS".into(), app.gpus.to_string());
    let label_names: Vec<String> = app.labels.keys().map(|k| env_name(k)).collect();
    env.insert("MARATHON_APP_LABELS".into(), label_names.join(" "));
    for (k, v) in &app.labels {
        env.insert(format!("MARATHON_APP_LABEL_{}", env_name(k)), v.clone());
    }
    let docker = app
        .container
        .as_ref()
        .and_then(|c| c.docker.as_ref())
        .filter(|d| !d.image.is_empty());
    if let Some(d) = docker {
        env.insert("MARATHON_APP_DOCKER_IMAGE".into(), d.image.clone());
    }
    // The app's own environment wins, as in Marathon.
    for (k, v) in &app.env {
        env.insert(k.clone(), v.clone());
    }

    let command = match (&app.cmd, app.args.is_empty()) {
        (Some(cmd), _) => Some(v1::command_info::Command::Shell(cmd.clone())),
        (None, false) => Some(v1::command_info::Command::Argv(v1::Argv {
            args: app.args.clone(),
        })),
        (None, true) => None,
    };
    let container = container_info(app, &asks, &host_ports);
    Ok(v1::TaskInfo {
        name: app.id.safe_name(),
        task_id: task_id.to_string(),
        agent_id: offer.agent_id.clone(),
        resources,
        command: Some(v1::CommandInfo {
            command,
            environment: env
                .into_iter()
                .map(|(name, value)| v1::EnvironmentVariable { name, value })
                .collect(),
            user: app.user.clone().unwrap_or_default(),
        }),
        container,
        labels: app
            .labels
            .iter()
            .map(|(k, v)| v1::Label {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        kill_policy: app.kill_grace_period().map(|grace| v1::KillPolicy {
            grace_period_seconds: Some(grace.as_secs_f64()),
        }),
    })
}

/// The proto container of a docker app (`None` for a plain command).
fn container_info(
    app: &AppDefinition,
    asks: &[(PortAsk, u16, Option<&str>)],
    host_ports: &[u16],
) -> Option<v1::ContainerInfo> {
    let container = app.container.as_ref()?;
    let docker = container.docker.as_ref().filter(|d| !d.image.is_empty());
    let docker = match (container.kind, docker) {
        (ContainerType::Docker, Some(d)) | (ContainerType::Mesos, Some(d)) => d,
        _ => return None,
    };
    let network = match app.network_mode() {
        NetworkMode::Host => v1::NetworkMode::Host,
        NetworkMode::ContainerBridge | NetworkMode::Container => v1::NetworkMode::Bridge,
    };
    let mut port_mappings = Vec::new();
    if network == v1::NetworkMode::Bridge {
        let with_host_port = app.port_mappings().iter().filter(|m| m.host_port.is_some());
        for ((mapping, host_port), _) in with_host_port.zip(host_ports).zip(asks) {
            for protocol in mapping.protocol.split(',') {
                port_mappings.push(v1::PortMapping {
                    host_port: u32::from(*host_port),
                    container_port: u32::from(mapping.container_port),
                    protocol: protocol.trim().to_owned(),
                });
            }
        }
    }
    Some(v1::ContainerInfo {
        kind: Some(v1::container_info::Kind::Docker(v1::DockerInfo {
            image: docker.image.clone(),
            network: network as i32,
            port_mappings,
            force_pull_image: docker.force_pull_image,
            privileged: docker.privileged,
            parameters: docker
                .parameters
                .iter()
                .map(|p| v1::Label {
                    key: p.key.clone(),
                    value: p.value.clone(),
                })
                .collect(),
        })),
        volumes: container
            .volumes
            .iter()
            .map(|v| v1::Volume {
                container_path: v.container_path.clone(),
                host_path: v.host_path.clone().unwrap_or_default(),
                read_only: v.mode == VolumeMode::ReadOnly,
            })
            .collect(),
        working_dir: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn app(v: serde_json::Value) -> AppDefinition {
        AppDefinition::from_value(&v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn offer(resources: &str) -> v1::Offer {
        v1::Offer {
            id: "o1".into(),
            framework_id: "f1".into(),
            agent_id: "a1".into(),
            hostname: "node1".into(),
            resources: Resources::parse(resources).unwrap().to_proto(),
            attributes: vec![],
            allocation_role: String::new(),
        }
    }

    fn tid() -> TaskId {
        TaskId::new_unchecked("web.1")
    }

    fn env(t: &v1::TaskInfo) -> BTreeMap<String, String> {
        t.command
            .as_ref()
            .unwrap()
            .environment
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    }

    fn used(t: &v1::TaskInfo) -> Resources {
        Resources::from_proto(&t.resources).unwrap()
    }

    const PLENTY: &str = "cpus:4;mem:4096;disk:1000;ports:[31000-31009]";

    #[test]
    fn task_takes_the_apps_resources_from_the_offer() {
        let a = app(
            json!({"id": "/web", "cmd": "sleep 9", "cpus": 0.5, "mem": 64, "disk": 10, "portDefinitions": []}),
        );
        let t = task_info(&a, &tid(), &offer(PLENTY)).unwrap();
        assert_eq!(used(&t), Resources::parse("cpus:0.5;mem:64;disk:10").unwrap());
        assert_eq!(t.task_id, "web.1");
        assert_eq!(t.agent_id, "a1");
        assert_eq!(t.name, "web");
        assert_eq!(
            t.command.as_ref().unwrap().command,
            Some(v1::command_info::Command::Shell("sleep 9".into()))
        );
        assert!(t.container.is_none());
    }

    #[test]
    fn args_run_as_an_argv_vector() {
        let a = app(json!({"id": "/web", "args": ["sleep", "9"]}));
        let t = task_info(&a, &tid(), &offer(PLENTY)).unwrap();
        assert_eq!(
            t.command.unwrap().command,
            Some(v1::command_info::Command::Argv(v1::Argv {
                args: vec!["sleep".into(), "9".into()]
            }))
        );
    }

    #[test]
    fn dynamic_ports_are_picked_from_the_offers_ranges() {
        let a = app(
            json!({"id": "/web", "cmd": "x", "portDefinitions": [{"port": 0}, {"port": 0, "name": "admin"}]}),
        );
        let t = task_info(
            &a,
            &tid(),
            &offer("cpus:2;mem:256;ports:[31005-31006,32000-32000]"),
        )
        .unwrap();
        assert_eq!(used(&t).get_ranges("ports").ranges(), &[(31005, 31006)]);
        let e = env(&t);
        assert_eq!(e["PORT0"], "31005");
        assert_eq!(e["PORT1"], "31006");
        assert_eq!(e["PORT"], "31005");
        assert_eq!(e["PORTS"], "31005,31006");
        assert_eq!(e["PORT_ADMIN"], "31006");
    }

    #[test]
    fn required_ports_are_taken_as_declared() {
        let a = app(
            json!({"id": "/web", "cmd": "x", "requirePorts": true, "portDefinitions": [{"port": 31007}]}),
        );
        let t = task_info(&a, &tid(), &offer(PLENTY)).unwrap();
        assert_eq!(env(&t)["PORT0"], "31007");
        assert_eq!(env(&t)["PORT_31007"], "31007");
    }

    #[test]
    fn a_required_port_missing_from_the_offer_is_unfit() {
        let a =
            app(json!({"id": "/web", "cmd": "x", "requirePorts": true, "portDefinitions": [{"port": 8080}]}));
        let e = task_info(&a, &tid(), &offer(PLENTY)).unwrap_err();
        assert_eq!(
            e,
            Unfit::InsufficientPorts {
                needed: 1,
                missing: Some(8080)
            }
        );
        assert_eq!(e.to_string(), "InsufficientPorts");
    }

    #[test]
    fn too_few_free_ports_is_unfit() {
        let a = app(json!({"id": "/web", "cmd": "x", "portDefinitions": [{"port": 0}, {"port": 0}]}));
        let e = task_info(&a, &tid(), &offer("cpus:2;mem:256;ports:[31000-31000]")).unwrap_err();
        assert_eq!(
            e,
            Unfit::InsufficientPorts {
                needed: 2,
                missing: None
            }
        );
    }

    #[test]
    fn bridge_host_port_0_becomes_an_offered_port() {
        let a = app(
            json!({"id": "/web", "networks": [{"mode": "container/bridge"}], "container": {
            "docker": {"image": "nginx"},
            "portMappings": [{"containerPort": 80, "hostPort": 0, "name": "http"}, {"containerPort": 53, "hostPort": 31009, "protocol": "udp,tcp"}]}}),
        );
        let t = task_info(&a, &tid(), &offer(PLENTY)).unwrap();
        let Some(v1::container_info::Kind::Docker(docker)) =
            t.container.as_ref().and_then(|c| c.kind.clone())
        else {
            panic!("no docker container: {:?}", t.container);
        };
        assert_eq!(docker.image, "nginx");
        assert_eq!(docker.network, v1::NetworkMode::Bridge as i32);
        let mappings: Vec<(u32, u32, &str)> = docker
            .port_mappings
            .iter()
            .map(|m| (m.host_port, m.container_port, m.protocol.as_str()))
            .collect();
        assert_eq!(
            mappings,
            vec![(31000, 80, "tcp"), (31009, 53, "udp"), (31009, 53, "tcp")]
        );
        assert_eq!(
            used(&t).get_ranges("ports").ranges(),
            &[(31000, 31000), (31009, 31009)]
        );
        let e = env(&t);
        assert_eq!(e["PORT0"], "31000");
        assert_eq!(e["PORT_80"], "31000");
        assert_eq!(e["PORT_HTTP"], "31000");
        assert_eq!(e["MARATHON_APP_DOCKER_IMAGE"], "nginx");
    }

    #[test]
    fn docker_host_networking_and_volumes_are_carried() {
        let a = app(
            json!({"id": "/web", "container": {"docker": {"image": "busybox", "privileged": true},
            "volumes": [{"containerPath": "/data", "hostPath": "/srv", "mode": "RO"}]}}),
        );
        let t = task_info(&a, &tid(), &offer(PLENTY)).unwrap();
        let c = t.container.unwrap();
        let Some(v1::container_info::Kind::Docker(docker)) = c.kind else {
            panic!("not docker")
        };
        assert_eq!(docker.network, v1::NetworkMode::Host as i32);
        assert!(docker.privileged);
        assert_eq!(
            c.volumes,
            vec![v1::Volume {
                container_path: "/data".into(),
                host_path: "/srv".into(),
                read_only: true
            }]
        );
        assert_eq!(t.command.unwrap().command, None);
    }

    #[test]
    fn environment_names_the_app_task_and_host() {
        let mut a = app(json!({"id": "/shop/web", "cmd": "x", "labels": {"team": "shop"}}));
        a.version = Some("2026-11-22T10:15:30.042Z".parse().unwrap());
        let e = env(&task_info(&a, &tid(), &offer(PLENTY)).unwrap());
        assert_eq!(e["HOST"], "node1");
        assert_eq!(e["MARATHON_APP_ID"], "/shop/web");
        assert_eq!(e["MARATHON_APP_VERSION"], "2026-11-22T10:15:30.042Z");
        assert_eq!(e["MESOS_TASK_ID"], "web.1");
        assert_eq!(e["MARATHON_APP_LABEL_TEAM"], "shop");
        assert_eq!(e["MARATHON_APP_RESOURCE_MEM"], "128");
    }

    #[test]
    fn the_apps_own_environment_wins() {
        let a = app(json!({"id": "/web", "cmd": "x", "env": {"HOST": "mine", "A": "1"}}));
        let e = env(&task_info(&a, &tid(), &offer(PLENTY)).unwrap());
        assert_eq!(e["HOST"], "mine");
        assert_eq!(e["A"], "1");
    }

    #[test]
    fn insufficient_cpus_mem_and_disk_are_named() {
        let a = app(json!({"id": "/web", "cmd": "x", "cpus": 2, "mem": 64, "disk": 5}));
        assert_eq!(
            task_info(&a, &tid(), &offer("cpus:1;mem:4096;ports:[1-9]")).unwrap_err(),
            Unfit::InsufficientCpus {
                needed: 2.0,
                offered: 1.0
            }
        );
        assert_eq!(
            task_info(&a, &tid(), &offer("cpus:4;mem:32;ports:[1-9]"))
                .unwrap_err()
                .to_string(),
            "InsufficientMemory"
        );
        assert_eq!(
            task_info(&a, &tid(), &offer("cpus:4;mem:4096;disk:1;ports:[1-9]"))
                .unwrap_err()
                .to_string(),
            "InsufficientDisk"
        );
    }

    #[test]
    fn accepted_resource_roles_limit_what_is_taken() {
        let a = app(
            json!({"id": "/web", "cmd": "x", "cpus": 1, "mem": 64, "portDefinitions": [],
            "acceptedResourceRoles": ["prod"]}),
        );
        let t = task_info(&a, &tid(), &offer("cpus:4;mem:4096;cpus(prod):1;mem(prod):64")).unwrap();
        for r in &t.resources {
            assert_eq!(r.role, "prod", "{r:?}");
        }
        let e = task_info(&a, &tid(), &offer(PLENTY)).unwrap_err();
        assert_eq!(e.to_string(), "UnfulfilledRole");
    }

    #[test]
    fn reserved_resources_of_the_apps_role_are_used_first() {
        let a = app(
            json!({"id": "/web", "cmd": "x", "cpus": 1.5, "mem": 64, "portDefinitions": [], "role": "prod"}),
        );
        let t = task_info(&a, &tid(), &offer("cpus:4;mem:4096;cpus(prod):1;cpus(dev):8")).unwrap();
        let cpus: Vec<(String, f64)> = t
            .resources
            .iter()
            .filter(|r| r.name == "cpus")
            .map(|r| match r.value {
                Some(v1::resource::Value::Scalar(s)) => (r.role.clone(), s),
                _ => panic!("not scalar"),
            })
            .collect();
        assert_eq!(cpus, vec![("prod".to_owned(), 1.0), (String::new(), 0.5)]);
    }

    #[test]
    fn resources_of_another_role_are_not_used() {
        let a = app(
            json!({"id": "/web", "cmd": "x", "cpus": 1, "mem": 64, "portDefinitions": [], "role": "prod"}),
        );
        let e = task_info(&a, &tid(), &offer("cpus(dev):8;mem(dev):4096")).unwrap_err();
        assert_eq!(e.to_string(), "UnfulfilledRole");
    }

    #[test]
    fn an_offer_allocated_to_another_role_is_unfit() {
        let a = app(json!({"id": "/web", "cmd": "x", "role": "prod"}));
        let mut o = offer(PLENTY);
        o.allocation_role = "dev".into();
        assert_eq!(
            task_info(&a, &tid(), &o).unwrap_err().to_string(),
            "UnfulfilledRole"
        );
    }

    #[test]
    fn kill_grace_period_becomes_the_kill_policy() {
        let a = app(json!({"id": "/web", "cmd": "x", "taskKillGracePeriodSeconds": 7.5}));
        let t = task_info(&a, &tid(), &offer(PLENTY)).unwrap();
        assert_eq!(
            t.kill_policy,
            Some(v1::KillPolicy {
                grace_period_seconds: Some(7.5)
            })
        );
        let plain = task_info(&app(json!({"id": "/web", "cmd": "x"})), &tid(), &offer(PLENTY)).unwrap();
        assert_eq!(plain.kill_policy, None);
    }

    #[test]
    fn tasks_packed_into_one_offer_get_different_ports() {
        let a = app(json!({"id": "/web", "cmd": "x", "cpus": 1, "mem": 64}));
        let mut o = offer(PLENTY);
        let first = task_info(&a, &tid(), &o).unwrap();
        let left = Resources::from_proto(&o.resources)
            .unwrap()
            .saturating_sub(&used(&first));
        o.resources = left.to_proto();
        let second = task_info(&a, &TaskId::new_unchecked("web.2"), &o).unwrap();
        assert_ne!(env(&first)["PORT0"], env(&second)["PORT0"]);
    }

    #[test]
    fn a_malformed_offer_is_unfit_not_a_panic() {
        let a = app(json!({"id": "/web", "cmd": "x"}));
        let mut o = offer(PLENTY);
        o.resources.push(v1::Resource {
            name: "cpus".into(),
            role: String::new(),
            value: None,
        });
        assert!(matches!(task_info(&a, &tid(), &o), Err(Unfit::InvalidOffer(_))));
    }
}

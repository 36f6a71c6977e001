//! The environment a task runs with.

use std::path::Path;

use agora_proto::v1;

/// Most `PORTn` variables set for one task; a guard against absurd ranges.
const MAX_PORT_VARS: usize = 65536;

/// PATH for tasks when the agent has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Facts about a launch that end up in the task's environment.
#[derive(Debug, Clone)]
pub(crate) struct TaskEnvContext<'a> {
    pub task: &'a v1::TaskInfo,
    pub framework_id: &'a str,
    pub agent_id: &'a str,
    pub sandbox: &'a Path,
    pub hostname: &'a str,
    /// The agent's PATH, passed on to the task.
    pub path: Option<String>,
}

/// The values of the task's `ports` resource, range by range in the order given.
pub(crate) fn task_ports(task: &v1::TaskInfo) -> Vec<u64> {
    let mut ports = Vec::new();
    for resource in task.resources.iter().filter(|r| r.name == "ports") {
        if let Some(v1::resource::Value::Ranges(ranges)) = &resource.value {
            for range in &ranges.range {
                let mut port = range.begin;
                while port <= range.end && ports.len() < MAX_PORT_VARS {
                    ports.push(port);
                    let Some(next) = port.checked_add(1) else { break };
                    port = next;
                }
            }
        }
    }
    ports
}

/// The task's full environment: PATH, the `AGORA_*` / `MESOS_SANDBOX` / `HOST`
/// facts, `PORT0..PORTn` and `PORT` (= `PORT0`), then the task's own
/// `CommandInfo.environment`, which wins on a clash.
pub(crate) fn task_environment(ctx: &TaskEnvContext<'_>) -> Vec<(String, String)> {
    let sandbox = ctx.sandbox.display().to_string();
    let mut env = vec![
        (
            "PATH".to_owned(),
            ctx.path.clone().unwrap_or_else(|| DEFAULT_PATH.to_owned()),
        ),
        ("AGORA_TASK_ID".to_owned(), ctx.task.task_id.clone()),
        ("AGORA_FRAMEWORK_ID".to_owned(), ctx.framework_id.to_owned()),
        ("AGORA_AGENT_ID".to_owned(), ctx.agent_id.to_owned()),
        ("AGORA_SANDBOX".to_owned(), sandbox.clone()),
        ("MESOS_SANDBOX".to_owned(), sandbox),
        ("HOST".to_owned(), ctx.hostname.to_owned()),
    ];
    let ports = task_ports(ctx.task);
    if let Some(first) = ports.first() {
        env.push(("PORT".to_owned(), first.to_string()));
    }
    env.extend(
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("PORT{i}"), p.to_string())),
    );
    if let Some(command) = &ctx.task.command {
        for var in &command.environment {
            if var.name.is_empty() || var.name.contains('=') || var.name.contains('\0') {
                tracing::warn!(task = %ctx.task.task_id, name = %var.name, "skipping invalid env var name");
                continue;
            }
            env.retain(|(name, _)| name != &var.name);
            env.push((var.name.clone(), var.value.replace('\0', "")));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(ranges: &[(u64, u64)]) -> v1::Resource {
        v1::Resource {
            name: "ports".into(),
            value: Some(v1::resource::Value::Ranges(v1::Ranges {
                range: ranges
                    .iter()
                    .map(|&(begin, end)| v1::Range { begin, end })
                    .collect(),
            })),
            role: String::new(),
        }
    }

    fn task(resources: Vec<v1::Resource>, env: &[(&str, &str)]) -> v1::TaskInfo {
        v1::TaskInfo {
            task_id: "web.1".into(),
            resources,
            command: Some(v1::CommandInfo {
                environment: env
                    .iter()
                    .map(|(n, v)| v1::EnvironmentVariable {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn env_of(task: &v1::TaskInfo) -> Vec<(String, String)> {
        task_environment(&TaskEnvContext {
            task,
            framework_id: "fw-1",
            agent_id: "agent-1",
            sandbox: Path::new("/sb"),
            hostname: "host1",
            path: Some("/bin".into()),
        })
    }

    fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn ports_are_numbered_across_ranges_in_order() {
        let t = task(vec![ports(&[(31005, 31006), (31000, 31000)])], &[]);
        let env = env_of(&t);
        assert_eq!(get(&env, "PORT0"), Some("31005"));
        assert_eq!(get(&env, "PORT1"), Some("31006"));
        assert_eq!(get(&env, "PORT2"), Some("31000"));
        assert_eq!(get(&env, "PORT3"), None);
        assert_eq!(get(&env, "PORT"), Some("31005"));
    }

    #[test]
    fn a_task_without_ports_gets_no_port_vars() {
        let env = env_of(&task(vec![], &[]));
        assert_eq!(get(&env, "PORT"), None);
        assert_eq!(get(&env, "PORT0"), None);
    }

    #[test]
    fn agent_facts_are_in_the_environment() {
        let env = env_of(&task(vec![], &[]));
        assert_eq!(get(&env, "AGORA_TASK_ID"), Some("web.1"));
        assert_eq!(get(&env, "AGORA_FRAMEWORK_ID"), Some("fw-1"));
        assert_eq!(get(&env, "AGORA_AGENT_ID"), Some("agent-1"));
        assert_eq!(get(&env, "AGORA_SANDBOX"), Some("/sb"));
        assert_eq!(get(&env, "MESOS_SANDBOX"), Some("/sb"));
        assert_eq!(get(&env, "HOST"), Some("host1"));
        assert_eq!(get(&env, "PATH"), Some("/bin"));
    }

    #[test]
    fn task_environment_overrides_and_bad_names_are_skipped() {
        let env = env_of(&task(
            vec![],
            &[("HOST", "mine"), ("A=B", "x"), ("GREETING", "hi")],
        ));
        assert_eq!(get(&env, "HOST"), Some("mine"));
        assert_eq!(get(&env, "GREETING"), Some("hi"));
        assert_eq!(env.iter().filter(|(n, _)| n == "HOST").count(), 1);
        assert!(!env.iter().any(|(n, _)| n.contains('=')));
    }

    #[test]
    fn huge_port_ranges_are_capped() {
        let t = task(vec![ports(&[(0, u64::MAX)])], &[]);
        assert_eq!(task_ports(&t).len(), MAX_PORT_VARS);
    }
}

//! `agora logs TASK_ID`: prints a task's output wherever it runs (or ran).
//!
//! Asks the leading master's `/state` which agent has the task (live tasks first,
//! then completed ones) and that agent's `http_address`, then streams the
//! agent's `GET /tasks/{id}/logs` to stdout.

use std::io::Write as _;

use anyhow::{Context, bail};
use serde_json::Value;

/// Flags of `agora logs`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// The task whose output to print.
    pub task_id: String,
    /// Keep printing what the task writes until it ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Print the task's stderr instead of its stdout.
    #[arg(long)]
    pub stderr: bool,
    /// Print only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// The framework that owns the task, when several frameworks use the same task id.
    #[arg(long)]
    pub framework: Option<String>,
    /// The master: host:port, several comma-separated (tried in turn; a standby's redirect to the
    /// leader is followed), or zk://host:2181[,host:2181...]/path (the leader elected there).
    #[arg(long, default_value = "127.0.0.1:5050", env = "AGORA_MASTER")]
    pub master: String,
}

/// Where a task's logs are served.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    framework_id: String,
    agent_http: String,
}

/// Finds the task in the master's state and the address of its agent.
fn locate(state: &Value, task_id: &str, framework: Option<&str>) -> anyhow::Result<Location> {
    let tasks = ["tasks", "completed_tasks"].into_iter().flat_map(|key| {
        state
            .get(key)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    });
    let mut matches: Vec<(&str, &str)> = tasks
        .filter(|t| t["id"] == task_id)
        .filter(|t| framework.is_none_or(|f| t["framework_id"] == f))
        .filter_map(|t| Some((t["framework_id"].as_str()?, t["agent_id"].as_str()?)))
        .collect();
    // A task id may be listed live and completed (a reused id): the live one comes first.
    let mut frameworks: Vec<&str> = matches.iter().map(|(f, _)| *f).collect();
    frameworks.sort_unstable();
    frameworks.dedup();
    if frameworks.len() > 1 {
        bail!(
            "task {task_id:?} exists in several frameworks ({}); pick one with --framework",
            frameworks.join(", ")
        );
    }
    if matches.is_empty() {
        bail!("the master knows no task {task_id:?}");
    }
    let (framework_id, agent_id) = matches.remove(0);
    let agent_http = state
        .get("agents")
        .and_then(Value::as_array)
        .and_then(|agents| agents.iter().find(|a| a["id"] == agent_id))
        .and_then(|a| a["http_address"].as_str())
        .filter(|addr| !addr.is_empty())
        .with_context(|| format!("the master does not know the address of agent {agent_id}"))?;
    Ok(Location {
        framework_id: framework_id.to_owned(),
        agent_http: agent_http.to_owned(),
    })
}

/// The agent URL serving the task's logs (ids percent-encoded).
fn logs_url(args: &LogsArgs, at: &Location) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(&format!("http://{}/", at.agent_http))
        .with_context(|| format!("agent address {:?} is not usable", at.agent_http))?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("agent address {:?} is not usable", at.agent_http))?
        .clear()
        .extend(["tasks", &args.task_id, "logs"]);
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("stream", if args.stderr { "stderr" } else { "stdout" });
        query.append_pair("framework_id", &at.framework_id);
        if let Some(n) = args.tail {
            query.append_pair("tail", &n.to_string());
        }
        if args.follow {
            query.append_pair("follow", "true");
        }
    }
    Ok(url)
}

pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let state = crate::state::get_from_leader(&args.master, "/state").await?;
    let at = locate(&state, &args.task_id, args.framework.as_deref())?;
    let url = logs_url(&args, &at)?;
    let mut response = reqwest::get(url.clone())
        .await
        .with_context(|| format!("cannot reach the agent at {}", at.agent_http))?;
    if !response.status().is_success() {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let reason = body["error"].as_str().unwrap_or("no reason given");
        bail!("the agent answered {status}: {reason}");
    }
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading logs from {url}"))?
    {
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn state() -> Value {
        json!({
            "agents": [
                {"id": "agent-1", "http_address": "127.0.0.1:5051"},
                {"id": "agent-2", "http_address": "127.0.0.1:5052"}
            ],
            "tasks": [{"id": "web", "framework_id": "fw-1", "agent_id": "agent-2"}],
            "completed_tasks": [
                {"id": "batch", "framework_id": "fw-1", "agent_id": "agent-1"},
                {"id": "dup", "framework_id": "fw-1", "agent_id": "agent-1"},
                {"id": "dup", "framework_id": "fw-2", "agent_id": "agent-2"}
            ]
        })
    }

    #[test]
    fn a_live_task_is_found_on_its_agent() {
        let at = locate(&state(), "web", None).unwrap();
        assert_eq!(at.agent_http, "127.0.0.1:5052");
        assert_eq!(at.framework_id, "fw-1");
    }

    #[test]
    fn a_completed_task_is_found_too() {
        assert_eq!(
            locate(&state(), "batch", None).unwrap().agent_http,
            "127.0.0.1:5051"
        );
    }

    #[test]
    fn an_unknown_task_is_an_error_naming_it() {
        let err = locate(&state(), "nope", None).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn a_task_id_in_two_frameworks_needs_framework() {
        let err = locate(&state(), "dup", None).unwrap_err().to_string();
        assert!(err.contains("--framework"), "{err}");
        assert_eq!(
            locate(&state(), "dup", Some("fw-2")).unwrap().agent_http,
            "127.0.0.1:5052"
        );
    }

    #[test]
    fn the_url_carries_stream_tail_follow_and_framework() {
        let args = LogsArgs {
            task_id: "web".into(),
            follow: true,
            stderr: true,
            tail: Some(5),
            framework: None,
            master: String::new(),
        };
        let at = Location {
            framework_id: "fw-1".into(),
            agent_http: "h:1".into(),
        };
        assert_eq!(
            logs_url(&args, &at).unwrap().as_str(),
            "http://h:1/tasks/web/logs?stream=stderr&framework_id=fw-1&tail=5&follow=true"
        );
        let odd = LogsArgs {
            task_id: "a?b#c".into(),
            ..args
        };
        assert_eq!(logs_url(&odd, &at).unwrap().path(), "/tasks/a%3Fb%23c/logs");
    }
}

//! `agora state`: a readable summary of the leading master's `/state`.

use std::fmt::Write as _;

use agora_store::{Endpoints, ZkOptions};
use anyhow::{Context, bail};
use serde_json::Value;

/// Flags of `agora state`.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// The master: host:port, several comma-separated (tried in turn; a standby's redirect to the
    /// leader is followed), or zk://host:2181[,host:2181...]/path (the leader elected there).
    #[arg(long, default_value = "127.0.0.1:5050", env = "AGORA_MASTER")]
    pub master: String,
    /// Print the raw JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// GETs `path` (e.g. `/state`) as JSON from the leading master named by
/// `--master`: with `zk://…`, the leader read once from ZooKeeper; with
/// addresses, each in turn until one answers (a standby's 307 to the leader
/// is followed; a standby that knows no leader answers 503: next).
pub async fn get_from_leader(master: &str, path: &str) -> anyhow::Result<Value> {
    let addresses = match Endpoints::parse(master).with_context(|| format!("--master {master:?}"))? {
        Endpoints::Addresses(addresses) => addresses,
        Endpoints::ZooKeeper(url) => {
            let leader = agora_store::current_leader(&url, ZkOptions::default())
                .await
                .with_context(|| format!("cannot read the leading master from {url}"))?;
            match leader {
                Some(leader) => vec![leader.address],
                None => bail!("no master leads in {url} right now (is a master running with --zk {url}?)"),
            }
        }
    };
    let mut failures = Vec::new();
    for address in &addresses {
        let url = format!("http://{address}{path}");
        match get_json(&url).await {
            Ok(value) => return Ok(value),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    bail!("no leading master answered: {}", failures.join("; "))
}

async fn get_json(url: &str) -> anyhow::Result<Value> {
    reqwest::get(url)
        .await
        .with_context(|| format!("cannot reach the master at {url}"))?
        .error_for_status()
        .with_context(|| format!("{url} answered with an error"))?
        .json()
        .await
        .with_context(|| format!("{url} did not answer JSON"))
}

pub async fn run(args: StateArgs) -> anyhow::Result<()> {
    let state = get_from_leader(&args.master, "/state").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&state)?);
    } else {
        print!("{}", render(&state));
    }
    Ok(())
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `used/total` for one scalar of an agent.
fn usage(agent: &Value, name: &str) -> String {
    let used = agent.get("used").map(|u| num(u, name)).unwrap_or(0.0);
    let total = agent.get("resources").map(|r| num(r, name)).unwrap_or(0.0);
    format!("{}/{}", trim(used), trim(total))
}

/// What the latest usage sample says of `key` (e.g. `cpus_used`) under `v["usage"]`, or `-`.
fn sampled(v: &Value, key: &str) -> String {
    v.get("usage")
        .and_then(|u| u.get(key))
        .and_then(Value::as_f64)
        .map(trim)
        .unwrap_or_else(|| "-".to_owned())
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Renders the master's state as three tables.
pub fn render(state: &Value) -> String {
    let mut out = String::new();
    let agents = list(state, "agents");
    let frameworks = list(state, "frameworks");
    let tasks = list(state, "tasks");
    let _ = writeln!(out, "master {}", text(state, "master_id"));
    let _ = writeln!(out, "\nAGENTS ({})", agents.len());
    let _ = writeln!(
        out,
        "  (CPUS, MEM, DISK: allocated/total; CPU USED, MEM USED: what tasks actually use)"
    );
    let _ = writeln!(
        out,
        "  {:<40} {:<16} {:<12} {:>11} {:>15} {:>13} {:>9} {:>10}",
        "ID", "HOSTNAME", "STATUS", "CPUS", "MEM (MiB)", "DISK (MiB)", "CPU USED", "MEM USED"
    );
    for a in agents {
        let _ = writeln!(
            out,
            "  {:<40} {:<16} {:<12} {:>11} {:>15} {:>13} {:>9} {:>10}",
            text(a, "id"),
            text(a, "hostname"),
            text(a, "status"),
            usage(a, "cpus"),
            usage(a, "mem"),
            usage(a, "disk"),
            sampled(a, "cpus_used"),
            sampled(a, "mem_used_mib"),
        );
    }
    let _ = writeln!(out, "\nFRAMEWORKS ({})", frameworks.len());
    let _ = writeln!(
        out,
        "  {:<40} {:<20} {:<12} {:>6}",
        "ID", "NAME", "STATUS", "TASKS"
    );
    for f in frameworks {
        let _ = writeln!(
            out,
            "  {:<40} {:<20} {:<12} {:>6}",
            text(f, "id"),
            text(f, "name"),
            text(f, "status"),
            text(f, "task_count"),
        );
    }
    let _ = writeln!(out, "\nTASKS ({})", tasks.len());
    let _ = writeln!(
        out,
        "  {:<30} {:<18} {:>9} {:>10} {:<40} FRAMEWORK",
        "ID", "STATE", "CPU USED", "MEM USED", "AGENT"
    );
    for t in tasks {
        let _ = writeln!(
            out,
            "  {:<30} {:<18} {:>9} {:>10} {:<40} {}",
            text(t, "id"),
            text(t, "state"),
            sampled(t, "cpus_used"),
            sampled(t, "mem_used_mib"),
            text(t, "agent_id"),
            text(t, "framework_id"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_agents_with_used_over_total() {
        let state = serde_json::json!({
            "master_id": "m1",
            "agents": [{"id": "agent-1", "hostname": "h", "status": "active",
                        "resources": {"cpus": 4.0, "mem": 1024.0}, "used": {"cpus": 1.5}}],
            "frameworks": [{"id": "fw-1", "name": "batch", "status": "connected", "task_count": 3}],
            "tasks": [{"id": "t1", "state": "TASK_RUNNING", "agent_id": "agent-1", "framework_id": "fw-1"}]
        });
        let out = render(&state);
        assert!(out.contains("1.5/4"), "{out}");
        assert!(out.contains("0/1024"), "{out}");
        assert!(out.contains("TASK_RUNNING"), "{out}");
        assert!(out.contains("FRAMEWORKS (1)"), "{out}");
    }

    #[test]
    fn shows_what_agents_and_tasks_actually_use() {
        let state = serde_json::json!({
            "agents": [{"id": "agent-1", "resources": {"cpus": 4.0}, "used": {"cpus": 1.0},
                        "usage": {"cpus_used": 0.973, "mem_used_mib": 51.5}}],
            "tasks": [{"id": "busy", "state": "TASK_RUNNING",
                       "usage": {"cpus_used": 0.973, "mem_used_mib": 51.5}},
                      {"id": "new", "state": "TASK_STAGING", "usage": null}]
        });
        let out = render(&state);
        assert!(out.contains("1/4"), "allocated/total: {out}");
        assert_eq!(out.matches("0.97").count(), 2, "{out}");
        assert_eq!(out.matches("51.5").count(), 2, "{out}");
        let new = out.lines().find(|l| l.contains("TASK_STAGING")).unwrap();
        assert!(new.contains(" - "), "unknown usage shows as '-': {new}");
    }

    #[test]
    fn tolerates_missing_sections() {
        let out = render(&serde_json::json!({}));
        assert!(out.contains("AGENTS (0)"));
    }

    /// A one-request-per-connection HTTP server answering every request
    /// with `response`.
    async fn http_server(response: String) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(response.as_bytes()).await;
            }
        });
        addr
    }

    fn reply(status: &str, headers: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    async fn leader() -> std::net::SocketAddr {
        http_server(reply(
            "200 OK",
            "Content-Type: application/json\r\n",
            r#"{"master_id":"leader"}"#,
        ))
        .await
    }

    /// A standby sending callers to `leader`.
    async fn standby_of(leader: std::net::SocketAddr) -> std::net::SocketAddr {
        http_server(reply(
            "307 Temporary Redirect",
            &format!("Location: http://{leader}/state\r\n"),
            "",
        ))
        .await
    }

    #[tokio::test]
    async fn a_standby_s_redirect_to_the_leader_is_followed() {
        let leader = leader().await;
        let standby = standby_of(leader).await;
        let state = get_from_leader(&standby.to_string(), "/state").await.unwrap();
        assert_eq!(state["master_id"], "leader");
    }

    #[tokio::test]
    async fn hosts_are_tried_in_turn_past_one_that_knows_no_leader() {
        let unsure = http_server(reply("503 Service Unavailable", "", "no leader yet")).await;
        let leader = leader().await;
        let state = get_from_leader(&format!("{unsure},{leader}"), "/state")
            .await
            .unwrap();
        assert_eq!(state["master_id"], "leader");
        let err = get_from_leader(&unsure.to_string(), "/state").await.unwrap_err();
        assert!(format!("{err:#}").contains("503"), "{err:#}");
    }

    #[tokio::test]
    async fn a_zk_url_leads_to_the_leader_elected_there() {
        use agora_store::{Election, LeaderInfo, ZkElection, ZkUrl};
        let zk = agora_store::zk_server::ZkServer::launch().await.unwrap();
        let root = zk.url("/agora");
        let err = get_from_leader(&root, "/state").await.unwrap_err();
        assert!(err.to_string().contains("no master leads"), "{err:#}");
        let leader = leader().await;
        let election = ZkElection::new(
            &ZkUrl::parse(&root).unwrap().child("leader").unwrap(),
            ZkOptions::default(),
        );
        let _term = election
            .campaign(LeaderInfo::new(leader.to_string()).to_bytes())
            .await
            .unwrap();
        let state = get_from_leader(&root, "/state").await.unwrap();
        assert_eq!(state["master_id"], "leader");
    }

    #[tokio::test]
    async fn a_bad_master_flag_names_the_flag() {
        let err = get_from_leader("zk://h:2181", "/state").await.unwrap_err();
        assert!(format!("{err:#}").contains("--master"), "{err:#}");
    }
}

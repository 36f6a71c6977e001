//! The probes themselves: one HTTP GET, TCP connect or shell command, bounded by
//! the check's timeout, turned into a [`ProbeOutcome`].

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::decision::ProbeOutcome;

/// Most bytes of a failed command's stderr quoted in the failure cause.
const STDERR_QUOTE_BYTES: usize = 200;

/// One runnable probe, resolved against a task's host and ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET url`: 200–399 healthy; 1xx discarded when `ignore_http1xx`, else failed.
    Http {
        /// `http://host:port/path`.
        url: String,
        /// Discard informational (1xx) answers instead of counting them as failures.
        ignore_http1xx: bool,
    },
    /// A TCP connection to `host:port` is accepted.
    Tcp {
        /// The task's host.
        host: String,
        /// The port to connect to.
        port: u16,
    },
    /// `sh -c value` on the framework's host with `env` added; exit 0 healthy.
    Command {
        /// The shell command.
        value: String,
        /// Variables added to the framework's environment.
        env: Vec<(String, String)>,
    },
    /// The check cannot run for this task (unsupported protocol, missing port):
    /// every probe fails with this cause.
    Unavailable(String),
}

impl Probe {
    /// An HTTP probe of `path` on `host:port` (IPv6 literals are bracketed, a path
    /// without a leading `/` gets one).
    pub fn http(host: &str, port: u16, path: &str, ignore_http1xx: bool) -> Self {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let slash = if path.starts_with('/') { "" } else { "/" };
        Self::Http {
            url: format!("http://{host}:{port}{slash}{path}"),
            ignore_http1xx,
        }
    }

    /// Runs the probe once; it never takes (much) longer than `timeout`.
    pub async fn run(&self, timeout: Duration, client: &Result<reqwest::Client, String>) -> ProbeOutcome {
        match self {
            Self::Http { url, ignore_http1xx } => match client {
                Ok(client) => bounded(timeout, http(client, url, *ignore_http1xx)).await,
                Err(e) => ProbeOutcome::Unhealthy(format!("no HTTP client: {e}")),
            },
            Self::Tcp { host, port } => bounded(timeout, tcp(host, *port)).await,
            Self::Command { value, env } => command(value, env, timeout).await,
            Self::Unavailable(cause) => ProbeOutcome::Unhealthy(cause.clone()),
        }
    }
}

/// The environment a COMMAND check gets on top of the framework's: `HOST`, `PORT`,
/// `PORT0..`, `PORTS` (as a task sees them), then the task's own variables.
pub fn command_env(host: &str, ports: &[u16], task_env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = vec![("HOST".to_owned(), host.to_owned())];
    if let Some(first) = ports.first() {
        env.push(("PORT".to_owned(), first.to_string()));
    }
    env.extend(
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("PORT{i}"), p.to_string())),
    );
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    env.push(("PORTS".to_owned(), list.join(",")));
    env.extend(task_env.iter().cloned());
    env
}

async fn bounded(timeout: Duration, probe: impl Future<Output = ProbeOutcome>) -> ProbeOutcome {
    tokio::time::timeout(timeout, probe)
        .await
        .unwrap_or_else(|_| ProbeOutcome::Unhealthy(format!("timed out after {timeout:?}")))
}

async fn http(client: &reqwest::Client, url: &str, ignore_http1xx: bool) -> ProbeOutcome {
    match client.get(url).send().await {
        Ok(response) => {
            let status = response.status();
            if status.is_success() || status.is_redirection() {
                ProbeOutcome::Healthy
            } else if status.is_informational() && ignore_http1xx {
                ProbeOutcome::Ignored
            } else {
                ProbeOutcome::Unhealthy(format!("GET {url} answered HTTP {status}"))
            }
        }
        Err(e) => ProbeOutcome::Unhealthy(format!("GET {url} failed: {}", error_chain(&e))),
    }
}

async fn tcp(host: &str, port: u16) -> ProbeOutcome {
    match tokio::net::TcpStream::connect((host, port)).await {
        Ok(_) => ProbeOutcome::Healthy,
        Err(e) => ProbeOutcome::Unhealthy(format!("TCP connect to {host}:{port} failed: {e}")),
    }
}

/// Kills a command's whole process group when dropped, unless disarmed: the
/// command timed out, or the probe was cancelled (task unwatched).
struct ProcessGroup(Option<Pid>);

impl ProcessGroup {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // The group may be gone already; nothing else to do then.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

async fn command(value: &str, env: &[(String, String)], timeout: Duration) -> ProbeOutcome {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(value)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return ProbeOutcome::Unhealthy(format!("command could not start: {e}")),
    };
    let mut group = ProcessGroup(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    );
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => ProbeOutcome::Unhealthy(format!("command timed out after {timeout:?}")),
        Ok(Err(e)) => ProbeOutcome::Unhealthy(format!("command could not be waited for: {e}")),
        Ok(Ok(output)) => {
            group.disarm();
            if output.status.success() {
                return ProbeOutcome::Healthy;
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stderr = stderr.trim();
            let start = stderr.len().saturating_sub(STDERR_QUOTE_BYTES);
            let start = (start..=stderr.len())
                .find(|&i| stderr.is_char_boundary(i))
                .unwrap_or(0);
            let quote = &stderr[start..];
            if quote.is_empty() {
                ProbeOutcome::Unhealthy(format!("command {}", output.status))
            } else {
                ProbeOutcome::Unhealthy(format!("command {}: {quote}", output.status))
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

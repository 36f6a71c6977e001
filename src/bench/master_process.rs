//! A real master started as a child process of the benchmark, so that its
//! CPU and memory are its own: `agora master --listen 127.0.0.1:0` with JSON
//! logs in a file, its address read from the "listening" line, its peak RSS
//! read from `/proc/<pid>/status`. The child is killed when this is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long the master may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A master child process.
#[derive(Debug)]
pub struct MasterProcess {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    log: PathBuf,
}

impl MasterProcess {
    /// Starts `agora master` with its registry and log under `dir` and waits
    /// until it listens. `extra` is appended to the master's flags.
    pub async fn start(dir: &Path, extra: &[String]) -> anyhow::Result<Self> {
        Self::start_logging(
            dir,
            extra,
            "warn,agora=info,agora_master=warn,agora_store=warn,agora_proto=warn",
        )
        .await
    }

    /// [`MasterProcess::start`] with `RUST_LOG` set to `log_filter` (which
    /// must let `agora=info` through: the address is read from the log).
    pub async fn start_logging(dir: &Path, extra: &[String], log_filter: &str) -> anyhow::Result<Self> {
        let log = dir.join("master.log");
        let mut args: Vec<std::ffi::OsString> = ["master", "--listen", "127.0.0.1:0", "--work-dir"]
            .into_iter()
            .map(Into::into)
            .collect();
        args.push(dir.join("master").into());
        args.extend(extra.iter().map(Into::into));
        let (child, pid, addr) = spawn_listening("master", &args, &log, log_filter).await?;
        Ok(Self {
            child,
            pid,
            addr,
            log,
        })
    }

    /// Where the master serves gRPC and HTTP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The master's process id (for `perf record -p`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The master's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The master's peak resident set size so far, in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        peak_rss_bytes(&status)
    }

    /// Kills the master and waits for it.
    pub async fn kill(mut self) {
        if let Err(e) = self.child.kill().await {
            tracing::warn!(error = %e, "cannot kill the master");
        }
    }
}

/// The address in the first JSON log line whose message ends in "listening".
pub fn listening_address(log: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if !v["message"].as_str()?.ends_with("listening") {
            return None;
        }
        v["address"].as_str()?.parse().ok()
    })
}

/// `VmHWM` (peak RSS) from the text of `/proc/<pid>/status`, in bytes.
pub fn peak_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(value * 1024),
        _ => None,
    }
}

/// Starts `agora --log-format json <args>` with its output in `log` and
/// `RUST_LOG` set to `log_filter` (which must let `agora=info` through), and
/// waits until the log names the address it listens on. `what` names the
/// process in errors. The child is killed when its handle is dropped.
pub async fn spawn_listening(
    what: &str,
    args: &[std::ffi::OsString],
    log: &Path,
    log_filter: &str,
) -> anyhow::Result<(Child, u32, SocketAddr)> {
    let exe = std::env::current_exe().context("cannot find the agora executable")?;
    let out = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone().context("cannot duplicate the log file")?;
    let mut command = Command::new(exe);
    command
        .args(["--log-format", "json"])
        .args(args)
        .env("RUST_LOG", log_filter)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start the {what}"))?;
    let pid = child.id().with_context(|| format!("the {what} exited at once"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = listening_address(&text) {
            return Ok((child, pid, addr));
        }
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("cannot watch the {what}"))?
        {
            anyhow::bail!("the {what} exited with {status}; its log:\n{text}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the {what} did not listen within {START_TIMEOUT:?}; its log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_comes_from_the_listening_line() {
        let log = "{\"message\":\"starting\"}\nnot json\n\
                   {\"message\":\"master listening\",\"address\":\"127.0.0.1:4567\"}\n";
        assert_eq!(listening_address(log), Some("127.0.0.1:4567".parse().unwrap()));
    }

    #[test]
    fn no_listening_line_means_no_address_yet() {
        assert_eq!(listening_address("{\"message\":\"master starting\"}"), None);
    }

    #[test]
    fn peak_rss_is_read_in_kilobytes() {
        let status = "Name:\tagora\nVmPeak:\t  999 kB\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(peak_rss_bytes(status), Some(2 * 1024 * 1024));
    }

    #[test]
    fn a_status_without_vmhwm_has_no_peak_rss() {
        assert_eq!(peak_rss_bytes("Name:\tagora\n"), None);
    }
}

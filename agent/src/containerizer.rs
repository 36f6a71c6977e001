//! Containerizers run tasks. [`Containerizer`] is the seam; the
//! [`ProcessContainerizer`] runs each task as a plain process under the task
//! supervisor (`<supervisor> supervise ...`). A Docker containerizer plugs in
//! here later.
//!
//! Architecture invariant: tasks are never children of the agent. The agent
//! starts a detached supervisor (its own process group, stdin closed), which
//! starts the task in the task's own process group and records its exit
//! status in the sandbox. So tasks survive agent restarts and a restarted
//! agent can still learn how a task ended.
//!
//! The supervisor tells the agent that the task started through a pipe: it
//! writes `started <pid>` on its stdout right after spawning the task (see
//! [`crate::supervisor`]). A re-attached supervisor (after an agent restart)
//! has no pipe to the new agent: it is watched through its pid file and
//! liveness polling instead.
//!
//! [`Containerizer::launch`] blocks (it creates the sandbox and spawns the
//! supervisor): the agent calls it off its event loop.

use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use agora_proto::v1;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::ChildStdout;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::supervisor::{ExitRecord, META_DIR, STATUS_FILE, TASK_PID_FILE};

/// How often a killer looks for the pid file of a task not started yet.
const PID_FILE_POLL: Duration = Duration::from_millis(20);
/// Longest `started <pid>` line read from a supervisor.
const MAX_STARTED_LINE: u64 = 64;
/// How often a re-attached supervisor's liveness is checked.
const LIVENESS_POLL: Duration = Duration::from_millis(200);

/// Which run of which task an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunRef {
    pub framework_id: String,
    pub task_id: String,
    /// The run's sandbox: distinguishes runs of a reused task id.
    pub sandbox: PathBuf,
}

/// Progress of a task run, as the containerizer observes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContainerEvent {
    /// The task process is running with this pid.
    Started { task_pid: i32 },
    /// The run is over; `None` if its exit status is unknown.
    Exited(Option<ExitRecord>),
}

/// Where a containerizer reports [`ContainerEvent`]s.
pub(crate) type EventSender = mpsc::UnboundedSender<(RunRef, ContainerEvent)>;

/// Why a task could not be launched.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LaunchError {
    #[error("task has no command")]
    NoCommand,
    #[error("cannot create sandbox {0}: {1}")]
    Sandbox(PathBuf, io::Error),
    #[error("cannot start supervisor {0}: {1}")]
    Supervisor(PathBuf, io::Error),
    /// The image is not on the machine and cannot be pulled.
    #[error("image not found: {0}")]
    ImageNotFound(String),
    /// The launch of the task's group failed (the message says which task and why).
    #[error("{0}")]
    Group(String),
    /// The Docker engine refused or failed a request.
    #[error("docker: {0}")]
    Docker(String),
}

/// What to launch.
#[derive(Debug, Clone)]
pub(crate) struct LaunchSpec {
    pub run: RunRef,
    pub task: v1::TaskInfo,
    /// The task's complete environment.
    pub env: Vec<(String, String)>,
}

/// A started supervisor, as checkpointed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SupervisorProcess {
    pub pid: i32,
    /// Start time from `/proc/<pid>/stat` (0 if unknown).
    pub start_time: u64,
}

/// Watches a launched run and reports its [`ContainerEvent`]s; the caller spawns it.
pub(crate) type Watcher = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Which of a task's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    /// The stream's file name in the sandbox (`stdout` / `stderr`).
    pub(crate) fn file_name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// A task's output, chunk by chunk.
pub(crate) type LogChunks = BoxStream<'static, io::Result<Bytes>>;

/// What a run uses right now, and what it may use.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Usage {
    /// CPU time consumed so far (user + system), in seconds; cumulative, so
    /// a sampler derives a rate from two samples.
    pub cpu_seconds_total: f64,
    /// Memory in use now, in bytes (RSS for processes, the cgroup's usage for containers).
    pub mem_bytes: u64,
    /// CPU limit in cores, if the run is limited.
    pub cpus_limit: Option<f64>,
    /// Memory limit in bytes, if the run is limited.
    pub mem_limit_bytes: Option<u64>,
}

/// Runs, watches and kills tasks.
pub(crate) trait Containerizer: Send + Sync + 'static {
    /// Whether this containerizer can run `task` (e.g. a task with a Docker
    /// container needs the Docker containerizer).
    fn supports(&self, task: &v1::TaskInfo) -> bool;
    /// Whether starting `task` takes long enough (e.g. creating a container)
    /// to report TASK_STARTING before TASK_RUNNING. When `false` the task goes
    /// straight to RUNNING once [`ContainerEvent::Started`] arrives.
    fn reports_starting(&self, task: &v1::TaskInfo) -> bool;
    /// The run's stdout or stderr: the last `tail` lines (all if `None`), then,
    /// with `follow`, what it writes next until the run ends.
    fn logs(&self, run: &RunRef, stream: LogStream, tail: Option<usize>, follow: bool) -> LogChunks;
    /// The run's resource usage now; `None` if it is not running or unknown.
    fn usage(&self, run: &RunRef, task_pid: Option<i32>) -> BoxFuture<'static, Option<Usage>>;
    /// Starts a task (blocking: call it off the event loop); progress is
    /// reported on `events` by the returned watcher once it is spawned.
    fn launch(
        &self,
        spec: LaunchSpec,
        events: EventSender,
    ) -> Result<(SupervisorProcess, Watcher), LaunchError>;
    /// Starts a task group (pod) all-or-nothing (blocking: call it off the
    /// event loop): every run, in the order given, or none. Only containers
    /// can form groups.
    fn launch_group(
        &self,
        group_id: &str,
        specs: Vec<LaunchSpec>,
        events: EventSender,
    ) -> Result<Vec<(SupervisorProcess, Watcher)>, LaunchError> {
        let _ = (group_id, specs, events);
        Err(LaunchError::Docker(
            "task groups need the docker containerizer".to_owned(),
        ))
    }
    /// Watches a run started by an earlier agent process.
    fn recover(&self, run: RunRef, supervisor: SupervisorProcess, events: EventSender) -> JoinHandle<()>;
    /// Whether the run (started by an earlier agent process) may still be
    /// running, so that [`Containerizer::recover`] should watch it.
    fn is_alive(&self, sandbox: &Path, supervisor: SupervisorProcess) -> bool;
    /// How a finished run ended, if recorded.
    fn exit_record(&self, sandbox: &Path) -> Option<ExitRecord>;
    /// Kills the run: SIGTERM, then SIGKILL after `grace`. Abort the handle to stop.
    fn kill(&self, sandbox: &Path, grace: Duration) -> JoinHandle<()>;
}

/// Runs tasks as processes under `<supervisor> supervise`.
#[derive(Debug, Clone)]
pub(crate) struct ProcessContainerizer {
    supervisor: PathBuf,
}

impl ProcessContainerizer {
    pub(crate) fn new(supervisor: PathBuf) -> Self {
        Self { supervisor }
    }
}

/// The argv a task's command runs as.
pub(crate) fn command_argv(task: &v1::TaskInfo) -> Result<Vec<String>, LaunchError> {
    let command = task.command.as_ref().and_then(|c| c.command.as_ref());
    match command {
        Some(v1::command_info::Command::Shell(line)) => {
            Ok(vec!["/bin/sh".to_owned(), "-c".to_owned(), line.clone()])
        }
        Some(v1::command_info::Command::Argv(argv)) if !argv.args.is_empty() => Ok(argv.args.clone()),
        _ => Err(LaunchError::NoCommand),
    }
}

fn status_file(sandbox: &Path) -> PathBuf {
    sandbox.join(META_DIR).join(STATUS_FILE)
}

fn read_task_pid(sandbox: &Path) -> Option<i32> {
    let text = fs::read_to_string(sandbox.join(META_DIR).join(TASK_PID_FILE)).ok()?;
    text.trim().parse().ok().filter(|pid| *pid > 0)
}

/// Reads the supervisor's `started <pid>` line; `None` if it ended without one.
async fn read_started(stdout: ChildStdout) -> Option<i32> {
    let mut line = String::new();
    let mut reader = BufReader::new(stdout.take(MAX_STARTED_LINE));
    reader.read_line(&mut line).await.ok()?;
    crate::supervisor::parse_started(&line)
}

impl Containerizer for ProcessContainerizer {
    fn supports(&self, task: &v1::TaskInfo) -> bool {
        task.container.is_none()
    }

    fn reports_starting(&self, _task: &v1::TaskInfo) -> bool {
        false
    }

    fn logs(&self, run: &RunRef, stream: LogStream, tail: Option<usize>, follow: bool) -> LogChunks {
        crate::logs::file_logs(run.sandbox.clone(), stream, tail, follow)
    }

    fn usage(&self, _run: &RunRef, task_pid: Option<i32>) -> BoxFuture<'static, Option<Usage>> {
        Box::pin(async move {
            let pgid = task_pid?;
            tokio::task::spawn_blocking(move || crate::monitor::process_group_usage(pgid))
                .await
                .ok()
                .flatten()
        })
    }

    fn launch(
        &self,
        spec: LaunchSpec,
        events: EventSender,
    ) -> Result<(SupervisorProcess, Watcher), LaunchError> {
        let argv = command_argv(&spec.task)?;
        let sandbox = spec.run.sandbox.clone();
        let meta = sandbox.join(META_DIR);
        fs::create_dir_all(&meta).map_err(|e| LaunchError::Sandbox(sandbox.clone(), e))?;
        let log = fs::File::create(meta.join("supervisor.log"))
            .map_err(|e| LaunchError::Sandbox(sandbox.clone(), e))?;
        let mut child = tokio::process::Command::new(&self.supervisor)
            .arg("supervise")
            .arg("--sandbox")
            .arg(&sandbox)
            .arg("--status-file")
            .arg(status_file(&sandbox))
            .arg("--")
            .args(&argv)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&sandbox)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| LaunchError::Supervisor(self.supervisor.clone(), e))?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        let supervisor = SupervisorProcess {
            pid,
            start_time: proc_stat(pid).map(|s| s.start_time).unwrap_or(0),
        };
        let run = spec.run;
        let stdout = child.stdout.take();
        let watcher = Box::pin(async move {
            let mut started = false;
            if let Some(stdout) = stdout
                && let Some(task_pid) = read_started(stdout).await
            {
                let _ = events.send((run.clone(), ContainerEvent::Started { task_pid }));
                started = true;
            }
            if let Err(err) = child.wait().await {
                tracing::warn!(task = %run.task_id, %err, "waiting for supervisor failed");
            }
            finish(&run, started, &events);
        });
        Ok((supervisor, watcher))
    }

    fn recover(&self, run: RunRef, supervisor: SupervisorProcess, events: EventSender) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut started = false;
            while is_alive(supervisor) {
                if !started {
                    started = report_started(&run, &events);
                }
                tokio::time::sleep(LIVENESS_POLL).await;
            }
            finish(&run, started, &events);
        })
    }

    fn is_alive(&self, _sandbox: &Path, supervisor: SupervisorProcess) -> bool {
        is_alive(supervisor)
    }

    fn exit_record(&self, sandbox: &Path) -> Option<ExitRecord> {
        ExitRecord::read(&status_file(sandbox))
    }

    fn kill(&self, sandbox: &Path, grace: Duration) -> JoinHandle<()> {
        let sandbox = sandbox.to_path_buf();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + grace;
            // The supervisor may not have started the task yet: wait for its pid.
            let pgid = loop {
                if let Some(pid) = read_task_pid(&sandbox) {
                    break pid;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(sandbox = %sandbox.display(), "no task pid to kill");
                    return;
                }
                tokio::time::sleep(PID_FILE_POLL).await;
            };
            signal_group(pgid, Signal::SIGTERM);
            tokio::time::sleep_until(deadline).await;
            signal_group(pgid, Signal::SIGKILL);
        })
    }
}

/// Reports `Started` if the supervisor has written the task's pid; returns whether it did.
fn report_started(run: &RunRef, events: &EventSender) -> bool {
    match read_task_pid(&run.sandbox) {
        Some(task_pid) => {
            let _ = events.send((run.clone(), ContainerEvent::Started { task_pid }));
            true
        }
        None => false,
    }
}

fn finish(run: &RunRef, started: bool, events: &EventSender) {
    let record = ExitRecord::read(&status_file(&run.sandbox));
    let launched = !matches!(record, Some(ExitRecord::LaunchError(_)));
    if !started && launched {
        report_started(run, events);
    }
    let _ = events.send((run.clone(), ContainerEvent::Exited(record)));
}

fn signal_group(pgid: i32, sig: Signal) {
    match signal::killpg(Pid::from_raw(pgid), sig) {
        Ok(()) => tracing::debug!(pgid, ?sig, "signalled task process group"),
        Err(Errno::ESRCH) => {}
        Err(err) => tracing::warn!(pgid, ?sig, %err, "cannot signal task process group"),
    }
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub state: char,
    pub start_time: u64,
}

/// Parses the contents of `/proc/<pid>/stat`.
pub(crate) fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    // The command name (field 2) is parenthesised and may contain anything.
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    parse_proc_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether the supervisor process still runs: it exists, is not a zombie, and
/// (when known) started when the checkpoint says, so a reused pid is not taken for it.
fn is_alive(supervisor: SupervisorProcess) -> bool {
    if supervisor.pid <= 0 {
        return false;
    }
    match signal::kill(Pid::from_raw(supervisor.pid), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    match proc_stat(supervisor.pid) {
        Some(stat) => {
            stat.state != 'Z'
                && stat.state != 'X'
                && (supervisor.start_time == 0 || stat.start_time == supervisor.start_time)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parses_state_and_start_time_even_with_odd_names() {
        let text = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(
            parse_proc_stat(text),
            Some(ProcStat {
                state: 'S',
                start_time: 98765
            })
        );
        assert_eq!(parse_proc_stat("garbage"), None);
        assert_eq!(parse_proc_stat("1 (x) S 1"), None);
    }

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = std::process::id() as i32;
        let start_time = proc_stat(pid).unwrap().start_time;
        assert!(is_alive(SupervisorProcess { pid, start_time }));
        assert!(!is_alive(SupervisorProcess {
            pid,
            start_time: start_time + 1
        }));
        assert!(!is_alive(SupervisorProcess {
            pid: 0,
            start_time: 0
        }));
    }

    #[test]
    fn shell_commands_run_under_sh_and_empty_commands_are_rejected() {
        let shell = v1::TaskInfo {
            command: Some(v1::CommandInfo {
                command: Some(v1::command_info::Command::Shell("echo hi".into())),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(command_argv(&shell).unwrap(), ["/bin/sh", "-c", "echo hi"]);
        let empty = v1::TaskInfo {
            command: Some(v1::CommandInfo {
                command: Some(v1::command_info::Command::Argv(v1::Argv { args: vec![] })),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(command_argv(&empty), Err(LaunchError::NoCommand)));
        assert!(matches!(
            command_argv(&v1::TaskInfo::default()),
            Err(LaunchError::NoCommand)
        ));
    }
}

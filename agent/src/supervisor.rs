//! The task supervisor: the small synchronous program every task runs under
//! (`agora supervise --sandbox DIR --status-file FILE -- argv...`).
//!
//! The agent starts the supervisor as a detached process (its own process
//! group, stdin closed) so that tasks are never children of the agent and
//! survive agent restarts. The supervisor:
//!
//! 1. starts the task in its own process group (so a kill reaches the task's
//!    whole tree), working directory = the sandbox, stdout/stderr appended to
//!    `DIR/stdout` and `DIR/stderr`, environment = the supervisor's own
//!    (which the agent prepared for the task);
//! 2. writes the task's pid to `DIR/.agora/task.pid` (for kills and for a
//!    restarted agent), then tells the agent the task started: writes
//!    `started <pid>\n` on its stdout (a pipe the agent reads; errors are
//!    ignored, as the agent may be gone);
//! 3. waits for it and records how it ended in the status file, atomically
//!    (rename; not fsynced: it must survive an agent restart, not a reboot):
//!    `{"exit_code": N}`, `{"signal": S}`, or `{"launch_error": "..."}` when
//!    the command could not be started.
//!
//! A restarted agent reads the status file to learn how a task ended while it
//! was down.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use serde::{Deserialize, Serialize};

/// Directory inside a sandbox where the agent and supervisor keep their files.
pub(crate) const META_DIR: &str = ".agora";
/// File (in [`META_DIR`]) holding the task's pid, which is also its process group id.
pub(crate) const TASK_PID_FILE: &str = "task.pid";
/// File (in [`META_DIR`]) holding the task's [`ExitRecord`].
pub(crate) const STATUS_FILE: &str = "exit_status.json";

/// Args of the hidden `agora supervise` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct SuperviseArgs {
    /// The task's sandbox: its working directory, and where stdout/stderr go.
    #[arg(long)]
    pub sandbox: PathBuf,
    /// Where to record the task's exit status (JSON), written atomically.
    #[arg(long)]
    pub status_file: PathBuf,
    /// The task's program and arguments (after `--`).
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// How a task ended, as the supervisor records it in the status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ExitRecord {
    /// The task exited with this code.
    ExitCode(i32),
    /// The task was terminated by this signal.
    Signal(i32),
    /// The command could not be started; the OS error.
    LaunchError(String),
    /// The container was killed for going over its memory limit.
    OutOfMemory,
}

impl ExitRecord {
    /// Parses the status file's contents.
    pub(crate) fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Writes the record to a status file (atomically, not durably).
    pub(crate) fn write(&self, path: &Path) -> io::Result<()> {
        replace_file(path, &record_json(self)?)
    }

    /// Reads a status file; `None` if it does not exist or cannot be parsed.
    pub(crate) fn read(path: &Path) -> Option<Self> {
        let text = fs::read_to_string(path).ok()?;
        match Self::parse(&text) {
            Ok(record) => Some(record),
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "unreadable exit status file");
                None
            }
        }
    }
}

/// Runs the task and records its exit status; returns the process exit code to use:
/// success when the status was recorded, failure when the supervisor itself failed.
pub fn run(args: SuperviseArgs) -> ExitCode {
    match supervise(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agora supervise: {err}");
            ExitCode::FAILURE
        }
    }
}

fn supervise(args: &SuperviseArgs) -> io::Result<()> {
    let meta = args.sandbox.join(META_DIR);
    fs::create_dir_all(&meta)?;
    let Some((program, rest)) = args.command.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no command given"));
    };
    let stdout = append(&args.sandbox.join("stdout"))?;
    let stderr = append(&args.sandbox.join("stderr"))?;
    let spawned = Command::new(program)
        .args(rest)
        .current_dir(&args.sandbox)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            let record = ExitRecord::LaunchError(format!("cannot start {program:?}: {err}"));
            return replace_file(&args.status_file, &record_json(&record)?);
        }
    };
    let pid = child.id();
    // Not fsynced: the pid only matters while the task runs, i.e. until the
    // machine restarts. Written first, so "started" implies the file exists.
    replace_file(&meta.join(TASK_PID_FILE), pid.to_string().as_bytes())?;
    {
        // The agent may be gone (or restarted): it then learns of the task from the pid file.
        let mut out = io::stdout().lock();
        let _ = out
            .write_all(started_line(pid).as_bytes())
            .and_then(|()| out.flush());
    }
    let status = child.wait()?;
    let record = match (status.code(), status.signal()) {
        (Some(code), _) => ExitRecord::ExitCode(code),
        (None, Some(signal)) => ExitRecord::Signal(signal),
        (None, None) => ExitRecord::LaunchError(format!("unrecognised wait status {status}")),
    };
    // Atomic but not fsynced: it must outlive an agent restart, not a machine
    // crash (which ends the task's run anyway); fsyncs are the launch path's bottleneck.
    replace_file(&args.status_file, &record_json(&record)?)
}

/// The line the supervisor writes on stdout once the task is spawned.
fn started_line(pid: u32) -> String {
    format!("started {pid}\n")
}

/// Parses the supervisor's `started <pid>` line; `None` unless it is one with a valid pid.
pub(crate) fn parse_started(line: &str) -> Option<i32> {
    let pid: i32 = line.strip_prefix("started ")?.trim_end().parse().ok()?;
    (pid > 0).then_some(pid)
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn record_json(record: &ExitRecord) -> io::Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(io::Error::other)
}

/// Replaces `path` with `data` atomically (temporary file, rename) but not durably.
fn replace_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path)
}

/// Writes `data` to `path` atomically: a temporary file, fsync, rename, fsync
/// of the directory. Readers see the old contents or the new, never a part.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_records_use_the_documented_json() {
        assert_eq!(
            serde_json::to_string(&ExitRecord::ExitCode(3)).unwrap(),
            r#"{"exit_code":3}"#
        );
        assert_eq!(
            serde_json::to_string(&ExitRecord::Signal(9)).unwrap(),
            r#"{"signal":9}"#
        );
        assert_eq!(
            ExitRecord::parse(r#"{"exit_code": 0}"#).unwrap(),
            ExitRecord::ExitCode(0)
        );
        assert_eq!(
            ExitRecord::parse(r#"{"signal": 15}"#).unwrap(),
            ExitRecord::Signal(15)
        );
    }

    #[test]
    fn the_started_line_round_trips_and_garbage_is_rejected() {
        assert_eq!(parse_started(&started_line(4242)), Some(4242));
        assert_eq!(parse_started("started 17"), Some(17));
        assert_eq!(parse_started(""), None);
        assert_eq!(parse_started("started \n"), None);
        assert_eq!(parse_started("started -3\n"), None);
        assert_eq!(parse_started("started 0\n"), None);
        assert_eq!(parse_started("hello 12\n"), None);
    }

    #[test]
    fn garbage_status_file_is_an_error_not_a_panic() {
        assert!(ExitRecord::parse("{\"exit_code\": ").is_err());
        assert!(ExitRecord::parse("[]").is_err());
    }

    fn args(dir: &Path, command: &[&str]) -> SuperviseArgs {
        SuperviseArgs {
            sandbox: dir.to_path_buf(),
            status_file: dir.join(META_DIR).join(STATUS_FILE),
            command: command.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn supervisor_records_exit_code_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(dir.path(), &["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]);
        assert_eq!(run(a.clone()), ExitCode::SUCCESS);
        assert_eq!(ExitRecord::read(&a.status_file), Some(ExitRecord::ExitCode(3)));
        assert_eq!(fs::read_to_string(dir.path().join("stdout")).unwrap(), "out\n");
        assert_eq!(fs::read_to_string(dir.path().join("stderr")).unwrap(), "err\n");
        let pid = fs::read_to_string(dir.path().join(META_DIR).join(TASK_PID_FILE)).unwrap();
        assert!(pid.parse::<u32>().is_ok());
    }

    #[test]
    fn supervisor_records_the_killing_signal() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(dir.path(), &["/bin/sh", "-c", "kill -9 $$"]);
        run(a.clone());
        assert_eq!(ExitRecord::read(&a.status_file), Some(ExitRecord::Signal(9)));
    }

    #[test]
    fn supervisor_records_a_command_that_cannot_start() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(dir.path(), &["/nonexistent/program"]);
        run(a.clone());
        match ExitRecord::read(&a.status_file) {
            Some(ExitRecord::LaunchError(msg)) => assert!(msg.contains("No such file"), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

//! What the agent keeps in `--work-dir` so that a restarted agent knows its
//! tasks: the agent id (`work_dir/agent_id`) and one checkpoint per task
//! (`work_dir/meta/tasks/<framework_id>/<task_id>.checkpoint`).
//!
//! A task checkpoint is a protobuf message (built from the `agora.v1` types,
//! so it round-trips TaskInfo and FrameworkInfo exactly), written atomically
//! (temporary file, fsync, rename). It is removed once the task's terminal
//! update is acknowledged.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use agora_proto::v1;
use prost::Message;

use crate::supervisor::write_atomically;

const CHECKPOINT_EXT: &str = "checkpoint";

/// Everything the agent knows about one task that must survive a restart.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TaskCheckpoint {
    /// The task's framework, as given at launch.
    #[prost(message, optional, tag = "1")]
    pub framework: Option<v1::FrameworkInfo>,
    /// The task as launched.
    #[prost(message, optional, tag = "2")]
    pub task: Option<v1::TaskInfo>,
    /// The task's sandbox directory.
    #[prost(string, tag = "3")]
    pub sandbox: String,
    /// The supervisor's pid; 0 until it is started.
    #[prost(int32, tag = "4")]
    pub supervisor_pid: i32,
    /// The supervisor's start time (field 22 of `/proc/<pid>/stat`), against pid reuse.
    #[prost(uint64, tag = "5")]
    pub supervisor_start_time: u64,
    /// The latest status the agent produced.
    #[prost(message, optional, tag = "6")]
    pub latest: Option<v1::TaskStatus>,
    /// Updates not yet acknowledged, oldest first.
    #[prost(message, repeated, tag = "7")]
    pub pending: Vec<v1::TaskStatus>,
    /// A kill was requested (the end is reported as KILLED).
    #[prost(bool, tag = "8")]
    pub killing: bool,
}

/// The agent's work directory layout and checkpoint I/O.
#[derive(Debug, Clone)]
pub(crate) struct WorkDir {
    root: PathBuf,
}

impl WorkDir {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn agent_id_path(&self) -> PathBuf {
        self.root.join("agent_id")
    }

    fn tasks_dir(&self) -> PathBuf {
        self.root.join("meta").join("tasks")
    }

    fn checkpoint_path(&self, framework_id: &str, task_id: &str) -> PathBuf {
        self.tasks_dir()
            .join(framework_id)
            .join(format!("{task_id}.{CHECKPOINT_EXT}"))
    }

    /// A fresh sandbox path for one run of a task.
    pub(crate) fn sandbox_path(&self, framework_id: &str, task_id: &str, run_id: &str) -> PathBuf {
        self.root
            .join("sandboxes")
            .join(framework_id)
            .join(task_id)
            .join(run_id)
    }

    /// The agent id saved by an earlier registration, if any.
    pub(crate) fn load_agent_id(&self) -> io::Result<Option<String>> {
        match fs::read_to_string(self.agent_id_path()) {
            Ok(text) => Ok(Some(text.trim().to_owned()).filter(|id| !id.is_empty())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    pub(crate) fn save_agent_id(&self, id: &str) -> io::Result<()> {
        fs::create_dir_all(&self.root)?;
        write_atomically(&self.agent_id_path(), id.as_bytes())
    }

    /// Writes (replaces) a task's checkpoint.
    pub(crate) fn save(
        &self,
        framework_id: &str,
        task_id: &str,
        checkpoint: &TaskCheckpoint,
    ) -> io::Result<()> {
        let path = self.checkpoint_path(framework_id, task_id);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        write_atomically(&path, &checkpoint.encode_to_vec())
    }

    /// Removes a task's checkpoint (its sandbox stays).
    pub(crate) fn remove(&self, framework_id: &str, task_id: &str) -> io::Result<()> {
        let path = self.checkpoint_path(framework_id, task_id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        if let Some(dir) = path.parent() {
            // Only succeeds when the framework has no other task left.
            let _ = fs::remove_dir(dir);
        }
        Ok(())
    }

    /// All task checkpoints. Unreadable ones are logged and skipped.
    pub(crate) fn load_all(&self) -> io::Result<Vec<TaskCheckpoint>> {
        let mut out = Vec::new();
        let frameworks = match fs::read_dir(self.tasks_dir()) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(err) => return Err(err),
        };
        for framework in frameworks {
            let framework = framework?;
            if !framework.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(framework.path())? {
                let path = file?.path();
                if path.extension().and_then(|e| e.to_str()) != Some(CHECKPOINT_EXT) {
                    continue;
                }
                let decoded = fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| TaskCheckpoint::decode(bytes.as_slice()).map_err(|e| e.to_string()));
                match decoded {
                    Ok(checkpoint) if checkpoint.task.is_some() => out.push(checkpoint),
                    Ok(_) => {
                        tracing::error!(path = %path.display(), "task checkpoint without a task; skipped")
                    }
                    Err(err) => {
                        tracing::error!(path = %path.display(), %err, "unreadable task checkpoint; skipped")
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(task_id: &str) -> TaskCheckpoint {
        TaskCheckpoint {
            framework: Some(v1::FrameworkInfo {
                id: "fw".into(),
                name: "f".into(),
                ..Default::default()
            }),
            task: Some(v1::TaskInfo {
                task_id: task_id.into(),
                name: "n".into(),
                ..Default::default()
            }),
            sandbox: "/sb".into(),
            supervisor_pid: 42,
            supervisor_start_time: 7,
            latest: Some(v1::TaskStatus {
                task_id: task_id.into(),
                state: 3,
                ..Default::default()
            }),
            pending: vec![v1::TaskStatus {
                uuid: vec![1; 16],
                ..Default::default()
            }],
            killing: true,
        }
    }

    #[test]
    fn checkpoints_round_trip_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path().to_path_buf());
        work.save("fw", "web.1", &checkpoint("web.1")).unwrap();
        work.save("fw", "web.2", &checkpoint("web.2")).unwrap();
        let mut loaded = work.load_all().unwrap();
        loaded.sort_by_key(|c| c.task.as_ref().map(|t| t.task_id.clone()));
        assert_eq!(loaded, vec![checkpoint("web.1"), checkpoint("web.2")]);
        work.remove("fw", "web.1").unwrap();
        work.remove("fw", "web.1").unwrap();
        assert_eq!(work.load_all().unwrap(), vec![checkpoint("web.2")]);
    }

    #[test]
    fn a_corrupt_checkpoint_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path().to_path_buf());
        work.save("fw", "good", &checkpoint("good")).unwrap();
        fs::write(work.checkpoint_path("fw", "bad"), b"\xff\xff\xff").unwrap();
        assert_eq!(work.load_all().unwrap(), vec![checkpoint("good")]);
    }

    #[test]
    fn agent_id_is_absent_until_saved() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path().join("agent"));
        assert_eq!(work.load_agent_id().unwrap(), None);
        work.save_agent_id("agent-1").unwrap();
        assert_eq!(work.load_agent_id().unwrap(), Some("agent-1".into()));
    }
}

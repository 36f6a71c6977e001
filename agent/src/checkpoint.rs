//! What the agent keeps in `--work-dir` so that a restarted agent knows its
//! tasks: the agent id (`work_dir/agent_id`) and one checkpoint per task
//! (`work_dir/meta/tasks/<framework_id>/<task_id>.checkpoint`).
//!
//! A task checkpoint is a protobuf message (built from the `agora.v1` types,
//! so it round-trips TaskInfo and FrameworkInfo exactly), written atomically
//! (temporary file, fsync, rename). It is removed once the task's terminal
//! update is acknowledged.
//!
//! The agent writes checkpoints in batches ([`WorkDir::write_batch`], group
//! commit): every file of a batch is written and fsynced, renamed into place,
//! and then each directory touched is fsynced once.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use agora_proto::v1;
use prost::Message;

use crate::supervisor::write_atomically;

const CHECKPOINT_EXT: &str = "checkpoint";
/// A batch gets one more writer thread per this many files...
const FILES_PER_WRITER: usize = 4;
/// ...up to this many.
const MAX_WRITERS: usize = 32;

/// Failures counted for a writer thread that panicked (all its entries).
fn entries_failed(entries: usize) -> usize {
    tracing::error!(entries, "checkpoint writer panicked");
    entries
}

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

/// One change of a [`WorkDir::write_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckpointWrite {
    /// Replace the task's checkpoint with this encoded [`TaskCheckpoint`].
    Save(Vec<u8>),
    /// Remove the task's checkpoint.
    Remove,
}

/// A change to the checkpoint of the task `(framework_id, task_id)`.
pub(crate) type BatchEntry = (String, String, CheckpointWrite);

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

    /// Writes (replaces) a task's checkpoint on its own (the agent uses [`Self::write_batch`]).
    #[cfg(test)]
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

    /// Removes a task's checkpoint on its own (the agent uses [`Self::write_batch`]).
    #[cfg(test)]
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

    /// Applies a batch of checkpoint changes durably: when it returns, every
    /// save that succeeded is on disk. Failures are logged per task (and do not
    /// stop the rest of the batch); the number of failures is returned.
    pub(crate) fn write_batch(&self, batch: &[BatchEntry]) -> usize {
        // Create the directories first, once each.
        let dirs: BTreeSet<PathBuf> = batch
            .iter()
            .filter(|(_, _, write)| matches!(write, CheckpointWrite::Save(_)))
            .map(|(framework_id, _, _)| self.tasks_dir().join(framework_id))
            .collect();
        for dir in &dirs {
            if let Err(err) = fs::create_dir_all(dir) {
                tracing::error!(dir = %dir.display(), %err, "cannot create checkpoint directory");
            }
        }
        // The files' fsyncs dominate; run them side by side so the file system
        // can commit them together. Each task appears once per batch, so the
        // order of files within a batch does not matter.
        let workers = batch.len().div_ceil(FILES_PER_WRITER).clamp(1, MAX_WRITERS);
        let chunk = batch.len().div_ceil(workers).max(1);
        let results: Vec<(usize, BTreeSet<PathBuf>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .chunks(chunk)
                .map(|entries| scope.spawn(|| self.write_entries(entries)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| (entries_failed(chunk), BTreeSet::new()))
                })
                .collect()
        });
        let mut failures = 0;
        let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
        for (failed, dirs) in results {
            failures += failed;
            touched.extend(dirs);
        }
        for dir in &touched {
            if let Err(err) = File::open(dir).and_then(|d| d.sync_all()) {
                failures += 1;
                tracing::error!(dir = %dir.display(), %err, "cannot sync checkpoint directory");
            }
        }
        let emptied: BTreeSet<PathBuf> = batch
            .iter()
            .filter(|(_, _, write)| matches!(write, CheckpointWrite::Remove))
            .map(|(framework_id, _, _)| self.tasks_dir().join(framework_id))
            .collect();
        for dir in &emptied {
            // Only succeeds when the framework has no task left.
            let _ = fs::remove_dir(dir);
        }
        failures
    }

    /// Applies some entries of a batch (files only); returns the failures and
    /// the directories whose entries changed.
    fn write_entries(&self, entries: &[BatchEntry]) -> (usize, BTreeSet<PathBuf>) {
        let mut failures = 0;
        let mut touched = BTreeSet::new();
        for (framework_id, task_id, write) in entries {
            let path = self.checkpoint_path(framework_id, task_id);
            let result = match write {
                CheckpointWrite::Save(bytes) => replace_file(&path, bytes),
                CheckpointWrite::Remove => match fs::remove_file(&path) {
                    Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
                    other => other,
                },
            };
            match result {
                Ok(()) => {
                    if let Some(dir) = path.parent() {
                        touched.insert(dir.to_path_buf());
                    }
                }
                Err(err) => {
                    failures += 1;
                    tracing::error!(task = %task_id, framework = %framework_id, %err, "cannot write task checkpoint");
                }
            }
        }
        (failures, touched)
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

/// Writes `data` to a temporary file next to `path`, fsyncs it and renames it
/// over `path`. The caller fsyncs the directory.
fn replace_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)
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

    fn save(task_id: &str) -> BatchEntry {
        (
            "fw".into(),
            task_id.into(),
            CheckpointWrite::Save(checkpoint(task_id).encode_to_vec()),
        )
    }

    #[test]
    fn a_batch_saves_and_removes_checkpoints_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path().to_path_buf());
        let batch = vec![
            save("a"),
            save("b"),
            ("fw".into(), "a".into(), CheckpointWrite::Remove),
            ("fw".into(), "never-saved".into(), CheckpointWrite::Remove),
        ];
        assert_eq!(work.write_batch(&batch), 0);
        assert_eq!(work.load_all().unwrap(), vec![checkpoint("b")]);
        assert!(!work.tasks_dir().join("fw").join(".b.checkpoint.tmp").exists());
    }

    #[test]
    fn removing_the_last_checkpoint_of_a_framework_removes_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path().to_path_buf());
        work.write_batch(&[save("a")]);
        assert_eq!(
            work.write_batch(&[("fw".into(), "a".into(), CheckpointWrite::Remove)]),
            0
        );
        assert!(!work.tasks_dir().join("fw").exists());
    }

    #[test]
    fn a_failed_write_is_counted_and_the_rest_of_the_batch_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path().to_path_buf());
        fs::create_dir_all(work.tasks_dir()).unwrap();
        // A file where the framework's directory should be.
        fs::write(work.tasks_dir().join("blocked"), b"").unwrap();
        let batch = vec![
            ("blocked".into(), "x".into(), CheckpointWrite::Save(vec![1])),
            save("ok"),
        ];
        assert_eq!(work.write_batch(&batch), 1);
        assert_eq!(work.load_all().unwrap(), vec![checkpoint("ok")]);
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

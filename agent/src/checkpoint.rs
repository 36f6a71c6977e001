//! What the agent keeps in `--work-dir` so that a restarted agent knows its
//! tasks: the agent id (`work_dir/agent_id`) and the checkpoint of every task,
//! in one append-only log (`work_dir/meta/tasks.log`).
//!
//! A task checkpoint is a protobuf message (built from the `agora.v1` types,
//! so it round-trips TaskInfo and FrameworkInfo exactly). The agent writes
//! checkpoints in batches ([`WorkDir::write_batch`], group commit): a batch is
//! appended to the log as framed records and made durable with ONE
//! `fdatasync`, however many tasks it covers — per-task files would cost one
//! fsync per task, which is what limited launch throughput. A record is
//! `[payload length: u32 LE][FNV-1a 64 of the payload: u64 LE][payload]`; a
//! torn or corrupt record ends the log (a crash mid-append loses only the
//! batch that was not yet acknowledged as durable). When most records are
//! stale the log is compacted: the live checkpoints are written to a new
//! file, fsynced and renamed over the old one.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agora_proto::v1;
use prost::Message;

use crate::supervisor::write_atomically;

const LOG_FILE: &str = "tasks.log";
/// Bytes before a record's payload: length (u32) and checksum (u64).
const FRAME_HEADER: usize = 12;
/// Compact when the log holds more than this many records...
const COMPACT_MIN_RECORDS: usize = 1024;
/// ...and more than this many per live checkpoint.
const COMPACT_RATIO: usize = 4;
/// A payload larger than this is treated as corruption.
const MAX_RECORD: usize = 64 << 20;

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
    /// The task group (pod) the task belongs to; empty for a lone task.
    #[prost(string, tag = "9")]
    pub group_id: String,
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

/// One record of the log.
#[derive(Clone, PartialEq, prost::Message)]
struct LogRecord {
    #[prost(string, tag = "1")]
    framework_id: String,
    #[prost(string, tag = "2")]
    task_id: String,
    /// The encoded [`TaskCheckpoint`]; absent: the task's checkpoint was removed.
    #[prost(bytes = "vec", optional, tag = "3")]
    checkpoint: Option<Vec<u8>>,
}

/// 64-bit FNV-1a: enough to tell a torn or garbled record from a whole one.
fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn frame(record: &LogRecord, out: &mut Vec<u8>) {
    let payload = record.encode_to_vec();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Parses whole records from the start of `data`; returns them and the
/// length of the valid prefix (everything after it is torn or corrupt).
fn parse_records(data: &[u8]) -> (Vec<LogRecord>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while data.len() - at >= FRAME_HEADER {
        let mut len = [0u8; 4];
        len.copy_from_slice(&data[at..at + 4]);
        let len = u32::from_le_bytes(len) as usize;
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&data[at + 4..at + FRAME_HEADER]);
        let start = at + FRAME_HEADER;
        if len > MAX_RECORD || data.len() - start < len {
            break;
        }
        let payload = &data[start..start + len];
        if checksum(payload) != u64::from_le_bytes(sum) {
            break;
        }
        match LogRecord::decode(payload) {
            Ok(r) => records.push(r),
            Err(_) => break,
        }
        at = start + len;
    }
    (records, at)
}

/// The log's in-memory side: the open file and the live checkpoints (so
/// compaction needs no read).
#[derive(Default)]
struct TaskLog {
    loaded: bool,
    file: Option<File>,
    live: BTreeMap<(String, String), Vec<u8>>,
    records: usize,
}

/// The agent's work directory layout and checkpoint I/O.
///
/// Clones share one log. Only one batch is written at a time (the agent has
/// a single writer); the lock makes that safe regardless.
#[derive(Clone)]
pub(crate) struct WorkDir {
    root: PathBuf,
    // A std mutex on purpose: it is only taken by the blocking writer thread
    // (and at start-up), never across an await.
    #[allow(clippy::disallowed_types)]
    log: Arc<std::sync::Mutex<TaskLog>>,
}

impl std::fmt::Debug for WorkDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkDir")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl WorkDir {
    pub(crate) fn new(root: PathBuf) -> Self {
        #[allow(clippy::disallowed_types)]
        let log = Arc::new(std::sync::Mutex::new(TaskLog::default()));
        Self { root, log }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn agent_id_path(&self) -> PathBuf {
        self.root.join("agent_id")
    }

    fn meta_dir(&self) -> PathBuf {
        self.root.join("meta")
    }

    fn log_path(&self) -> PathBuf {
        self.meta_dir().join(LOG_FILE)
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
        let entry = (
            framework_id.to_owned(),
            task_id.to_owned(),
            CheckpointWrite::Save(checkpoint.encode_to_vec()),
        );
        match self.write_batch(&[entry]) {
            0 => Ok(()),
            _ => Err(io::Error::other("checkpoint write failed")),
        }
    }

    /// Removes a task's checkpoint on its own (the agent uses [`Self::write_batch`]).
    #[cfg(test)]
    pub(crate) fn remove(&self, framework_id: &str, task_id: &str) -> io::Result<()> {
        match self.write_batch(&[(
            framework_id.to_owned(),
            task_id.to_owned(),
            CheckpointWrite::Remove,
        )]) {
            0 => Ok(()),
            _ => Err(io::Error::other("checkpoint write failed")),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TaskLog> {
        // A writer that panicked left the map consistent with what it wrote
        // or did not write; keep going.
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the log into `log` (once), dropping a torn tail.
    fn load(&self, log: &mut TaskLog) -> io::Result<()> {
        if log.loaded {
            return Ok(());
        }
        let path = self.log_path();
        let mut data = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut data)?;
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        let (records, valid) = parse_records(&data);
        if valid < data.len() {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = data.len() - valid,
                "checkpoint log ends in a torn or corrupt record; dropping it"
            );
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(valid as u64)?;
            f.sync_all()?;
        }
        log.records = records.len();
        for r in records {
            let key = (r.framework_id, r.task_id);
            match r.checkpoint {
                Some(bytes) => log.live.insert(key, bytes),
                None => log.live.remove(&key),
            };
        }
        log.loaded = true;
        Ok(())
    }

    /// The open log file, created (and its directory synced) on first use.
    fn file<'a>(&self, log: &'a mut TaskLog) -> io::Result<&'a mut File> {
        if log.file.is_none() {
            fs::create_dir_all(self.meta_dir())?;
            let existed = self.log_path().exists();
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())?;
            if !existed {
                File::open(self.meta_dir())?.sync_all()?;
            }
            log.file = Some(f);
        }
        log.file
            .as_mut()
            .ok_or_else(|| io::Error::other("checkpoint log not open"))
    }

    /// Applies a batch of checkpoint changes durably: when it returns 0, the
    /// whole batch is on disk (one append, one `fdatasync`). On failure
    /// nothing of the batch counts as written and the number of entries is
    /// returned.
    pub(crate) fn write_batch(&self, batch: &[BatchEntry]) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let mut log = self.lock();
        match self.append(&mut log, batch) {
            Ok(()) => {
                if log.records > COMPACT_MIN_RECORDS
                    && log.records > COMPACT_RATIO * log.live.len().max(1)
                    && let Err(err) = self.compact(&mut log)
                {
                    tracing::error!(%err, "cannot compact the checkpoint log; it keeps growing");
                }
                0
            }
            Err(err) => {
                tracing::error!(%err, entries = batch.len(), "cannot write task checkpoints");
                // The file may end in a partial batch: reopen (and so reload)
                // before the next write, which drops it.
                *log = TaskLog::default();
                batch.len()
            }
        }
    }

    fn append(&self, log: &mut TaskLog, batch: &[BatchEntry]) -> io::Result<()> {
        self.load(log)?;
        let mut buf = Vec::new();
        for (framework_id, task_id, write) in batch {
            let record = LogRecord {
                framework_id: framework_id.clone(),
                task_id: task_id.clone(),
                checkpoint: match write {
                    CheckpointWrite::Save(bytes) => Some(bytes.clone()),
                    CheckpointWrite::Remove => None,
                },
            };
            frame(&record, &mut buf);
        }
        let file = self.file(log)?;
        file.write_all(&buf)?;
        file.sync_data()?;
        log.records += batch.len();
        for (framework_id, task_id, write) in batch {
            let key = (framework_id.clone(), task_id.clone());
            match write {
                CheckpointWrite::Save(bytes) => log.live.insert(key, bytes.clone()),
                CheckpointWrite::Remove => log.live.remove(&key),
            };
        }
        Ok(())
    }

    /// Rewrites the log with only the live checkpoints.
    fn compact(&self, log: &mut TaskLog) -> io::Result<()> {
        let mut buf = Vec::new();
        for ((framework_id, task_id), bytes) in &log.live {
            let record = LogRecord {
                framework_id: framework_id.clone(),
                task_id: task_id.clone(),
                checkpoint: Some(bytes.clone()),
            };
            frame(&record, &mut buf);
        }
        let tmp = self.meta_dir().join(format!(".{LOG_FILE}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.log_path())?;
        File::open(self.meta_dir())?.sync_all()?;
        log.file = None;
        log.records = log.live.len();
        Ok(())
    }

    /// All task checkpoints. Undecodable ones are logged and skipped.
    pub(crate) fn load_all(&self) -> io::Result<Vec<TaskCheckpoint>> {
        let mut log = self.lock();
        self.load(&mut log)?;
        let mut out = Vec::new();
        for ((framework_id, task_id), bytes) in &log.live {
            match TaskCheckpoint::decode(bytes.as_slice()) {
                Ok(checkpoint) if checkpoint.task.is_some() => out.push(checkpoint),
                Ok(_) => {
                    tracing::error!(framework = %framework_id, task = %task_id, "task checkpoint without a task; skipped")
                }
                Err(err) => {
                    tracing::error!(framework = %framework_id, task = %task_id, %err, "unreadable task checkpoint; skipped")
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
            ..Default::default()
        }
    }

    fn save(task_id: &str) -> BatchEntry {
        (
            "fw".into(),
            task_id.into(),
            CheckpointWrite::Save(checkpoint(task_id).encode_to_vec()),
        )
    }

    /// A fresh `WorkDir` on the same directory: what a restarted agent sees.
    fn reopen(work: &WorkDir) -> WorkDir {
        WorkDir::new(work.root().to_path_buf())
    }

    #[test]
    fn checkpoints_round_trip_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path().to_path_buf());
        work.save("fw", "web.1", &checkpoint("web.1")).unwrap();
        work.save("fw", "web.2", &checkpoint("web.2")).unwrap();
        let loaded = reopen(&work).load_all().unwrap();
        assert_eq!(loaded, vec![checkpoint("web.1"), checkpoint("web.2")]);
        work.remove("fw", "web.1").unwrap();
        work.remove("fw", "web.1").unwrap();
        assert_eq!(reopen(&work).load_all().unwrap(), vec![checkpoint("web.2")]);
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
        assert_eq!(reopen(&work).load_all().unwrap(), vec![checkpoint("b")]);
    }

    #[test]
    fn a_torn_record_at_the_end_of_the_log_is_dropped_and_writing_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path().to_path_buf());
        work.write_batch(&[save("a")]);
        // A crash in the middle of appending the next batch.
        let mut torn = Vec::new();
        frame(
            &LogRecord {
                framework_id: "fw".into(),
                task_id: "b".into(),
                checkpoint: Some(vec![1, 2, 3]),
            },
            &mut torn,
        );
        let mut f = OpenOptions::new().append(true).open(work.log_path()).unwrap();
        f.write_all(&torn[..torn.len() - 2]).unwrap();
        drop(f);

        let restarted = reopen(&work);
        assert_eq!(restarted.load_all().unwrap(), vec![checkpoint("a")]);
        restarted.write_batch(&[save("c")]);
        assert_eq!(
            reopen(&work).load_all().unwrap(),
            vec![checkpoint("a"), checkpoint("c")]
        );
    }

    #[test]
    fn a_garbled_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path().to_path_buf());
        work.write_batch(&[save("a")]);
        let good = fs::metadata(work.log_path()).unwrap().len();
        work.write_batch(&[save("b")]);
        let mut data = fs::read(work.log_path()).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        fs::write(work.log_path(), &data).unwrap();
        assert_eq!(reopen(&work).load_all().unwrap(), vec![checkpoint("a")]);
        assert_eq!(fs::metadata(work.log_path()).unwrap().len(), good);
    }

    #[test]
    fn an_undecodable_checkpoint_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path().to_path_buf());
        work.write_batch(&[
            save("good"),
            (
                "fw".into(),
                "bad".into(),
                CheckpointWrite::Save(vec![0xff, 0xff, 0xff]),
            ),
        ]);
        assert_eq!(reopen(&work).load_all().unwrap(), vec![checkpoint("good")]);
    }

    #[test]
    fn a_log_of_mostly_stale_records_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path().to_path_buf());
        work.write_batch(&[save("keep")]);
        for _ in 0..(COMPACT_MIN_RECORDS / 2 + 1) {
            work.write_batch(&[
                save("churn"),
                ("fw".into(), "churn".into(), CheckpointWrite::Remove),
            ]);
        }
        let size = fs::metadata(work.log_path()).unwrap().len();
        assert!(size < 4096, "log not compacted: {size} bytes");
        assert_eq!(reopen(&work).load_all().unwrap(), vec![checkpoint("keep")]);
        // Appends after the compaction land in the new file.
        work.write_batch(&[save("after")]);
        assert_eq!(
            reopen(&work).load_all().unwrap(),
            vec![checkpoint("after"), checkpoint("keep")]
        );
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

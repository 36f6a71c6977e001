//! Where the cron framework keeps what must survive a restart: jobs with their cursors and
//! statistics, run records (history and in-flight runs) and the framework id.
//!
//! [`StateStore`] is the narrow interface the runtime uses: load everything, apply a batch of
//! engine [`Change`]s atomically, and the framework id store for the SDK driver.
//! [`KvStateStore`] implements it on any [`agora_store::Store`] (the embedded redb store
//! here; ZooKeeper later). Layout, one JSON value per key:
//! - `/cron/jobs/<name>` → `{"job": <Chronos job JSON>, "anchor", "cursor", "stats",
//!   "lastDependencyRun", "nextSeq"}`
//! - `/cron/runs/<name>/<seq, 20 digits>` → a [`Run`]
//! - `/cron/framework-id` → the framework id (text)

use std::path::Path;
use std::sync::Arc;

use agora_sdk::{FrameworkIdStore, StoreIdStore};
use agora_store::{SharedStore, StoreError, Write};
use futures::future::BoxFuture;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::engine::{Change, Recovered, Run, StoredJob};
use crate::job::{Job, JobKind, JobName, JobStats};

const JOBS: &str = "/cron/jobs/";
const RUNS: &str = "/cron/runs/";
const FRAMEWORK_ID: &str = "/cron/framework-id";

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store failed (the batch did not happen).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored value cannot be decoded.
    #[error("stored value at {key} is not valid: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The cron framework's durable state.
pub trait StateStore: Send + Sync + 'static {
    /// Every job with its runs.
    fn load(&self) -> BoxFuture<'_, Result<Recovered, StateError>>;
    /// Applies the changes atomically and durably: all or nothing.
    fn apply(&self, changes: Vec<Change>) -> BoxFuture<'_, Result<(), StateError>>;
    /// Where the SDK driver keeps the framework id.
    fn framework_id_store(&self) -> Arc<dyn FrameworkIdStore>;
}

/// [`StateStore`] over an Agora key-value [`agora_store::Store`].
#[derive(Clone)]
pub struct KvStateStore {
    store: SharedStore,
}

impl std::fmt::Debug for KvStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStateStore").finish_non_exhaustive()
    }
}

impl KvStateStore {
    /// State kept in `store`.
    pub fn new(store: SharedStore) -> KvStateStore {
        KvStateStore { store }
    }

    /// State kept in the embedded store in `dir` (created if missing).
    pub fn open_embedded(dir: &Path) -> Result<KvStateStore, StateError> {
        Ok(KvStateStore::new(agora_store::open_embedded(dir)?))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobValue {
    job: serde_json::Value,
    anchor: Timestamp,
    cursor: Option<Timestamp>,
    stats: JobStats,
    last_dependency_run: Option<Timestamp>,
    next_seq: u64,
}

fn job_key(name: &JobName) -> String {
    format!("{JOBS}{name}")
}

fn run_key(name: &JobName, seq: u64) -> String {
    format!("{RUNS}{name}/{seq:020}")
}

fn corrupt(key: &str, message: impl std::fmt::Display) -> StateError {
    StateError::Corrupt {
        key: key.to_owned(),
        message: message.to_string(),
    }
}

/// Encodes a job record.
pub fn encode_job(stored: &StoredJob) -> Result<Vec<u8>, StateError> {
    let value = JobValue {
        job: stored.job.to_json(&stored.stats),
        anchor: stored.anchor,
        cursor: stored.cursor,
        stats: stored.stats.clone(),
        last_dependency_run: stored.last_dependency_run,
        next_seq: stored.next_seq,
    };
    serde_json::to_vec(&value).map_err(|e| corrupt(&job_key(&stored.job.name), e))
}

/// Decodes a job record stored under `key`.
pub fn decode_job(key: &str, bytes: &[u8]) -> Result<StoredJob, StateError> {
    let value: JobValue = serde_json::from_slice(bytes).map_err(|e| corrupt(key, e))?;
    let dependent = value
        .job
        .get("parents")
        .and_then(|p| p.as_array())
        .is_some_and(|p| !p.is_empty());
    let kind = if dependent {
        JobKind::Dependent
    } else {
        JobKind::Scheduled
    };
    let body = serde_json::to_vec(&value.job).map_err(|e| corrupt(key, e))?;
    let job = Job::from_json(&body, kind).map_err(|e| corrupt(key, e.message))?;
    Ok(StoredJob {
        job,
        anchor: value.anchor,
        cursor: value.cursor,
        stats: value.stats,
        last_dependency_run: value.last_dependency_run,
        next_seq: value.next_seq,
    })
}

/// The store writes for a batch of changes.
pub fn writes(changes: &[Change]) -> Result<Vec<Write>, StateError> {
    let mut out = Vec::with_capacity(changes.len());
    for change in changes {
        match change {
            Change::PutJob(job) => out.push(Write::put(job_key(&job.job.name), encode_job(job)?)),
            Change::DeleteJob { name, runs } => {
                out.push(Write::delete(job_key(name)));
                out.extend(runs.iter().map(|seq| Write::delete(run_key(name, *seq))));
            }
            Change::PutRun(name, run) => {
                let key = run_key(name, run.seq);
                let bytes = serde_json::to_vec(run).map_err(|e| corrupt(&key, e))?;
                out.push(Write::put(key, bytes));
            }
            Change::DeleteRun(name, seq) => out.push(Write::delete(run_key(name, *seq))),
        }
    }
    Ok(out)
}

impl StateStore for KvStateStore {
    fn load(&self) -> BoxFuture<'_, Result<Recovered, StateError>> {
        Box::pin(async move {
            let mut jobs = Vec::new();
            for (key, bytes) in self.store.list(JOBS).await? {
                jobs.push((decode_job(&key, &bytes)?, Vec::new()));
            }
            for (key, bytes) in self.store.list(RUNS).await? {
                let run: Run = serde_json::from_slice(&bytes).map_err(|e| corrupt(&key, e))?;
                match jobs.iter_mut().find(|(j, _)| j.job.name == run.record.job) {
                    Some((_, runs)) => runs.push(run),
                    None => tracing::warn!(key, "ignoring a run of a job that does not exist"),
                }
            }
            Ok(Recovered { jobs })
        })
    }

    fn apply(&self, changes: Vec<Change>) -> BoxFuture<'_, Result<(), StateError>> {
        Box::pin(async move {
            let batch = writes(&changes)?;
            if batch.is_empty() {
                return Ok(());
            }
            self.store.write(batch).await?;
            Ok(())
        })
    }

    fn framework_id_store(&self) -> Arc<dyn FrameworkIdStore> {
        Arc::new(StoreIdStore::new(self.store.clone(), FRAMEWORK_ID))
    }
}

#[cfg(test)]
mod tests {
    use agora_proto::FrameworkId;
    use agora_store::{EmbeddedStore, MemoryStore, Store};

    use super::*;
    use crate::handle::{RunRecord, RunState, Trigger};

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn job(name: &str, body: serde_json::Value, kind: JobKind) -> StoredJob {
        let mut body = body;
        body["name"] = name.into();
        StoredJob {
            job: Job::from_json(&serde_json::to_vec(&body).unwrap(), kind).unwrap(),
            anchor: t("2026-01-01T00:00:00Z"),
            cursor: Some(t("2026-01-01T01:00:00Z")),
            stats: JobStats {
                success_count: 3,
                error_count: 1,
                last_success: Some(t("2026-01-01T00:30:00Z")),
                last_error: None,
                errors_since_last_success: 0,
            },
            last_dependency_run: None,
            next_seq: 2,
        }
    }

    fn run(job: &str, seq: u64) -> Run {
        Run {
            seq,
            record: RunRecord {
                job: JobName::new(job).unwrap(),
                run_id: format!("{job}.1.{seq}"),
                trigger: Trigger::Schedule,
                scheduled_at: Some(t("2026-01-01T00:00:00Z")),
                attempt: 0,
                task_id: Some(agora_proto::TaskId::new_unchecked(format!("{job}.1.{seq}.0"))),
                started_at: Some(t("2026-01-01T00:00:00.010Z")),
                finished_at: None,
                state: RunState::Running,
                exit_code: None,
                message: None,
            },
            due_at: t("2026-01-01T00:00:00Z"),
            agent_id: None,
            kill: None,
            relaunches: 0,
            armed: false,
            unconfirmed: false,
        }
    }

    /// The behaviour every backend must show.
    async fn contract(state: &KvStateStore) {
        assert_eq!(state.load().await.unwrap(), Recovered::default());
        let scheduled = job(
            "extract",
            serde_json::json!({"command": "echo hi", "schedule": "R/2026-01-01T00:00:00Z/PT1H",
                "scheduleTimeZone": "Europe/Berlin", "retries": 4, "concurrencyPolicy": "REPLACE",
                "startingDeadlineSeconds": 30}),
            JobKind::Scheduled,
        );
        let child = job(
            "load",
            serde_json::json!({"command": "echo load", "parents": ["extract"]}),
            JobKind::Dependent,
        );
        state
            .apply(vec![
                Change::PutJob(Box::new(scheduled.clone())),
                Change::PutJob(Box::new(child.clone())),
                Change::PutRun(scheduled.job.name.clone(), Box::new(run("extract", 0))),
                Change::PutRun(scheduled.job.name.clone(), Box::new(run("extract", 1))),
            ])
            .await
            .unwrap();
        let loaded = state.load().await.unwrap();
        assert_eq!(loaded.jobs.len(), 2);
        let (j, runs) = loaded
            .jobs
            .iter()
            .find(|(j, _)| j.job.name.as_str() == "extract")
            .unwrap();
        assert_eq!(j, &scheduled);
        assert_eq!(runs, &vec![run("extract", 0), run("extract", 1)]);
        let (c, _) = loaded
            .jobs
            .iter()
            .find(|(j, _)| j.job.name.as_str() == "load")
            .unwrap();
        assert_eq!(c, &child);

        state
            .apply(vec![Change::DeleteRun(scheduled.job.name.clone(), 0)])
            .await
            .unwrap();
        let loaded = state.load().await.unwrap();
        let (_, runs) = loaded
            .jobs
            .iter()
            .find(|(j, _)| j.job.name.as_str() == "extract")
            .unwrap();
        assert_eq!(runs, &vec![run("extract", 1)]);

        state
            .apply(vec![Change::DeleteJob {
                name: scheduled.job.name.clone(),
                runs: vec![1],
            }])
            .await
            .unwrap();
        let loaded = state.load().await.unwrap();
        assert_eq!(loaded.jobs.len(), 1);
        assert!(loaded.jobs[0].1.is_empty());

        let ids = state.framework_id_store();
        assert_eq!(ids.load().await.unwrap(), None);
        ids.save(&FrameworkId::new_unchecked("fw-1")).await.unwrap();
        assert_eq!(
            state.framework_id_store().load().await.unwrap(),
            Some(FrameworkId::new_unchecked("fw-1"))
        );
    }

    #[tokio::test]
    async fn the_memory_backend_meets_the_state_contract() {
        contract(&KvStateStore::new(Arc::new(MemoryStore::new()))).await;
    }

    #[tokio::test]
    async fn the_embedded_backend_meets_the_state_contract() {
        let dir = tempfile::tempdir().unwrap();
        contract(&KvStateStore::open_embedded(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn the_embedded_backend_keeps_the_state_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let stored = job(
            "a",
            serde_json::json!({"command": "true", "schedule": "R/2026-01-01T00:00:00Z/PT1M"}),
            JobKind::Scheduled,
        );
        {
            let state = KvStateStore::new(Arc::new(EmbeddedStore::open(dir.path()).unwrap()));
            state
                .apply(vec![Change::PutJob(Box::new(stored.clone()))])
                .await
                .unwrap();
        }
        let state = KvStateStore::open_embedded(dir.path()).unwrap();
        assert_eq!(state.load().await.unwrap().jobs, vec![(stored, Vec::new())]);
    }

    #[tokio::test]
    async fn the_zookeeper_backend_meets_the_state_contract() {
        let server = agora_store::zk_server::ZkServer::launch().await.unwrap();
        let url = agora_store::ZkUrl::parse(&server.url("/agora-cron/state")).unwrap();
        let store = agora_store::ZkStore::connect(&url, agora_store::ZkOptions::default())
            .await
            .unwrap();
        contract(&KvStateStore::new(Arc::new(store))).await;
    }

    #[tokio::test]
    async fn a_deposed_leaders_writes_are_fenced_and_the_new_leaders_land() {
        use agora_store::{Election, StoreError, ZkElection, ZkOptions, ZkStore, ZkUrl};
        let server = agora_store::zk_server::ZkServer::launch().await.unwrap();
        let root = ZkUrl::parse(&server.url("/agora-cron")).unwrap();
        let leader_url = root.child("leader").unwrap();
        let (a, b) = (
            ZkElection::new(&leader_url, ZkOptions::default()),
            ZkElection::new(&leader_url, ZkOptions::default()),
        );
        let state_store = ZkStore::connect(&root.child("state").unwrap(), ZkOptions::default())
            .await
            .unwrap();
        let a_term = a.campaign(b"a".to_vec()).await.unwrap();
        let a_state = KvStateStore::new(Arc::new(state_store.for_term(&a_term)));
        let first = job(
            "first",
            serde_json::json!({"command": "true", "schedule": "R/2026-01-01T00:00:00Z/PT1M"}),
            JobKind::Scheduled,
        );
        a_state
            .apply(vec![Change::PutJob(Box::new(first.clone()))])
            .await
            .unwrap();
        let b_campaign = tokio::spawn(async move {
            let term = b.campaign(b"b".to_vec()).await;
            (b, term)
        });

        a_term.resign().await;
        let (_b, b_term) = b_campaign.await.unwrap();
        let b_term = b_term.unwrap();
        let late = job(
            "late",
            serde_json::json!({"command": "true", "schedule": "R/2026-01-01T00:00:00Z/PT1M"}),
            JobKind::Scheduled,
        );
        let fenced = a_state.apply(vec![Change::PutJob(Box::new(late))]).await;

        assert!(
            matches!(fenced, Err(StateError::Store(StoreError::Fenced(_)))),
            "{fenced:?}"
        );
        let b_state = KvStateStore::new(Arc::new(state_store.for_term(&b_term)));
        assert_eq!(b_state.load().await.unwrap().jobs, vec![(first, Vec::new())]);
        b_state
            .apply(vec![Change::DeleteJob {
                name: JobName::new("first").unwrap(),
                runs: Vec::new(),
            }])
            .await
            .unwrap();
        assert!(b_state.load().await.unwrap().jobs.is_empty());
    }

    #[tokio::test]
    async fn a_corrupt_value_is_an_error_naming_its_key() {
        let store = Arc::new(MemoryStore::new());
        store
            .write(vec![Write::put("/cron/jobs/x", b"{not json".to_vec())])
            .await
            .unwrap();
        let err = KvStateStore::new(store).load().await.unwrap_err();
        assert!(err.to_string().contains("/cron/jobs/x"), "{err}");
    }
}

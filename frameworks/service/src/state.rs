//! What the service framework keeps across restarts: apps, their versions,
//! deployments, the tasks it launched, and its framework id.
//!
//! [`StateStore`] is deliberately narrow: load everything once at start,
//! then apply the engine's [`StateChange`] batches atomically. The one
//! backend, [`KvStateStore`], lays the state out on any `agora_store::Store`
//! (the embedded redb file here; ZooKeeper once the HA issue lands), as JSON
//! values under `/service/…` keys.
//!
//! Architecture invariant: a batch lands whole or not at all, and the
//! runtime awaits it before acting on what it records (write-ahead).

use std::collections::BTreeMap;
use std::sync::Arc;

use agora_sdk::{FrameworkIdStore, StoreIdStore};
use agora_store::{SharedStore, StoreError, Write};
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::app::{AppDefinition, AppId};
use crate::engine::{Recovered, StateChange};

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The underlying store failed; a write batch did not happen.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored value cannot be decoded.
    #[error("stored value under {key} is unreadable: {reason}")]
    Corrupt {
        /// Where.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value cannot be encoded (a bug).
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being written.
        what: String,
        /// Why it failed.
        reason: String,
    },
}

/// The framework's durable state.
pub trait StateStore: Send + Sync + 'static {
    /// Everything stored, for the engine to start from.
    fn load(&self) -> BoxFuture<'_, Result<Recovered, StateError>>;

    /// Applies `changes` atomically and durably, in order: when this returns
    /// `Ok`, all of them survive a crash; on `Err`, none happened.
    fn apply(&self, changes: Vec<StateChange>) -> BoxFuture<'_, Result<(), StateError>>;

    /// Where the SDK driver keeps the framework id.
    fn framework_ids(&self) -> Arc<dyn FrameworkIdStore>;
}

/// Key prefix of everything the service framework stores.
pub const ROOT: &str = "/service";
const APPS: &str = "/service/apps/";
const VERSIONS: &str = "/service/versions/";
const DEPLOYMENTS: &str = "/service/deployments/";
const TASKS: &str = "/service/tasks/";
const DELAYS: &str = "/service/delays/";
const FRAMEWORK_ID: &str = "/service/framework-id";

/// The state laid out on a key-value [`agora_store::Store`]:
///
/// - `/service/apps/<app>`: the current definition of each app (JSON);
/// - `/service/versions/<app>/<version>`: every stored version;
/// - `/service/deployments/<id>`, `/service/tasks/<task id>`: JSON records;
/// - `/service/delays/<app>`: an app's launch backoff (JSON);
/// - `/service/framework-id`: the framework id as text.
///
/// `<app>` is the app id without its leading `/`, with `/` written `%2F`
/// (and `%` as `%25`); `<version>` is nanoseconds since the epoch, zero
/// padded, so keys sort by time.
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
    /// The state in `store`.
    pub fn new(store: SharedStore) -> Self {
        Self { store }
    }
}

fn app_key_part(id: &AppId) -> String {
    id.as_str()
        .trim_start_matches('/')
        .replace('%', "%25")
        .replace('/', "%2F")
}

fn app_key(id: &AppId) -> String {
    format!("{APPS}{}", app_key_part(id))
}

fn delay_key(id: &AppId) -> String {
    format!("{DELAYS}{}", app_key_part(id))
}

fn versions_prefix(id: &AppId) -> String {
    format!("{VERSIONS}{}/", app_key_part(id))
}

fn version_key(app: &AppDefinition) -> Result<String, StateError> {
    let version = app.version.ok_or_else(|| StateError::Encode {
        what: format!("a version of {}", app.id),
        reason: "it has no version timestamp".to_owned(),
    })?;
    Ok(format!(
        "{}{:025}",
        versions_prefix(&app.id),
        version.as_nanosecond()
    ))
}

fn encode(what: impl std::fmt::Display, value: &impl Serialize) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(value).map_err(|e| StateError::Encode {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

impl KvStateStore {
    async fn load_all(&self) -> Result<Recovered, StateError> {
        let mut apps = Vec::new();
        for (key, value) in self.store.list(APPS).await? {
            apps.push(decode::<AppDefinition>(&key, &value)?);
        }
        let mut versions: BTreeMap<AppId, Vec<AppDefinition>> = BTreeMap::new();
        for (key, value) in self.store.list(VERSIONS).await? {
            let app: AppDefinition = decode(&key, &value)?;
            versions.entry(app.id.clone()).or_default().push(app);
        }
        let mut deployments = Vec::new();
        for (key, value) in self.store.list(DEPLOYMENTS).await? {
            deployments.push(decode(&key, &value)?);
        }
        let mut tasks = Vec::new();
        for (key, value) in self.store.list(TASKS).await? {
            tasks.push(decode(&key, &value)?);
        }
        let mut delays = Vec::new();
        for (key, value) in self.store.list(DELAYS).await? {
            delays.push(decode(&key, &value)?);
        }
        Ok(Recovered {
            apps,
            versions,
            deployments,
            tasks,
            delays,
        })
    }

    async fn writes(&self, changes: Vec<StateChange>) -> Result<Vec<Write>, StateError> {
        let mut batch = Vec::with_capacity(changes.len());
        // Versions written earlier in this batch, which a DeleteApp must remove too.
        let mut new_versions: BTreeMap<AppId, Vec<String>> = BTreeMap::new();
        for change in changes {
            match change {
                StateChange::PutApp(app) => {
                    batch.push(Write::put(app_key(&app.id), encode(&app.id, &app)?));
                }
                StateChange::DeleteApp(id) => {
                    batch.push(Write::delete(app_key(&id)));
                    batch.push(Write::delete(delay_key(&id)));
                    for (key, _) in self.store.list(&versions_prefix(&id)).await? {
                        batch.push(Write::delete(key));
                    }
                    for key in new_versions.remove(&id).unwrap_or_default() {
                        batch.push(Write::delete(key));
                    }
                }
                StateChange::PutVersion(app) => {
                    let key = version_key(&app)?;
                    new_versions.entry(app.id.clone()).or_default().push(key.clone());
                    batch.push(Write::put(key, encode(&app.id, &app)?));
                }
                StateChange::PutDeployment(deployment) => {
                    let key = format!("{DEPLOYMENTS}{}", deployment.id);
                    batch.push(Write::put(key, encode(&deployment.id, &deployment)?));
                }
                StateChange::DeleteDeployment(id) => batch.push(Write::delete(format!("{DEPLOYMENTS}{id}"))),
                StateChange::PutTask(task) => {
                    let key = format!("{TASKS}{}", task.task_id);
                    batch.push(Write::put(key, encode(&task.task_id, &task)?));
                }
                StateChange::DeleteTask(id) => batch.push(Write::delete(format!("{TASKS}{id}"))),
                StateChange::PutDelay(delay) => {
                    batch.push(Write::put(
                        delay_key(&delay.app_id),
                        encode(&delay.app_id, &delay)?,
                    ));
                }
                StateChange::DeleteDelay(id) => batch.push(Write::delete(delay_key(&id))),
            }
        }
        Ok(batch)
    }
}

impl StateStore for KvStateStore {
    fn load(&self) -> BoxFuture<'_, Result<Recovered, StateError>> {
        Box::pin(self.load_all())
    }

    fn apply(&self, changes: Vec<StateChange>) -> BoxFuture<'_, Result<(), StateError>> {
        Box::pin(async move {
            if changes.is_empty() {
                return Ok(());
            }
            let batch = self.writes(changes).await?;
            self.store.write(batch).await?;
            Ok(())
        })
    }

    fn framework_ids(&self) -> Arc<dyn FrameworkIdStore> {
        Arc::new(StoreIdStore::new(self.store.clone(), FRAMEWORK_ID))
    }
}

#[cfg(test)]
mod tests {
    use agora_proto::{FrameworkId, TaskId};
    use agora_store::{EmbeddedStore, MemoryStore};

    use super::*;
    use crate::engine::{Deployment, StoredDelay, TaskRecord, TaskState};
    use crate::handle::DeploymentId;

    fn id(s: &str) -> AppId {
        AppId::parse(s).expect("valid app id")
    }

    fn ts(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + seconds).expect("valid time")
    }

    fn app(app_id: &str, version: i64) -> AppDefinition {
        let mut app = AppDefinition::new(id(app_id), "sleep 1000");
        app.version = Some(ts(version));
        app
    }

    fn task(task_id: &str, app_id: &str) -> TaskRecord {
        TaskRecord {
            task_id: TaskId::new_unchecked(task_id),
            app_id: id(app_id),
            version: ts(0),
            agent_id: None,
            host: "host-1".to_owned(),
            attributes: vec![("rack".to_owned(), "a".to_owned())],
            ports: vec![31000],
            env: Vec::new(),
            state: TaskState::Running,
            staged_at: ts(1),
            started_at: Some(ts(2)),
            kill_requested: false,
            unreachable_since: None,
            inactive: false,
            healthy: None,
            ready_since: None,
            unreachable_at: None,
        }
    }

    fn deployment(app_id: &str) -> Deployment {
        Deployment {
            id: DeploymentId::generate(),
            version: ts(5),
            affected_apps: vec![id(app_id)],
            original: Vec::new(),
            target: vec![app(app_id, 5)],
            steps: Vec::new(),
            current_step: 0,
        }
    }

    fn delay(app_id: &str) -> StoredDelay {
        StoredDelay {
            app_id: id(app_id),
            version: Some(ts(1)),
            current_seconds: 1.15,
            until: ts(100),
            failures: 2,
        }
    }

    fn kv(store: impl agora_store::Store) -> KvStateStore {
        KvStateStore::new(Arc::new(store))
    }

    /// The behaviour every backend must show.
    async fn contract(state: &dyn StateStore) {
        let empty = state.load().await.expect("load");
        assert!(empty.apps.is_empty() && empty.versions.is_empty());
        assert!(empty.deployments.is_empty() && empty.tasks.is_empty());

        let web = app("/shop/web", 2);
        let running = deployment("/shop/web");
        state
            .apply(vec![
                StateChange::PutVersion(app("/shop/web", 1)),
                StateChange::PutVersion(web.clone()),
                StateChange::PutApp(web.clone()),
                StateChange::PutApp(app("/shop", 1)),
                StateChange::PutVersion(app("/shop", 1)),
                StateChange::PutDeployment(running.clone()),
                StateChange::PutTask(task("web.1", "/shop/web")),
                StateChange::PutTask(task("web.2", "/shop/web")),
                StateChange::PutDelay(delay("/shop")),
                StateChange::PutDelay(delay("/shop/web")),
            ])
            .await
            .expect("apply");
        let loaded = state.load().await.expect("load");
        assert_eq!(loaded.delays, vec![delay("/shop"), delay("/shop/web")]);
        assert_eq!(loaded.apps.len(), 2);
        assert!(loaded.apps.contains(&web));
        let mut versions: Vec<_> = loaded.versions[&id("/shop/web")]
            .iter()
            .map(|a| a.version)
            .collect();
        versions.sort();
        assert_eq!(versions, vec![Some(ts(1)), Some(ts(2))]);
        assert_eq!(loaded.versions[&id("/shop")].len(), 1);
        assert_eq!(loaded.deployments, vec![running.clone()]);
        assert_eq!(
            loaded.tasks,
            vec![task("web.1", "/shop/web"), task("web.2", "/shop/web")]
        );

        // Removing /shop leaves /shop/web and its versions alone.
        state
            .apply(vec![
                StateChange::DeleteApp(id("/shop")),
                StateChange::DeleteTask(TaskId::new_unchecked("web.1")),
                StateChange::DeleteDeployment(running.id.clone()),
            ])
            .await
            .expect("apply");
        let loaded = state.load().await.expect("load");
        assert_eq!(loaded.apps, vec![web.clone()]);
        assert!(!loaded.versions.contains_key(&id("/shop")));
        assert_eq!(loaded.versions[&id("/shop/web")].len(), 2);
        assert!(loaded.deployments.is_empty());
        assert_eq!(loaded.tasks, vec![task("web.2", "/shop/web")]);
        assert_eq!(
            loaded.delays,
            vec![delay("/shop/web")],
            "an app's delay goes with it"
        );

        state
            .apply(vec![StateChange::DeleteDelay(id("/shop/web"))])
            .await
            .expect("apply");
        assert!(state.load().await.expect("load").delays.is_empty());

        // A version written and the app removed in one batch leaves nothing.
        state
            .apply(vec![
                StateChange::PutVersion(app("/shop/web", 3)),
                StateChange::DeleteApp(id("/shop/web")),
            ])
            .await
            .expect("apply");
        let loaded = state.load().await.expect("load");
        assert!(loaded.apps.is_empty());
        assert!(loaded.versions.is_empty());

        let ids = state.framework_ids();
        assert_eq!(ids.load().await.expect("load id"), None);
        ids.save(&FrameworkId::new_unchecked("fw-7"))
            .await
            .expect("save id");
        assert_eq!(
            state.framework_ids().load().await.expect("load id"),
            Some(FrameworkId::new_unchecked("fw-7"))
        );
    }

    #[tokio::test]
    async fn the_memory_backend_keeps_the_contract() {
        contract(&kv(MemoryStore::default())).await;
    }

    #[tokio::test]
    async fn the_embedded_backend_keeps_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        contract(&kv(EmbeddedStore::open(dir.path()).expect("open"))).await;
    }

    #[tokio::test]
    async fn the_zookeeper_backend_keeps_the_contract() {
        let server = agora_store::zk_server::ZkServer::launch()
            .await
            .expect("start ZooKeeper");
        let url = agora_store::ZkUrl::parse(&server.url("/agora-service/state")).expect("url");
        let store = agora_store::ZkStore::connect(&url, agora_store::ZkOptions::default())
            .await
            .expect("connect");
        contract(&kv(store)).await;
    }

    #[tokio::test]
    async fn a_deposed_leaders_writes_are_fenced_and_the_new_leaders_land() {
        use agora_store::{Election, ZkElection, ZkOptions, ZkStore, ZkUrl};
        let server = agora_store::zk_server::ZkServer::launch()
            .await
            .expect("start ZooKeeper");
        let root = ZkUrl::parse(&server.url("/agora-service")).expect("url");
        let leader_url = root.child("leader").expect("url");
        let (a, b) = (
            ZkElection::new(&leader_url, ZkOptions::default()),
            ZkElection::new(&leader_url, ZkOptions::default()),
        );
        let state_store = ZkStore::connect(&root.child("state").expect("url"), ZkOptions::default())
            .await
            .expect("connect");
        let a_term = a.campaign(b"a".to_vec()).await.expect("a elected");
        let a_state = kv(state_store.for_term(&a_term));
        a_state
            .apply(vec![StateChange::PutApp(app("/web", 1))])
            .await
            .expect("a leads");
        let b_campaign = tokio::spawn(async move {
            let term = b.campaign(b"b".to_vec()).await;
            (b, term)
        });

        a_term.resign().await;
        let (_b, b_term) = b_campaign.await.expect("join");
        let b_term = b_term.expect("b elected");
        let fenced = a_state.apply(vec![StateChange::PutApp(app("/late", 1))]).await;

        assert!(
            matches!(fenced, Err(StateError::Store(StoreError::Fenced(_)))),
            "{fenced:?}"
        );
        let b_state = kv(state_store.for_term(&b_term));
        assert_eq!(b_state.load().await.expect("load").apps, vec![app("/web", 1)]);
        b_state
            .apply(vec![StateChange::DeleteApp(id("/web"))])
            .await
            .expect("b leads");
        assert!(b_state.load().await.expect("load").apps.is_empty());
    }

    #[tokio::test]
    async fn a_batch_with_an_unstorable_change_stores_nothing() {
        let state = kv(MemoryStore::default());
        let mut unversioned = app("/web", 1);
        unversioned.version = None;
        let result = state
            .apply(vec![
                StateChange::PutApp(app("/web", 1)),
                StateChange::PutVersion(unversioned),
            ])
            .await;
        assert!(matches!(result, Err(StateError::Encode { .. })), "{result:?}");
        assert!(state.load().await.expect("load").apps.is_empty());
    }

    #[tokio::test]
    async fn embedded_state_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let state = kv(EmbeddedStore::open(dir.path()).expect("open"));
            state
                .apply(vec![
                    StateChange::PutApp(app("/web", 1)),
                    StateChange::PutTask(task("web.1", "/web")),
                ])
                .await
                .expect("apply");
        }
        let reopened = kv(EmbeddedStore::open(dir.path()).expect("reopen"));
        let loaded = reopened.load().await.expect("load");
        assert_eq!(loaded.apps, vec![app("/web", 1)]);
        assert_eq!(loaded.tasks, vec![task("web.1", "/web")]);
    }

    #[tokio::test]
    async fn an_unreadable_value_is_reported_with_its_key() {
        let store: SharedStore = Arc::new(MemoryStore::default());
        store
            .write(vec![Write::put("/service/apps/web", b"{not json".to_vec())])
            .await
            .expect("write");
        match KvStateStore::new(store).load().await {
            Err(StateError::Corrupt { key, .. }) => assert_eq!(key, "/service/apps/web"),
            other => panic!("expected a corrupt-value error, got {other:?}"),
        }
    }
}

//! [`Store`] on ZooKeeper: each key is a znode under a base path.
//!
//! Layout: key `/a/b` is znode `{base}/a/b`. A znode that holds a value has
//! data `0x01` followed by the value; a znode that only exists as the parent
//! of deeper keys has empty data. So `/a` and `/a/b` can both be keys, and an
//! empty value is still a value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, join_all};
use tokio::sync::OnceCell;
use zookeeper_client as zk;

use super::url::validate_znode_path;
use super::{ZkConnection, ZkOptions, ZkUrl, is_transient};
use crate::election::{Fence, Leadership};
use crate::{Entries, Store, StoreError, Write};

/// First byte of the data of a znode that holds a value.
const VALUE_MARKER: u8 = 1;
/// ZooKeeper refuses requests above jute.maxbuffer (1 MiB); stay below it.
const MAX_BATCH_BYTES: usize = 1_000_000;
/// Attempts of one write when a concurrent change or a lost connection
/// makes the transaction fail.
const WRITE_ATTEMPTS: usize = 5;
/// Attempts of one read across session losses.
const READ_ATTEMPTS: usize = 3;
/// Nodes read at once while walking a subtree.
const WALK_CHUNK: usize = 256;

/// The [`Store`] trait on ZooKeeper under a base znode.
///
/// Every write batch is ONE ZooKeeper multi transaction (missing parents
/// created, values set or created, keys deleted and emptied parents pruned):
/// all of it lands or none of it does. Bound to a leadership term with
/// [`ZkStore::with_fence`], the transaction also checks the term's election
/// node, so once the term is over every write fails with
/// [`StoreError::Fenced`] and nothing lands.
///
/// Reads go to the server this client is connected to; a fenced store syncs
/// that server with the leader once before its first read, so a new leader
/// sees every write of earlier terms. `list` walks the subtree and is not one
/// snapshot. Znodes under the base that a `ZkStore` did not write (an
/// election, say) are skipped by `list`.
#[derive(Clone)]
pub struct ZkStore {
    conn: Arc<ZkConnection>,
    /// Absolute znode path, never `/`, without a trailing slash.
    base: String,
    fence: Option<Fence>,
    synced: Arc<OnceCell<()>>,
}

impl std::fmt::Debug for ZkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkStore")
            .field("hosts", &self.conn.hosts)
            .field("base", &self.base)
            .field("fence", &self.fence)
            .finish()
    }
}

fn io(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("ZooKeeper {context}: {e}"))
}

impl ZkStore {
    /// Connects to the ensemble in `url` and makes sure its path exists; the
    /// store's keys live under that path.
    pub async fn connect(url: &ZkUrl, options: ZkOptions) -> Result<ZkStore, StoreError> {
        validate_znode_path(&url.path)
            .map_err(|reason| StoreError::Io(format!("ZooKeeper base path {:?}: {reason}", url.path)))?;
        if url.path == "/" {
            return Err(StoreError::Io("ZooKeeper base path must not be /".into()));
        }
        let store = ZkStore {
            conn: Arc::new(ZkConnection::new(url.connect_string(), options)),
            base: url.path.clone(),
            fence: None,
            synced: Arc::new(OnceCell::new()),
        };
        let client = store.conn.client().await.map_err(|e| io("connect", e))?;
        client
            .mkdir(
                &store.base,
                &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()),
            )
            .await
            .map_err(|e| io(&format!("create {}", store.base), e))?;
        Ok(store)
    }

    /// The same store (same session) whose writes succeed only while the
    /// term behind `fence` lasts.
    pub fn with_fence(&self, fence: &Fence) -> ZkStore {
        ZkStore {
            conn: self.conn.clone(),
            base: self.base.clone(),
            fence: Some(fence.clone()),
            synced: Arc::new(OnceCell::new()),
        }
    }

    /// [`ZkStore::with_fence`] with the leadership's fence (the store as is
    /// if the election has no fences).
    pub fn for_term(&self, leadership: &Leadership) -> ZkStore {
        match leadership.fence() {
            Some(fence) => self.with_fence(fence),
            None => self.clone(),
        }
    }

    /// The base znode path.
    pub fn base_path(&self) -> &str {
        &self.base
    }

    /// The fence this store's writes check, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// Makes the connected server catch up with the leader of the ensemble,
    /// so that following reads see every write that completed before.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let client = self.conn.client().await.map_err(|e| io("connect", e))?;
        client.sync(&self.base).await.map_err(|e| io("sync", e))
    }

    async fn before_read(&self) -> Result<(), StoreError> {
        if self.fence.is_some() {
            self.synced.get_or_try_init(|| self.sync()).await?;
        }
        Ok(())
    }

    /// The znode of `key`, or why `key` is not one.
    fn znode(&self, key: &str) -> Result<String, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidKey {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if key == "/" {
            return Err(invalid("names the store's root, not a key under it"));
        }
        validate_znode_path(key).map_err(invalid)?;
        Ok(format!("{}{}", self.base, key))
    }

    fn key_of<'p>(&self, znode: &'p str) -> &'p str {
        &znode[self.base.len()..]
    }

    async fn get_once(&self, path: &str) -> Result<Option<Vec<u8>>, zk::Error> {
        let client = self.conn.client().await?;
        match client.get_data(path).await {
            Ok((data, _)) => Ok(Some(data)),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list_once(&self, dir: &str, partial: &str) -> Result<Entries, zk::Error> {
        let client = self.conn.client().await?;
        let children = match client.list_children(dir).await {
            Ok(children) => children,
            Err(zk::Error::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut level: Vec<String> = children
            .into_iter()
            .filter(|c| c.starts_with(partial))
            .map(|c| format!("{dir}/{c}"))
            .collect();
        let mut found = BTreeMap::new();
        while !level.is_empty() {
            let mut next = Vec::new();
            for chunk in level.chunks(WALK_CHUNK) {
                let reads = chunk.iter().map(|path| {
                    let data = client.get_data(path);
                    let children = client.list_children(path);
                    async move { (path, data.await, children.await) }
                });
                for (path, data, children) in join_all(reads).await {
                    match data {
                        Ok((data, _)) => {
                            if let Some(value) = decode(&data) {
                                found.insert(self.key_of(path).to_owned(), value.to_vec());
                            }
                        }
                        Err(zk::Error::NoNode) => continue,
                        Err(e) => return Err(e),
                    }
                    match children {
                        Ok(children) => next.extend(children.into_iter().map(|c| format!("{path}/{c}"))),
                        Err(zk::Error::NoNode) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            level = next;
        }
        Ok(found.into_iter().collect())
    }

    /// Reads what `plan` needs, plans, commits: one attempt.
    async fn write_once(&self, intents: &BTreeMap<String, Option<Vec<u8>>>) -> Result<(), Attempt> {
        let client = self.conn.client().await.map_err(Attempt::classify)?;
        let paths = relevant_paths(&self.base, intents.keys());
        let stats = join_all(paths.iter().map(|p| client.check_stat(p))).await;
        let mut nodes = BTreeMap::new();
        for (path, stat) in paths.into_iter().zip(stats) {
            let node = match stat.map_err(Attempt::classify)? {
                Some(stat) => NodeState::existing(&stat),
                None => NodeState::default(),
            };
            nodes.insert(path, node);
        }
        let ops = plan(&self.base, intents, nodes);
        if ops.is_empty() && self.fence.is_none() {
            return Ok(());
        }
        let mut multi = client.new_multi_writer();
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        let build = |multi: &mut zk::MultiWriter<'_>| -> Result<(), zk::Error> {
            if let Some(fence) = &self.fence {
                multi.add_check_version(&fence.path, fence.version.unwrap_or(-1))?;
            }
            for op in &ops {
                match op {
                    Op::Create { path, data } => multi.add_create(path, data, &persistent)?,
                    Op::Set { path, data, version } => multi.add_set_data(path, data, *version)?,
                    Op::Delete { path, version } => multi.add_delete(path, Some(*version))?,
                }
            }
            Ok(())
        };
        build(&mut multi).map_err(|e| Attempt::Fatal(io("write", e)))?;
        match multi.commit().await {
            Ok(_) => Ok(()),
            Err(zk::MultiWriteError::OperationFailed { index: 0, source }) if self.fence.is_some() => {
                match source {
                    zk::Error::NoNode | zk::Error::BadVersion => {
                        Err(Attempt::Fatal(StoreError::Fenced(format!(
                            "the leadership term behind {} has ended",
                            self.fence.as_ref().map_or("", |f| f.path.as_str())
                        ))))
                    }
                    other => Err(Attempt::classify(other)),
                }
            }
            Err(zk::MultiWriteError::OperationFailed { index, source }) => {
                let at = index - usize::from(self.fence.is_some());
                match source {
                    // Someone changed the tree since we read it: plan again.
                    zk::Error::NodeExists
                    | zk::Error::NoNode
                    | zk::Error::NotEmpty
                    | zk::Error::BadVersion => Err(Attempt::Retry(io("write conflict", source))),
                    other => Err(Attempt::Fatal(io(
                        &format!("write of {}", ops.get(at).map_or("?", Op::path)),
                        other,
                    ))),
                }
            }
            Err(zk::MultiWriteError::RequestFailed { source }) => Err(Attempt::classify(source)),
        }
    }
}

/// The outcome of a failed write attempt.
enum Attempt {
    Retry(StoreError),
    Fatal(StoreError),
}

impl Attempt {
    fn classify(e: zk::Error) -> Attempt {
        if is_transient(&e) {
            Attempt::Retry(io("write", e))
        } else {
            Attempt::Fatal(io("write", e))
        }
    }
}

/// A pause before read attempt `attempt + 1`.
async fn read_backoff(attempt: usize) {
    tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
}

/// The value stored in a znode's data, if it holds one.
fn decode(data: &[u8]) -> Option<&[u8]> {
    match data.split_first() {
        Some((&VALUE_MARKER, value)) => Some(value),
        _ => None,
    }
}

fn encode(value: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(value.len() + 1);
    data.push(VALUE_MARKER);
    data.extend_from_slice(value);
    data
}

/// What a write needs to know of one znode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NodeState {
    exists: bool,
    has_value: bool,
    version: i32,
    children: i32,
    /// Planned: its value is removed in this batch.
    cleared: bool,
}

impl NodeState {
    fn existing(stat: &zk::Stat) -> Self {
        NodeState {
            exists: true,
            has_value: stat.data_length > 0,
            version: stat.version,
            children: stat.num_children,
            cleared: false,
        }
    }
}

/// One operation of the multi transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Create {
        path: String,
        data: Vec<u8>,
    },
    Set {
        path: String,
        data: Vec<u8>,
        version: Option<i32>,
    },
    Delete {
        path: String,
        version: i32,
    },
}

impl Op {
    fn path(&self) -> &str {
        match self {
            Op::Create { path, .. } | Op::Set { path, .. } | Op::Delete { path, .. } => path,
        }
    }
}

/// Every key's znode and its ancestors strictly below `base`, sorted.
fn relevant_paths<'a>(base: &str, keys: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut paths = std::collections::BTreeSet::new();
    for path in keys {
        let key = &path[base.len()..];
        for (i, c) in key.char_indices().skip(1) {
            if c == '/' {
                paths.insert(format!("{base}{}", &key[..i]));
            }
        }
        paths.insert(path.clone());
    }
    paths.into_iter().collect()
}

fn parent_of(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

/// The operations that turn `nodes` (every path of [`relevant_paths`], as
/// read) into the state `intents` asks for (znode path → value, or `None` to
/// delete), creating missing parents and pruning parents left with neither a
/// value nor children. Creates come parents first, deletes children first.
fn plan(
    base: &str,
    intents: &BTreeMap<String, Option<Vec<u8>>>,
    mut nodes: BTreeMap<String, NodeState>,
) -> Vec<Op> {
    fn adopt(nodes: &mut BTreeMap<String, NodeState>, path: &str, delta: i32) {
        if let Some(parent) = nodes.get_mut(parent_of(path)) {
            parent.children += delta;
        }
    }
    let mut ops = Vec::new();
    for (path, intent) in intents {
        match intent {
            Some(value) => {
                let key = &path[base.len()..];
                let ancestors: Vec<String> = key
                    .char_indices()
                    .skip(1)
                    .filter(|&(_, c)| c == '/')
                    .map(|(i, _)| format!("{base}{}", &key[..i]))
                    .collect();
                for ancestor in ancestors {
                    let node = nodes.entry(ancestor.clone()).or_default();
                    if !node.exists {
                        node.exists = true;
                        ops.push(Op::Create {
                            path: ancestor.clone(),
                            data: Vec::new(),
                        });
                        adopt(&mut nodes, &ancestor, 1);
                    }
                }
                let node = nodes.entry(path.clone()).or_default();
                let data = encode(value);
                if node.exists {
                    ops.push(Op::Set {
                        path: path.clone(),
                        data,
                        version: None,
                    });
                    node.has_value = true;
                } else {
                    node.exists = true;
                    node.has_value = true;
                    ops.push(Op::Create {
                        path: path.clone(),
                        data,
                    });
                    adopt(&mut nodes, path, 1);
                }
            }
            None => {
                if let Some(node) = nodes.get_mut(path)
                    && node.exists
                    && node.has_value
                {
                    node.has_value = false;
                    node.cleared = true;
                }
            }
        }
    }
    let paths: Vec<String> = nodes.keys().rev().cloned().collect();
    for path in paths {
        let Some(node) = nodes.get(&path) else { continue };
        if !node.exists || node.has_value {
            continue;
        }
        let (children, version, cleared) = (node.children, node.version, node.cleared);
        if children == 0 {
            ops.push(Op::Delete {
                path: path.clone(),
                version,
            });
            if let Some(node) = nodes.get_mut(&path) {
                node.exists = false;
            }
            adopt(&mut nodes, &path, -1);
        } else if cleared {
            ops.push(Op::Set {
                path,
                data: Vec::new(),
                version: Some(version),
            });
        }
    }
    ops
}

impl Store for ZkStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            let path = self.znode(key)?;
            self.before_read().await?;
            let mut attempt = 0;
            let data = loop {
                attempt += 1;
                match self.get_once(&path).await {
                    Ok(data) => break data,
                    Err(e) if is_transient(&e) && attempt < READ_ATTEMPTS => read_backoff(attempt).await,
                    Err(e) => return Err(io(&format!("read of {path}"), e)),
                }
            };
            match data {
                None => Ok(None),
                Some(data) if data.is_empty() => Ok(None),
                Some(data) => match decode(&data) {
                    Some(value) => Ok(Some(value.to_vec())),
                    None => Err(StoreError::Corrupt(format!(
                        "znode {path} holds data a ZkStore did not write"
                    ))),
                },
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Entries, StoreError>> {
        Box::pin(async move {
            let slash = match prefix.rfind('/') {
                Some(slash) if prefix.starts_with('/') => slash,
                _ => {
                    return Err(StoreError::InvalidKey {
                        key: prefix.to_owned(),
                        reason: "a prefix must start with /".into(),
                    });
                }
            };
            let (dir_key, partial) = (&prefix[..slash], &prefix[slash + 1..]);
            if !dir_key.is_empty() && validate_znode_path(dir_key).is_err() {
                // No key can lie under a malformed path.
                return Ok(Vec::new());
            }
            self.before_read().await?;
            let dir = format!("{}{dir_key}", self.base);
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.list_once(&dir, partial).await {
                    Ok(entries) => return Ok(entries),
                    Err(e) if is_transient(&e) && attempt < READ_ATTEMPTS => read_backoff(attempt).await,
                    Err(e) => return Err(io(&format!("list of {dir}"), e)),
                }
            }
        })
    }

    fn write(&self, batch: Vec<Write>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut intents = BTreeMap::new();
            let mut bytes = 0;
            for write in batch {
                match write {
                    Write::Put { key, value } => {
                        let path = self.znode(&key)?;
                        bytes += path.len() + value.len() + 32;
                        intents.insert(path, Some(value));
                    }
                    Write::Delete { key } => {
                        let path = self.znode(&key)?;
                        bytes += path.len() + 32;
                        intents.insert(path, None);
                    }
                }
            }
            if bytes > MAX_BATCH_BYTES {
                return Err(StoreError::Io(format!(
                    "ZooKeeper write: batch of about {bytes} bytes exceeds ZooKeeper's request limit \
                     ({MAX_BATCH_BYTES} bytes, jute.maxbuffer)"
                )));
            }
            if intents.is_empty() && self.fence.is_none() {
                return Ok(());
            }
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.write_once(&intents).await {
                    Ok(()) => return Ok(()),
                    Err(Attempt::Retry(e)) if attempt < WRITE_ATTEMPTS => {
                        tracing::debug!(attempt, error = %e, "ZooKeeper write failed; retrying");
                        tokio::time::sleep(Duration::from_millis(20 * attempt as u64)).await;
                    }
                    Err(Attempt::Retry(e) | Attempt::Fatal(e)) => return Err(e),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing(has_value: bool, children: i32) -> NodeState {
        NodeState {
            exists: true,
            has_value,
            version: 3,
            children,
            cleared: false,
        }
    }

    fn intents(items: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<Vec<u8>>> {
        items
            .iter()
            .map(|(k, v)| (format!("/base{k}"), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    fn nodes(items: &[(&str, NodeState)]) -> BTreeMap<String, NodeState> {
        items
            .iter()
            .map(|(k, n)| (format!("/base{k}"), n.clone()))
            .collect()
    }

    #[test]
    fn relevant_paths_are_the_keys_and_their_parents_below_the_base() {
        let keys = ["/base/a/b/c".to_owned(), "/base/x".to_owned()];
        assert_eq!(
            relevant_paths("/base", keys.iter()),
            vec!["/base/a", "/base/a/b", "/base/a/b/c", "/base/x"]
        );
    }

    #[test]
    fn a_put_creates_missing_parents_first() {
        let ops = plan(
            "/base",
            &intents(&[("/a/b", Some("v"))]),
            nodes(&[("/a", NodeState::default()), ("/a/b", NodeState::default())]),
        );
        assert_eq!(
            ops,
            vec![
                Op::Create {
                    path: "/base/a".into(),
                    data: vec![]
                },
                Op::Create {
                    path: "/base/a/b".into(),
                    data: b"\x01v".to_vec()
                },
            ]
        );
    }

    #[test]
    fn a_put_on_an_existing_key_sets_it() {
        let ops = plan(
            "/base",
            &intents(&[("/a", Some(""))]),
            nodes(&[("/a", existing(true, 0))]),
        );
        assert_eq!(
            ops,
            vec![Op::Set {
                path: "/base/a".into(),
                data: vec![1],
                version: None
            }]
        );
    }

    #[test]
    fn a_delete_prunes_parents_left_empty() {
        let ops = plan(
            "/base",
            &intents(&[("/a/b", None)]),
            nodes(&[("/a", existing(false, 1)), ("/a/b", existing(true, 0))]),
        );
        assert_eq!(
            ops,
            vec![
                Op::Delete {
                    path: "/base/a/b".into(),
                    version: 3
                },
                Op::Delete {
                    path: "/base/a".into(),
                    version: 3
                },
            ]
        );
    }

    #[test]
    fn a_delete_keeps_a_parent_with_a_value_or_other_children() {
        let ops = plan(
            "/base",
            &intents(&[("/a/b", None), ("/c/d", None)]),
            nodes(&[
                ("/a", existing(true, 1)),
                ("/a/b", existing(true, 0)),
                ("/c", existing(false, 2)),
                ("/c/d", existing(true, 0)),
            ]),
        );
        assert_eq!(
            ops,
            vec![
                Op::Delete {
                    path: "/base/c/d".into(),
                    version: 3
                },
                Op::Delete {
                    path: "/base/a/b".into(),
                    version: 3
                },
            ]
        );
    }

    #[test]
    fn deleting_a_key_with_children_only_empties_it() {
        let ops = plan(
            "/base",
            &intents(&[("/a", None)]),
            nodes(&[("/a", existing(true, 1))]),
        );
        assert_eq!(
            ops,
            vec![Op::Set {
                path: "/base/a".into(),
                data: vec![],
                version: Some(3)
            }]
        );
    }

    #[test]
    fn deleting_a_missing_key_plans_nothing() {
        let ops = plan(
            "/base",
            &intents(&[("/nope", None)]),
            nodes(&[("/nope", NodeState::default())]),
        );
        assert_eq!(ops, vec![]);
    }

    #[test]
    fn a_delete_and_a_put_under_one_parent_keep_the_parent() {
        let ops = plan(
            "/base",
            &intents(&[("/a/1", None), ("/a/2", Some("x"))]),
            nodes(&[
                ("/a", existing(false, 1)),
                ("/a/1", existing(true, 0)),
                ("/a/2", NodeState::default()),
            ]),
        );
        assert_eq!(
            ops,
            vec![
                Op::Create {
                    path: "/base/a/2".into(),
                    data: b"\x01x".to_vec()
                },
                Op::Delete {
                    path: "/base/a/1".into(),
                    version: 3
                },
            ]
        );
    }
}

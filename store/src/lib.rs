//! Where Agora keeps what must survive a restart: the master's registry of
//! agents and frameworks, and (later) the frameworks' own state.
//!
//! One small key-value trait, [`Store`], over interchangeable engines: the
//! embedded [`EmbeddedStore`] (a redb file under `--work-dir`) and, in the
//! high-availability issue, ZooKeeper. Keys are `/`-separated paths; values
//! are opaque bytes (callers choose their encoding). A [`Store::write`] batch
//! is atomic: all of it lands or none of it does.
//!
//! Architecture invariant: callers never learn which engine they talk to.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;

pub mod election;
mod embedded;
pub mod leader;
mod memory;
#[cfg(any(test, feature = "zk-server"))]
pub mod zk_server;
pub mod zookeeper;

pub use election::{
    Election, ElectionError, Fence, Leadership, MemoryElection, SharedElection, Term, TermEnd,
};
pub use embedded::EmbeddedStore;
pub use leader::{
    Endpoints, EndpointsError, LEADER_METADATA, LeaderFinder, LeaderInfo, LeaderInfoError, current_leader,
    follow, follow_election,
};
pub use memory::MemoryStore;
pub use zookeeper::{ZkElection, ZkOptions, ZkStore, ZkUrl, ZkUrlError};

/// A storage failure. Callers treat every variant as "the write did not
/// happen" (batches are atomic).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
    /// The key (or prefix) is not a valid `/`-separated path.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    /// The store is bound to a leadership term that has ended: nothing was written.
    #[error("write refused, this leader was deposed: {0}")]
    Fenced(String),
}

/// One change in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl Write {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Write::Put {
            key: key.into(),
            value: value.into(),
        }
    }
    pub fn delete(key: impl Into<String>) -> Self {
        Write::Delete { key: key.into() }
    }
}

/// Keys under a prefix with their values, in key order.
pub type Entries = Vec<(String, Vec<u8>)>;

/// A durable key-value store.
pub trait Store: Send + Sync + 'static {
    /// The value under `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;
    /// Every key starting with `prefix`, in key order, with its value.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Entries, StoreError>>;
    /// Applies a batch atomically and durably: when this returns `Ok`, the
    /// batch survives a crash.
    fn write(&self, batch: Vec<Write>) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// A shared handle to some store.
pub type SharedStore = Arc<dyn Store>;

/// Opens the embedded store in `dir` (created if missing).
pub fn open_embedded(dir: &Path) -> Result<SharedStore, StoreError> {
    Ok(Arc::new(EmbeddedStore::open(dir)?))
}

#[cfg(test)]
pub(crate) mod contract {
    //! The behaviour every engine must show; each engine's tests run it.
    use super::*;

    pub async fn check(store: &dyn Store) {
        assert_eq!(store.get("/a").await.expect("get"), None);
        store
            .write(vec![
                Write::put("/a/1", b"one".to_vec()),
                Write::put("/a/2", b"two".to_vec()),
                Write::put("/b", b"b".to_vec()),
            ])
            .await
            .expect("write");
        assert_eq!(store.get("/a/1").await.expect("get"), Some(b"one".to_vec()));
        let listed = store.list("/a/").await.expect("list");
        assert_eq!(
            listed,
            vec![
                ("/a/1".to_owned(), b"one".to_vec()),
                ("/a/2".to_owned(), b"two".to_vec())
            ]
        );
        store
            .write(vec![Write::delete("/a/1"), Write::put("/a/2", b"TWO".to_vec())])
            .await
            .expect("write");
        assert_eq!(store.get("/a/1").await.expect("get"), None);
        assert_eq!(
            store.list("/a/").await.expect("list"),
            vec![("/a/2".to_owned(), b"TWO".to_vec())]
        );
        // Deleting a missing key is not an error.
        store.write(vec![Write::delete("/nope")]).await.expect("write");
    }
}

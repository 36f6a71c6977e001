//! Where a framework keeps its framework id between runs, so that a
//! restarted framework re-subscribes as itself and keeps its tasks.

use std::path::PathBuf;

use agora_proto::FrameworkId;
use agora_store::{SharedStore, Write};
use futures::future::BoxFuture;

use crate::SdkError;

/// Persistent home of the framework id. The driver loads it before the first
/// subscription, saves it on every SUBSCRIBED, and clears it after a
/// successful TEARDOWN.
pub trait FrameworkIdStore: Send + Sync {
    /// The stored id, if one was saved.
    fn load(&self) -> BoxFuture<'_, Result<Option<FrameworkId>, SdkError>>;
    /// Saves `id` durably.
    fn save<'a>(&'a self, id: &'a FrameworkId) -> BoxFuture<'a, Result<(), SdkError>>;
    /// Forgets the stored id (the framework was torn down).
    fn clear(&self) -> BoxFuture<'_, Result<(), SdkError>>;
}

fn parse_id(text: &str) -> Result<Option<FrameworkId>, SdkError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    FrameworkId::parse(text)
        .map(Some)
        .map_err(|e| SdkError::IdStore(format!("stored framework id {text:?} is invalid: {e}")))
}

/// Keeps the id in a small text file (written atomically via a rename).
#[derive(Debug, Clone)]
pub struct FileIdStore {
    path: PathBuf,
}

impl FileIdStore {
    /// An id store in the file at `path`; the parent directory must exist.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl FrameworkIdStore for FileIdStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<FrameworkId>, SdkError>> {
        Box::pin(async move {
            match tokio::fs::read_to_string(&self.path).await {
                Ok(text) => parse_id(&text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(SdkError::IdStore(format!("reading {}: {e}", self.path.display()))),
            }
        })
    }

    fn save<'a>(&'a self, id: &'a FrameworkId) -> BoxFuture<'a, Result<(), SdkError>> {
        Box::pin(async move {
            let mut tmp = self.path.clone().into_os_string();
            tmp.push(".tmp");
            let err = |e: std::io::Error| SdkError::IdStore(format!("writing {}: {e}", self.path.display()));
            tokio::fs::write(&tmp, id.as_str()).await.map_err(err)?;
            tokio::fs::rename(&tmp, &self.path).await.map_err(err)
        })
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), SdkError>> {
        Box::pin(async move {
            match tokio::fs::remove_file(&self.path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(SdkError::IdStore(format!(
                    "removing {}: {e}",
                    self.path.display()
                ))),
            }
        })
    }
}

/// Keeps the id under one key of an Agora [`agora_store::Store`] (embedded
/// or ZooKeeper), for frameworks that already keep their state there.
#[derive(Clone)]
pub struct StoreIdStore {
    store: SharedStore,
    key: String,
}

impl StoreIdStore {
    /// An id store at `key` in `store`.
    pub fn new(store: SharedStore, key: impl Into<String>) -> Self {
        Self {
            store,
            key: key.into(),
        }
    }
}

impl std::fmt::Debug for StoreIdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreIdStore")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl FrameworkIdStore for StoreIdStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<FrameworkId>, SdkError>> {
        Box::pin(async move {
            let value = self
                .store
                .get(&self.key)
                .await
                .map_err(|e| SdkError::IdStore(e.to_string()))?;
            match value {
                None => Ok(None),
                Some(bytes) => parse_id(&String::from_utf8_lossy(&bytes)),
            }
        })
    }

    fn save<'a>(&'a self, id: &'a FrameworkId) -> BoxFuture<'a, Result<(), SdkError>> {
        Box::pin(async move {
            self.store
                .write(vec![Write::put(
                    self.key.clone(),
                    id.as_str().as_bytes().to_vec(),
                )])
                .await
                .map_err(|e| SdkError::IdStore(e.to_string()))
        })
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), SdkError>> {
        Box::pin(async move {
            self.store
                .write(vec![Write::delete(self.key.clone())])
                .await
                .map_err(|e| SdkError::IdStore(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use agora_store::MemoryStore;

    use super::*;

    async fn round_trip(store: &dyn FrameworkIdStore) {
        assert_eq!(store.load().await.unwrap(), None);
        let id = FrameworkId::new_unchecked("fw-1");
        store.save(&id).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(id));
        store.clear().await.unwrap();
        assert_eq!(store.load().await.unwrap(), None);
        store.clear().await.unwrap();
    }

    #[tokio::test]
    async fn file_store_saves_loads_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        round_trip(&FileIdStore::new(dir.path().join("framework-id"))).await;
    }

    #[tokio::test]
    async fn kv_store_saves_loads_and_clears() {
        round_trip(&StoreIdStore::new(
            Arc::new(MemoryStore::default()),
            "/sdk/framework-id",
        ))
        .await;
    }

    #[tokio::test]
    async fn a_corrupt_file_is_an_error_not_a_new_framework() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("framework-id");
        std::fs::write(&path, "not/valid").unwrap();
        assert!(matches!(
            FileIdStore::new(path).load().await,
            Err(SdkError::IdStore(_))
        ));
    }
}

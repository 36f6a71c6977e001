//! The embedded engine: one redb file, `state.redb`, in a directory.

use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use redb::{Database, ReadableDatabase, TableDefinition};

use crate::{Store, StoreError, Write};

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// A redb database; every write batch is one fsynced transaction.
pub struct EmbeddedStore {
    db: Arc<Database>,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/state.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(io)?;
        let db = Database::create(dir.join("state.redb")).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let tx = db.begin_write().map_err(io)?;
        tx.open_table(TABLE).map_err(io)?;
        tx.commit().map_err(io)?;
        Ok(Self { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(io)?
    }
}

impl Store for EmbeddedStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        let key = key.to_owned();
        Box::pin(self.blocking(move |db| {
            let tx = db.begin_read().map_err(io)?;
            let table = tx.open_table(TABLE).map_err(io)?;
            Ok(table.get(key.as_str()).map_err(io)?.map(|v| v.value().to_vec()))
        }))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<crate::Entries, StoreError>> {
        let prefix = prefix.to_owned();
        Box::pin(self.blocking(move |db| {
            let tx = db.begin_read().map_err(io)?;
            let table = tx.open_table(TABLE).map_err(io)?;
            let mut out = Vec::new();
            for entry in table.range(prefix.as_str()..).map_err(io)? {
                let (k, v) = entry.map_err(io)?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(out)
        }))
    }

    fn write(&self, batch: Vec<Write>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut table = tx.open_table(TABLE).map_err(io)?;
                for w in &batch {
                    match w {
                        Write::Put { key, value } => {
                            table.insert(key.as_str(), value.as_slice()).map_err(io)?;
                        }
                        Write::Delete { key } => {
                            table.remove(key.as_str()).map_err(io)?;
                        }
                    }
                }
            }
            tx.commit().map_err(io)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_store_meets_the_store_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::contract::check(&EmbeddedStore::open(dir.path()).expect("open")).await;
    }

    #[tokio::test]
    async fn embedded_store_keeps_writes_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = EmbeddedStore::open(dir.path()).expect("open");
            s.write(vec![Write::put("/k", b"v".to_vec())])
                .await
                .expect("write");
        }
        let s = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(s.get("/k").await.expect("get"), Some(b"v".to_vec()));
    }
}

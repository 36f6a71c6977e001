//! An in-memory engine, for logic tests of the code that uses a store.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use tokio::sync::Mutex;

use crate::{Store, StoreError, Write};

/// Keeps everything in a map; nothing survives the process.
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move { Ok(self.map.lock().await.get(key).cloned()) })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<crate::Entries, StoreError>> {
        Box::pin(async move {
            let map = self.map.lock().await;
            Ok(map
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect())
        })
    }

    fn write(&self, batch: Vec<Write>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut map = self.map.lock().await;
            for w in batch {
                match w {
                    Write::Put { key, value } => {
                        map.insert(key, value);
                    }
                    Write::Delete { key } => {
                        map.remove(&key);
                    }
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_meets_the_store_contract() {
        crate::contract::check(&super::MemoryStore::new()).await;
    }
}

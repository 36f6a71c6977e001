//! The ZooKeeper engine: [`ZkStore`] (the [`crate::Store`] trait on znodes),
//! [`ZkElection`] (Curator-compatible LeaderLatch) and [`ZkUrl`].
//!
//! The `zookeeper-client` crate runs its own sockets and timers, invisible to
//! tokio's paused time: logic above these types is tested against
//! [`crate::MemoryStore`] and [`crate::MemoryElection`]; these types are
//! tested against a real server (`zk_server::ZkServer`).

use std::time::Duration;

use tokio::sync::Mutex;
use zookeeper_client as zk;

mod election;
mod store;
mod url;

pub use election::ZkElection;
pub use store::ZkStore;
pub use url::{DEFAULT_PORT, ZkUrl, ZkUrlError};

#[cfg(test)]
mod tests;

/// How to talk to ZooKeeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkOptions {
    /// The session timeout asked of ZooKeeper (the server may clamp it to
    /// its min/max: 2–20 ticks). A leader steps down after half of the
    /// negotiated timeout without a confirmed round trip. Default 2 s.
    pub session_timeout: Duration,
}

impl Default for ZkOptions {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_secs(2),
        }
    }
}

/// Opens a new session.
pub(crate) async fn connect(hosts: &str, options: &ZkOptions) -> Result<zk::Client, zk::Error> {
    zk::Client::connector()
        .with_session_timeout(options.session_timeout)
        .connect(hosts)
        .await
}

/// A session opened on first use and opened again after it ends (expired or
/// closed); shared by everything that needs no ephemeral nodes.
pub(crate) struct ZkConnection {
    hosts: String,
    options: ZkOptions,
    client: Mutex<Option<zk::Client>>,
}

impl ZkConnection {
    pub(crate) fn new(hosts: String, options: ZkOptions) -> Self {
        Self {
            hosts,
            options,
            client: Mutex::new(None),
        }
    }

    /// A client whose session has not ended.
    pub(crate) async fn client(&self) -> Result<zk::Client, zk::Error> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            if !client.state().is_terminated() {
                return Ok(client.clone());
            }
            tracing::info!(hosts = %self.hosts, "ZooKeeper session ended; opening a new one");
        }
        let client = connect(&self.hosts, &self.options).await?;
        *slot = Some(client.clone());
        Ok(client)
    }
}

/// Errors after which a retry on a new or restored session may succeed:
/// everything but refusals that would repeat (bad arguments, permissions,
/// node conflicts). Lost connections may surface as I/O errors
/// (`Error::Custom`), so unknown errors count as transient.
pub(crate) fn is_transient(e: &zk::Error) -> bool {
    !matches!(
        e,
        zk::Error::BadArguments(_)
            | zk::Error::NoAuth
            | zk::Error::InvalidAcl
            | zk::Error::AuthFailed
            | zk::Error::NoChildrenForEphemerals
            | zk::Error::Unimplemented
            | zk::Error::MarshallingError
            | zk::Error::ReconfigDisabled
            | zk::Error::QuotaExceeded
            | zk::Error::UnmarshalError { .. }
            | zk::Error::NoNode
            | zk::Error::NodeExists
            | zk::Error::NotEmpty
            | zk::Error::BadVersion
            | zk::Error::RuntimeInconsistent
    )
}

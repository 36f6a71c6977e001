//! [`Election`] on ZooKeeper: Apache Curator's LeaderLatch recipe.
//!
//! Each campaign opens its own session and creates an ephemeral sequential
//! node `{dir}/_c_{uuid}-latch-{seq}` holding the candidate bytes; the lowest
//! sequence leads (the `zookeeper-client` crate's `LockPrefix::new_curator`,
//! so Curator clients see the same leader). The node is the term's
//! [`Fence`].
//!
//! Stepping down. The leader confirms a round trip to ZooKeeper every
//! lease/4 (`exists` on its node); its lease, half the negotiated session
//! timeout T, runs from the *sending* of the last confirmed request. ZooKeeper
//! cannot expire the session, delete the node and so elect anyone else
//! before T after it last heard from the leader, so a leader whose lease
//! lapses (ZooKeeper stopped, paused or unreachable, or this process paused)
//! has stepped down at least T/2 before any successor can be elected. It
//! also steps down at once when the session expires or closes, when its node
//! is deleted, and when it resigns; then it deletes its node (if it still
//! can) and closes the session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zookeeper_client as zk;

use super::{ZkConnection, ZkOptions, ZkUrl, connect, is_transient};
use crate::election::{Election, ElectionError, Fence, Leadership, Term, TermEnd};

/// Curator's LeaderLatch lock name.
const LATCH: &str = "latch-";
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Leader election in one ZooKeeper directory (see the module docs).
/// Several instances (processes) campaign in the same directory.
pub struct ZkElection {
    hosts: String,
    dir: String,
    options: ZkOptions,
    /// The observer's session, also used by [`Election::leader`].
    conn: Arc<ZkConnection>,
    leader: watch::Receiver<Option<Vec<u8>>>,
    observer: JoinHandle<()>,
}

impl std::fmt::Debug for ZkElection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkElection")
            .field("hosts", &self.hosts)
            .field("dir", &self.dir)
            .field("options", &self.options)
            .finish()
    }
}

impl Drop for ZkElection {
    fn drop(&mut self) {
        self.observer.abort();
    }
}

fn backoff_after(current: Duration) -> Duration {
    (current * 2).min(MAX_BACKOFF)
}

impl ZkElection {
    /// An election among the candidates in `url`'s path (e.g.
    /// `zk://h1,h2/agora/leader`). Starts watching the leader at once
    /// (needs a tokio runtime); connects lazily and keeps reconnecting.
    pub fn new(url: &ZkUrl, options: ZkOptions) -> ZkElection {
        let hosts = url.connect_string();
        let conn = Arc::new(ZkConnection::new(hosts.clone(), options.clone()));
        let (tx, leader) = watch::channel(None);
        let observer = tokio::spawn(observe(conn.clone(), url.path.clone(), tx));
        ZkElection {
            hosts,
            dir: url.path.clone(),
            options,
            conn,
            leader,
            observer,
        }
    }

    /// The election directory (absolute znode path).
    pub fn dir(&self) -> &str {
        &self.dir
    }

    async fn campaign_until_elected(&self, candidate: Vec<u8>) -> Result<Leadership, ElectionError> {
        let fatal = |e: zk::Error| ElectionError::Zk(format!("campaign in {}: {e}", self.dir));
        let mut backoff = MIN_BACKOFF;
        loop {
            let client = match connect(&self.hosts, &self.options).await {
                Ok(client) => client,
                Err(e) => {
                    tracing::warn!(hosts = %self.hosts, error = %e, "cannot reach ZooKeeper to campaign; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff_after(backoff);
                    continue;
                }
            };
            let prefix = zk::LockPrefix::new_curator(&self.dir, LATCH).map_err(fatal)?;
            let options = zk::LockOptions::new(zk::Acls::anyone_all())
                .with_ancestor_options(zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()))
                .map_err(fatal)?;
            let won = client
                .lock(prefix, &candidate, options)
                .await
                .map(zk::LockClient::into_owned);
            let result = match won {
                Ok(lock) => start_term(client, lock, candidate.clone()).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(leadership) => return Ok(leadership),
                Err(e)
                    if is_transient(&e) || e == zk::Error::RuntimeInconsistent || e == zk::Error::NoNode =>
                {
                    tracing::warn!(dir = %self.dir, error = %e, "campaign interrupted; joining again");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff_after(backoff);
                }
                Err(e) => return Err(fatal(e)),
            }
        }
    }
}

impl Election for ZkElection {
    fn campaign(&self, candidate: Vec<u8>) -> BoxFuture<'_, Result<Leadership, ElectionError>> {
        Box::pin(self.campaign_until_elected(candidate))
    }

    fn leader(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, ElectionError>> {
        Box::pin(async move {
            let failed = |e: zk::Error| ElectionError::Zk(format!("reading the leader of {}: {e}", self.dir));
            let mut attempt = 0;
            loop {
                attempt += 1;
                let client = self.conn.client().await.map_err(failed)?;
                let children = match client.list_children(&self.dir).await {
                    Ok(children) => children,
                    Err(zk::Error::NoNode) => return Ok(None),
                    Err(e) if is_transient(&e) && attempt < 3 => continue,
                    Err(e) => return Err(failed(e)),
                };
                match read_leader(&client, &self.dir, children).await {
                    Ok(leader) => return Ok(leader),
                    // The leader left between the two reads, or the session ended.
                    Err(e) if (e == zk::Error::NoNode || is_transient(&e)) && attempt < 3 => continue,
                    Err(e) => return Err(failed(e)),
                }
            }
        })
    }

    fn watch_leader(&self) -> watch::Receiver<Option<Vec<u8>>> {
        self.leader.clone()
    }
}

/// The sequence number of a latch node's name, if it is one.
fn latch_sequence(name: &str) -> Option<u64> {
    let at = name.rfind(LATCH)?;
    name[at + LATCH.len()..].parse().ok()
}

/// The candidate bytes of the lowest latch node among `children` of `dir`.
/// `NoNode` if that node vanished meanwhile.
async fn read_leader(
    client: &zk::Client,
    dir: &str,
    children: Vec<String>,
) -> Result<Option<Vec<u8>>, zk::Error> {
    let Some(first) = children
        .iter()
        .filter_map(|c| latch_sequence(c).map(|seq| (seq, c)))
        .min()
        .map(|(_, c)| c)
    else {
        return Ok(None);
    };
    let (data, _) = client.get_data(&format!("{dir}/{first}")).await?;
    Ok(Some(data))
}

/// Keeps `leader` up to date until aborted.
async fn observe(conn: Arc<ZkConnection>, dir: String, leader: watch::Sender<Option<Vec<u8>>>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match observe_once(&conn, &dir, &leader).await {
            Ok(()) => backoff = MIN_BACKOFF,
            Err(e) => {
                tracing::debug!(%dir, error = %e, "watching the leader failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = backoff_after(backoff);
            }
        }
    }
}

/// Publishes the current leader and waits for the next change.
async fn observe_once(
    conn: &ZkConnection,
    dir: &str,
    leader: &watch::Sender<Option<Vec<u8>>>,
) -> Result<(), zk::Error> {
    let publish = |now: Option<Vec<u8>>| {
        leader.send_if_modified(|l| {
            let changed = *l != now;
            *l = now;
            changed
        });
    };
    let client = conn.client().await?;
    let watcher = match client.list_and_watch_children(dir).await {
        Ok((children, watcher)) => {
            match read_leader(&client, dir, children).await {
                Ok(now) => publish(now),
                // It left between the two reads: look again.
                Err(zk::Error::NoNode) => return Ok(()),
                Err(e) => return Err(e),
            }
            watcher
        }
        Err(zk::Error::NoNode) => {
            publish(None);
            let (stat, watcher) = client.check_and_watch_stat(dir).await?;
            if stat.is_some() {
                return Ok(());
            }
            watcher
        }
        Err(e) => return Err(e),
    };
    let event = watcher.changed().await;
    if event.event_type == zk::EventType::Session && event.session_state.is_terminated() {
        return Err(zk::Error::SessionExpired);
    }
    Ok(())
}

type StatFuture = Pin<Box<dyn Future<Output = Result<Option<zk::Stat>, zk::Error>> + Send>>;
type EventFuture = Pin<Box<dyn Future<Output = zk::WatchedEvent> + Send>>;

/// Turns a won lock into a [`Leadership`] whose term a background task keeps.
async fn start_term(
    client: zk::Client,
    lock: zk::OwnedLockClient,
    candidate: Vec<u8>,
) -> Result<Leadership, zk::Error> {
    let path = lock.lock_path().to_owned();
    let lease = client.session_timeout() / 2;
    let sent = Instant::now();
    let (stat, watcher) = client.check_and_watch_stat(&path).await?;
    if stat.is_none() {
        return Err(zk::Error::NoNode);
    }
    let (valid_tx, valid_rx) = watch::channel(sent + lease);
    let (ended_tx, ended_rx) = watch::channel(None);
    let (resign_tx, resign_rx) = oneshot::channel();
    tracing::info!(%path, lease_ms = lease.as_millis() as u64, "elected leader");
    let keeper = TermKeeper {
        client,
        lock,
        path: path.clone(),
        lease,
        valid: valid_tx,
        ended: ended_tx,
    };
    let task = tokio::spawn(keeper.run(resign_rx, Box::pin(watcher.changed())));
    Ok(Leadership::new(
        candidate,
        Some(Fence { path, version: None }),
        Term::new(ended_rx, Some(valid_rx)),
        Box::new(move || {
            let _ = resign_tx.send(());
        }),
        Some(task),
    ))
}

/// The task behind one ZooKeeper leadership term.
struct TermKeeper {
    client: zk::Client,
    lock: zk::OwnedLockClient,
    path: String,
    lease: Duration,
    valid: watch::Sender<Instant>,
    ended: watch::Sender<Option<TermEnd>>,
}

impl TermKeeper {
    async fn run(self, mut resign: oneshot::Receiver<()>, mut node_event: EventFuture) {
        let mut states = self.client.state_watcher();
        let mut ticker = tokio::time::interval(self.lease / 4);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beat: Option<(Instant, StatFuture)> = None;
        let end = loop {
            let deadline = *self.valid.borrow();
            tokio::select! {
                biased;
                _ = &mut resign => break TermEnd::Resigned,
                state = states.changed() => {
                    if state.is_terminated() {
                        break TermEnd::SessionEnded;
                    }
                    tracing::info!(path = %self.path, %state, "leader's ZooKeeper session state changed");
                }
                event = &mut node_event => match self.on_node_event(event).await {
                    Ok(next) => node_event = next,
                    Err(end) => break end,
                },
                () = tokio::time::sleep_until(deadline) => break TermEnd::CutOff,
                result = async {
                    match beat.as_mut() {
                        Some((_, answer)) => answer.as_mut().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let sent = beat.take().map_or(deadline, |(sent, _)| sent);
                    match result {
                        Ok(Some(_)) => {
                            let until = sent + self.lease;
                            self.valid.send_if_modified(|v| {
                                let later = until > *v;
                                if later {
                                    *v = until;
                                }
                                later
                            });
                        }
                        Ok(None) => break TermEnd::NodeDeleted,
                        Err(zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed) => {
                            break TermEnd::SessionEnded;
                        }
                        Err(e) => tracing::debug!(path = %self.path, error = %e, "leader heartbeat failed"),
                    }
                }
                _ = ticker.tick(), if beat.is_none() => {
                    beat = Some((Instant::now(), Box::pin(self.client.check_stat(&self.path))));
                }
            }
        };
        self.ended.send_replace(Some(end.clone()));
        tracing::warn!(path = %self.path, reason = ?end, "stepped down as leader");
        if matches!(end, TermEnd::Resigned | TermEnd::CutOff) {
            // Let the next candidate in now rather than at session expiry.
            let timeout = self.client.session_timeout();
            match tokio::time::timeout(timeout, self.client.delete(&self.path, None)).await {
                Ok(Ok(()) | Err(zk::Error::NoNode)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(path = %self.path, error = %e, "could not delete the election node")
                }
                Err(_) => tracing::debug!(path = %self.path, "could not delete the election node in time"),
            }
        }
        // Dropping the last clients closes the session (or lets it expire).
        drop(self.lock);
        drop(self.client);
    }

    /// A watch on the leader's node fired: the term ends, or the next watch.
    async fn on_node_event(&self, event: zk::WatchedEvent) -> Result<EventFuture, TermEnd> {
        match event.event_type {
            zk::EventType::NodeDeleted => return Err(TermEnd::NodeDeleted),
            zk::EventType::Session if event.session_state.is_terminated() => {
                return Err(TermEnd::SessionEnded);
            }
            _ => {}
        }
        match self.client.check_and_watch_stat(&self.path).await {
            Ok((Some(_), watcher)) => Ok(Box::pin(watcher.changed())),
            Ok((None, _)) => Err(TermEnd::NodeDeleted),
            Err(zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed) => {
                Err(TermEnd::SessionEnded)
            }
            // The heartbeat and the lease take over.
            Err(_) => Ok(Box::pin(std::future::pending())),
        }
    }
}

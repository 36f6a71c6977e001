//! High availability (`agora master --zk zk://hosts/path`): several masters,
//! one leader elected through ZooKeeper, the registry in ZooKeeper.
//!
//! Each master serves one listener through a [`routing::Switch`] and runs a
//! [`Candidacy`]: campaign (publishing `{"address": "HOST:PORT"}` in
//! `path/leader`) → elected → wait until `--quorum` candidates take part →
//! read the registry afresh from `path/state` through a store bound to the
//! term (fenced: a deposed leader's writes fail) → start a new actor and
//! serve. The term ends when ZooKeeper says so or the lease lapses
//! ([`agora_store::Leadership::lost`]), when a registry write is fenced off,
//! or when fewer than `--quorum` candidates remain: the switch stops serving
//! first, then the actor stops and drops every agent and framework stream of
//! the term (they reconnect and find the new leader), the leadership is
//! resigned and the master campaigns again as a standby. Nothing of a term
//! is reused in the next one.
//!
//! Architecture invariant: a master acts as leader only while its term is
//! current — the switch checks the term before every request, the actor
//! before every command and every message it sends.

pub mod candidates;
pub mod routing;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_store::leader::LEADER_NODE;
use agora_store::{
    LeaderInfo, Leadership, SharedElection, SharedStore, StoreError, ZkElection, ZkOptions, ZkStore, ZkUrl,
};
use futures::future::BoxFuture;
use tokio::sync::{OnceCell, watch};
use tokio::time::Instant;

use crate::actor;
use crate::metrics::Metrics;
use crate::{MasterConfig, MasterError};
use routing::{Role, Switch};

/// The znode under the cluster's root that holds the registry.
pub const STATE_NODE: &str = "state";
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a stepping-down leader waits for its actor to stop.
const ACTOR_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Gives a newly elected leader its registry: a store whose writes succeed
/// only while the leadership's term lasts.
pub trait TermStores: Send + Sync + 'static {
    /// The registry store bound to `leadership`'s term.
    fn for_term<'a>(&'a self, leadership: &'a Leadership) -> BoxFuture<'a, Result<SharedStore, StoreError>>;
}

/// The registry in ZooKeeper under `path/state`, connected on first use.
struct ZkTermStores {
    url: ZkUrl,
    options: ZkOptions,
    store: OnceCell<ZkStore>,
}

impl TermStores for ZkTermStores {
    fn for_term<'a>(&'a self, leadership: &'a Leadership) -> BoxFuture<'a, Result<SharedStore, StoreError>> {
        Box::pin(async move {
            let store = self
                .store
                .get_or_try_init(|| ZkStore::connect(&self.url, self.options.clone()))
                .await?;
            Ok(Arc::new(store.for_term(leadership)) as SharedStore)
        })
    }
}

/// Serves `agora master --zk …` on `listener` until `shutdown` resolves
/// (see the module docs). On shutdown the leader stops its actor and
/// resigns, so another master takes over at once.
pub async fn serve(
    config: MasterConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MasterError> {
    let url = config.zk.clone().ok_or(MasterError::Config {
        flag: "zk",
        problem: "must be set to serve with leader election".into(),
    })?;
    check_quorum(config.quorum)?;
    let local = listener.local_addr().map_err(MasterError::Listener)?;
    let address = advertised_address(config.advertise_address.as_deref(), local)?;
    let child = |name: &str| {
        url.child(name).map_err(|e| MasterError::Config {
            flag: "zk",
            problem: e.to_string(),
        })
    };
    let (leader_url, state_url) = (child(LEADER_NODE)?, child(STATE_NODE)?);
    let options = ZkOptions {
        session_timeout: config.zk_session_timeout,
    };
    let election: SharedElection = Arc::new(ZkElection::new(&leader_url, options.clone()));
    let (role_tx, role_rx) = watch::channel(Role::Standby);
    let switch = Switch::new(role_rx, election.watch_leader(), address.clone());
    let candidacy = Candidacy {
        candidates: candidates::count(&leader_url, options.clone()),
        stores: Arc::new(ZkTermStores {
            url: state_url,
            options,
            store: OnceCell::new(),
        }),
        election,
        address: address.clone(),
        config,
    };
    tracing::info!(%local, %address, zk = %url, quorum = candidacy.config.quorum, "master starting as a standby");
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let campaign = tokio::spawn(candidacy.run(role_tx, shutdown_rx));
    let (stopped_tx, _) = watch::channel(false);
    let signal = {
        let stopped_tx = stopped_tx.clone();
        async move {
            shutdown.await;
            tracing::info!("master shutting down");
            let _ = shutdown_tx.send(true);
            // The candidacy stops the actor (ending every stream) and resigns.
            if tokio::time::timeout(ACTOR_STOP_TIMEOUT * 2, campaign)
                .await
                .is_err()
            {
                tracing::warn!("the candidacy did not stop in time");
            }
            let _ = stopped_tx.send(true);
        }
    };
    let routes = tonic::service::Routes::from(routing::router(switch));
    crate::serve_routes(routes, listener, signal, stopped_tx).await
}

/// `--quorum` must be at least 1.
pub fn check_quorum(quorum: u32) -> Result<(), MasterError> {
    if quorum == 0 {
        return Err(MasterError::Config {
            flag: "quorum",
            problem: "must be at least 1 (the number of masters that must take part in the election)".into(),
        });
    }
    Ok(())
}

/// The `HOST:PORT` this master publishes: `--advertise-address`, else the
/// listener's address unless it is a wildcard nobody can connect to.
pub fn advertised_address(flag: Option<&str>, local: SocketAddr) -> Result<String, MasterError> {
    if let Some(address) = flag {
        let valid = address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.trim().is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if !valid || address.contains('/') || address.contains(char::is_whitespace) {
            return Err(MasterError::Config {
                flag: "advertise-address",
                problem: format!("{address:?} is not HOST:PORT"),
            });
        }
        return Ok(address.to_owned());
    }
    if local.ip().is_unspecified() {
        return Err(MasterError::Config {
            flag: "advertise-address",
            problem: format!(
                "required with --zk when listening on {local}: other masters send callers to this address"
            ),
        });
    }
    Ok(local.to_string())
}

/// One master's part in the election; see the module docs.
pub struct Candidacy {
    /// The master's flags (`quorum` among them).
    pub config: MasterConfig,
    /// `HOST:PORT` published while campaigning and leading.
    pub address: String,
    /// The election among the masters.
    pub election: SharedElection,
    /// How many candidates take part in the election now.
    pub candidates: watch::Receiver<usize>,
    /// Where each term's registry comes from.
    pub stores: Arc<dyn TermStores>,
}

/// How a term ended for the candidacy.
enum Outcome {
    /// The master is shutting down.
    Shutdown,
    /// Back to standby; campaign again.
    SteppedDown,
}

/// Resolves when `shutdown` turns true or its sender is gone.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

impl Candidacy {
    /// Campaigns, leads while elected, campaigns again after each term,
    /// until `shutdown` turns true. Publishes what it does in `role`.
    pub async fn run(mut self, role: watch::Sender<Role>, mut shutdown: watch::Receiver<bool>) {
        let candidate = LeaderInfo::new(self.address.clone()).to_bytes();
        let mut backoff = MIN_BACKOFF;
        loop {
            role.send_replace(Role::Standby);
            let campaign = tokio::select! {
                biased;
                () = stopping(&mut shutdown) => return,
                campaign = self.election.campaign(candidate.clone()) => campaign,
            };
            let leadership = match campaign {
                Ok(leadership) => leadership,
                Err(e) => {
                    tracing::error!(error = %e, "cannot campaign; retrying");
                    tokio::select! {
                        () = stopping(&mut shutdown) => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let (outcome, served) = self.lead(leadership, &role, &mut shutdown).await;
            if served {
                backoff = MIN_BACKOFF;
            }
            match outcome {
                Outcome::Shutdown => {
                    role.send_replace(Role::Standby);
                    return;
                }
                Outcome::SteppedDown if served => {}
                // Elected but could not serve (registry unreadable): pause
                // before campaigning again rather than spin.
                Outcome::SteppedDown => {
                    tokio::select! {
                        () = stopping(&mut shutdown) => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One term: quorum, registry, serve, step down. Returns how it ended
    /// and whether this master served as leader in it.
    async fn lead(
        &mut self,
        leadership: Leadership,
        role: &watch::Sender<Role>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> (Outcome, bool) {
        let elected = Instant::now();
        let term = leadership.term();
        let quorum = self.config.quorum as usize;
        tracing::info!(address = %self.address, "elected leader");
        loop {
            let present = *self.candidates.borrow_and_update();
            if present >= quorum {
                break;
            }
            let status =
                format!("elected, waiting for {quorum} masters to take part in the election ({present} do)");
            tracing::info!(quorum, present, "elected, but not leading without a quorum");
            role.send_replace(Role::Elected { status });
            tokio::select! {
                biased;
                () = stopping(shutdown) => {
                    leadership.resign().await;
                    return (Outcome::Shutdown, false);
                }
                end = term.lost() => {
                    tracing::info!(reason = ?end, "the term ended before a quorum was present");
                    return (Outcome::SteppedDown, false);
                }
                changed = self.candidates.changed() => {
                    if changed.is_err() {
                        // Nobody counts any more; the term decides.
                        let end = term.lost().await;
                        tracing::info!(reason = ?end, "the term ended before a quorum was present");
                        return (Outcome::SteppedDown, false);
                    }
                }
            }
        }

        role.send_replace(Role::Elected {
            status: "elected, loading the registry".into(),
        });
        let loaded = tokio::select! {
            biased;
            () = stopping(shutdown) => {
                leadership.resign().await;
                return (Outcome::Shutdown, false);
            }
            end = term.lost() => {
                tracing::info!(reason = ?end, "the term ended while loading the registry");
                return (Outcome::SteppedDown, false);
            }
            loaded = self.load(&leadership) => loaded,
        };
        let (master, store, metrics) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(error = %e, "cannot load the registry; stepping down");
                leadership.resign().await;
                return (Outcome::SteppedDown, false);
            }
        };

        let (stop_tx, stop_rx) = watch::channel(false);
        let actor = actor::spawn_for_term(master, store, stop_rx, Some(term.clone()));
        let routes = crate::routes(actor.handle, metrics).into_axum_router();
        role.send_replace(Role::Leading {
            term: term.clone(),
            routes,
        });
        tracing::info!(
            address = %self.address,
            since_elected_ms = elected.elapsed().as_millis() as u64,
            "leading"
        );
        let mut stopped = actor.stopped;
        let mut actor_done = false;
        let outcome = tokio::select! {
            biased;
            () = stopping(shutdown) => Outcome::Shutdown,
            end = term.lost() => {
                tracing::warn!(reason = ?end, "the leadership term ended; stepping down");
                Outcome::SteppedDown
            }
            why = &mut stopped => {
                actor_done = true;
                tracing::warn!(reason = ?why.ok(), "the master actor stopped; stepping down");
                Outcome::SteppedDown
            }
            () = async {
                if self.candidates.wait_for(|n| *n < quorum).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!(quorum, present = *self.candidates.borrow(), "fewer masters than the quorum; stepping down");
                Outcome::SteppedDown
            }
        };
        // Stop serving first, then stop the actor (it drops every stream of
        // this term), then let the next candidate in.
        role.send_replace(Role::Standby);
        let _ = stop_tx.send(true);
        if !actor_done
            && tokio::time::timeout(ACTOR_STOP_TIMEOUT, &mut stopped)
                .await
                .is_err()
        {
            tracing::warn!("the master actor did not stop in time; aborting it");
            stopped.abort();
        }
        leadership.resign().await;
        tracing::info!(
            led_ms = elected.elapsed().as_millis() as u64,
            "stepped down; back to standby"
        );
        (outcome, true)
    }

    /// Reads the registry afresh through a store bound to the term.
    async fn load(
        &self,
        leadership: &Leadership,
    ) -> Result<(crate::cluster::Master, SharedStore, Metrics), MasterError> {
        let store = self
            .stores
            .for_term(leadership)
            .await
            .map_err(MasterError::ReadRegistry)?;
        let metrics = Metrics::new();
        let master_id = uuid::Uuid::new_v4().to_string();
        let master = crate::recover(&self.config, &master_id, &metrics, store.as_ref()).await?;
        Ok((master, store, metrics))
    }
}

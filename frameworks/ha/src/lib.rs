//! High availability for Agora's frameworks, as Marathon and Chronos did it:
//! several instances of a framework run; one is elected and acts, the others
//! stand by and forward every REST call to it, so a client that knows any
//! one instance keeps working.
//!
//! [`run_elected`] is an instance's whole life: serve HTTP through a
//! [`Front`], campaign, and on election start the framework ([`Elected`]) on
//! the state of that term (read afresh, never kept from an earlier term).
//! When the term ends the instance stops acting at once, without tearing the
//! framework down (its tasks keep running for the next leader to adopt),
//! stands by and campaigns again.
//!
//! Architecture invariant: an instance answers calls itself only while its
//! term is current, and the framework of a term is halted as soon as the term
//! ends; no framework outlives the term it was started in.
#![forbid(unsafe_code)]

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use agora_store::{
    Election, ElectionError, LeaderInfo, Leadership, SharedElection, SharedStore, StoreError, TermEnd,
    ZkElection, ZkOptions, ZkStore, ZkUrl, ZkUrlError,
};
use axum::Router;
use futures::future::BoxFuture;
use tokio::sync::watch;

mod front;
mod proxy;

pub use front::Front;
pub use proxy::FORWARDED_BY;

/// How long an instance that had to give up a term for its own failure
/// waits before campaigning again, so another instance can take over.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long open connections get to finish when the instance shuts down.
const DRAIN: Duration = Duration::from_secs(2);

/// A framework started for one leadership term.
pub trait Elected: Send + Sized + 'static {
    /// Why it could not start or stopped.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The REST API of this term.
    fn api(&self) -> Router;

    /// Resolves when the framework stops by itself (an error, or the master
    /// refusing it).
    fn stopped(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Stops acting at once: no call to the master and no write after this
    /// starts, no waiting for work in progress; the framework is not torn
    /// down (its tasks keep running).
    fn halt(self) -> impl Future<Output = ()> + Send;

    /// Stops cleanly on shutdown, not tearing the framework down.
    fn stop(self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// True if `error` stops the instance instead of making it stand by and
    /// campaign again (a bug, a refusal by the master, unreadable state:
    /// another term would fail the same way).
    fn is_fatal(error: &Self::Error) -> bool;
}

/// Why an instance stopped.
#[derive(Debug, thiserror::Error)]
pub enum ElectedError<E: std::error::Error + 'static> {
    /// Taking part in the election failed for good.
    #[error(transparent)]
    Election(#[from] ElectionError),
    /// The HTTP server failed.
    #[error("REST API server failed: {0}")]
    Http(std::io::Error),
    /// The framework failed in a way another term would not fix.
    #[error(transparent)]
    Framework(E),
}

/// The address an instance campaigns with: where it serves, with an
/// unspecified IP (`0.0.0.0`, `::`) replaced by `hostname`.
pub fn advertised_address(local: SocketAddr, hostname: &str) -> String {
    if local.ip().is_unspecified() {
        format!("{hostname}:{}", local.port())
    } else {
        local.to_string()
    }
}

/// Opens a state store for one term: connected afresh, its writes fenced to the term.
pub type StoreForTerm =
    Box<dyn Fn(&Leadership) -> BoxFuture<'static, Result<SharedStore, StoreError>> + Send + Sync>;

/// The election and the state of the instances sharing `zk://hosts/path`:
/// they campaign in `path/leader`, and each term opens its own session on the
/// state under `path/state`, bound to the term ([`ZkStore::for_term`]), so
/// nothing read or written in an earlier term is reused and a deposed
/// leader's writes fail.
pub fn on_zookeeper(url: &ZkUrl, options: ZkOptions) -> Result<(SharedElection, StoreForTerm), ZkUrlError> {
    let election: SharedElection = Arc::new(ZkElection::new(&url.child("leader")?, options.clone()));
    let state = url.child("state")?;
    let store_for_term: StoreForTerm = Box::new(move |leadership: &Leadership| {
        let fence = leadership.fence().cloned();
        let state = state.clone();
        let options = options.clone();
        Box::pin(async move {
            let store = ZkStore::connect(&state, options).await?;
            let store = match fence {
                Some(fence) => store.with_fence(&fence),
                None => store,
            };
            Ok(Arc::new(store) as SharedStore)
        })
    });
    Ok((election, store_for_term))
}

/// Runs one instance until `shutdown` resolves or a fatal error: serves
/// HTTP on `listener` (advertised as `address`), campaigns in `election`,
/// and in each term it wins starts the framework with `start` (given the
/// term, e.g. to bind the state store to it) and serves its API. On shutdown
/// the framework stops cleanly and the term is resigned, so a standby takes
/// over at once.
pub async fn run_elected<A, S, Fut>(
    election: SharedElection,
    address: String,
    listener: tokio::net::TcpListener,
    start: S,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ElectedError<A::Error>>
where
    A: Elected,
    S: FnMut(&Leadership) -> Fut + Send,
    Fut: Future<Output = Result<A, A::Error>> + Send,
{
    let front = Front::new(address.clone(), election.watch_leader());
    let (stop_http, http_stopped) = watch::channel(false);
    let server = axum::serve(
        listener,
        front.router().into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let mut stopped = http_stopped;
        let _ = stopped.wait_for(|s| *s).await;
    })
    .into_future();
    let mut server = pin!(server);
    tracing::info!(%address, "REST API listening; campaigning for leadership");
    let outcome = tokio::select! {
        outcome = lead_terms(&*election, &front, &address, start, shutdown) => outcome,
        served = &mut server => Err(match served {
            Ok(()) => ElectedError::Http(std::io::Error::other("the server stopped")),
            Err(e) => ElectedError::Http(e),
        }),
    };
    front.close();
    let _ = stop_http.send(true);
    let _ = tokio::time::timeout(DRAIN, &mut server).await;
    outcome
}

/// What follows a term.
enum Next<E> {
    /// Stand by and campaign again (after [`RETRY_AFTER`] if `pause`).
    Again { pause: bool },
    /// The instance shuts down; how the framework stopped.
    Shutdown(Result<(), E>),
    /// Stop the instance.
    Fatal(E),
}

async fn lead_terms<A, S, Fut>(
    election: &dyn Election,
    front: &Front,
    address: &str,
    mut start: S,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ElectedError<A::Error>>
where
    A: Elected,
    S: FnMut(&Leadership) -> Fut + Send,
    Fut: Future<Output = Result<A, A::Error>> + Send,
{
    let mut shutdown = pin!(shutdown);
    let candidate = LeaderInfo::new(address).to_bytes();
    loop {
        let leadership = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            elected = election.campaign(candidate.clone()) => elected?,
        };
        let next = lead(&leadership, front, &mut start, shutdown.as_mut()).await;
        leadership.resign().await;
        match next {
            Next::Again { pause } => {
                if pause {
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                }
            }
            Next::Shutdown(stopped) => return stopped.map_err(ElectedError::Framework),
            Next::Fatal(e) => return Err(ElectedError::Framework(e)),
        }
    }
}

/// Leads one term: starts the framework, serves its API until the term ends,
/// the framework stops or the instance shuts down.
async fn lead<A, S, Fut>(
    leadership: &Leadership,
    front: &Front,
    start: &mut S,
    mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
) -> Next<A::Error>
where
    A: Elected,
    S: FnMut(&Leadership) -> Fut + Send,
    Fut: Future<Output = Result<A, A::Error>> + Send,
{
    tracing::info!("elected: loading the state and starting the framework");
    let started = tokio::select! {
        biased;
        () = shutdown.as_mut() => return Next::Shutdown(Ok(())),
        end = leadership.lost() => {
            tracing::warn!(?end, "the term ended while starting; standing by");
            return Next::Again { pause: false };
        }
        started = start(leadership) => started,
    };
    let mut active = match started {
        Ok(active) => active,
        Err(e) if A::is_fatal(&e) => return Next::Fatal(e),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start in this term; standing by");
            return Next::Again { pause: true };
        }
    };
    if !leadership.is_current() {
        active.halt().await;
        return Next::Again { pause: false };
    }
    front.lead(active.api(), leadership.term());
    tracing::info!("leading");
    let ended: Option<Result<Result<(), A::Error>, TermEnd>> = tokio::select! {
        biased;
        end = leadership.lost() => Some(Err(end)),
        () = shutdown.as_mut() => None,
        stopped = active.stopped() => Some(Ok(stopped)),
    };
    front.stand_by();
    match ended {
        None => Next::Shutdown(active.stop().await),
        Some(Err(end)) => {
            tracing::warn!(
                ?end,
                "the term ended: stopping at once (tasks keep running); standing by"
            );
            active.halt().await;
            Next::Again { pause: false }
        }
        Some(Ok(stopped)) => {
            active.halt().await;
            match stopped {
                _ if !leadership.is_current() => Next::Again { pause: false },
                Err(e) if A::is_fatal(&e) => Next::Fatal(e),
                Err(e) => {
                    tracing::warn!(error = %e, "the framework stopped; resigning and standing by");
                    Next::Again { pause: true }
                }
                Ok(()) => {
                    tracing::warn!("the framework stopped by itself; resigning and standing by");
                    Next::Again { pause: true }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

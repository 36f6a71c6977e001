//! Choosing one active instance among several: the [`Election`] trait, the
//! [`Leadership`] a winner holds for one term, and the in-process
//! [`MemoryElection`] for logic tests (the ZooKeeper one is
//! [`crate::ZkElection`]).
//!
//! A term ends when the leader resigns (or drops its [`Leadership`]), when
//! its ZooKeeper session ends, or when it has heard nothing from ZooKeeper for
//! its lease (half the session timeout): then [`Term::lost`] resolves and
//! [`Term::is_current`] turns false, before any other candidate can be
//! elected. A leader acts only while `is_current()`; writes through a store
//! bound to the term's [`Fence`] fail once the term is over, whatever the
//! leader believes.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

mod memory;

pub use memory::MemoryElection;

/// Why a leadership term ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TermEnd {
    /// The leader resigned or dropped its [`Leadership`].
    Resigned,
    /// ZooKeeper ended the session (expired, closed or failed authentication).
    SessionEnded,
    /// No confirmed round trip to ZooKeeper within the lease: the leader is
    /// cut off (network, stopped or paused server, or this process paused).
    CutOff,
    /// The election node vanished while the session lived (deleted by hand).
    NodeDeleted,
    /// Ended from outside by [`MemoryElection::depose`].
    Deposed,
    /// The task keeping the term stopped (the runtime is shutting down).
    Stopped,
}

/// The znode that exists exactly as long as a term: a store bound to it
/// (see [`crate::ZkStore::with_fence`]) checks it in every write transaction,
/// so a deposed leader's writes fail instead of landing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// Absolute znode path of the leader's election node.
    pub path: String,
    /// The node's data version to require; `None` accepts any version.
    pub version: Option<i32>,
}

/// A failure to take part in an election (not losing it: a campaign waits).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ElectionError {
    /// ZooKeeper refused something that retrying will not fix.
    #[error("election in ZooKeeper failed: {0}")]
    Zk(String),
}

/// Leader election among instances of one service.
pub trait Election: Send + Sync + 'static {
    /// Joins the election with `candidate` (what followers learn about the
    /// leader, typically its address) and resolves once this candidate is
    /// elected. Waits as long as it takes, riding out ZooKeeper outages;
    /// dropping the future withdraws the candidate.
    fn campaign(&self, candidate: Vec<u8>) -> BoxFuture<'_, Result<Leadership, ElectionError>>;

    /// The current leader's candidate bytes, read afresh; `None` if nobody leads.
    fn leader(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, ElectionError>>;

    /// The leader's candidate bytes as they change (`None` while nobody
    /// leads); followers use it to find and follow the leader's address.
    /// While ZooKeeper is unreachable it keeps the last value it saw.
    fn watch_leader(&self) -> watch::Receiver<Option<Vec<u8>>>;
}

/// A shared handle to some election.
pub type SharedElection = Arc<dyn Election>;

/// One leadership term; cheap to clone into every task that must stop when
/// the term ends.
#[derive(Debug, Clone)]
pub struct Term {
    ended: watch::Receiver<Option<TermEnd>>,
    /// Until when the lease holds; `None` for elections without a lease.
    valid_until: Option<watch::Receiver<Instant>>,
}

impl Term {
    pub(crate) fn new(
        ended: watch::Receiver<Option<TermEnd>>,
        valid_until: Option<watch::Receiver<Instant>>,
    ) -> Self {
        Self { ended, valid_until }
    }

    /// True while this term lasts: not ended and the lease has not lapsed.
    /// Checked synchronously, so a leader that was paused sees `false` as
    /// soon as it runs again.
    pub fn is_current(&self) -> bool {
        self.ended().is_none()
    }

    /// How the term ended, if it has (a lapsed lease counts as [`TermEnd::CutOff`]).
    pub fn ended(&self) -> Option<TermEnd> {
        if let Some(end) = self.ended.borrow().clone() {
            return Some(end);
        }
        if self.ended.has_changed().is_err() {
            return Some(TermEnd::Stopped);
        }
        match &self.valid_until {
            Some(v) if Instant::now() >= *v.borrow() => Some(TermEnd::CutOff),
            _ => None,
        }
    }

    /// Resolves when the term ends, with the reason.
    pub async fn lost(&self) -> TermEnd {
        let mut ended = self.ended.clone();
        let mut valid = self.valid_until.clone();
        let mut valid_open = valid.is_some();
        loop {
            if let Some(end) = ended.borrow_and_update().clone() {
                return end;
            }
            let until = valid.as_mut().map(|v| *v.borrow_and_update());
            if until.is_some_and(|u| Instant::now() >= u) {
                return TermEnd::CutOff;
            }
            tokio::select! {
                changed = ended.changed() => {
                    if changed.is_err() {
                        return ended.borrow().clone().unwrap_or(TermEnd::Stopped);
                    }
                }
                () = async {
                    match until {
                        Some(u) => tokio::time::sleep_until(u).await,
                        None => std::future::pending().await,
                    }
                } => {}
                changed = async {
                    match valid.as_mut() {
                        Some(v) if valid_open => v.changed().await,
                        _ => std::future::pending().await,
                    }
                } => {
                    if changed.is_err() {
                        valid_open = false;
                    }
                }
            }
        }
    }
}

/// What a candidate holds while it leads. Dropping it resigns (in the
/// background); [`Leadership::resign`] resigns and waits until the next
/// candidate may be elected.
pub struct Leadership {
    candidate: Vec<u8>,
    fence: Option<Fence>,
    term: Term,
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
    finished: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("candidate", &String::from_utf8_lossy(&self.candidate))
            .field("fence", &self.fence)
            .field("ended", &self.term.ended())
            .finish()
    }
}

impl Leadership {
    /// `release` ends the term (called once, on resign or drop);
    /// `finished` completes when the term's clean-up is done.
    pub(crate) fn new(
        candidate: Vec<u8>,
        fence: Option<Fence>,
        term: Term,
        release: Box<dyn FnOnce() + Send + Sync>,
        finished: Option<JoinHandle<()>>,
    ) -> Self {
        Self {
            candidate,
            fence,
            term,
            release: Some(release),
            finished,
        }
    }

    /// The candidate bytes this leader was elected with.
    pub fn candidate(&self) -> &[u8] {
        &self.candidate
    }

    /// The fence to bind a store to for this term (`None` for elections
    /// without one, such as [`MemoryElection`]).
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// A handle on this term for other tasks.
    pub fn term(&self) -> Term {
        self.term.clone()
    }

    /// True while this term lasts (see [`Term::is_current`]).
    pub fn is_current(&self) -> bool {
        self.term.is_current()
    }

    /// Resolves when the term ends (see [`Term::lost`]).
    pub async fn lost(&self) -> TermEnd {
        self.term.lost().await
    }

    /// Ends the term and waits until its election node is gone, so the next
    /// candidate can be elected at once.
    pub async fn resign(mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
        if let Some(finished) = self.finished.take() {
            let _ = finished.await;
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn leased(lease: Duration) -> (watch::Sender<Option<TermEnd>>, watch::Sender<Instant>, Term) {
        let (ended_tx, ended_rx) = watch::channel(None);
        let (valid_tx, valid_rx) = watch::channel(Instant::now() + lease);
        (ended_tx, valid_tx, Term::new(ended_rx, Some(valid_rx)))
    }

    #[test]
    fn leaderships_and_terms_can_be_shared_across_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Leadership>();
        shareable::<Term>();
        shareable::<SharedElection>();
    }

    #[tokio::test(start_paused = true)]
    async fn a_term_ends_when_its_lease_lapses() {
        let (_ended, _valid, term) = leased(Duration::from_secs(1));
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert!(term.is_current());
        assert_eq!(term.lost().await, TermEnd::CutOff);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert!(!term.is_current());
        assert_eq!(term.ended(), Some(TermEnd::CutOff));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewed_lease_keeps_the_term() {
        let (_ended, valid, term) = leased(Duration::from_secs(1));
        let start = Instant::now();
        let lost = tokio::spawn({
            let term = term.clone();
            async move { term.lost().await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        valid.send_replace(Instant::now() + Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(term.is_current(), "renewed at 0.5 s, so current until 1.5 s");
        assert_eq!(lost.await.unwrap(), TermEnd::CutOff);
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn lost_reports_why_the_term_ended() {
        let (ended, _valid, term) = leased(Duration::from_secs(60));
        let lost = tokio::spawn({
            let term = term.clone();
            async move { term.lost().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        ended.send_replace(Some(TermEnd::SessionEnded));
        assert_eq!(lost.await.unwrap(), TermEnd::SessionEnded);
        assert!(!term.is_current());
    }

    #[tokio::test(start_paused = true)]
    async fn a_term_whose_keeper_stopped_is_over() {
        let (ended, _valid, term) = leased(Duration::from_secs(60));
        drop(ended);
        assert!(!term.is_current());
        assert_eq!(term.lost().await, TermEnd::Stopped);
    }
}

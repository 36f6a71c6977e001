//! An in-process election: deterministic, no timers, no I/O, for testing the
//! logic above an [`Election`] with paused time.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{Election, ElectionError, Leadership, Term, TermEnd};

/// Candidates queue in campaign order; the first one leads until it resigns,
/// drops its [`Leadership`] or is deposed with [`MemoryElection::depose`].
/// Clones share one election.
#[derive(Clone)]
pub struct MemoryElection {
    state: Arc<watch::Sender<Queue>>,
    leader: Arc<watch::Sender<Option<Vec<u8>>>>,
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    /// `entries[0]` leads once its campaign has seen it.
    entries: Vec<Entry>,
}

struct Entry {
    id: u64,
    candidate: Vec<u8>,
    /// Set when the campaign has been granted its term.
    ended: Option<watch::Sender<Option<TermEnd>>>,
}

impl Default for MemoryElection {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryElection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryElection")
            .field("candidates", &self.state.borrow().entries.len())
            .finish()
    }
}

impl MemoryElection {
    /// An election nobody has joined yet.
    pub fn new() -> Self {
        Self {
            state: Arc::new(watch::channel(Queue::default()).0),
            leader: Arc::new(watch::channel(None).0),
        }
    }

    /// Ends the current leader's term as if its session had expired
    /// ([`TermEnd::Deposed`]) and elects the next candidate. False if nobody led.
    pub fn depose(&self) -> bool {
        let front = self.state.borrow().entries.first().map(|e| e.id);
        match front {
            Some(id) => {
                self.withdraw(id, TermEnd::Deposed);
                true
            }
            None => false,
        }
    }

    /// How many candidates (leader included) are in the election.
    pub fn candidates(&self) -> usize {
        self.state.borrow().entries.len()
    }

    fn withdraw(&self, id: u64, end: TermEnd) {
        self.state.send_if_modified(|q| {
            let Some(i) = q.entries.iter().position(|e| e.id == id) else {
                return false;
            };
            let entry = q.entries.remove(i);
            if let Some(ended) = entry.ended {
                ended.send_replace(Some(end));
            }
            true
        });
        self.publish_leader();
    }

    fn publish_leader(&self) {
        let now = self.state.borrow().entries.first().map(|e| e.candidate.clone());
        self.leader.send_if_modified(|l| {
            if *l == now {
                false
            } else {
                *l = now;
                true
            }
        });
    }
}

/// Withdraws a campaign that is dropped before it is granted its term.
struct Withdraw {
    election: MemoryElection,
    id: u64,
    armed: bool,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if self.armed {
            self.election.withdraw(self.id, TermEnd::Resigned);
        }
    }
}

impl Election for MemoryElection {
    fn campaign(&self, candidate: Vec<u8>) -> BoxFuture<'_, Result<Leadership, ElectionError>> {
        Box::pin(async move {
            let mut id = 0;
            self.state.send_modify(|q| {
                q.next_id += 1;
                id = q.next_id;
                q.entries.push(Entry {
                    id,
                    candidate: candidate.clone(),
                    ended: None,
                });
            });
            self.publish_leader();
            let mut withdraw = Withdraw {
                election: self.clone(),
                id,
                armed: true,
            };
            let mut queue = self.state.subscribe();
            loop {
                // The sender lives in `self`, so this cannot fail.
                let _ = queue
                    .wait_for(|q| q.entries.first().is_some_and(|e| e.id == id))
                    .await;
                let mut granted = None;
                self.state.send_if_modified(|q| match q.entries.first_mut() {
                    Some(e) if e.id == id => {
                        let (tx, rx) = watch::channel(None);
                        e.ended = Some(tx);
                        granted = Some(rx);
                        false
                    }
                    _ => false,
                });
                if let Some(ended) = granted {
                    withdraw.armed = false;
                    let election = self.clone();
                    return Ok(Leadership::new(
                        candidate,
                        None,
                        Term::new(ended, None),
                        Box::new(move || election.withdraw(id, TermEnd::Resigned)),
                        None,
                    ));
                }
            }
        })
    }

    fn leader(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, ElectionError>> {
        Box::pin(async move { Ok(self.leader.borrow().clone()) })
    }

    fn watch_leader(&self) -> watch::Receiver<Option<Vec<u8>>> {
        self.leader.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bytes(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_candidate_is_elected_at_once() {
        let election = MemoryElection::new();
        let leadership = election.campaign(bytes("a")).await.unwrap();
        assert!(leadership.is_current());
        assert_eq!(leadership.candidate(), b"a");
        assert_eq!(leadership.fence(), None);
        assert_eq!(election.leader().await.unwrap(), Some(bytes("a")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_candidate_waits_until_the_leader_resigns() {
        let election = MemoryElection::new();
        let first = election.campaign(bytes("a")).await.unwrap();
        let second = tokio::spawn({
            let election = election.clone();
            async move { election.campaign(bytes("b")).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!second.is_finished(), "b must wait while a leads");
        assert_eq!(election.leader().await.unwrap(), Some(bytes("a")));

        first.resign().await;
        let second = second.await.unwrap();
        assert!(second.is_current());
        assert_eq!(election.leader().await.unwrap(), Some(bytes("b")));
    }

    #[tokio::test(start_paused = true)]
    async fn deposing_the_leader_ends_its_term_and_elects_the_next() {
        let election = MemoryElection::new();
        let first = election.campaign(bytes("a")).await.unwrap();
        let term = first.term();
        let second = tokio::spawn({
            let election = election.clone();
            async move { election.campaign(bytes("b")).await.unwrap() }
        });
        tokio::task::yield_now().await;

        assert!(election.depose());
        assert_eq!(term.lost().await, TermEnd::Deposed);
        assert!(!first.is_current());
        assert_eq!(first.term().ended(), Some(TermEnd::Deposed));
        let second = second.await.unwrap();
        assert!(second.is_current());
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_leadership_resigns() {
        let election = MemoryElection::new();
        let first = election.campaign(bytes("a")).await.unwrap();
        let term = first.term();
        drop(first);
        assert_eq!(term.lost().await, TermEnd::Resigned);
        assert_eq!(election.leader().await.unwrap(), None);
        assert_eq!(election.candidates(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_campaign_leaves_the_queue() {
        let election = MemoryElection::new();
        let first = election.campaign(bytes("a")).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_secs(1), election.campaign(bytes("b"))).await;
        assert!(waiting.is_err(), "b cannot be elected while a leads");
        assert_eq!(election.candidates(), 1);
        first.resign().await;
        assert_eq!(election.leader().await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn watch_leader_follows_every_change() {
        let election = MemoryElection::new();
        let mut watch = election.watch_leader();
        assert_eq!(*watch.borrow_and_update(), None);

        let first = election.campaign(bytes("a")).await.unwrap();
        watch.changed().await.unwrap();
        assert_eq!(*watch.borrow_and_update(), Some(bytes("a")));

        let second = tokio::spawn({
            let election = election.clone();
            async move { election.campaign(bytes("b")).await.unwrap() }
        });
        tokio::task::yield_now().await;
        drop(first);
        watch.changed().await.unwrap();
        assert_eq!(*watch.borrow_and_update(), Some(bytes("b")));
        drop(second.await.unwrap());
        watch.changed().await.unwrap();
        assert_eq!(*watch.borrow_and_update(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_term_without_a_lease_lasts_until_it_ends() {
        let election = MemoryElection::new();
        let leadership = election.campaign(bytes("a")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(leadership.is_current());
        assert_eq!(leadership.term().ended(), None);
        let lost = tokio::time::timeout(Duration::from_secs(10), leadership.lost()).await;
        assert!(lost.is_err(), "lost must not fire while the term lasts");
    }
}

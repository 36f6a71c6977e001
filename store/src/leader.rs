//! Who leads, as followers see it: [`LeaderInfo`] (the candidate data every
//! HA process publishes, JSON `{"address":"HOST:PORT"}`) and [`follow`], the
//! current leader of `zk://hosts/path` (its election is `path/leader`).
//!
//! Standbys redirect callers with the same address: gRPC answers UNAVAILABLE
//! with [`LEADER_METADATA`] metadata, HTTP answers 307.

use std::time::Duration;

use tokio::sync::watch;

use crate::election::{Election, ElectionError};
use crate::zookeeper::{ZkElection, ZkOptions, ZkUrl, ZkUrlError};

/// The gRPC metadata key a standby sets to the leader's `HOST:PORT` when it
/// answers UNAVAILABLE.
pub const LEADER_METADATA: &str = "agora-leader";

/// The election's znode under a cluster's root path.
pub const LEADER_NODE: &str = "leader";

/// What a leader publishes about itself: where it serves (a master: gRPC and
/// HTTP on one port; a framework: its REST API).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaderInfo {
    /// `HOST:PORT` where the leader serves.
    pub address: String,
}

/// Candidate data that is not a [`LeaderInfo`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("leader data is not {{\"address\":\"HOST:PORT\"}}: {0}")]
pub struct LeaderInfoError(String);

impl LeaderInfo {
    /// A leader serving at `address` (`HOST:PORT`).
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
        }
    }

    /// The candidate bytes to campaign with: `{"address":"HOST:PORT"}`.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses candidate bytes; the address must be non-empty.
    pub fn from_bytes(bytes: &[u8]) -> Result<LeaderInfo, LeaderInfoError> {
        let info: LeaderInfo = serde_json::from_slice(bytes).map_err(|e| LeaderInfoError(e.to_string()))?;
        if info.address.trim().is_empty() {
            return Err(LeaderInfoError("address is empty".to_owned()));
        }
        Ok(info)
    }
}

/// Where followers find a service (`--master`): fixed addresses tried in
/// turn, or a ZooKeeper cluster whose leader they follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoints {
    /// `HOST:PORT` addresses, tried in turn (a standby's redirect is followed).
    Addresses(Vec<String>),
    /// `zk://hosts/path`: the leader of `path/leader`, followed as it changes.
    ZooKeeper(ZkUrl),
}

/// A `--master` value that names no usable endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointsError {
    /// Nothing but commas and blanks.
    #[error("no address given (host:port[,host:port...] or zk://host:2181/path)")]
    Empty,
    /// A `zk://` URL that does not parse.
    #[error(transparent)]
    ZkUrl(#[from] ZkUrlError),
}

impl Endpoints {
    /// Parses `host:port[,host:port...]` or `zk://h1:2181,h2:2181/path`
    /// (blank entries are skipped).
    pub fn parse(list: &str) -> Result<Endpoints, EndpointsError> {
        let list = list.trim();
        if list.starts_with("zk://") {
            return Ok(Endpoints::ZooKeeper(ZkUrl::parse(list)?));
        }
        let addresses: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if addresses.is_empty() {
            return Err(EndpointsError::Empty);
        }
        Ok(Endpoints::Addresses(addresses))
    }

    /// [`Endpoints::parse`] of the entries joined with commas: a flag split
    /// on commas (`zk://h1:2181` + `h2:2181/agora`) is put back together.
    pub fn from_list<S: AsRef<str>>(entries: &[S]) -> Result<Endpoints, EndpointsError> {
        let joined: Vec<&str> = entries.iter().map(AsRef::as_ref).collect();
        Endpoints::parse(&joined.join(","))
    }
}

impl std::fmt::Display for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoints::Addresses(addresses) => f.write_str(&addresses.join(",")),
            Endpoints::ZooKeeper(url) => write!(f, "{url}"),
        }
    }
}

/// The election URL of a cluster rooted at `url` (`zk://h/agora` →
/// `zk://h/agora/leader`).
pub fn leader_url(url: &ZkUrl) -> ZkUrl {
    ZkUrl {
        hosts: url.hosts.clone(),
        path: format!("{}/{LEADER_NODE}", url.path),
    }
}

/// The current leader of the cluster rooted at `url` (its election is
/// `url.child("leader")`), updated on every change; `None` while nobody leads.
/// Keeps the last leader seen while ZooKeeper is unreachable. Watching stops
/// when every receiver is dropped. Needs a tokio runtime.
pub fn follow(url: &ZkUrl, options: ZkOptions) -> watch::Receiver<Option<LeaderInfo>> {
    follow_election(ZkElection::new(&leader_url(url), options))
}

/// [`follow`] over any [`Election`] (e.g. a `MemoryElection` in tests).
/// Candidate data that is not a [`LeaderInfo`] counts as no leader.
pub fn follow_election<E: Election>(election: E) -> watch::Receiver<Option<LeaderInfo>> {
    let mut source = election.watch_leader();
    let (tx, rx) = watch::channel(decode(source.borrow_and_update().as_deref()));
    tokio::spawn(async move {
        // Owning the election keeps its watch alive.
        let _election = election;
        loop {
            tokio::select! {
                () = tx.closed() => return,
                changed = source.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = decode(source.borrow_and_update().as_deref());
                    tx.send_if_modified(|l| {
                        let changed = *l != now;
                        *l = now;
                        changed
                    });
                }
            }
        }
    });
    rx
}

/// Reads the current leader of the cluster rooted at `url` once (for
/// one-shot clients such as the CLI). `Ok(None)` if nobody leads.
pub async fn current_leader(url: &ZkUrl, options: ZkOptions) -> Result<Option<LeaderInfo>, ElectionError> {
    let timeout = options.session_timeout.max(Duration::from_secs(1)) * 5;
    let election = ZkElection::new(&leader_url(url), options);
    let read = tokio::time::timeout(timeout, election.leader())
        .await
        .map_err(|_| ElectionError::Zk(format!("no answer from ZooKeeper at {} in {timeout:?}", url)))??;
    Ok(decode(read.as_deref()))
}

fn decode(bytes: Option<&[u8]>) -> Option<LeaderInfo> {
    let bytes = bytes?;
    match LeaderInfo::from_bytes(bytes) {
        Ok(info) => Some(info),
        Err(e) => {
            tracing::warn!(error = %e, data = %String::from_utf8_lossy(bytes), "ignoring the leader's data");
            None
        }
    }
}

/// How many redirects a [`LeaderFinder`] follows at once, one after the
/// other, before its user should wait a backoff delay (two standbys naming
/// each other, or a leader that moved on while the redirect was in flight).
pub const MAX_REDIRECTS_IN_A_ROW: u32 = 3;

/// Where a [`LeaderFinder`] takes addresses from.
enum Source {
    Addresses { addresses: Vec<String>, next: usize },
    Leader(watch::Receiver<Option<LeaderInfo>>),
}

/// Picks the address for each connection attempt of a follower (an agent,
/// a framework's driver): the configured addresses in turn, or the leader
/// published in ZooKeeper, and first of all the leader a standby named.
pub struct LeaderFinder {
    source: Source,
    /// Where a standby sent us: tried next, before the source.
    redirect: Option<String>,
    redirects_in_row: u32,
}

impl LeaderFinder {
    /// Follows `endpoints` (for ZooKeeper: starts watching the leader; needs
    /// a tokio runtime).
    pub fn new(endpoints: Endpoints, zk: ZkOptions) -> Self {
        let source = match endpoints {
            Endpoints::Addresses(addresses) => Source::Addresses { addresses, next: 0 },
            Endpoints::ZooKeeper(url) => Source::Leader(follow(&url, zk)),
        };
        Self {
            source,
            redirect: None,
            redirects_in_row: 0,
        }
    }

    /// A finder following `leader` (e.g. from [`follow_election`]).
    pub fn following(leader: watch::Receiver<Option<LeaderInfo>>) -> Self {
        Self {
            source: Source::Leader(leader),
            redirect: None,
            redirects_in_row: 0,
        }
    }

    /// The address to try now: a pending redirect, else the next configured
    /// address, else the leader (waiting until there is one).
    pub async fn next(&mut self) -> String {
        if let Some(to) = self.redirect.take() {
            if let Source::Leader(leader) = &mut self.source {
                // The standby knows better than this view: it is not news.
                leader.borrow_and_update();
            }
            return to;
        }
        match &mut self.source {
            Source::Addresses { addresses, next } => {
                let i = *next % addresses.len().max(1);
                addresses.get(i).cloned().unwrap_or_default()
            }
            Source::Leader(leader) => {
                if leader.borrow().is_none() {
                    tracing::info!("no leader known in ZooKeeper yet; waiting for one");
                }
                let found = leader
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|l| l.clone());
                match found {
                    Some(info) => info.address,
                    // The follower stopped (runtime shutting down): wait forever.
                    None => std::future::pending().await,
                }
            }
        }
    }

    /// The attempt on `address` failed without a redirect: move on to the
    /// next configured address.
    pub fn failed(&mut self, address: &str) {
        if let Source::Addresses { addresses, next } = &mut self.source
            && addresses.get(*next % addresses.len().max(1)).map(String::as_str) == Some(address)
        {
            *next = next.wrapping_add(1);
        }
    }

    /// The standby at `from` named `leader`: `leader` is tried next, and
    /// after it the address following `from`. True if `leader` should be
    /// tried at once; false after [`MAX_REDIRECTS_IN_A_ROW`] (then wait a
    /// backoff delay first).
    pub fn redirected(&mut self, from: &str, leader: String) -> bool {
        self.failed(from);
        self.redirect = Some(leader);
        self.redirects_in_row += 1;
        self.redirects_in_row <= MAX_REDIRECTS_IN_A_ROW
    }

    /// A backoff delay passed or a subscription succeeded: redirects may be
    /// followed at once again.
    pub fn settled(&mut self) {
        self.redirects_in_row = 0;
    }

    /// Resolves when a leader other than `current` is elected after the
    /// finder last looked (in [`LeaderFinder::next`] or here); never for a
    /// fixed list of addresses. A leader the finder already handed out does
    /// not count, so a redirect past a stale view is not undone.
    pub async fn leader_moved_from(&mut self, current: &str) {
        match &mut self.source {
            Source::Leader(leader) => loop {
                if leader.changed().await.is_err() {
                    // The follower stopped (runtime shutting down).
                    return std::future::pending().await;
                }
                let moved = leader
                    .borrow_and_update()
                    .as_ref()
                    .is_some_and(|info| info.address != current);
                if moved {
                    return;
                }
            },
            Source::Addresses { .. } => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryElection;

    fn finder(addresses: &[&str]) -> LeaderFinder {
        LeaderFinder::new(
            Endpoints::Addresses(addresses.iter().map(|a| (*a).to_owned()).collect()),
            ZkOptions::default(),
        )
    }

    #[tokio::test]
    async fn addresses_are_tried_in_turn() {
        let mut masters = finder(&["a:1", "b:2"]);
        let first = masters.next().await;
        assert_eq!(first, "a:1");
        masters.failed(&first);
        let second = masters.next().await;
        assert_eq!(second, "b:2");
        masters.failed(&second);
        assert_eq!(masters.next().await, "a:1");
    }

    #[tokio::test]
    async fn a_redirect_is_tried_next_then_the_turn_goes_on() {
        let mut masters = finder(&["a:1", "b:2", "c:3"]);
        let first = masters.next().await;
        assert_eq!(first, "a:1");
        assert!(masters.redirected(&first, "c:3".to_owned()));
        assert_eq!(masters.next().await, "c:3");
        // The standby is not tried again first, nor is an address skipped.
        masters.failed("c:3");
        assert_eq!(masters.next().await, "b:2");
    }

    #[tokio::test]
    async fn redirects_in_a_row_are_bounded_until_settled() {
        let mut masters = finder(&["a:1", "b:2"]);
        for _ in 0..MAX_REDIRECTS_IN_A_ROW {
            let from = masters.next().await;
            assert!(masters.redirected(&from, "b:2".to_owned()));
        }
        assert!(
            !masters.redirected("b:2", "a:1".to_owned()),
            "a loop of redirects must back off"
        );
        masters.settled();
        assert!(masters.redirected("a:1", "b:2".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_finder_waits_for_a_leader_and_sees_it_move() {
        let election = MemoryElection::new();
        let mut masters = LeaderFinder::following(follow_election(election.clone()));
        let waiting = tokio::time::timeout(Duration::from_secs(60), masters.next()).await;
        assert!(waiting.is_err(), "no leader yet, so no address");
        let _a = election
            .campaign(LeaderInfo::new("a:1").to_bytes())
            .await
            .expect("a");
        assert_eq!(masters.next().await, "a:1");
        let not_moved = tokio::time::timeout(Duration::from_secs(60), masters.leader_moved_from("a:1")).await;
        assert!(not_moved.is_err(), "a:1 still leads");
        assert!(masters.redirected("a:1", "b:2".to_owned()));
        assert_eq!(
            masters.next().await,
            "b:2",
            "a redirect goes first, even with ZooKeeper"
        );
        assert_eq!(masters.next().await, "a:1");
        election.depose();
        let _b = election
            .campaign(LeaderInfo::new("b:2").to_bytes())
            .await
            .expect("b");
        masters.leader_moved_from("a:1").await;
        assert_eq!(masters.next().await, "b:2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_redirect_past_a_stale_view_of_the_leader_is_kept() {
        let election = MemoryElection::new();
        let mut masters = LeaderFinder::following(follow_election(election.clone()));
        let _a = election
            .campaign(LeaderInfo::new("a:1").to_bytes())
            .await
            .expect("a");
        assert_eq!(masters.next().await, "a:1");
        // a:1 already stepped down and names b:2, before ZooKeeper says so.
        assert!(masters.redirected("a:1", "b:2".to_owned()));
        assert_eq!(masters.next().await, "b:2");
        let stays = tokio::time::timeout(Duration::from_secs(60), masters.leader_moved_from("b:2")).await;
        assert!(stays.is_err(), "the stale a:1 must not pull the follower back");
        election.depose();
        let _b = election
            .campaign(LeaderInfo::new("b:2").to_bytes())
            .await
            .expect("b");
        let stays = tokio::time::timeout(Duration::from_secs(60), masters.leader_moved_from("b:2")).await;
        assert!(stays.is_err(), "b:2 being elected is no move away from b:2");
    }

    #[test]
    fn leader_info_is_the_address_as_json() {
        let info = LeaderInfo::new("10.0.0.1:5050");
        assert_eq!(info.to_bytes(), br#"{"address":"10.0.0.1:5050"}"#.to_vec());
        assert_eq!(LeaderInfo::from_bytes(&info.to_bytes()), Ok(info));
    }

    #[test]
    fn leader_info_ignores_unknown_fields() {
        let info = LeaderInfo::from_bytes(br#"{"address":"h:1","version":"x"}"#).expect("parse");
        assert_eq!(info.address, "h:1");
    }

    #[test]
    fn leader_info_refuses_other_data() {
        assert!(LeaderInfo::from_bytes(b"h:1").is_err());
        assert!(LeaderInfo::from_bytes(br#"{"host":"h:1"}"#).is_err());
        let empty = LeaderInfo::from_bytes(br#"{"address":""}"#).expect_err("empty address");
        assert!(empty.to_string().contains("address"), "{empty}");
    }

    #[test]
    fn endpoints_are_addresses_or_one_zk_url() {
        assert_eq!(
            Endpoints::parse(" a:1, b:2,,").expect("list"),
            Endpoints::Addresses(vec!["a:1".into(), "b:2".into()])
        );
        let zk = Endpoints::parse("zk://h1:2181,h2:2181/agora").expect("zk");
        assert_eq!(
            zk,
            Endpoints::ZooKeeper(ZkUrl::parse("zk://h1:2181,h2:2181/agora").expect("url"))
        );
        assert_eq!(zk.to_string(), "zk://h1:2181,h2:2181/agora");
    }

    #[test]
    fn endpoints_rejoin_a_zk_url_split_on_commas() {
        let split = ["zk://h1:2181".to_owned(), "h2:2181/agora".to_owned()];
        assert_eq!(
            Endpoints::from_list(&split),
            Endpoints::parse("zk://h1:2181,h2:2181/agora")
        );
    }

    #[test]
    fn endpoints_refuse_nothing_and_bad_zk_urls() {
        assert_eq!(Endpoints::parse(" , "), Err(EndpointsError::Empty));
        let bad = Endpoints::parse("zk://h1:2181").expect_err("no path");
        assert!(bad.to_string().contains("path"), "{bad}");
    }

    #[test]
    fn the_election_lives_under_leader() {
        let url = ZkUrl::parse("zk://a:1,b:2/agora").expect("url");
        let leader = leader_url(&url);
        assert_eq!(leader.path, "/agora/leader");
        assert_eq!(leader.hosts, url.hosts);
        assert_eq!(Ok(leader), url.child("leader"));
    }

    #[tokio::test(start_paused = true)]
    async fn follow_election_reports_each_leader_and_the_gaps() {
        let election = MemoryElection::new();
        let mut follower = follow_election(election.clone());
        assert_eq!(*follower.borrow_and_update(), None);
        let a = election
            .campaign(LeaderInfo::new("a:1").to_bytes())
            .await
            .expect("a");
        follower.changed().await.expect("a elected");
        assert_eq!(*follower.borrow_and_update(), Some(LeaderInfo::new("a:1")));
        let b = tokio::spawn({
            let election = election.clone();
            async move { election.campaign(LeaderInfo::new("b:2").to_bytes()).await }
        });
        drop(a);
        follower
            .wait_for(|l| *l == Some(LeaderInfo::new("b:2")))
            .await
            .expect("b elected");
        drop(b);
    }

    #[tokio::test(start_paused = true)]
    async fn follow_election_treats_foreign_data_as_no_leader() {
        let election = MemoryElection::new();
        let follower = follow_election(election.clone());
        let _foreign = election.campaign(b"not json".to_vec()).await.expect("elected");
        tokio::task::yield_now().await;
        assert_eq!(*follower.borrow(), None);
    }

    #[tokio::test]
    async fn follow_tracks_the_leader_in_a_real_zookeeper() {
        let server = crate::zk_server::ZkServer::launch()
            .await
            .expect("start ZooKeeper");
        let root = ZkUrl::parse(&server.url("/agora")).expect("url");
        let wait = |rx: &mut watch::Receiver<Option<LeaderInfo>>, want: Option<LeaderInfo>| {
            let mut rx = rx.clone();
            async move {
                let seen = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|l| *l == want)).await;
                assert!(seen.is_ok(), "follow() never showed {want:?}");
            }
        };
        let mut follower = follow(&root, ZkOptions::default());
        assert_eq!(
            current_leader(&root, ZkOptions::default()).await.expect("read"),
            None
        );
        let a = ZkElection::new(&leader_url(&root), ZkOptions::default());
        let b = ZkElection::new(&leader_url(&root), ZkOptions::default());
        let a_term = a
            .campaign(LeaderInfo::new("a:1").to_bytes())
            .await
            .expect("a elected");
        wait(&mut follower, Some(LeaderInfo::new("a:1"))).await;
        assert_eq!(
            current_leader(&root, ZkOptions::default()).await.expect("read"),
            Some(LeaderInfo::new("a:1"))
        );
        let b_campaign = tokio::spawn(async move {
            let term = b.campaign(LeaderInfo::new("b:2").to_bytes()).await;
            (b, term)
        });
        a_term.resign().await;
        wait(&mut follower, Some(LeaderInfo::new("b:2"))).await;
        let (_b, b_term) = b_campaign.await.expect("join");
        b_term.expect("b elected").resign().await;
        wait(&mut follower, None).await;
    }
}

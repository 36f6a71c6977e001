//! Tests against a real ZooKeeper: every test starts its own server.
//!
//! Timing tests print what they measure (`cargo test -- --nocapture`).

use std::time::Duration;

use tokio::time::Instant;
use zookeeper_client as zk;

use super::*;
use crate::election::{Election, TermEnd};
use crate::zk_server::{ZkProxy, ZkServer};
use crate::{Store, StoreError, Write};

/// The session timeout every test uses (the recommended default).
const T: Duration = Duration::from_secs(2);

async fn server() -> ZkServer {
    ZkServer::launch().await.expect("start ZooKeeper")
}

fn url(s: &str) -> ZkUrl {
    ZkUrl::parse(s).expect("zk url")
}

async fn store(server: &ZkServer) -> ZkStore {
    ZkStore::connect(&url(&server.url("/agora/state")), ZkOptions::default())
        .await
        .expect("connect store")
}

async fn raw_client(server: &ZkServer) -> zk::Client {
    zk::Client::connect(&server.connect_string())
        .await
        .expect("raw client")
}

fn election(zk_url: &str) -> ZkElection {
    ZkElection::new(&url(zk_url), ZkOptions::default())
}

/// Waits until `dir` holds `n` candidates' nodes.
async fn wait_for_candidates(client: &zk::Client, dir: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let count = client.list_children(dir).await.map(|c| c.len()).unwrap_or(0);
        if count == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{dir} has {count} candidates, want {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_leader(watch: &mut tokio::sync::watch::Receiver<Option<Vec<u8>>>, want: Option<&[u8]>) {
    let waited =
        tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|l| l.as_deref() == want)).await;
    assert!(waited.is_ok(), "watch_leader never showed {want:?}");
}

#[tokio::test]
async fn zk_store_meets_the_store_contract() {
    let server = server().await;
    crate::contract::check(&store(&server).await).await;
}

#[tokio::test]
async fn zk_store_keeps_a_value_and_deeper_keys_under_one_key() {
    let server = server().await;
    let store = store(&server).await;
    store
        .write(vec![
            Write::put("/a", Vec::new()),
            Write::put("/a/b", b"x".to_vec()),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.get("/a").await.unwrap(),
        Some(Vec::new()),
        "an empty value is a value"
    );
    assert_eq!(
        store.list("/a").await.unwrap(),
        vec![("/a".to_owned(), Vec::new()), ("/a/b".to_owned(), b"x".to_vec())]
    );

    store.write(vec![Write::delete("/a")]).await.unwrap();
    assert_eq!(store.get("/a").await.unwrap(), None);
    assert_eq!(
        store.list("/").await.unwrap(),
        vec![("/a/b".to_owned(), b"x".to_vec())]
    );

    store.write(vec![Write::delete("/a/b")]).await.unwrap();
    let raw = raw_client(&server).await;
    assert_eq!(
        raw.check_stat("/agora/state/a").await.unwrap(),
        None,
        "a parent left with neither value nor children is pruned"
    );
}

#[tokio::test]
async fn zk_store_lists_by_any_prefix() {
    let server = server().await;
    let store = store(&server).await;
    store
        .write(vec![
            Write::put("/apps/web", b"1".to_vec()),
            Write::put("/apps/worker/v1", b"2".to_vec()),
            Write::put("/apps2/x", b"3".to_vec()),
            Write::put("/b", b"4".to_vec()),
        ])
        .await
        .unwrap();
    let keys = |entries: Vec<(String, Vec<u8>)>| entries.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(store.list("/apps/w").await.unwrap()),
        vec!["/apps/web", "/apps/worker/v1"]
    );
    assert_eq!(
        keys(store.list("/apps").await.unwrap()),
        vec!["/apps/web", "/apps/worker/v1", "/apps2/x"]
    );
    assert_eq!(
        keys(store.list("/apps/").await.unwrap()),
        vec!["/apps/web", "/apps/worker/v1"]
    );
    assert_eq!(keys(store.list("/").await.unwrap()).len(), 4);
    assert!(store.list("/nothing/").await.unwrap().is_empty());
}

#[tokio::test]
async fn zk_store_batch_with_a_failing_op_leaves_nothing() {
    let server = server().await;
    let store = store(&server).await;
    store
        .write(vec![Write::put("/keep", b"k".to_vec())])
        .await
        .unwrap();
    // An ephemeral znode cannot have children: putting under it fails in the server.
    let raw = raw_client(&server).await;
    raw.create(
        "/agora/state/eph",
        b"",
        &zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all()),
    )
    .await
    .unwrap();

    let result = store
        .write(vec![
            Write::put("/a/1", b"one".to_vec()),
            Write::delete("/keep"),
            Write::put("/eph/child", b"x".to_vec()),
        ])
        .await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(store.get("/a/1").await.unwrap(), None);
    assert_eq!(store.get("/keep").await.unwrap(), Some(b"k".to_vec()));
    assert_eq!(
        raw.check_stat("/agora/state/a").await.unwrap(),
        None,
        "no parent created either"
    );
}

#[tokio::test]
async fn zk_store_refuses_bad_keys_naming_them() {
    let server = server().await;
    let store = store(&server).await;
    for key in ["a/b", "/a//b", "/a/", "/", "/a/../b", "/a\u{0}"] {
        match store
            .write(vec![
                Write::put("/ok", b"".to_vec()),
                Write::put(key, b"v".to_vec()),
            ])
            .await
        {
            Err(StoreError::InvalidKey { key: named, .. }) => assert_eq!(named, key),
            other => panic!("{key:?}: {other:?}"),
        }
        assert!(
            matches!(store.get(key).await, Err(StoreError::InvalidKey { .. })),
            "{key:?}"
        );
    }
    assert!(matches!(
        store.list("a").await,
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(
        store.list("/").await.unwrap().is_empty(),
        "nothing of a refused batch is written"
    );
}

#[tokio::test]
async fn zk_store_rides_out_a_server_restart_and_an_expired_session() {
    let mut server = server().await;
    let store = store(&server).await;
    store
        .write(vec![Write::put("/k", b"before".to_vec())])
        .await
        .unwrap();

    server.stop().await;
    // Longer than the client's own expiry (1.4 × T): the session is gone.
    tokio::time::sleep(T * 2).await;
    server.start().await.unwrap();

    assert_eq!(store.get("/k").await.unwrap(), Some(b"before".to_vec()));
    store
        .write(vec![Write::put("/k", b"after".to_vec())])
        .await
        .unwrap();
    assert_eq!(store.get("/k").await.unwrap(), Some(b"after".to_vec()));
}

#[tokio::test]
async fn two_candidates_elect_exactly_one_leader_and_the_other_sees_its_address() {
    let server = server().await;
    let dir = server.url("/agora/leader");
    let (elected_tx, mut elected) = tokio::sync::mpsc::unbounded_channel();
    let mut elections = Vec::new();
    for address in ["10.0.0.1:5050", "10.0.0.2:5050"] {
        let election = std::sync::Arc::new(election(&dir));
        elections.push(election.clone());
        let elected_tx = elected_tx.clone();
        tokio::spawn(async move {
            let leadership = election.campaign(address.as_bytes().to_vec()).await.unwrap();
            let _ = elected_tx.send(leadership);
        });
    }
    let winner = elected.recv().await.unwrap();
    let winner_address = winner.candidate().to_vec();
    assert!(winner.is_current());
    for election in &elections {
        wait_for_leader(&mut election.watch_leader(), Some(&winner_address)).await;
        assert_eq!(election.leader().await.unwrap(), Some(winner_address.clone()));
    }
    let second = tokio::time::timeout(Duration::from_secs(1), elected.recv()).await;
    assert!(second.is_err(), "two leaders at once");

    let resigned = Instant::now();
    winner.resign().await;
    let next = elected.recv().await.unwrap();
    eprintln!("MEASURE handover after resign: {:?}", resigned.elapsed());
    assert_ne!(next.candidate(), &winner_address[..]);
    for election in &elections {
        wait_for_leader(&mut election.watch_leader(), Some(next.candidate())).await;
    }
}

#[tokio::test]
async fn a_deleted_election_node_ends_the_term() {
    let server = server().await;
    let a = election(&server.url("/agora/leader"));
    let leadership = a.campaign(b"a".to_vec()).await.unwrap();
    let node = leadership.fence().expect("zk terms have fences").path.clone();
    raw_client(&server).await.delete(&node, None).await.unwrap();
    let end = tokio::time::timeout(T, leadership.lost())
        .await
        .expect("lost fires");
    assert_eq!(end, TermEnd::NodeDeleted);
    assert!(!leadership.is_current());
}

#[tokio::test]
async fn fenced_write_by_a_deposed_leader_fails() {
    let server = server().await;
    let dir = server.url("/agora/leader");
    let (a, b) = (election(&dir), election(&dir));
    let store = store(&server).await;

    let leader_a = a.campaign(b"a".to_vec()).await.unwrap();
    let store_a = store.for_term(&leader_a);
    store_a
        .write(vec![Write::put("/owner", b"a".to_vec())])
        .await
        .unwrap();

    let campaign_b = tokio::spawn(async move {
        let leadership = b.campaign(b"b".to_vec()).await.unwrap();
        (b, leadership)
    });
    let raw = raw_client(&server).await;
    wait_for_candidates(&raw, "/agora/leader", 2).await;
    drop(leader_a); // resigns in the background; B takes over
    let (_b, leader_b) = campaign_b.await.unwrap();

    for batch in [
        vec![Write::put("/owner", b"stale a".to_vec())],
        vec![Write::put("/new/deep/key", b"x".to_vec())],
        vec![Write::delete("/owner")],
        vec![],
    ] {
        match store_a.write(batch.clone()).await {
            Err(StoreError::Fenced(_)) => {}
            other => panic!("deposed leader's write {batch:?}: {other:?}"),
        }
    }
    assert_eq!(
        store.get("/owner").await.unwrap(),
        Some(b"a".to_vec()),
        "nothing landed"
    );
    assert_eq!(store.get("/new/deep/key").await.unwrap(), None);

    let store_b = store.for_term(&leader_b);
    store_b
        .write(vec![Write::put("/owner", b"b".to_vec())])
        .await
        .unwrap();
    assert_eq!(store_b.get("/owner").await.unwrap(), Some(b"b".to_vec()));
}

/// Records when a term ends.
fn when_lost(leadership: &crate::Leadership) -> tokio::task::JoinHandle<(TermEnd, Instant)> {
    let term = leadership.term();
    tokio::spawn(async move {
        let end = term.lost().await;
        (end, Instant::now())
    })
}

#[tokio::test]
async fn a_leader_cut_off_from_zookeeper_steps_down_before_the_standby_is_elected() {
    let server = server().await;
    let proxy = ZkProxy::start(&server.connect_string()).await.unwrap();
    let a = election(&proxy.url("/agora/leader"));
    let b = election(&server.url("/agora/leader"));

    let leader_a = a.campaign(b"a".to_vec()).await.unwrap();
    let lost_a = when_lost(&leader_a);
    let campaign_b = tokio::spawn(async move {
        let leadership = b.campaign(b"b".to_vec()).await.unwrap();
        (Instant::now(), b, leadership)
    });
    wait_for_candidates(&raw_client(&server).await, "/agora/leader", 2).await;

    let cut = Instant::now();
    proxy.cut();
    let (end, lost_at) = lost_a.await.unwrap();
    let (elected_at, b, leader_b) = campaign_b.await.unwrap();
    eprintln!(
        "MEASURE cut-off leader: stepped down after {:?}, standby elected after {:?} (T = {T:?})",
        lost_at - cut,
        elected_at - cut
    );
    assert_eq!(end, TermEnd::CutOff);
    assert!(!leader_a.is_current());
    assert!(lost_at - cut <= T, "step-down took {:?}", lost_at - cut);
    assert!(
        lost_at < elected_at,
        "two leaders at once: A lost at +{:?}, B elected at +{:?}",
        lost_at - cut,
        elected_at - cut
    );
    assert!(
        elected_at - cut < T * 3,
        "standby elected only after {:?}",
        elected_at - cut
    );
    assert!(leader_b.is_current());
    let mut view = b.watch_leader();
    wait_for_leader(&mut view, Some(b"b")).await;
}

#[tokio::test]
async fn the_leader_steps_down_when_the_server_is_paused_past_the_session_timeout() {
    let server = server().await;
    let a = election(&server.url("/agora/leader"));
    let leader_a = a.campaign(b"a".to_vec()).await.unwrap();
    let lost_a = when_lost(&leader_a);

    let paused = Instant::now();
    server.pause().unwrap();
    let lost = tokio::time::timeout(T + Duration::from_millis(500), lost_a).await;
    let measured = paused.elapsed();
    tokio::time::sleep(T.saturating_sub(measured)).await; // stay paused past the timeout
    server.resume().unwrap();
    let (end, lost_at) = lost.expect("the leader must step down within T + 0.5 s").unwrap();
    eprintln!(
        "MEASURE server paused: leader stepped down after {:?} (T = {T:?})",
        lost_at - paused
    );
    assert_eq!(end, TermEnd::CutOff);
    assert!(!leader_a.is_current());

    // Once ZooKeeper is back, the former leader can be elected again.
    let again = tokio::time::timeout(T * 5, a.campaign(b"a".to_vec())).await;
    assert!(again.expect("elected again after resume").unwrap().is_current());
}

#[tokio::test]
async fn the_standby_takes_over_after_a_server_stop_and_restart() {
    let mut server = server().await;
    let a = election(&server.url("/agora/leader"));
    let b = election(&server.url("/agora/leader"));
    let leader_a = a.campaign(b"a".to_vec()).await.unwrap();
    let lost_a = when_lost(&leader_a);
    let campaign_b = tokio::spawn(async move {
        let leadership = b.campaign(b"b".to_vec()).await.unwrap();
        (Instant::now(), b, leadership)
    });
    wait_for_candidates(&raw_client(&server).await, "/agora/leader", 2).await;

    let stopped = Instant::now();
    server.stop().await;
    let (end, lost_at) = tokio::time::timeout(T, lost_a)
        .await
        .expect("steps down")
        .unwrap();
    assert_eq!(end, TermEnd::CutOff);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.start().await.unwrap();
    let restarted = Instant::now();

    let (elected_at, b, leader_b) = tokio::time::timeout(T * 5, campaign_b)
        .await
        .expect("standby elected after restart")
        .unwrap();
    eprintln!(
        "MEASURE server stop: leader stepped down after {:?}; standby elected {:?} after restart",
        lost_at - stopped,
        elected_at - restarted
    );
    assert!(leader_b.is_current());
    assert_eq!(b.leader().await.unwrap(), Some(b"b".to_vec()));
}

//! The driver finds the leading master: standbys' redirects (UNAVAILABLE
//! with `agora-leader` metadata) and the leader published in ZooKeeper.
//!
//! The masters are scripted stand-ins; the ZooKeeper tests campaign in a real
//! ZooKeeper themselves, publishing the stand-ins' addresses as HA masters do.

#![allow(clippy::unwrap_used)] // tests: panicking is the failure report

mod support;

use std::time::Duration;

use agora_sdk::{Driver, DriverConfig, SdkError, split_masters};
use agora_store::zk_server::ZkServer;
use agora_store::{Election, LeaderInfo, ZkElection, ZkOptions, ZkUrl};
use support::{FakeMaster, Seen, config, recorder};

/// A backoff far longer than any test waits: whatever happens within a
/// test's timeouts happened without waiting for a backoff delay.
fn without_backoff(mut cfg: DriverConfig) -> DriverConfig {
    cfg.backoff_min = Duration::from_secs(30);
    cfg.backoff_max = Duration::from_secs(60);
    cfg
}

fn subscribed(seen: Seen) -> agora_sdk::Subscribed {
    match seen {
        Seen::Subscribed(info) => info,
        other => panic!("expected Subscribed, got {other:?}"),
    }
}

#[tokio::test]
async fn standbys_answering_subscribe_send_the_driver_to_the_leader_at_once() {
    let leader = FakeMaster::start().await;
    let standby_1 = FakeMaster::start().await;
    let standby_2 = FakeMaster::start().await;
    standby_1.become_standby_of(leader.addr).await;
    standby_2.become_standby_of(leader.addr).await;
    let masters = [&standby_1, &standby_2, &leader]
        .iter()
        .map(|m| m.addr.to_string())
        .collect();
    let (scheduler, mut events) = recorder();
    let (driver, _run) = Driver::start(without_backoff(config(masters)), scheduler);

    let info = subscribed(events.next().await);
    assert_eq!(info.master_address, leader.addr.to_string());
    assert_eq!(driver.master(), Some(leader.addr.to_string()));
    assert_eq!(standby_1.subscriptions().await.len(), 1);
    assert!(
        standby_2.subscriptions().await.is_empty(),
        "the first standby named the leader"
    );
}

#[tokio::test]
async fn a_call_answered_by_a_standby_fails_retryably_and_moves_the_driver_to_the_leader() {
    let old = FakeMaster::start().await;
    let new = FakeMaster::start().await;
    let masters = vec![old.addr.to_string(), new.addr.to_string()];
    let (scheduler, mut events) = recorder();
    let (driver, _run) = Driver::start(without_backoff(config(masters)), scheduler);
    let first = subscribed(events.next().await);
    assert_eq!(first.master_address, old.addr.to_string());

    old.become_standby_of(new.addr).await;
    let err = driver.revive(Vec::new()).await.unwrap_err();
    assert_eq!(err, SdkError::NotConnected);
    assert!(err.is_retryable());

    assert_eq!(events.next().await, Seen::Disconnected);
    let second = subscribed(events.next().await);
    assert_eq!(second.master_address, new.addr.to_string());
    assert!(second.resubscribed);
    assert_eq!(second.framework_id, first.framework_id);
    let subs = new.subscriptions().await;
    assert_eq!(
        subs[0].framework.as_ref().map(|f| f.id.as_str()),
        Some(first.framework_id.as_str())
    );
}

#[tokio::test]
async fn standbys_naming_each_other_make_the_driver_back_off_not_spin() {
    let a = FakeMaster::start().await;
    let b = FakeMaster::start().await;
    a.become_standby_of(b.addr).await;
    b.become_standby_of(a.addr).await;
    let (scheduler, _events) = recorder();
    let (driver, _run) = Driver::start(without_backoff(config(vec![a.addr.to_string()])), scheduler);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attempts = a.subscriptions().await.len() + b.subscriptions().await.len();
    assert!(
        (2..=5).contains(&attempts),
        "{attempts} attempts: a few redirects at once, then a backoff"
    );
    assert!(!driver.is_connected());
}

#[tokio::test]
async fn a_bad_zk_url_is_a_configuration_error_naming_the_part() {
    let (scheduler, _events) = recorder();
    let result = agora_sdk::run(config(split_masters("zk://127.0.0.1:2181")), scheduler).await;
    let Err(SdkError::Config(message)) = result else {
        panic!("expected a configuration error, got {result:?}")
    };
    assert!(message.contains("path"), "{message}");
}

/// A candidate campaigning in the test's ZooKeeper for `address`.
async fn elect(root: &ZkUrl, address: std::net::SocketAddr) -> (ZkElection, agora_store::Leadership) {
    let election = ZkElection::new(&root.child("leader").unwrap(), ZkOptions::default());
    let term = election
        .campaign(LeaderInfo::new(address.to_string()).to_bytes())
        .await
        .unwrap();
    (election, term)
}

#[tokio::test]
async fn the_driver_follows_the_leader_published_in_zookeeper() {
    let zk = ZkServer::launch().await.unwrap();
    let root = ZkUrl::parse(&zk.url("/agora")).unwrap();
    let a = FakeMaster::start().await;
    let b = FakeMaster::start().await;
    let (scheduler, mut events) = recorder();
    let (driver, _run) = Driver::start(
        without_backoff(config(split_masters(&root.to_string()))),
        scheduler,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !driver.is_connected(),
        "nobody leads yet, so there is nobody to subscribe with"
    );

    let (_a_election, a_term) = elect(&root, a.addr).await;
    let first = subscribed(events.next().await);
    assert_eq!(first.master_address, a.addr.to_string());

    let b_campaign = tokio::spawn({
        let root = root.clone();
        async move { elect(&root, b.addr).await }
    });
    a_term.resign().await;
    assert_eq!(events.next().await, Seen::Disconnected);
    let second = subscribed(events.next().await);
    assert_eq!(second.master_address, b.addr.to_string());
    assert!(second.resubscribed);
    assert_eq!(second.framework_id, first.framework_id);
    let _b = b_campaign.await.unwrap();
    assert_eq!(
        a.subscriptions().await.len(),
        1,
        "the driver never went back to a"
    );
}

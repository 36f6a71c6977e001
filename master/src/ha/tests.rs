//! The candidacy with an in-memory election and store, in paused time.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use agora_store::{Election, Entries, MemoryElection, MemoryStore, Store, Term, Write};
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use tokio::task::JoinHandle;
use tonic::codegen::Service;

use super::*;

/// Every term gets the same store.
struct SameStore(SharedStore);

impl TermStores for SameStore {
    fn for_term<'a>(&'a self, _: &'a Leadership) -> BoxFuture<'a, Result<SharedStore, StoreError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// A registry whose every write is refused as a deposed leader's would be.
struct FencedOff;

impl Store for FencedOff {
    fn get<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async { Ok(None) })
    }
    fn list<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Entries, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn write(&self, _: Vec<Write>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Err(StoreError::Fenced("test".into())) })
    }
}

struct Running {
    role: watch::Receiver<Role>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn start(
    election: &MemoryElection,
    address: &str,
    quorum: u32,
    candidates: watch::Receiver<usize>,
    store: SharedStore,
) -> Running {
    let addr: SocketAddr = address.parse().unwrap();
    let mut config = MasterConfig::new(addr, "unused".into());
    config.quorum = quorum;
    let candidacy = Candidacy {
        config,
        address: address.to_owned(),
        election: Arc::new(election.clone()),
        candidates,
        stores: Arc::new(SameStore(store)),
    };
    let (role_tx, role) = watch::channel(Role::Standby);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(candidacy.run(role_tx, shutdown_rx));
    Running { role, shutdown, task }
}

/// The term and routes while leading.
fn leading(role: &Role) -> Option<(Term, Router)> {
    match role {
        Role::Leading { term, routes } => Some((term.clone(), routes.clone())),
        _ => None,
    }
}

async fn wait_for(running: &mut Running, what: &str, pred: impl FnMut(&Role) -> bool) {
    let seen = tokio::time::timeout(Duration::from_secs(60), running.role.wait_for(pred)).await;
    assert!(seen.is_ok(), "never saw: {what}");
}

async fn wait_leading(running: &mut Running) -> (Term, Router) {
    wait_for(running, "leading", |r| leading(r).is_some()).await;
    leading(&running.role.borrow()).unwrap()
}

async fn send(routes: &Router, method: &str, uri: &str, body: &str) -> Response {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    routes
        .clone()
        .call(request)
        .await
        .unwrap_or_else(|never| match never {})
}

async fn json_body(response: Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn memory() -> SharedStore {
    Arc::new(MemoryStore::new())
}

#[tokio::test(start_paused = true)]
async fn a_lone_master_with_quorum_two_is_elected_but_never_leads() {
    let election = MemoryElection::new();
    let (count, candidates) = watch::channel(1);
    let mut a = start(&election, "10.0.0.1:5050", 2, candidates, memory());
    wait_for(&mut a, "elected, waiting", |r| matches!(r, Role::Elected { .. })).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    match &*a.role.borrow() {
        Role::Elected { status } => assert!(status.contains("waiting for 2 masters"), "{status}"),
        _ => panic!("a master without a quorum must not lead"),
    }
    count.send_replace(2);
    let _leading = wait_leading(&mut a).await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_steps_down_when_fewer_masters_than_the_quorum_remain() {
    let election = MemoryElection::new();
    let (count, candidates) = watch::channel(2);
    let mut a = start(&election, "10.0.0.1:5050", 2, candidates, memory());
    let (term, _) = wait_leading(&mut a).await;
    count.send_replace(1);
    wait_for(&mut a, "waiting for a quorum again", |r| {
        matches!(r, Role::Elected { .. })
    })
    .await;
    assert!(!term.is_current(), "the term it led is over");
}

#[tokio::test(start_paused = true)]
async fn a_deposed_leader_stops_its_actor_and_campaigns_again_as_a_standby() {
    let election = MemoryElection::new();
    let store = memory();
    let (_count, candidates) = watch::channel(2);
    let mut a = start(&election, "10.0.0.1:5050", 1, candidates.clone(), store.clone());
    let (_, a_routes) = wait_leading(&mut a).await;
    let mut b = start(&election, "10.0.0.2:5050", 1, candidates, store);
    wait_for(&mut b, "b campaigning", |r| matches!(r, Role::Standby)).await;
    assert_eq!(
        send(&a_routes, "GET", "/state", "").await.status(),
        StatusCode::OK
    );

    assert!(election.depose());
    let _leading = wait_leading(&mut b).await;
    wait_for(&mut a, "a back to standby", |r| matches!(r, Role::Standby)).await;
    // A's actor of that term is gone: its routes serve nothing any more.
    assert_eq!(
        send(&a_routes, "GET", "/state", "").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    tokio::task::yield_now().await;
    assert_eq!(election.candidates(), 2, "a campaigns again");
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_reads_the_registry_the_old_one_wrote() {
    let election = MemoryElection::new();
    let store = memory();
    let (_count, candidates) = watch::channel(2);
    let mut a = start(&election, "10.0.0.1:5050", 1, candidates.clone(), store.clone());
    let (_, a_routes) = wait_leading(&mut a).await;
    let mut b = start(&election, "10.0.0.2:5050", 1, candidates, store);
    let put = send(&a_routes, "PUT", "/weights/web", r#"{"weight": 3}"#).await;
    assert_eq!(put.status(), StatusCode::OK);

    a.shutdown.send_replace(true);
    let (_, b_routes) = wait_leading(&mut b).await;
    let weights = json_body(send(&b_routes, "GET", "/weights", "").await).await;
    assert!(weights.to_string().contains("web"), "{weights}");
    a.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_fenced_registry_write_makes_the_leader_step_down() {
    let election = MemoryElection::new();
    let (_count, candidates) = watch::channel(1);
    let mut a = start(&election, "10.0.0.1:5050", 1, candidates, Arc::new(FencedOff));
    let (term, routes) = wait_leading(&mut a).await;
    let put = send(&routes, "PUT", "/weights/web", r#"{"weight": 3}"#).await;
    assert_eq!(put.status(), StatusCode::SERVICE_UNAVAILABLE, "not acknowledged");
    tokio::time::timeout(Duration::from_secs(60), term.lost())
        .await
        .unwrap();
    // It campaigned again and, alone, leads a new term with a new actor.
    let (new_term, _) = wait_leading(&mut a).await;
    assert!(new_term.is_current() && !term.is_current());
}

#[tokio::test(start_paused = true)]
async fn shutting_down_the_leader_hands_over_at_once() {
    let election = MemoryElection::new();
    let store = memory();
    let (_count, candidates) = watch::channel(2);
    let mut a = start(&election, "10.0.0.1:5050", 1, candidates.clone(), store.clone());
    let _leading = wait_leading(&mut a).await;
    let mut b = start(&election, "10.0.0.2:5050", 1, candidates, store);
    let started = Instant::now();
    a.shutdown.send_replace(true);
    let _leading = wait_leading(&mut b).await;
    assert!(started.elapsed() < Duration::from_millis(100));
    a.task.await.unwrap();
    assert!(matches!(*a.role.borrow(), Role::Standby));
}

#[test]
fn quorum_must_be_at_least_one() {
    let err = check_quorum(0).unwrap_err();
    assert!(
        err.to_string().starts_with("--quorum: must be at least 1"),
        "{err}"
    );
    assert!(check_quorum(1).is_ok());
}

#[test]
fn the_advertised_address_defaults_to_the_listener_unless_it_is_a_wildcard() {
    let local: SocketAddr = "127.0.0.1:5050".parse().unwrap();
    assert_eq!(advertised_address(None, local).unwrap(), "127.0.0.1:5050");
    let wildcard: SocketAddr = "0.0.0.0:5050".parse().unwrap();
    let err = advertised_address(None, wildcard).unwrap_err();
    assert!(
        err.to_string().starts_with("--advertise-address: required"),
        "{err}"
    );
    assert_eq!(
        advertised_address(Some("master-1.example:5050"), wildcard).unwrap(),
        "master-1.example:5050"
    );
    for bad in ["master-1", ":5050", "h:0", "h:x", "http://h:1"] {
        let err = advertised_address(Some(bad), local).unwrap_err();
        assert!(err.to_string().starts_with("--advertise-address"), "{bad}: {err}");
    }
}

/// `agora master`'s flags as clap parses them.
#[derive(Debug, clap::Parser)]
struct Flags {
    #[command(flatten)]
    config: MasterConfig,
}

fn parse(args: &[&str]) -> Result<MasterConfig, String> {
    use clap::Parser as _;
    let argv = std::iter::once("master").chain(args.iter().copied());
    Flags::try_parse_from(argv)
        .map(|f| f.config)
        .map_err(|e| e.to_string())
}

#[test]
fn zk_quorum_and_session_timeout_flags_parse() {
    let config = parse(&[
        "--zk",
        "zk://h1:2181,h2:2181/agora",
        "--quorum",
        "2",
        "--zk-session-timeout",
        "3s",
    ])
    .unwrap();
    let zk = config.zk.unwrap();
    assert_eq!((zk.hosts.len(), zk.path.as_str()), (2, "/agora"));
    assert_eq!(config.quorum, 2);
    assert_eq!(config.zk_session_timeout, Duration::from_secs(3));
    let plain = parse(&[]).unwrap();
    assert!(plain.zk.is_none());
    assert_eq!(
        (plain.quorum, plain.zk_session_timeout),
        (1, Duration::from_secs(2))
    );
}

#[test]
fn bad_zk_flags_are_refused_naming_the_flag() {
    let zero = parse(&["--zk", "zk://h1/agora", "--quorum", "0"]).unwrap_err();
    assert!(zero.contains("--quorum"), "{zero}");
    let url = parse(&["--zk", "http://h1/agora"]).unwrap_err();
    assert!(url.contains("--zk") && url.contains("zk://"), "{url}");
    let alone = parse(&["--quorum", "2"]).unwrap_err();
    assert!(alone.contains("--zk"), "{alone}");
}

#[tokio::test(start_paused = true)]
async fn an_actor_stops_before_its_next_command_once_its_term_ends() {
    let election = MemoryElection::new();
    let leadership = election.campaign(b"me".to_vec()).await.unwrap();
    let config = MasterConfig::new("127.0.0.1:5050".parse().unwrap(), "unused".into());
    let master = crate::cluster::Master::new(config, "m".into(), Metrics::new(), Instant::now());
    let (_stop, stop_rx) = watch::channel(false);
    let actor = actor::spawn_for_term(master, memory(), stop_rx, Some(leadership.term()));
    let state = actor.handle.ask(|reply| actor::Command::State { reply }).await;
    assert!(state.is_ok());

    election.depose();
    let state = actor.handle.ask(|reply| actor::Command::State { reply }).await;
    assert_eq!(state.unwrap_err().code(), tonic::Code::Unavailable);
    assert_eq!(actor.stopped.await.unwrap(), actor::Stopped::TermEnded);
}

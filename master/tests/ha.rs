//! High availability against a real ZooKeeper: three in-process masters
//! with `--zk`, each on its own port and work dir; agents and frameworks
//! are played by the generated tonic clients talking to the leader.
#![allow(clippy::unwrap_used)] // a test binary: unwrap is the assertion

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora_master::{MasterConfig, serve};
use agora_proto::Resources;
use agora_proto::v1::{
    self, agent_link_client::AgentLinkClient, event, master_message, scheduler_client::SchedulerClient,
};
use agora_store::zk_server::{ZkProxy, ZkServer};
use agora_store::{LEADER_METADATA, Store, ZkOptions, ZkStore, ZkUrl};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// The session timeout the masters ask ZooKeeper for.
const SESSION: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(15);

/// One master with `--zk`, serving until stopped.
struct HaMaster {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl HaMaster {
    async fn start(zk: &str, quorum: u32) -> HaMaster {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = MasterConfig::new(addr, dir.path().join("master"));
        config.zk = Some(ZkUrl::parse(zk).unwrap());
        config.quorum = quorum;
        config.zk_session_timeout = SESSION;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            serve(config, listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        HaMaster {
            addr,
            stop: Some(stop),
            server,
            _dir: dir,
        }
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            tokio::time::timeout(WAIT, &mut self.server)
                .await
                .expect("serve returns after shutdown")
                .unwrap();
        }
    }
}

async fn start_three(zk: &str) -> Vec<HaMaster> {
    vec![
        HaMaster::start(zk, 2).await,
        HaMaster::start(zk, 2).await,
        HaMaster::start(zk, 2).await,
    ]
}

/// A minimal HTTP/1.1 request: status code, headers and body; `None` if the
/// master does not answer within a second.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String, String)> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        let code: u16 = out.get(9..12)?.parse().ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        Some((code, head.to_owned(), body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .ok()
        .flatten()
}

async fn json_of(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (code, _, body) = http(addr, method, path, body).await.expect("an answer");
    (code, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

async fn health(addr: SocketAddr) -> Option<Value> {
    let (code, _, body) = http(addr, "GET", "/health", "").await?;
    assert_eq!(code, 200, "/health of {addr}: {body}");
    serde_json::from_str(&body).ok()
}

/// Which of `addrs` answer /health as leader, asked at the same time.
async fn leaders(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let answers = futures::future::join_all(addrs.iter().map(|a| health(*a))).await;
    addrs
        .iter()
        .zip(answers)
        .filter(|(_, h)| h.as_ref().is_some_and(|h| h["leader"] == json!(true)))
        .map(|(a, _)| *a)
        .collect()
}

/// Waits until exactly one of `addrs` leads; returns it and when it was seen.
async fn wait_for_one_leader(addrs: &[SocketAddr], within: Duration) -> SocketAddr {
    let deadline = Instant::now() + within;
    loop {
        if let [leader] = leaders(addrs).await[..] {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "no single leader among {addrs:?} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls every master's /health every 50 ms until dropped, keeping the
/// largest number of leaders seen in one sample.
struct LeaderMonitor {
    most: Arc<AtomicUsize>,
    samples: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaderMonitor {
    fn start(addrs: Vec<SocketAddr>) -> LeaderMonitor {
        let most = Arc::new(AtomicUsize::new(0));
        let samples = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn({
            let (most, samples) = (most.clone(), samples.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                loop {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => return,
                        _ = tick.tick() => {}
                    }
                    let now = leaders(&addrs).await;
                    if now.len() > 1 {
                        eprintln!("two leaders answered at once: {now:?}");
                    }
                    most.fetch_max(now.len(), Ordering::SeqCst);
                    samples.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        LeaderMonitor {
            most,
            samples,
            stop,
            task,
        }
    }

    /// Stops and returns (most leaders in one sample, number of samples).
    async fn finish(self) -> (usize, usize) {
        self.stop.send_replace(true);
        self.task.await.unwrap();
        (
            self.most.load(Ordering::SeqCst),
            self.samples.load(Ordering::SeqCst),
        )
    }
}

struct FakeAgent {
    id: String,
    _up: mpsc::Sender<v1::AgentMessage>,
    down: Streaming<v1::MasterMessage>,
}

impl FakeAgent {
    /// Registers (again, with `id` and `tasks`, after a failover).
    async fn register(addr: SocketAddr, id: &str, tasks: Vec<v1::Task>) -> FakeAgent {
        let mut client = AgentLinkClient::connect(format!("http://{addr}")).await.unwrap();
        let (up, rx) = mpsc::channel(16);
        let register = v1::Register {
            agent: Some(v1::AgentInfo {
                id: id.into(),
                hostname: "fake-host".into(),
                resources: Resources::parse("cpus:2;mem:512").unwrap().to_proto(),
                ..Default::default()
            }),
            tasks,
            ..Default::default()
        };
        up.send(v1::AgentMessage {
            message: Some(v1::agent_message::Message::Register(register)),
        })
        .await
        .unwrap();
        let mut down = client.attach(ReceiverStream::new(rx)).await.unwrap().into_inner();
        let message = tokio::time::timeout(WAIT, down.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let id = match message.message.unwrap() {
            master_message::Message::Registered(r) => r.agent_id,
            other => panic!("expected REGISTERED, got {other:?}"),
        };
        FakeAgent { id, _up: up, down }
    }
}

fn running_task(framework_id: &str, task_id: &str, agent_id: &str) -> v1::Task {
    v1::Task {
        framework_id: framework_id.into(),
        info: Some(v1::TaskInfo {
            name: task_id.into(),
            task_id: task_id.into(),
            resources: Resources::parse("cpus:1;mem:64").unwrap().to_proto(),
            ..Default::default()
        }),
        status: Some(v1::TaskStatus {
            task_id: task_id.into(),
            state: v1::TaskState::Running as i32,
            agent_id: agent_id.into(),
            ..Default::default()
        }),
        group_id: String::new(),
    }
}

/// Subscribes a framework with a long failover timeout; returns its id and events.
async fn subscribe(addr: SocketAddr) -> (String, Streaming<v1::Event>) {
    let mut client = SchedulerClient::connect(format!("http://{addr}")).await.unwrap();
    let req = v1::SubscribeRequest {
        framework: Some(v1::FrameworkInfo {
            name: "ha-test".into(),
            failover_timeout_seconds: 3600.0,
            ..Default::default()
        }),
        suppressed_roles: vec![],
    };
    let mut events = client.subscribe(req).await.unwrap().into_inner();
    loop {
        let e = tokio::time::timeout(WAIT, events.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(event::Event::Subscribed(s)) = e.event {
            return (s.framework_id, events);
        }
    }
}

/// Resolves once `stream` has ended (closed or failed); how long it took.
async fn ended<T>(stream: &mut Streaming<T>, within: Duration) -> Duration {
    let start = Instant::now();
    let deadline = start + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => panic!("the stream did not end within {within:?}"),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None) | Err(_)) => return start.elapsed(),
        }
    }
}

fn state_tasks(state: &Value) -> Vec<(String, String)> {
    state["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_three_masters_leads_and_the_standbys_point_at_it() {
    let zk = ZkServer::launch().await.unwrap();
    let mut masters = start_three(&zk.url("/agora")).await;
    let addrs: Vec<SocketAddr> = masters.iter().map(|m| m.addr).collect();
    let started = Instant::now();
    let leader = wait_for_one_leader(&addrs, WAIT).await;
    eprintln!("first election: {:?} after start", started.elapsed());
    // A second look: still one, the same.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(leaders(&addrs).await, vec![leader]);

    for standby in addrs.iter().filter(|a| **a != leader) {
        let health = health(*standby).await.unwrap();
        assert_eq!(health["leader"], json!(false));
        assert_eq!(health["leader_address"], json!(leader.to_string()));

        let (code, head, _) = http(*standby, "GET", "/state?pretty=1", "").await.unwrap();
        assert_eq!(code, 307, "{head}");
        let location = format!("location: http://{leader}/state?pretty=1");
        assert!(head.to_lowercase().contains(&location), "{head}");

        let mut client = SchedulerClient::connect(format!("http://{standby}"))
            .await
            .unwrap();
        let status = client
            .subscribe(v1::SubscribeRequest {
                framework: Some(v1::FrameworkInfo {
                    name: "x".into(),
                    ..Default::default()
                }),
                suppressed_roles: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert_eq!(
            status.metadata().get(LEADER_METADATA).unwrap().to_str().unwrap(),
            leader.to_string()
        );
        assert!(
            status.message().contains(&leader.to_string()),
            "{}",
            status.message()
        );
    }
    let (code, _) = json_of(leader, "GET", "/state", "").await;
    assert_eq!(code, 200);
    for m in &mut masters {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_is_replaced_by_one_that_has_its_registry_and_keeps_its_tasks() {
    let zk = ZkServer::launch().await.unwrap();
    let url = zk.url("/agora");
    let mut masters = start_three(&url).await;
    let addrs: Vec<SocketAddr> = masters.iter().map(|m| m.addr).collect();
    let first = wait_for_one_leader(&addrs, WAIT).await;
    let monitor = LeaderMonitor::start(addrs.clone());

    // Under the first leader: a framework, an agent with a running task, a weight.
    let (framework_id, mut events) = subscribe(first).await;
    let mut agent = FakeAgent::register(first, "", vec![running_task(&framework_id, "web-1", "")]).await;
    let (code, _) = json_of(first, "PUT", "/weights/web", r#"{"weight": 3}"#).await;
    assert_eq!(code, 200);
    let (_, state) = json_of(first, "GET", "/state", "").await;
    assert_eq!(
        state_tasks(&state),
        vec![("web-1".to_owned(), "TASK_RUNNING".to_owned())]
    );

    // Sampled before, during and after the handover.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let index = addrs.iter().position(|a| *a == first).unwrap();
    let stopped = Instant::now();
    masters[index].stop().await;
    let others: Vec<SocketAddr> = addrs.iter().copied().filter(|a| *a != first).collect();
    let second = wait_for_one_leader(&others, SESSION + Duration::from_secs(2)).await;
    eprintln!(
        "leader stopped → new leader serving after {:?}",
        stopped.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The old term's streams ended.
    ended(&mut events, WAIT).await;
    ended(&mut agent.down, WAIT).await;

    // The registry as the old leader left it.
    let registry = ZkStore::connect(
        &ZkUrl::parse(&zk.url("/agora/state")).unwrap(),
        ZkOptions::default(),
    )
    .await
    .unwrap();
    let agent_key = format!("/master/agents/{}", agent.id);
    assert!(
        registry.get(&agent_key).await.unwrap().is_some(),
        "{agent_key} stored"
    );
    let (_, state) = json_of(second, "GET", "/state", "").await;
    let frameworks = state["frameworks"].as_array().unwrap();
    assert_eq!(frameworks.len(), 1, "{state}");
    assert_eq!(frameworks[0]["id"], json!(framework_id));
    assert_eq!(frameworks[0]["connected"], json!(false));
    let (_, weights) = json_of(second, "GET", "/weights", "").await;
    assert!(weights.to_string().contains("web"), "{weights}");

    // The agent re-registers with its task: kept, same id, still running.
    let _agent = FakeAgent::register(
        second,
        &agent.id.clone(),
        vec![running_task(&framework_id, "web-1", &agent.id)],
    )
    .await;
    let (_, state) = json_of(second, "GET", "/state", "").await;
    assert_eq!(
        state_tasks(&state),
        vec![("web-1".to_owned(), "TASK_RUNNING".to_owned())]
    );
    // And the framework re-subscribes with its id.
    let mut client = SchedulerClient::connect(format!("http://{second}"))
        .await
        .unwrap();
    let mut events = client
        .subscribe(v1::SubscribeRequest {
            framework: Some(v1::FrameworkInfo {
                id: framework_id.clone(),
                name: "ha-test".into(),
                failover_timeout_seconds: 3600.0,
                ..Default::default()
            }),
            suppressed_roles: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let subscribed = tokio::time::timeout(WAIT, events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match subscribed.event.unwrap() {
        event::Event::Subscribed(s) => assert_eq!(s.framework_id, framework_id),
        other => panic!("expected SUBSCRIBED, got {other:?}"),
    }

    let (most, samples) = monitor.finish().await;
    assert!(samples > 10, "{samples} samples");
    assert_eq!(most, 1, "at most one leader in every sample");
    for m in &mut masters {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_zookeeper_steps_down_and_two_never_lead_at_once() {
    let zk = ZkServer::launch().await.unwrap();
    let mut masters = start_three(&zk.url("/agora")).await;
    let addrs: Vec<SocketAddr> = masters.iter().map(|m| m.addr).collect();
    let first = wait_for_one_leader(&addrs, WAIT).await;
    let monitor = LeaderMonitor::start(addrs.clone());
    let (_, mut events) = subscribe(first).await;

    zk.pause().unwrap();
    let paused = Instant::now();
    loop {
        let h = health(first).await.unwrap();
        if h["leader"] == json!(false) {
            break;
        }
        assert!(
            paused.elapsed() < SESSION + Duration::from_secs(1),
            "still leading: {h}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stepped_down = paused.elapsed();
    eprintln!("ZooKeeper paused → leader stepped down after {stepped_down:?}");
    assert!(stepped_down <= SESSION, "steps down within the session timeout");
    // Its framework stream ended; it serves nothing.
    ended(&mut events, Duration::from_secs(2)).await;
    let (code, head, _) = http(first, "GET", "/state", "").await.unwrap();
    assert!(code == 307 || code == 503, "{head}");

    // Past the session timeout, then back.
    tokio::time::sleep((SESSION + Duration::from_secs(1)).saturating_sub(paused.elapsed())).await;
    zk.resume().unwrap();
    let resumed = Instant::now();
    let next = wait_for_one_leader(&addrs, WAIT).await;
    eprintln!(
        "ZooKeeper resumed → a leader ({}) serving after {:?}",
        if next == first {
            "the same master"
        } else {
            "another master"
        },
        resumed.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (most, samples) = monitor.finish().await;
    assert!(samples > 20, "{samples} samples");
    assert_eq!(most, 1, "at most one leader in every sample");
    for m in &mut masters {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_master_with_quorum_two_never_leads_until_a_second_one_joins() {
    let zk = ZkServer::launch().await.unwrap();
    let url = zk.url("/agora");
    let mut alone = HaMaster::start(&url, 2).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        last = health(alone.addr).await.unwrap();
        assert_eq!(last["leader"], json!(false), "{last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        last["status"].as_str().unwrap().contains("waiting for 2 masters"),
        "{last}"
    );
    let (code, _) = json_of(alone.addr, "GET", "/state", "").await;
    assert_eq!(code, 503);

    let mut second = HaMaster::start(&url, 2).await;
    let joined = Instant::now();
    wait_for_one_leader(&[alone.addr, second.addr], WAIT).await;
    eprintln!("second master joined → a leader after {:?}", joined.elapsed());
    alone.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_partitioned_from_zookeeper_is_replaced_once_its_session_expires() {
    let zk = ZkServer::launch().await.unwrap();
    // Each master reaches ZooKeeper through its own proxy, so one can be cut off alone.
    let mut proxies = Vec::new();
    let mut masters = Vec::new();
    for _ in 0..3 {
        let proxy = ZkProxy::start(&zk.connect_string()).await.unwrap();
        masters.push(HaMaster::start(&proxy.url("/agora"), 2).await);
        proxies.push(proxy);
    }
    let addrs: Vec<SocketAddr> = masters.iter().map(|m| m.addr).collect();
    let first = wait_for_one_leader(&addrs, WAIT).await;
    let monitor = LeaderMonitor::start(addrs.clone());
    let index = addrs.iter().position(|a| *a == first).unwrap();
    let (_, mut events) = subscribe(first).await;

    proxies[index].cut();
    let cut = Instant::now();
    let others: Vec<SocketAddr> = addrs.iter().copied().filter(|a| *a != first).collect();
    let second = wait_for_one_leader(&others, SESSION * 2 + Duration::from_secs(2)).await;
    let elected = cut.elapsed();
    eprintln!("leader cut off → another master serving after {elected:?}");
    assert!(
        elected >= SESSION / 2,
        "not before the old leader's lease ran out"
    );
    ended(&mut events, Duration::from_secs(1)).await;
    assert_eq!(health(first).await.unwrap()["leader"], json!(false));

    // Back on the network it stays a standby and points at the new leader.
    proxies[index].restore();
    let deadline = Instant::now() + WAIT;
    loop {
        let h = health(first).await.unwrap();
        if h["leader_address"] == json!(second.to_string()) {
            assert_eq!(h["leader"], json!(false));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old leader never saw the new one: {h}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (most, _) = monitor.finish().await;
    assert_eq!(most, 1, "at most one leader in every sample");
    for m in &mut masters {
        m.stop().await;
    }
}

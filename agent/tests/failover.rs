//! Master failover as an agent and a framework (on the SDK) see it, both
//! following the leader through `--master zk://…`: real masters, a real
//! agent running a real task, a real ZooKeeper.
//!
//! Every test ends with the task killed through the framework, so no
//! process outlives it.

// Test helpers fail loudly: unwrap is the point here.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora_agent::ContainerizerKind;
use agora_master::MasterConfig;
use agora_proto::v1::{self, TaskState};
use agora_sdk::{Driver, DriverConfig, OfferId, Resources, Scheduler, Subscribed, TaskBuilder, TaskId};
use agora_store::zk_server::ZkServer;
use agora_store::{Election, LeaderInfo, Leadership, ZkElection, ZkOptions, ZkUrl};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

mod support;

use support::{RunningAgent, WAIT};

/// A master served in this process until stopped.
struct Master {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), agora_master::MasterError>>,
}

impl Master {
    /// Starts a master on a free port with its registry in `work_dir`, in
    /// the HA election of `zk` if given.
    async fn start(work_dir: &Path, zk: Option<&ZkUrl>) -> Master {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = MasterConfig::new(addr, work_dir.to_path_buf());
        config.zk = zk.cloned();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(agora_master::serve(config, listener, async {
            let _ = stopped.await;
        }));
        Master {
            addr,
            stop: Some(stop),
            server,
        }
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            tokio::time::timeout(WAIT, &mut self.server)
                .await
                .expect("the master stops")
                .unwrap()
                .unwrap();
        }
    }
}

/// GET `path` from `addr` as JSON; `None` if it does not answer 200.
async fn get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: master\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    if response.get(9..12) != Some("200") {
        return None;
    }
    serde_json::from_str(response.split_once("\r\n\r\n")?.1).ok()
}

/// `(task id, state, agent id)` of every live task in the master's /state.
async fn tasks_at(master: SocketAddr) -> Vec<(String, String, String)> {
    let Some(state) = get_json(master, "/state").await else {
        return Vec::new();
    };
    let mut tasks: Vec<_> = state["tasks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|t| {
            let field = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
            (field("id"), field("state"), field("agent_id"))
        })
        .collect();
    tasks.sort();
    tasks
}

/// What the framework saw.
#[derive(Debug)]
enum Seen {
    Subscribed(Subscribed),
    Update(v1::TaskStatus),
}

/// A framework that keeps `want` tasks (`sleep 30`) launched, one per offer.
struct Keeper {
    want: Arc<AtomicUsize>,
    launched: usize,
    seen: mpsc::UnboundedSender<Seen>,
}

impl Scheduler for Keeper {
    async fn subscribed(&mut self, _driver: &Driver, info: Subscribed) {
        let _ = self.seen.send(Seen::Subscribed(info));
    }

    async fn offers(&mut self, driver: &Driver, offers: Vec<v1::Offer>) {
        for offer in &offers {
            if self.launched < self.want.load(Ordering::SeqCst) {
                let task = TaskBuilder::new(
                    TaskId::new_unchecked(format!("task-{}", self.launched)),
                    "sleeper",
                )
                .shell("sleep 30")
                .resources(&Resources::new().scalar("cpus", 0.1).scalar("mem", 32.0))
                .build();
                if driver.launch(offer, vec![task]).await.is_ok() {
                    self.launched += 1;
                }
            } else if let Ok(id) = OfferId::parse(&offer.id) {
                let _ = driver.decline(vec![id], Some(Duration::from_millis(200))).await;
            }
        }
    }

    async fn update(&mut self, _driver: &Driver, status: v1::TaskStatus) {
        let _ = self.seen.send(Seen::Update(status));
    }
}

/// The framework's driver and what it sees.
struct Framework {
    driver: Driver,
    want: Arc<AtomicUsize>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Framework {
    fn start(zk: &ZkUrl) -> Framework {
        let info = v1::FrameworkInfo {
            name: "failover-test".into(),
            failover_timeout_seconds: 60.0,
            ..Default::default()
        };
        let mut config = DriverConfig::new(agora_sdk::split_masters(&zk.to_string()), info);
        config.backoff_min = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        let want = Arc::new(AtomicUsize::new(1));
        let (tx, seen) = mpsc::unbounded_channel();
        let keeper = Keeper {
            want: want.clone(),
            launched: 0,
            seen: tx,
        };
        let (driver, _run) = Driver::start(config, keeper);
        Framework { driver, want, seen }
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .expect("the framework heard nothing")
            .expect("driver alive")
    }

    /// The next SUBSCRIBED, skipping updates.
    async fn subscribed(&mut self) -> Subscribed {
        loop {
            if let Seen::Subscribed(info) = self.next().await {
                return info;
            }
        }
    }

    /// Waits for `task` to reach `state`.
    async fn reaches(&mut self, task: &str, state: TaskState) -> v1::TaskStatus {
        loop {
            if let Seen::Update(status) = self.next().await
                && status.task_id == task
                && status.state() == state
            {
                return status;
            }
        }
    }

    /// Kills the tasks and waits until they are gone.
    async fn kill(&mut self, tasks: &[&str]) {
        for task in tasks {
            self.driver
                .kill(&TaskId::new_unchecked(*task), None)
                .await
                .unwrap();
        }
        for task in tasks {
            self.reaches(task, TaskState::Killed).await;
        }
        self.driver.stop();
    }
}

async fn start_agent(dir: &Path, zk: &ZkUrl) -> RunningAgent {
    // The address given here is replaced by the zk:// URL below.
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    RunningAgent::start(unused, dir, |c| {
        // As clap hands it over: split on commas.
        c.master = zk.to_string().split(',').map(str::to_owned).collect();
        c.containerizers = vec![ContainerizerKind::Process];
    })
    .await
}

/// Waits until `master`'s /state shows exactly `want`.
async fn wait_for_tasks(master: SocketAddr, want: &[(String, String, String)]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = tasks_at(master).await;
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "{master} shows {now:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A candidate campaigning in the test's ZooKeeper for `address`.
async fn elect(root: &ZkUrl, address: SocketAddr) -> (ZkElection, Leadership) {
    let election = ZkElection::new(&root.child("leader").unwrap(), ZkOptions::default());
    let term = election
        .campaign(LeaderInfo::new(address.to_string()).to_bytes())
        .await
        .unwrap();
    (election, term)
}

/// The test itself publishes the leader, standing in for masters' election:
/// master A leads; A stops and B takes over A's registry (its work dir,
/// standing in for the registry in ZooKeeper) at another address; the test
/// elects B. Only ZooKeeper tells the agent and the framework where B is.
#[tokio::test]
async fn agent_and_framework_follow_a_published_leader_and_the_task_survives() {
    let zk = ZkServer::launch().await.unwrap();
    let root = ZkUrl::parse(&zk.url("/agora")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("master");
    let mut a = Master::start(&registry, None).await;
    let (_a_election, a_term) = elect(&root, a.addr).await;
    let agent = start_agent(&dir.path().join("agent"), &root).await;
    let mut framework = Framework::start(&root);

    let first = framework.subscribed().await;
    assert_eq!(first.master_address, a.addr.to_string());
    let running = framework.reaches("task-0", TaskState::Running).await;

    a.stop().await;
    let mut b = Master::start(&registry, None).await;
    let b_campaign = tokio::spawn({
        let root = root.clone();
        let b = b.addr;
        async move { elect(&root, b).await }
    });
    a_term.resign().await;

    let second = framework.subscribed().await;
    assert_eq!(second.master_address, b.addr.to_string());
    assert!(second.resubscribed);
    assert_eq!(second.framework_id, first.framework_id);
    let agent_id = running.agent_id.clone();
    wait_for_tasks(
        b.addr,
        &[("task-0".into(), "TASK_RUNNING".into(), agent_id.clone())],
    )
    .await;

    framework.want.store(2, Ordering::SeqCst);
    framework.reaches("task-1", TaskState::Running).await;
    framework.kill(&["task-0", "task-1"]).await;
    agent.stop().await;
    b.stop().await;
    let _b = b_campaign.await.unwrap();
}

/// Which of `masters` answers /health as the leader, once exactly one does.
async fn one_leader(masters: &[SocketAddr]) -> SocketAddr {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut leaders = Vec::new();
        for m in masters {
            if get_json(*m, "/health")
                .await
                .is_some_and(|h| h["leader"] == Value::Bool(true))
            {
                leaders.push(*m);
            }
        }
        if let [leader] = leaders[..] {
            return leader;
        }
        assert!(Instant::now() < deadline, "no single leader among {masters:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two HA masters (`--zk`): the leader stops; the agent and the framework
/// find the new leader through ZooKeeper; the task keeps running under the
/// same id, and a new launch works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_framework_follow_a_real_master_failover_and_the_task_survives() {
    let zk = ZkServer::launch().await.unwrap();
    let root = ZkUrl::parse(&zk.url("/agora")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut masters = vec![
        Master::start(&dir.path().join("m1"), Some(&root)).await,
        Master::start(&dir.path().join("m2"), Some(&root)).await,
    ];
    let addrs: Vec<SocketAddr> = masters.iter().map(|m| m.addr).collect();
    let leader = one_leader(&addrs).await;
    let agent = start_agent(&dir.path().join("agent"), &root).await;
    let mut framework = Framework::start(&root);

    let first = framework.subscribed().await;
    assert_eq!(first.master_address, leader.to_string());
    let running = framework.reaches("task-0", TaskState::Running).await;

    let stopped = Instant::now();
    let old = masters.iter_mut().find(|m| m.addr == leader).unwrap();
    old.stop().await;
    let standby = *addrs.iter().find(|a| **a != leader).unwrap();

    let second = framework.subscribed().await;
    let resubscribed_after = stopped.elapsed();
    assert_eq!(second.master_address, standby.to_string());
    assert!(second.resubscribed);
    assert_eq!(second.framework_id, first.framework_id);
    wait_for_tasks(
        standby,
        &[("task-0".into(), "TASK_RUNNING".into(), running.agent_id.clone())],
    )
    .await;
    println!("framework re-subscribed {resubscribed_after:?} after the leader stopped");

    framework.want.store(2, Ordering::SeqCst);
    framework.reaches("task-1", TaskState::Running).await;
    framework.kill(&["task-0", "task-1"]).await;
    agent.stop().await;
    for m in &mut masters {
        m.stop().await;
    }
}

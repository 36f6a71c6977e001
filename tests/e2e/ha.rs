//! High availability with real processes: three `agora master --zk … --quorum 2`
//! on a real ZooKeeper, agents, a raw framework and the service and cron
//! frameworks, all finding the leader through ZooKeeper (`--master zk://…`).
//! Leaders are SIGKILLed or SIGSTOPped, and what must hold is checked from
//! outside: one master accepts calls at a time, tasks keep running under the
//! same ids and processes, a rolling deployment is finished by the standby,
//! and a cron run history has one run per instant, no gap, no duplicate.
//!
//! The in-process versions of these scenarios are master/tests/ha.rs,
//! frameworks/service/tests/ha.rs and frameworks/cron/tests/ha.rs; these run
//! the `agora` binary so that flags, logging, signals and the real process
//! boundaries are part of what is tested.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora_cron::handle::{RunRecord, RunState};
use agora_proto::v1;
use agora_proto::v1::scheduler_client::SchedulerClient;
use agora_store::zk_server::ZkServer;
use agora_store::{LEADER_METADATA, ZkOptions, ZkUrl};
use futures::future::join_all;
use jiff::{SignedDuration, Timestamp};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};
use tokio::time::{Instant, sleep, timeout};

use crate::harness::*;
use crate::rest::*;

/// The ZooKeeper session timeout every HA process asks for (`--zk-session-timeout`).
const SESSION: Duration = Duration::from_secs(2);
/// How long one probe of a master waits for its answer: a paused master gives none.
const PROBE: Duration = Duration::from_millis(300);
/// How long a deployment or a run history may take to get somewhere on a loaded box.
const LONG: Duration = Duration::from_secs(60);
/// What the frameworks log once their REST API serves (with `--zk`, before any election).
const FRAMEWORK_READY: &str = "REST API listening; campaigning for leadership";

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------
// The cluster: ZooKeeper, three masters, agents
// ---------------------------------------------------------------------------

/// Three `agora master --zk` processes on one ZooKeeper and some agents that
/// follow the leader through ZooKeeper, all in one test directory. Dropping
/// it kills every process under the directory (masters, agents, frameworks,
/// supervisors, tasks), then ZooKeeper.
struct HaCluster {
    dir: tempfile::TempDir,
    zk: ZkServer,
    masters: Vec<Process>,
    agents: Vec<Process>,
}

impl HaCluster {
    async fn start(agents: usize) -> HaCluster {
        let zk = ZkServer::launch()
            .await
            .expect("ZooKeeper starts (Debian's zookeeper package and a JRE)");
        let mut dir = tempfile::Builder::new()
            .prefix("agora-e2e-")
            .tempdir()
            .expect("tempdir");
        if std::env::var_os("AGORA_E2E_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        let zk_url = zk.url("/agora");
        // Built first, so that its Drop kills whatever started if a start fails.
        let mut cluster = HaCluster {
            dir,
            zk,
            masters: vec![],
            agents: vec![],
        };
        let names: Vec<String> = (0..3).map(|i| format!("master-{i}")).collect();
        let masters = join_all(names.iter().map(|name| {
            let mut args = strings(&["master", "--listen", "127.0.0.1:0", "--work-dir"]);
            args.push(cluster.dir.path().join(name).display().to_string());
            args.extend(strings(&[
                "--zk",
                &zk_url,
                "--quorum",
                "2",
                "--zk-session-timeout",
                "2s",
            ]));
            Process::start(cluster.dir.path(), name, args)
        }))
        .await;
        cluster.masters = masters;
        let names: Vec<String> = (0..agents).map(|i| format!("agent-{i}")).collect();
        let started = join_all(names.iter().enumerate().map(|(i, name)| {
            let mut args = strings(&[
                "agent",
                "--listen",
                "127.0.0.1:0",
                "--master",
                &zk_url,
                "--work-dir",
            ]);
            args.push(cluster.dir.path().join(name).display().to_string());
            args.extend(strings(&[
                "--resources",
                "cpus:4;mem:4096;disk:10000;ports:[31000-31099]",
                "--hostname",
                &format!("host-{i}"),
            ]));
            Process::start(cluster.dir.path(), name, args)
        }))
        .await;
        cluster.agents = started;
        cluster
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `zk://127.0.0.1:PORT/agora`: where the masters elect their leader.
    fn masters_url(&self) -> String {
        self.zk.url("/agora")
    }

    /// Every master's address, killed ones included (in start order).
    fn master_addrs(&self) -> Vec<SocketAddr> {
        self.masters.iter().map(|m| m.addr).collect()
    }

    /// The addresses of the masters that still run.
    fn live_master_addrs(&self) -> Vec<SocketAddr> {
        self.masters
            .iter()
            .filter(|m| m.pid().is_some())
            .map(|m| m.addr)
            .collect()
    }

    fn master_at(&mut self, addr: SocketAddr) -> &mut Process {
        self.masters
            .iter_mut()
            .find(|m| m.addr == addr)
            .expect("one of the masters")
    }

    /// The one live master that says it leads (waits for it).
    async fn leader(&self) -> SocketAddr {
        wait_for_one_leader(&self.live_master_addrs(), SOON).await
    }

    /// The leader's `/state`.
    async fn state(&self) -> Value {
        let deadline = Instant::now() + SOON;
        loop {
            let leader = self.leader().await;
            if let Some(state) = get_json(&format!("http://{leader}/state")).await {
                return state;
            }
            assert!(Instant::now() < deadline, "the leader never answered /state");
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the leader lists `n` agents as active (registered in its term).
    async fn wait_agents_active(&self, n: usize) -> Value {
        let deadline = Instant::now() + SOON;
        loop {
            let state = self.state().await;
            let active = state["agents"]
                .as_array()
                .map(|a| a.iter().filter(|a| a["status"] == "active").count())
                .unwrap_or(0);
            if active >= n {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "{n} agents never became active: {state:#}"
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// The ids of the leader's tasks of `framework` that are not terminal.
    async fn live_tasks(&self, framework: &str) -> BTreeSet<String> {
        let state = self.state().await;
        state["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|t| t["framework_id"] == framework)
            .filter(|t| !TERMINAL.contains(&t["state"].as_str().unwrap_or_default()))
            .map(|t| t["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The ids of the leader's frameworks.
    async fn frameworks(&self) -> Vec<String> {
        self.state().await["frameworks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|f| f["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// How many times each task was launched on any agent (one sandbox run
    /// directory per launch).
    fn launches(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for i in 0..self.agents.len() {
            let sandboxes = self.path().join(format!("agent-{i}")).join("sandboxes");
            let Ok(frameworks) = std::fs::read_dir(sandboxes) else {
                continue;
            };
            for framework in frameworks.flatten() {
                for task in std::fs::read_dir(framework.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let runs = std::fs::read_dir(task.path()).map(|r| r.count()).unwrap_or(0);
                    *out.entry(task.file_name().to_string_lossy().into_owned())
                        .or_default() += runs;
                }
            }
        }
        out
    }

    /// Starts `agora service` or `agora cron` (`kind`) as an HA instance:
    /// elected in `zk://…/agora-<kind>`, following the masters' leader.
    async fn start_framework(&self, kind: &str, name: &str, extra: &[&str]) -> Process {
        let mut args = strings(&[
            kind,
            "--zk",
            &self.zk.url(&format!("/agora-{kind}")),
            "--master",
            &self.masters_url(),
            "--listen",
            "127.0.0.1:0",
            "--work-dir",
        ]);
        args.push(self.path().join(name).display().to_string());
        args.extend(strings(extra));
        Process::start_until_logged(self.path(), name, args, FRAMEWORK_READY).await
    }
}

impl Drop for HaCluster {
    #[allow(clippy::disallowed_methods)] // Drop cannot await.
    fn drop(&mut self) {
        for p in self.agents.iter_mut().chain(self.masters.iter_mut()) {
            p.crash();
        }
        for _ in 0..3 {
            for pid in processes_under(self.dir.path()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---------------------------------------------------------------------------
// Asking masters who leads
// ---------------------------------------------------------------------------

/// An HTTP client that reports redirects instead of following them, and gives up after [`PROBE`].
fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(PROBE)
        .build()
        .expect("an HTTP client")
}

async fn get_json(url: &str) -> Option<Value> {
    let response = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?
        .get(url)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// A master's `/health`; `None` if it does not answer within [`PROBE`].
async fn health_with(client: &reqwest::Client, addr: SocketAddr) -> Option<Value> {
    let response = client.get(format!("http://{addr}/health")).send().await.ok()?;
    response.json().await.ok()
}

async fn health(addr: SocketAddr) -> Option<Value> {
    health_with(&probe_client(), addr).await
}

/// Which of `addrs` answer `/health` as leader, asked at the same time.
async fn leaders(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let client = probe_client();
    let answers = join_all(addrs.iter().map(|a| health_with(&client, *a))).await;
    addrs
        .iter()
        .zip(answers)
        .filter(|(_, h)| h.as_ref().is_some_and(|h| h["leader"] == json!(true)))
        .map(|(a, _)| *a)
        .collect()
}

/// Waits until exactly one of `addrs` says it leads.
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
        sleep(Duration::from_millis(20)).await;
    }
}

/// What a master answers a scheduler call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GrpcAnswer {
    /// Its current term's actor answered (NOT_FOUND for the made-up framework
    /// of [`grpc_probe`]): this master accepts calls.
    Served,
    /// UNAVAILABLE: not the leader; the leader it names in `agora-leader`, if any.
    Refused(Option<String>),
    /// No answer within the probe's time (a paused or dead master), or another error.
    NoAnswer(String),
}

/// A RECONCILE from a framework no master knows, on a fresh connection: only
/// a leader's actor answers it (NOT_FOUND), a standby refuses it (UNAVAILABLE).
/// It changes nothing.
async fn grpc_probe(addr: SocketAddr, within: Duration) -> GrpcAnswer {
    let call = async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("a URI")
            .connect_timeout(within);
        let channel = endpoint.connect().await.map_err(|e| format!("connect: {e}"))?;
        let answer = SchedulerClient::new(channel)
            .reconcile(v1::ReconcileRequest {
                caller: Some(v1::Caller {
                    framework_id: "ha-probe".into(),
                    stream_id: "ha-probe".into(),
                }),
                tasks: vec![],
            })
            .await;
        Ok::<_, String>(answer)
    };
    match timeout(within, call).await {
        Err(_) => GrpcAnswer::NoAnswer("no answer in time".into()),
        Ok(Err(e)) => GrpcAnswer::NoAnswer(e),
        Ok(Ok(Ok(_))) => GrpcAnswer::Served,
        Ok(Ok(Err(status))) => match status.code() {
            tonic::Code::NotFound => GrpcAnswer::Served,
            tonic::Code::Unavailable => GrpcAnswer::Refused(
                status
                    .metadata()
                    .get(LEADER_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            ),
            _ => GrpcAnswer::NoAnswer(format!("{status:?}")),
        },
    }
}

/// How many probes of one kind may wait for one master's answer at once: a
/// paused master accepts no connection, and a flood of them would fill its
/// listen queue (128) so that the first probes after it resumes would wait
/// for a SYN retransmission (1 s) instead of testing the moment it wakes up.
/// Enough that some are sent well after the pause began (50 ms apart).
const IN_FLIGHT: usize = 8;

/// One round of probes sent to every master at the same instant.
#[derive(Debug, Clone)]
struct Sample {
    /// When the probes were sent, from the start of the monitor.
    at: Duration,
    /// Per master: whether `/health` said it leads (`None`: no answer, or
    /// not asked because [`IN_FLIGHT`] earlier probes still wait).
    health: Vec<Option<bool>>,
    /// Per master: when the `/health` answer came, from the start of the monitor.
    health_answered: Vec<Option<Duration>>,
    /// Per master: the answer to [`grpc_probe`].
    grpc: Vec<GrpcAnswer>,
    /// Per master: when the gRPC answer came, from the start of the monitor.
    grpc_answered: Vec<Option<Duration>>,
}

impl Sample {
    /// The masters that accepted in this round: `/health` said leader, or the
    /// scheduler call was served.
    fn accepting(&self) -> Vec<usize> {
        (0..self.health.len())
            .filter(|&i| self.health[i] == Some(true) || self.grpc[i] == GrpcAnswer::Served)
            .collect()
    }
}

/// Takes one of [`IN_FLIGHT`] places; false if all are taken.
fn take_place(in_flight: &AtomicUsize) -> bool {
    in_flight
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < IN_FLIGHT).then_some(n + 1)
        })
        .is_ok()
}

/// Probes every master every 50 ms until finished: `/health` and
/// [`grpc_probe`], each round on its own task, so a paused master (whose
/// probes wait until it resumes) does not slow the sampling of the others.
/// A probe waits for its answer up to [`SOON`]: probes sent to a paused
/// master are answered the moment it runs again, which is the moment that
/// matters.
struct AcceptMonitor {
    began: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AcceptMonitor {
    fn start(addrs: Vec<SocketAddr>) -> AcceptMonitor {
        let began = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = watch::channel(false);
        let places: Arc<Vec<(AtomicUsize, AtomicUsize)>> = Arc::new(
            addrs
                .iter()
                .map(|_| (AtomicUsize::new(0), AtomicUsize::new(0)))
                .collect(),
        );
        let task = tokio::spawn({
            let samples = samples.clone();
            async move {
                let client = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .timeout(SOON)
                    .build()
                    .expect("an HTTP client");
                let mut rounds = tokio::task::JoinSet::new();
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                loop {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => break,
                        _ = tick.tick() => {}
                    }
                    let (addrs, client, samples, places) =
                        (addrs.clone(), client.clone(), samples.clone(), places.clone());
                    rounds.spawn(async move {
                        let at = began.elapsed();
                        let health = join_all(addrs.iter().enumerate().map(|(i, addr)| {
                            let (client, places) = (&client, &places);
                            async move {
                                if !take_place(&places[i].0) {
                                    return (None, None);
                                }
                                let answer = health_with(client, *addr)
                                    .await
                                    .map(|h| h["leader"] == json!(true));
                                places[i].0.fetch_sub(1, Ordering::SeqCst);
                                (answer, Some(began.elapsed()))
                            }
                        }));
                        let grpc = join_all(addrs.iter().enumerate().map(|(i, addr)| {
                            let places = &places;
                            async move {
                                if !take_place(&places[i].1) {
                                    return (
                                        GrpcAnswer::NoAnswer("not asked: earlier probes wait".into()),
                                        None,
                                    );
                                }
                                let answer = grpc_probe(*addr, SOON).await;
                                places[i].1.fetch_sub(1, Ordering::SeqCst);
                                (answer, Some(began.elapsed()))
                            }
                        }));
                        let (health, grpc) = tokio::join!(health, grpc);
                        let (health, health_answered) = health.into_iter().unzip();
                        let (grpc, grpc_answered) = grpc.into_iter().unzip();
                        samples.lock().await.push(Sample {
                            at,
                            health,
                            health_answered,
                            grpc,
                            grpc_answered,
                        });
                    });
                    while rounds.try_join_next().is_some() {}
                }
                while rounds.join_next().await.is_some() {}
            }
        });
        AcceptMonitor {
            began,
            samples,
            stop,
            task,
        }
    }

    /// How long after the monitor started `at` was.
    fn offset(&self, at: Instant) -> Duration {
        at.duration_since(self.began)
    }

    /// Stops, waits for every outstanding answer and returns every round in
    /// the order they were sent.
    async fn finish(self) -> Vec<Sample> {
        self.stop.send_replace(true);
        self.task.await.expect("the monitor ran");
        let mut samples = self.samples.lock().await.clone();
        samples.sort_by_key(|s| s.at);
        samples
    }
}

// ---------------------------------------------------------------------------
// The masters
// ---------------------------------------------------------------------------

#[tokio::test]
async fn three_masters_on_zookeeper_elect_one_leader_and_standbys_redirect() {
    let cluster = HaCluster::start(0).await;
    let addrs = cluster.master_addrs();
    let started = Instant::now();
    let leader = wait_for_one_leader(&addrs, SOON).await;
    eprintln!(
        "three masters: a leader serving {:?} after they listened",
        started.elapsed()
    );
    // A second look: still the same one.
    sleep(Duration::from_millis(500)).await;
    assert_eq!(leaders(&addrs).await, vec![leader]);
    // The leader ZooKeeper publishes is the one that says it leads.
    let published = agora_store::current_leader(
        &ZkUrl::parse(&cluster.masters_url()).expect("a zk:// URL"),
        ZkOptions::default(),
    )
    .await
    .expect("ZooKeeper answers")
    .expect("a leader is published");
    assert_eq!(published.address, leader.to_string());
    assert_eq!(grpc_probe(leader, SOON).await, GrpcAnswer::Served);

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("an HTTP client");
    for standby in addrs.iter().copied().filter(|a| *a != leader) {
        let health = until("the standby to name the leader", SOON, || async {
            let h = health(standby).await?;
            assert_eq!(h["leader"], json!(false), "{standby} leads too: {h}");
            (h["leader_address"] == json!(leader.to_string())).then_some(h)
        })
        .await;
        assert_eq!(health["status"], "standby", "{health}");

        let response = no_redirects
            .get(format!("http://{standby}/state?pretty=1"))
            .send()
            .await
            .expect("the standby answers");
        assert_eq!(response.status(), 307);
        assert_eq!(
            response.headers()["location"],
            format!("http://{leader}/state?pretty=1").as_str()
        );
        // Followed, the redirect reaches the leader's state.
        let state = get_json(&format!("http://{standby}/state"))
            .await
            .expect("the redirect leads to /state");
        assert!(state["master_id"].is_string(), "{state}");

        let refused = SchedulerClient::connect(format!("http://{standby}"))
            .await
            .expect("connect to the standby")
            .subscribe(v1::SubscribeRequest {
                framework: Some(framework_info("ha-e2e", 60.0)),
                suppressed_roles: vec![],
            })
            .await
            .expect_err("a standby takes no subscription");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert_eq!(
            refused.metadata().get(LEADER_METADATA).map(|v| v.to_str().ok()),
            Some(Some(leader.to_string().as_str())),
            "{refused:?}"
        );
        assert_eq!(
            grpc_probe(standby, SOON).await,
            GrpcAnswer::Refused(Some(leader.to_string()))
        );
    }
    // The refused subscriptions created nothing on the leader.
    assert!(cluster.frameworks().await.is_empty());
}

#[tokio::test]
async fn killing_the_leader_keeps_every_task_running_with_the_same_id() {
    let mut cluster = HaCluster::start(2).await;
    let first = cluster.leader().await;
    let state = cluster.wait_agents_active(2).await;
    let agent_ids: BTreeSet<String> = state["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a["id"].as_str().expect("an agent id").to_owned())
        .collect();
    let info = framework_info("ha-e2e", 3600.0);
    let (mut framework, at) =
        Framework::subscribe_to_leader(&cluster.master_addrs(), info.clone(), SOON).await;
    assert_eq!(at, first);

    // Two long tasks on each agent.
    let mut offers: BTreeMap<String, v1::Offer> = BTreeMap::new();
    while offers.len() < 2 {
        for offer in framework.offers().await {
            offers.entry(offer.agent_id.clone()).or_insert(offer);
        }
    }
    assert_eq!(offers.keys().cloned().collect::<BTreeSet<_>>(), agent_ids);
    let mut placed: BTreeMap<String, String> = BTreeMap::new();
    for (i, (agent, offer)) in offers.iter().enumerate() {
        let tasks: Vec<v1::TaskInfo> = (0..2)
            .map(|k| {
                let id = format!("ha-{i}-{k}");
                placed.insert(id.clone(), agent.clone());
                shell_task(&id, "echo $$ > pid; exec sleep 1000", 0.5, 64.0)
            })
            .collect();
        framework.launch(&[offer], tasks).await;
    }
    for id in placed.keys() {
        framework.update(id, v1::TaskState::Running).await;
    }
    let mut pids = BTreeMap::new();
    for id in placed.keys() {
        pids.insert(id.clone(), task_pid_under(cluster.path(), id).await);
    }
    let framework_id = framework.id.clone();

    cluster.master_at(first).crash();
    let killed = Instant::now();
    let others = cluster.live_master_addrs();
    let second = wait_for_one_leader(&others, SOON).await;
    let elected = killed.elapsed();
    let mut info = info;
    info.id = framework_id.clone();
    let (mut framework, at) = Framework::subscribe_to_leader(&others, info, SOON).await;
    let resubscribed = killed.elapsed();
    cluster.wait_agents_active(2).await;
    let agents_back = killed.elapsed();
    eprintln!(
        "leader SIGKILLed → new leader serving after {elected:?}, the framework re-subscribed after \
         {resubscribed:?}, both agents re-registered after {agents_back:?}"
    );
    assert_ne!(second, first);
    assert_eq!(at, second, "subscribed at a master that does not lead");
    assert_eq!(framework.id, framework_id, "re-subscribed under another id");

    // Reconciliation: every task RUNNING, on the agent it was placed on.
    let ids: Vec<&str> = placed.keys().map(String::as_str).collect();
    framework.reconcile(&ids).await;
    let mut answers = BTreeMap::new();
    while answers.len() < ids.len() {
        let status = framework
            .wait_for(SOON, |e| match &e.event {
                Some(v1::event::Event::Update(u)) => u.status.clone().filter(|s| {
                    s.reason == v1::StatusReason::ReasonReconciliation as i32
                        && placed.contains_key(&s.task_id)
                        && !answers.contains_key(&s.task_id)
                }),
                _ => None,
            })
            .await
            .unwrap_or_else(|| panic!("no reconciliation answer for every task: {answers:#?}"));
        answers.insert(status.task_id.clone(), status);
    }
    for (id, status) in &answers {
        assert_eq!(status.state(), v1::TaskState::Running, "{status:?}");
        assert_eq!(&status.agent_id, &placed[id], "{status:?}");
    }
    assert_eq!(
        cluster.live_tasks(&framework_id).await,
        placed.keys().cloned().collect::<BTreeSet<_>>()
    );
    // The very same processes, never restarted.
    for (id, pid) in &pids {
        assert!(pid_alive(*pid), "{id}'s process {pid} is gone");
        assert_eq!(task_pid_under(cluster.path(), id).await, *pid);
    }
    assert!(
        cluster.launches().values().all(|n| *n == 1),
        "a task was launched again: {:?}",
        cluster.launches()
    );

    // The new leader launches.
    let offer = framework.offers().await.into_iter().next().expect("an offer");
    framework
        .launch(
            &[&offer],
            vec![shell_task("ha-after", "exec sleep 1000", 0.5, 64.0)],
        )
        .await;
    framework.update("ha-after", v1::TaskState::Running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_session_timeout_steps_down_and_two_masters_never_accept_calls() {
    let mut cluster = HaCluster::start(0).await;
    let addrs = cluster.master_addrs();
    let first = cluster.leader().await;
    let index = addrs.iter().position(|a| *a == first).expect("a master");
    let monitor = AcceptMonitor::start(addrs.clone());
    sleep(Duration::from_millis(500)).await;

    cluster.master_at(first).signal(Signal::SIGSTOP);
    let paused = Instant::now();
    let others: Vec<SocketAddr> = addrs.iter().copied().filter(|a| *a != first).collect();
    let second = wait_for_one_leader(&others, SOON).await;
    let elected = paused.elapsed();
    let second_index = addrs.iter().position(|a| *a == second).expect("a master");
    // Paused well past the session timeout, and a while past the election.
    sleep(
        (SESSION * 5 / 2)
            .saturating_sub(paused.elapsed())
            .max(Duration::from_millis(500)),
    )
    .await;
    let pause = paused.elapsed();
    // Read before the signal: the master can answer nothing before SIGCONT is sent, while a
    // reading taken after it may come late on a loaded machine (the monitor then saw answers
    // "before" the resume).
    let resumed = Instant::now();
    cluster.master_at(first).signal(Signal::SIGCONT);

    // A fresh question right after the pause: not the leader.
    let answer = health_with(
        &reqwest::Client::builder()
            .no_proxy()
            .timeout(SOON)
            .build()
            .expect("an HTTP client"),
        first,
    )
    .await
    .expect("the resumed master answers /health");
    let first_health = resumed.elapsed();
    assert_eq!(
        answer["leader"],
        json!(false),
        "leads again after the pause: {answer}"
    );
    let answer = grpc_probe(first, SOON).await;
    assert!(
        matches!(answer, GrpcAnswer::Refused(_)),
        "the resumed master did not refuse a call: {answer:?}"
    );
    // And it comes to point at the new leader.
    until("the old leader to name the new one", SOON, || async {
        let h = health(first).await?;
        (h["leader"] == json!(false) && h["leader_address"] == json!(second.to_string())).then_some(())
    })
    .await;
    until("the old leader's gRPC to name the new one", SOON, || async {
        (grpc_probe(first, PROBE).await == GrpcAnswer::Refused(Some(second.to_string()))).then_some(())
    })
    .await;
    let pointing = resumed.elapsed();
    sleep(Duration::from_secs(2)).await;
    let (paused_at, resumed_at) = (monitor.offset(paused), monitor.offset(resumed));
    let samples = monitor.finish().await;

    // Never two masters accepting the calls sent at the same instant.
    let both: Vec<&Sample> = samples.iter().filter(|s| s.accepting().len() > 1).collect();
    assert!(
        both.is_empty(),
        "two masters accepted calls sent at the same instant (master {index} was paused from \
         {paused_at:?} to {resumed_at:?}): {both:#?}"
    );
    assert!(samples.len() > 60, "only {} rounds", samples.len());
    let accepted_by = |i: usize| samples.iter().filter(|s| s.accepting() == vec![i]).count();
    assert!(
        accepted_by(index) > 0,
        "the first leader was never sampled leading"
    );
    assert!(
        accepted_by(second_index) > 0,
        "the new leader was never sampled leading"
    );
    // The probes sent to the paused master (surely stopped by then) were
    // answered only once it ran again, and refused: its first acts after
    // waking up were those of a standby.
    let stopped_by = paused_at + Duration::from_millis(100);
    let woke: Vec<&Sample> = samples
        .iter()
        .filter(|s| (stopped_by..resumed_at).contains(&s.at))
        .collect();
    let health_on_waking: Vec<(Option<bool>, Duration)> = woke
        .iter()
        .filter_map(|s| Some((s.health[index], s.health_answered[index]?)))
        .collect();
    let grpc_on_waking: Vec<(GrpcAnswer, Duration)> = woke
        .iter()
        .filter_map(|s| Some((s.grpc[index].clone(), s.grpc_answered[index]?)))
        .collect();
    assert!(
        !health_on_waking.is_empty() && !grpc_on_waking.is_empty(),
        "no probe sent during the pause was answered: {woke:#?}"
    );
    for (answer, at) in &health_on_waking {
        assert!(*at >= resumed_at, "the paused master answered /health at {at:?}");
        assert_eq!(
            *answer,
            Some(false),
            "/health answered at {at:?}, after the pause"
        );
    }
    for (answer, at) in &grpc_on_waking {
        assert!(*at >= resumed_at, "the paused master answered gRPC at {at:?}");
        assert!(
            matches!(answer, GrpcAnswer::Refused(_)),
            "gRPC answered {answer:?} at {at:?}, after the pause"
        );
    }
    let soonest = health_on_waking
        .iter()
        .map(|(_, at)| *at)
        .chain(grpc_on_waking.iter().map(|(_, at)| *at))
        .min()
        .unwrap_or_default();
    eprintln!(
        "leader SIGSTOPped → new leader serving after {elected:?}; resumed after {pause:?}; probes sent \
         during the pause ({} /health, {} gRPC) answered 'not the leader' from {:?} after the resume; a \
         fresh /health after {first_health:?}; it named the new leader after {pointing:?}; {} sampling rounds",
        health_on_waking.len(),
        grpc_on_waking.len(),
        soonest - resumed_at,
        samples.len()
    );
    assert_eq!(wait_for_one_leader(&addrs, SOON).await, second);
}

// ---------------------------------------------------------------------------
// The service framework
// ---------------------------------------------------------------------------

/// Sends a request with an optional JSON body; answers the status and the body as JSON.
async fn call(method: Method, url: &str, body: Option<&Value>) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client");
    let mut request = client.request(method.clone(), url);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

/// The leader an instance names (itself, or through the leader when it stands by).
async fn framework_leader(instance: &Process, path: &str) -> Option<String> {
    let answer = get_json(&url(instance, path)).await?;
    answer["leader"].as_str().map(str::to_owned)
}

/// Waits until `instance` names `leader` as the leader at `path` (`/v2/leader`, `/leader`).
async fn wait_framework_leader(instance: &Process, leader: &Process, path: &str) {
    let want = leader.addr.to_string();
    until(
        &format!("{} to name {want} at {path}", instance.addr),
        SOON,
        || async { (framework_leader(instance, path).await? == want).then_some(()) },
    )
    .await;
}

async fn app_tasks(service: &Process, app: &str) -> Vec<AppTask> {
    let Some(body) = get_json(&url(service, &format!("/v2/apps{app}/tasks"))).await else {
        return vec![];
    };
    app_tasks_in(body["tasks"].as_array().map(Vec::as_slice).unwrap_or_default())
}

/// The ids of the running deployments; `None` when unanswered.
async fn deployments(service: &Process) -> Option<Vec<String>> {
    let body = get_json(&url(service, "/v2/deployments")).await?;
    Some(
        body.as_array()?
            .iter()
            .filter_map(|d| d["id"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// Waits until `app` has exactly `n` running tasks, all of `version`, and no deployment runs.
async fn settled(service: &Process, app: &str, n: usize, version: &str) -> Vec<AppTask> {
    until(
        &format!("{app} to settle at {n} tasks of version {version}"),
        LONG,
        || async {
            let tasks = app_tasks(service, app).await;
            let done = deployments(service).await?.is_empty();
            (done
                && tasks.len() == n
                && tasks
                    .iter()
                    .all(|t| t.state == "TASK_RUNNING" && t.version == version))
            .then_some(tasks)
        },
    )
    .await
}

#[tokio::test]
async fn two_service_instances_finish_a_rolling_deployment_when_the_active_one_is_killed() {
    let cluster = HaCluster::start(2).await;
    cluster.wait_agents_active(2).await;
    let mut active = cluster
        .start_framework("service", "service-a", &["--name", "e2e-service"])
        .await;
    wait_framework_leader(&active, &active, "/v2/leader").await;
    let standby = cluster
        .start_framework("service", "service-b", &["--name", "e2e-service"])
        .await;
    wait_framework_leader(&standby, &active, "/v2/leader").await;
    let framework = until("the service framework to subscribe", SOON, || async {
        let info = get_json(&url(&standby, "/v2/info")).await?;
        info["frameworkId"].as_str().map(str::to_owned)
    })
    .await;

    // Everything through the standby, which forwards to the active instance.
    let app = "/rolling";
    let (status, body) = call(
        Method::POST,
        &url(&standby, "/v2/apps"),
        Some(&json!({
            "id": app, "cmd": "echo $$ > pid; exec sleep 1000", "instances": 4, "cpus": 0.1, "mem": 32,
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let v1 = body["version"].as_str().expect("version").to_owned();
    let old = settled(&standby, app, 4, &v1).await;
    let mut old_pids = vec![];
    for t in &old {
        old_pids.push((t.id.clone(), task_pid_under(cluster.path(), &t.id).await));
    }

    // The new version turns healthy only once the gate file exists, so the
    // update stops half way: 2 old tasks killed, 2 new ones running but not
    // yet healthy, 2 old ones kept for minimumHealthCapacity 0.5.
    let gate = cluster.path().join("gate");
    let update = gated_update(&gate);
    let (status, body) = call(
        Method::PUT,
        &url(&standby, &format!("/v2/apps{app}")),
        Some(&update),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v2 = body["version"].as_str().expect("version").to_owned();
    let deployment = body["deploymentId"].as_str().expect("deploymentId").to_owned();
    let halfway = until("the update to get half way", LONG, || async {
        let tasks = app_tasks(&standby, app).await;
        let running = |version: &str| {
            tasks
                .iter()
                .filter(|t| t.version == version && t.state == "TASK_RUNNING")
                .count()
        };
        (tasks.len() == 4 && running(&v2) == 2 && running(&v1) == 2).then_some(tasks.clone())
    })
    .await;
    let mut new_pids = vec![];
    for t in halfway.iter().filter(|t| t.version == v2) {
        new_pids.push((t.id.clone(), task_pid_under(cluster.path(), &t.id).await));
    }

    active.crash();
    let killed = Instant::now();
    wait_framework_leader(&standby, &standby, "/v2/leader").await;
    let took_over = killed.elapsed();
    // The new leader carries on from the stored state: the same deployment, no task replaced.
    let running = until("the new leader to answer", SOON, || deployments(&standby)).await;
    assert_eq!(running, vec![deployment.clone()], "the deployment was lost");
    assert_eq!(ids(&app_tasks(&standby, app).await), ids(&halfway));

    std::fs::write(&gate, b"").expect("open the gate");
    let done = settled(&standby, app, 4, &v2).await;
    eprintln!(
        "active service instance SIGKILLed → the standby led after {took_over:?}, the deployment \
         finished after {:?}",
        killed.elapsed()
    );

    let apps = get_json(&url(&standby, "/v2/apps")).await.expect("apps");
    let listed: Vec<(&str, &str)> = apps["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap_or(""),
                a["version"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(listed, vec![(app, v2.as_str())]);
    let versions = get_json(&url(&standby, &format!("/v2/apps{app}/versions")))
        .await
        .expect("versions");
    let versions: BTreeSet<&str> = versions["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(versions, BTreeSet::from([v1.as_str(), v2.as_str()]));
    let done_ids = ids(&done);
    for (id, pid) in &new_pids {
        assert!(done_ids.contains(id), "{id} was replaced: {done:?}");
        assert!(pid_alive(*pid), "{id}'s process was restarted");
    }
    for (id, pid) in &old_pids {
        assert!(!done_ids.contains(id), "old task {id} still listed");
        until(&format!("old task {id} to exit"), SOON, || async {
            (!pid_alive(*pid)).then_some(())
        })
        .await;
    }
    until("the master to run just the app's tasks", SOON, || async {
        (cluster.live_tasks(&framework).await == done_ids).then_some(())
    })
    .await;
    // And it stays so: no late launch of a task lost track of.
    sleep(Duration::from_secs(2)).await;
    assert_eq!(cluster.live_tasks(&framework).await, done_ids);
    assert_eq!(ids(&app_tasks(&standby, app).await), done_ids);
    assert_eq!(cluster.frameworks().await, vec![framework]);
    let launched = cluster.launches();
    assert!(
        launched.values().all(|n| *n == 1),
        "a task was launched twice: {launched:?}"
    );
    assert_eq!(launched.len(), 8, "4 tasks of each version: {launched:?}");
}

// ---------------------------------------------------------------------------
// The cron framework
// ---------------------------------------------------------------------------

/// The first whole second at least `lead` from now.
fn start_in(lead: Duration) -> Timestamp {
    let at = Timestamp::now() + SignedDuration::try_from(lead).expect("a short lead");
    Timestamp::from_second(at.as_second() + 1).expect("a valid second")
}

/// The job's run history, oldest first (empty when unanswered).
async fn runs(cron: &Process, job: &str) -> Vec<RunRecord> {
    let Some(body) = get_json(&url(cron, &format!("/scheduler/job/{job}/runs"))).await else {
        return vec![];
    };
    serde_json::from_value(body).expect("a run history")
}

/// Polls the job's run history until `done` holds.
async fn wait_runs(cron: &Process, job: &str, what: &str, done: impl Fn(&[RunRecord]) -> bool) {
    until(what, LONG, || async {
        let history = runs(cron, job).await;
        done(&history).then_some(())
    })
    .await;
}

/// Adds `job` through `cron` (any instance: a standby forwards it).
async fn add_job(cron: &Process, job: Value) {
    let (status, body) = call(Method::POST, &url(cron, "/scheduler/iso8601"), Some(&job)).await;
    assert_eq!(status, 204, "{body}");
}

/// A job running `sleep 3` every 2 s from `start`: runs overlap, so some are
/// in flight whenever something is killed.
fn every_two_seconds(start: Timestamp) -> Value {
    json!({"name": "every2", "command": "sleep 3", "schedule": format!("R/{start}/PT2S"),
           "concurrencyPolicy": "ALLOW", "retries": 0, "cpus": 0.1, "mem": 32})
}

/// One scheduled run per instant `start + k·2 s`, k = 0, 1, …: no gap, no
/// duplicate; every run that got as far as running has one task, launched
/// once, and those in `in_flight` (runs running at a kill) were adopted:
/// same task, succeeded at the first attempt.
fn assert_history(
    history: &[RunRecord],
    start: Timestamp,
    in_flight: &[RunRecord],
    launched: &BTreeMap<String, usize>,
) {
    let instants: Vec<Timestamp> = history.iter().filter_map(|r| r.scheduled_at).collect();
    assert_eq!(
        instants.len(),
        history.len(),
        "only scheduled runs expected: {history:#?}"
    );
    let distinct: BTreeSet<Timestamp> = instants.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        instants.len(),
        "an instant ran twice: {instants:?}"
    );
    let expected: Vec<Timestamp> = (0..instants.len() as i64)
        .map(|k| start + SignedDuration::from_secs(2 * k))
        .collect();
    assert_eq!(instants, expected, "a gap in the instants");
    let mut tasks = BTreeSet::new();
    for run in history.iter().filter(|r| r.state != RunState::Pending) {
        assert_eq!(run.attempt, 0, "a run was retried: {run:#?}");
        assert!(
            matches!(run.state, RunState::Running | RunState::Succeeded),
            "{run:#?}"
        );
        let task = run
            .task_id
            .as_ref()
            .expect("a run past pending has a task")
            .to_string();
        assert!(tasks.insert(task.clone()), "two runs share {task}");
        if run.state == RunState::Succeeded {
            assert_eq!(
                launched.get(&task),
                Some(&1),
                "{task} was not launched exactly once"
            );
        }
    }
    assert!(
        launched.values().all(|n| *n == 1),
        "a task was launched twice: {launched:?}"
    );
    for adopted in in_flight {
        let after = history
            .iter()
            .find(|r| r.run_id == adopted.run_id)
            .expect("the run in flight is kept");
        assert_eq!(
            after.task_id, adopted.task_id,
            "the run in flight got another task"
        );
        assert_eq!(
            (after.state, after.attempt),
            (RunState::Succeeded, 0),
            "{after:#?}"
        );
    }
}

#[tokio::test]
async fn two_cron_instances_keep_the_run_history_without_gap_or_duplicate_when_the_active_one_is_killed() {
    let cluster = HaCluster::start(2).await;
    cluster.wait_agents_active(2).await;
    let extra = ["--retry-backoff", "500ms"];
    let mut active = cluster.start_framework("cron", "cron-a", &extra).await;
    wait_framework_leader(&active, &active, "/leader").await;
    let standby = cluster.start_framework("cron", "cron-b", &extra).await;
    wait_framework_leader(&standby, &active, "/leader").await;
    let start = start_in(Duration::from_secs(2));
    add_job(&standby, every_two_seconds(start)).await;

    // About 6 s of runs, then the active instance dies with some in flight.
    wait_runs(&standby, "every2", "three runs launched, one running", |r| {
        r.iter().filter(|r| r.task_id.is_some()).count() >= 3
            && r.iter().any(|r| r.state == RunState::Running)
    })
    .await;
    let before = runs(&standby, "every2").await;
    active.crash();
    let killed = Instant::now();
    let killed_at = Timestamp::now();
    let in_flight: Vec<RunRecord> = before
        .iter()
        .filter(|r| r.state == RunState::Running)
        .cloned()
        .collect();
    assert!(!in_flight.is_empty(), "no run in flight at the kill: {before:#?}");

    wait_framework_leader(&standby, &standby, "/leader").await;
    let took_over = killed.elapsed();
    // About 8 s more on the new leader.
    let until_instant = killed_at + SignedDuration::from_secs(8);
    wait_runs(&standby, "every2", "runs 8 s after the kill succeeded", |r| {
        r.iter()
            .any(|r| r.scheduled_at.is_some_and(|s| s >= until_instant) && r.state == RunState::Succeeded)
            && in_flight
                .iter()
                .all(|f| r.iter().any(|r| r.run_id == f.run_id && r.state.is_terminal()))
    })
    .await;
    let history = runs(&standby, "every2").await;
    eprintln!(
        "active cron instance SIGKILLed → the standby led after {took_over:?}; {} runs in the history",
        history.len()
    );
    assert_history(&history, start, &in_flight, &cluster.launches());
}

#[tokio::test]
async fn killing_the_master_leader_while_a_cron_job_fires_leaves_no_gap_or_duplicate() {
    let mut cluster = HaCluster::start(2).await;
    cluster.wait_agents_active(2).await;
    let cron = cluster
        .start_framework("cron", "cron", &["--retry-backoff", "500ms"])
        .await;
    wait_framework_leader(&cron, &cron, "/leader").await;
    let start = start_in(Duration::from_secs(2));
    add_job(&cron, every_two_seconds(start)).await;
    wait_runs(&cron, "every2", "three runs launched, one running", |r| {
        r.iter().filter(|r| r.task_id.is_some()).count() >= 3
            && r.iter().any(|r| r.state == RunState::Running)
    })
    .await;
    let before = runs(&cron, "every2").await;
    let leader = cluster.leader().await;
    cluster.master_at(leader).crash();
    let killed = Instant::now();
    let killed_at = Timestamp::now();
    let in_flight: Vec<RunRecord> = before
        .iter()
        .filter(|r| r.state == RunState::Running)
        .cloned()
        .collect();
    assert!(!in_flight.is_empty(), "no run in flight at the kill: {before:#?}");

    let second = cluster.leader().await;
    assert_ne!(second, leader);
    let elected = killed.elapsed();
    let until_instant = killed_at + SignedDuration::from_secs(8);
    wait_runs(&cron, "every2", "runs 8 s after the kill succeeded", |r| {
        r.iter()
            .any(|r| r.scheduled_at.is_some_and(|s| s >= until_instant) && r.state == RunState::Succeeded)
            && in_flight
                .iter()
                .all(|f| r.iter().any(|r| r.run_id == f.run_id && r.state.is_terminal()))
    })
    .await;
    let history = runs(&cron, "every2").await;
    eprintln!(
        "master leader SIGKILLed while the job fires → new leader after {elected:?}; {} runs",
        history.len()
    );
    assert_history(&history, start, &in_flight, &cluster.launches());
    let frameworks = cluster.frameworks().await;
    assert_eq!(
        frameworks.len(),
        1,
        "the cron framework re-subscribed under another id: {frameworks:?}"
    );
}

//! The service framework highly available: two instances on one real
//! ZooKeeper (`--zk`), a real master and agents in this process. The standby
//! forwards REST calls to the leader; when the leader dies during a rolling
//! deployment the standby takes over and finishes it, losing and duplicating
//! nothing; a leader cut off from ZooKeeper stops acting.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: panics are the failure report

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use agora_service::runtime::RuntimeError;
use agora_store::ZkUrl;
use agora_store::zk_server::{ZkProxy, ZkServer};
use serde_json::{Value, json};
use support::{Cluster, ClusterOptions, eventually};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One `agora service --zk …` instance in this process.
struct Instance {
    address: String,
    stop: Option<oneshot::Sender<()>>,
    run: Option<JoinHandle<Result<(), RuntimeError>>>,
}

impl Instance {
    /// Starts an instance whose state and election are under `zk_url`.
    async fn start(cluster: &Cluster, zk_url: &str, name: &str) -> Instance {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let mut config = cluster.service_config(&cluster.dir.path().join(name));
        config.zk = Some(ZkUrl::parse(zk_url).unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let run = tokio::spawn(agora_service::runtime::serve(config, listener, async {
            let _ = stopped.await;
        }));
        Instance {
            address,
            stop: Some(stop),
            run: Some(run),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Ends the instance at once, as a crash would: everything it runs is
    /// dropped, nothing is stopped cleanly, the framework is not torn down.
    fn kill(&mut self) {
        if let Some(run) = self.run.take() {
            run.abort();
        }
    }

    /// Stops the instance cleanly (it resigns; tasks keep running).
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let run = self.run.take().unwrap();
        tokio::time::timeout(support::WAIT, run)
            .await
            .expect("the instance stops in time")
            .unwrap()
            .unwrap();
    }

    /// The leader as this instance answers `/v2/leader` (forwarded if it
    /// stands by).
    async fn leader(&self) -> Option<String> {
        let answer: Value = get(&self.url("/v2/leader")).await?;
        answer["leader"].as_str().map(str::to_owned)
    }

    /// Waits until this instance answers that `leader` leads.
    async fn wait_leader(&self, leader: &Instance) {
        let want = leader.address.clone();
        eventually(
            &format!("{} to report {want} as the leader", self.address),
            || {
                let want = want.clone();
                async move { (self.leader().await? == want).then_some(()) }
            },
        )
        .await;
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn get(url: &str) -> Option<Value> {
    let response = reqwest::get(url).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

async fn send(method: reqwest::Method, url: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, url)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// An app of `instances` sleeping tasks running `cmd`.
fn app(id: &str, cmd: &str, instances: u32) -> Value {
    json!({
        "id": id,
        "cmd": cmd,
        "instances": instances,
        "cpus": 0.1,
        "mem": 16,
        "taskKillGracePeriodSeconds": 1,
    })
}

/// The app's tasks as the REST API shows them.
async fn tasks(instance: &Instance, app: &str) -> Vec<Value> {
    match get(&instance.url(&format!("/v2/apps{app}/tasks"))).await {
        Some(answer) => answer["tasks"].as_array().cloned().unwrap_or_default(),
        None => Vec::new(),
    }
}

fn healthy(task: &Value) -> bool {
    task["healthCheckResults"]
        .as_array()
        .is_some_and(|r| !r.is_empty() && r.iter().all(|r| r["alive"] == true))
}

fn task_ids(tasks: &[Value]) -> BTreeSet<String> {
    tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

/// How many times each task was launched on the agent with work dir
/// `agent_dir` (one sandbox run directory per launch).
fn launches(agent_dir: &Path, into: &mut BTreeMap<String, usize>) {
    let Ok(frameworks) = std::fs::read_dir(agent_dir.join("sandboxes")) else {
        return;
    };
    for framework in frameworks.flatten() {
        for task in std::fs::read_dir(framework.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let runs = std::fs::read_dir(task.path()).into_iter().flatten().count();
            *into
                .entry(task.file_name().to_string_lossy().into_owned())
                .or_default() += runs;
        }
    }
}

/// The master's live tasks and its frameworks.
async fn master_state(cluster: &Cluster) -> (Vec<Value>, Vec<Value>) {
    let state = get(&format!("http://{}/state", cluster.master))
        .await
        .unwrap_or(Value::Null);
    let list = |key: &str| state[key].as_array().cloned().unwrap_or_default();
    (list("tasks"), list("frameworks"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_the_standby_is_answered_by_the_leader() {
    let zk = ZkServer::launch().await.unwrap();
    let zk_url = zk.url("/agora-service");
    let cluster = Cluster::start().await;
    let a = Instance::start(&cluster, &zk_url, "a").await;
    a.wait_leader(&a).await;
    let b = Instance::start(&cluster, &zk_url, "b").await;
    b.wait_leader(&a).await;
    let mut events = reqwest::Client::new()
        .get(b.url("/v2/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);

    let (status, created) = send(
        reqwest::Method::POST,
        &b.url("/v2/apps"),
        &app("/proxied", "sleep 1000", 1),
    )
    .await;

    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], "/proxied");
    let on_leader = get(&a.url("/v2/apps/proxied"))
        .await
        .expect("the leader has the app");
    assert_eq!(on_leader["app"]["id"], "/proxied");
    let through_standby = get(&b.url("/v2/apps")).await.unwrap();
    assert_eq!(through_standby["apps"][0]["id"], "/proxied");
    let pong = reqwest::get(b.url("/ping")).await.unwrap();
    assert_eq!(
        pong.text().await.unwrap(),
        "pong",
        "/ping is answered by every instance"
    );
    // The leader's event stream reaches the client through the standby.
    let mut seen = String::new();
    tokio::time::timeout(support::WAIT, async {
        while !seen.contains("event: api_post_event") {
            let chunk = events.chunk().await.unwrap().expect("the stream stays open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no api_post_event through the standby: {seen}"));
    let (status, _) = send(reqwest::Method::DELETE, &b.url("/v2/apps/proxied"), &json!({})).await;
    assert_eq!(status, 200);
    eventually("the app to be gone on the leader", || async {
        get(&a.url("/v2/apps")).await?["apps"]
            .as_array()?
            .is_empty()
            .then_some(())
    })
    .await;
    drop(events);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_a_rolling_deployment_loses_and_duplicates_nothing() {
    let zk = ZkServer::launch().await.unwrap();
    let zk_url = zk.url("/agora-service");
    let cluster = Cluster::start_with(ClusterOptions {
        agents: 2,
        ..ClusterOptions::default()
    })
    .await;
    let mut a = Instance::start(&cluster, &zk_url, "a").await;
    a.wait_leader(&a).await;
    let b = Instance::start(&cluster, &zk_url, "b").await;
    b.wait_leader(&a).await;
    let (status, first) = send(
        reqwest::Method::POST,
        &b.url("/v2/apps"),
        &app("/web", "sleep 1000", 4),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    let v1_tasks = eventually("4 tasks of the first version", || async {
        let tasks = tasks(&a, "/web").await;
        let deployments = get(&a.url("/v2/deployments")).await?;
        let done = deployments.as_array()?.is_empty();
        (done && tasks.len() == 4 && tasks.iter().all(|t| t["state"] == "TASK_RUNNING")).then_some(tasks)
    })
    .await;

    // A rolling update, one task at a time, each new task healthy only after a
    // 2 s check: the deployment takes ~10 s.
    let mut second = app("/web", "sleep 1001", 4);
    second["upgradeStrategy"] = json!({"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.25});
    second["healthChecks"] = json!([{
        "protocol": "COMMAND", "command": {"value": "sleep 2"},
        "gracePeriodSeconds": 30, "intervalSeconds": 1, "timeoutSeconds": 10, "maxConsecutiveFailures": 3,
    }]);
    let (status, update) = send(reqwest::Method::PUT, &b.url("/v2/apps/web"), &second).await;
    assert_eq!(status, 200, "{update}");
    let v2 = update["version"].as_str().unwrap().to_owned();
    // Mid-way: a task of the new version healthy, an old one gone, more to do.
    let at_kill = eventually("the rolling deployment to be half-way", || {
        let v2 = v2.clone();
        let a = &a;
        async move {
            let tasks = tasks(a, "/web").await;
            let new_healthy = tasks
                .iter()
                .filter(|t| t["version"] == v2.as_str() && healthy(t))
                .count();
            let old = tasks.iter().filter(|t| t["version"] != v2.as_str()).count();
            (new_healthy >= 1 && (1..=3).contains(&old)).then_some(tasks)
        }
    })
    .await;
    let deployments = get(&a.url("/v2/deployments")).await.unwrap();
    assert_eq!(
        deployments.as_array().unwrap().len(),
        1,
        "still deploying: {deployments}"
    );
    let (_, frameworks) = master_state(&cluster).await;
    assert_eq!(frameworks.len(), 1);
    let framework_id = frameworks[0]["id"].as_str().unwrap().to_owned();

    a.kill();

    b.wait_leader(&b).await;
    let last = eventually("the standby to finish the deployment", || {
        let v2 = v2.clone();
        let b = &b;
        let cluster = &cluster;
        async move {
            let deployments = get(&b.url("/v2/deployments")).await?;
            let tasks = tasks(b, "/web").await;
            let (live, _) = master_state(cluster).await;
            (deployments.as_array()?.is_empty()
                && tasks.len() == 4
                && live.len() == 4
                && tasks
                    .iter()
                    .all(|t| t["version"] == v2.as_str() && t["state"] == "TASK_RUNNING"))
            .then_some(tasks)
        }
    })
    .await;

    // No app and no version lost.
    let apps = get(&b.url("/v2/apps")).await.unwrap();
    assert_eq!(apps["apps"].as_array().unwrap().len(), 1, "{apps}");
    assert_eq!(apps["apps"][0]["version"], v2.as_str());
    let versions = get(&b.url("/v2/apps/web/versions")).await.unwrap();
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2, "{versions}");
    // The master runs exactly the framework's 4 tasks, for the same framework.
    let (live, frameworks) = master_state(&cluster).await;
    assert_eq!(task_ids(&live), task_ids(&last), "{live:?}");
    assert!(live.iter().all(|t| t["framework_id"] == framework_id.as_str()));
    assert_eq!(frameworks.len(), 1, "{frameworks:?}");
    assert_eq!(frameworks[0]["id"], framework_id.as_str());
    // Tasks of the new version that ran at the kill were kept, not replaced.
    let kept: BTreeSet<String> = task_ids(
        &at_kill
            .iter()
            .filter(|t| t["version"] == v2.as_str() && t["state"] == "TASK_RUNNING")
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert!(!kept.is_empty());
    assert!(kept.is_subset(&task_ids(&last)), "{kept:?} vs {last:?}");
    // Every task was launched once: 4 of each version, none restarted, none extra.
    let mut launched = BTreeMap::new();
    launches(&cluster.agent_dir_of(0), &mut launched);
    launches(&cluster.agent_dir_of(1), &mut launched);
    assert!(
        launched.values().all(|n| *n == 1),
        "a task was launched again: {launched:?}"
    );
    assert_eq!(launched.len(), 8, "{launched:?}");
    assert!(task_ids(&v1_tasks).iter().all(|t| launched.contains_key(t)));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_zookeeper_stops_acting_and_the_standby_takes_over() {
    let zk = ZkServer::launch().await.unwrap();
    let proxy = ZkProxy::start(&zk.connect_string()).await.unwrap();
    let cluster = Cluster::start().await;
    let a = Instance::start(&cluster, &proxy.url("/agora-service"), "a").await;
    a.wait_leader(&a).await;
    let b = Instance::start(&cluster, &zk.url("/agora-service"), "b").await;
    b.wait_leader(&a).await;
    let (status, _) = send(
        reqwest::Method::POST,
        &a.url("/v2/apps"),
        &app("/kept", "sleep 1000", 2),
    )
    .await;
    assert_eq!(status, 201);
    let before = eventually("2 running tasks", || async {
        let tasks = tasks(&a, "/kept").await;
        (tasks.len() == 2 && tasks.iter().all(|t| t["state"] == "TASK_RUNNING")).then_some(tasks)
    })
    .await;

    proxy.cut();

    // Within half the 2 s session timeout (plus slack) the leader stops
    // answering itself: it knows no leader it may forward to.
    eventually("the cut-off leader to stop answering", || async {
        let response = reqwest::get(a.url("/v2/apps")).await.ok()?;
        (response.status() == 503).then_some(())
    })
    .await;
    b.wait_leader(&b).await;
    let after = eventually("the new leader to run the same 2 tasks", || async {
        let tasks = tasks(&b, "/kept").await;
        (tasks.len() == 2 && tasks.iter().all(|t| t["state"] == "TASK_RUNNING")).then_some(tasks)
    })
    .await;
    assert_eq!(
        task_ids(&after),
        task_ids(&before),
        "no task restarted or replaced"
    );
    let (live, frameworks) = master_state(&cluster).await;
    assert_eq!(task_ids(&live), task_ids(&before));
    assert_eq!(frameworks.len(), 1);

    // Back in touch with ZooKeeper, the old leader stands by and forwards.
    proxy.restore();
    a.wait_leader(&b).await;
    b.stop().await;
    a.stop().await;
}

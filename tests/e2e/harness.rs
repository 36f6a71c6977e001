//! The test harness: real `agora` processes on loopback, each test in its own
//! directory, and a raw gRPC framework client that lets a test do exactly
//! what it wants (including the wrong thing).
//!
//! Everything a test starts is killed when its `Cluster` is dropped, even when
//! the test fails: the master and agent processes, and every task process
//! whose command line or working directory lies in the test's directory.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agora_proto::v1;
use agora_proto::v1::scheduler_client::SchedulerClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};
use tonic::transport::Channel;

/// Generous bound for anything that should happen "soon" on a loaded 2-core CI box.
pub const SOON: Duration = Duration::from_secs(20);

pub fn agora_bin() -> &'static str {
    env!("CARGO_BIN_EXE_agora")
}

/// One `agora` process (master or agent) with its log in the test dir.
pub struct Process {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
    args: Vec<String>,
}

impl Process {
    /// Starts `agora <args>` and waits until it logs that it listens.
    pub async fn start(dir: &Path, name: &str, args: Vec<String>) -> Process {
        let log = dir.join(format!("{name}.log"));
        let child = spawn_logged(&args, &log);
        let addr = wait_listening(&log).await;
        Process {
            child: Some(child),
            addr,
            log,
            args,
        }
    }

    /// Starts `agora <args>` and waits until it logs `message` with an
    /// `address` (for processes whose ready line does not end in
    /// "listening", such as the frameworks with `--zk`, which log "REST API
    /// listening; campaigning for leadership"). `addr` is that address.
    /// (`restart` waits for a "listening" line: it is for [`Process::start`].)
    pub async fn start_until_logged(dir: &Path, name: &str, args: Vec<String>, message: &str) -> Process {
        let log = dir.join(format!("{name}.log"));
        let child = spawn_logged(&args, &log);
        let mut process = Process {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            args,
        };
        process.addr = logged_address(&process.log, message).await;
        process
    }

    /// The process id while it runs (not after `crash`).
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Sends `signal` to the process: SIGSTOP pauses it (it answers nothing,
    /// its timers do not run), SIGCONT resumes it.
    pub fn signal(&self, signal: Signal) {
        let pid = self.pid().expect("the process runs");
        kill(Pid::from_raw(pid), signal).unwrap_or_else(|e| panic!("{signal} to {pid}: {e}"));
    }

    /// SIGKILL: the process gets no chance to clean up (a crash).
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same command again on the same address (after `crash`).
    pub async fn restart(&mut self) {
        self.crash();
        let mut args = self.args.clone();
        // Bind the same address this time.
        if let Some(i) = args
            .iter()
            .position(|a| a == "--listen" || a == "--master-listen")
        {
            args[i + 1] = self.addr.to_string();
        }
        let offset = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let child = spawn_logged(&args, &self.log);
        let addr = wait_listening_after(&self.log, offset).await;
        assert_eq!(addr, self.addr, "restarted on another address");
        self.child = Some(child);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.crash();
    }
}

fn spawn_logged(args: &[String], log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open log");
    let mut command = Command::new(agora_bin());
    // Run in the test's own directory, so relative paths stay inside it.
    if let Some(dir) = log.parent() {
        command.current_dir(dir);
    }
    command
        .args(["--log-format", "json"])
        .args(args)
        .env(
            "RUST_LOG",
            "info,agora=debug,agora_master=debug,agora_agent=debug",
        )
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup log"))
        .stderr(out)
        .spawn()
        .expect("spawn agora")
}

async fn wait_listening(log: &Path) -> SocketAddr {
    wait_listening_after(log, 0).await
}

/// The `address` of the first JSON log line whose message is exactly `message`
/// (waits for it).
pub async fn logged_address(log: &Path, message: &str) -> SocketAddr {
    let deadline = Instant::now() + SOON;
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                && v["message"].as_str() == Some(message)
                && let Some(a) = v["address"].as_str().and_then(|a| a.parse().ok())
            {
                return a;
            }
        }
        assert!(Instant::now() < deadline, "no {message:?} in the log:\n{text}");
        sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_listening_after(log: &Path, offset: u64) -> SocketAddr {
    let deadline = Instant::now() + SOON;
    loop {
        let text = std::fs::read(log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text[(offset as usize).min(text.len())..]).into_owned();
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                && v["message"].as_str().is_some_and(|m| m.ends_with("listening"))
                && let Some(a) = v["address"].as_str().and_then(|a| a.parse().ok())
            {
                return a;
            }
        }
        assert!(
            Instant::now() < deadline,
            "process did not start listening; log:\n{text}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

/// A test's cluster: one master and some agents, all in one temp dir.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub master: Process,
    pub agents: Vec<Process>,
}

/// Options for a test cluster.
pub struct ClusterSpec {
    pub agents: usize,
    pub master_args: Vec<String>,
    pub agent_args: Vec<String>,
    pub agent_resources: String,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            agents: 1,
            master_args: vec![],
            agent_args: vec![],
            agent_resources: "cpus:4;mem:4096;disk:10000;ports:[31000-31099]".into(),
        }
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Cluster {
    pub async fn start(spec: ClusterSpec) -> Cluster {
        let mut dir = tempfile::Builder::new()
            .prefix("agora-e2e-")
            .tempdir()
            .expect("tempdir");
        // AGORA_E2E_KEEP=1 keeps every test's directory (logs, sandboxes) for a post-mortem.
        if std::env::var_os("AGORA_E2E_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        let mut args = strings(&["master", "--listen", "127.0.0.1:0", "--work-dir"]);
        args.push(dir.path().join("master").display().to_string());
        args.extend(spec.master_args.iter().cloned());
        let master = Process::start(dir.path(), "master", args).await;
        let mut cluster = Cluster {
            dir,
            master,
            agents: vec![],
        };
        for _ in 0..spec.agents {
            cluster.add_agent(&spec.agent_resources, &spec.agent_args).await;
        }
        cluster
    }

    pub async fn add_agent(&mut self, resources: &str, extra: &[String]) -> usize {
        let i = self.agents.len();
        let mut args = strings(&["agent", "--listen", "127.0.0.1:0", "--master"]);
        args.push(self.master.addr.to_string());
        args.push("--work-dir".into());
        args.push(self.dir.path().join(format!("agent-{i}")).display().to_string());
        args.extend(["--resources".to_string(), resources.to_string()]);
        args.extend(["--hostname".to_string(), format!("host-{i}")]);
        args.extend(extra.iter().cloned());
        let agent = Process::start(self.dir.path(), &format!("agent-{i}"), args).await;
        self.agents.push(agent);
        i
    }

    pub fn master_url(&self) -> String {
        format!("http://{}", self.master.addr)
    }

    pub async fn state(&self) -> serde_json::Value {
        http_json(&format!("{}/state", self.master_url())).await
    }

    /// Waits until the master lists `n` agents as active.
    pub async fn wait_agents(&self, n: usize) {
        let deadline = Instant::now() + SOON;
        loop {
            let state = self.state().await;
            let active = state["agents"]
                .as_array()
                .map(|a| a.iter().filter(|a| a["status"] == "active").count())
                .unwrap_or(0);
            if active >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} agents never became active: {state:#}"
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every live process started for this test's tasks (supervisors and
    /// task processes), found by their command line or working directory.
    pub fn task_processes(&self) -> Vec<i32> {
        let ours: Vec<i32> = std::iter::once(&self.master)
            .chain(&self.agents)
            .filter_map(|p| p.child.as_ref().map(|c| c.id() as i32))
            .collect();
        processes_under(self.dir.path())
            .into_iter()
            .filter(|p| !ours.contains(p))
            .collect()
    }
}

impl Drop for Cluster {
    #[allow(clippy::disallowed_methods)] // Drop cannot await.
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.crash();
        }
        self.master.crash();
        for _ in 0..3 {
            for pid in processes_under(self.dir.path()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Kills every process under a directory when dropped (for tests that start
/// processes without a `Cluster`).
pub struct Sweep(pub PathBuf);

impl Drop for Sweep {
    fn drop(&mut self) {
        for pid in processes_under(&self.0) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Processes whose command line mentions `dir` or whose cwd is inside it.
pub fn processes_under(dir: &Path) -> Vec<i32> {
    let needle = dir.display().to_string();
    let me = std::process::id() as i32;
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cwd = std::fs::read_link(e.path().join("cwd")).unwrap_or_default();
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie && (cmdline.contains(&needle) || cwd.starts_with(dir)) {
            out.push(pid);
        }
    }
    out
}

pub fn pid_alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty()
        && !stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
}

pub async fn http_json(url: &str) -> serde_json::Value {
    reqwest::get(url)
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON body")
}

// ---------------------------------------------------------------------------
// A raw framework client
// ---------------------------------------------------------------------------

/// A framework speaking the scheduler API directly: no SDK, no automatic
/// acknowledgements, so tests control every call.
pub struct Framework {
    pub client: SchedulerClient<Channel>,
    pub id: String,
    pub stream_id: String,
    events: mpsc::UnboundedReceiver<v1::Event>,
    backlog: VecDeque<v1::Event>,
    reader: tokio::task::JoinHandle<()>,
}

pub fn framework_info(name: &str, failover_timeout: f64) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        name: name.into(),
        user: "test".into(),
        failover_timeout_seconds: failover_timeout,
        capabilities: vec![v1::FrameworkCapability::PartitionAware as i32],
        ..Default::default()
    }
}

pub async fn scheduler_client(addr: SocketAddr) -> SchedulerClient<Channel> {
    SchedulerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to master")
}

impl Framework {
    /// Subscribes; panics unless the master answers SUBSCRIBED.
    pub async fn subscribe(addr: SocketAddr, info: v1::FrameworkInfo) -> Framework {
        Self::try_subscribe(addr, info).await.expect("subscribe")
    }

    pub async fn try_subscribe(
        addr: SocketAddr,
        info: v1::FrameworkInfo,
    ) -> Result<Framework, tonic::Status> {
        Self::subscribe_with(scheduler_client(addr).await, info).await
    }

    /// Subscribes at whichever of `masters` leads, as a framework following
    /// the leader would: a standby's UNAVAILABLE naming the leader
    /// (`agora-leader` metadata) is followed at once; any other failure (no
    /// leader elected yet, a master that is down or paused) moves on to the
    /// next master, until `within`. Answers the framework and the master
    /// that took the subscription.
    pub async fn subscribe_to_leader(
        masters: &[SocketAddr],
        info: v1::FrameworkInfo,
        within: Duration,
    ) -> (Framework, SocketAddr) {
        let deadline = Instant::now() + within;
        let mut redirect: Option<SocketAddr> = None;
        let mut next = 0;
        let mut last = String::from("no attempt");
        loop {
            assert!(
                Instant::now() < deadline,
                "no master among {masters:?} took the subscription within {within:?}; last: {last}"
            );
            let addr = match redirect.take() {
                Some(addr) => addr,
                None => {
                    let addr = masters[next % masters.len()];
                    next += 1;
                    addr
                }
            };
            let connect = SchedulerClient::connect(format!("http://{addr}"));
            let client = match timeout(Duration::from_secs(1), connect).await {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => {
                    last = format!("{addr}: {e}");
                    sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(_) => {
                    last = format!("{addr}: no connection within 1 s");
                    continue;
                }
            };
            let attempt = timeout(Duration::from_secs(5), Self::subscribe_with(client, info.clone())).await;
            match attempt {
                Ok(Ok(framework)) => return (framework, addr),
                Ok(Err(status)) => {
                    last = format!("{addr}: {status:?}");
                    let leader = status
                        .metadata()
                        .get(agora_store::LEADER_METADATA)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<SocketAddr>().ok());
                    match leader {
                        Some(leader) if status.code() == tonic::Code::Unavailable => redirect = Some(leader),
                        _ => sleep(Duration::from_millis(100)).await,
                    }
                }
                Err(_) => last = format!("{addr}: no answer to SUBSCRIBE within 5 s"),
            }
        }
    }

    /// Subscribes through `client`; Err unless the master answers SUBSCRIBED.
    async fn subscribe_with(
        mut client: SchedulerClient<Channel>,
        info: v1::FrameworkInfo,
    ) -> Result<Framework, tonic::Status> {
        let mut stream = client
            .subscribe(v1::SubscribeRequest {
                framework: Some(info),
                suppressed_roles: vec![],
            })
            .await?
            .into_inner();
        let first = timeout(SOON, stream.message())
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("no SUBSCRIBED"))??
            .ok_or_else(|| tonic::Status::unavailable("stream ended before SUBSCRIBED"))?;
        let Some(v1::event::Event::Subscribed(sub)) = first.event else {
            return Err(tonic::Status::internal(format!(
                "first event was not SUBSCRIBED: {first:?}"
            )));
        };
        let (tx, events) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Ok(Some(ev)) = stream.message().await {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        Ok(Framework {
            client,
            id: sub.framework_id,
            stream_id: sub.stream_id,
            events,
            backlog: VecDeque::new(),
            reader,
        })
    }

    pub fn caller(&self) -> Option<v1::Caller> {
        Some(v1::Caller {
            framework_id: self.id.clone(),
            stream_id: self.stream_id.clone(),
        })
    }

    /// Closes the event stream, as a crashed framework would.
    pub fn disconnect(self) {
        self.reader.abort();
    }

    /// Waits for the first event (backlog first) that `pick` accepts; other
    /// events stay in the backlog in order.
    pub async fn wait_for<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&v1::Event) -> Option<T>,
    ) -> Option<T> {
        if let Some(i) = self.backlog.iter().position(|e| pick(e).is_some()) {
            let ev = self.backlog.remove(i).expect("index in range");
            return pick(&ev);
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match timeout(left, self.events.recv()).await {
                Ok(Some(ev)) => {
                    if let Some(t) = pick(&ev) {
                        return Some(t);
                    }
                    self.backlog.push_back(ev);
                }
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next batch of offers.
    pub async fn offers(&mut self) -> Vec<v1::Offer> {
        self.wait_for(SOON, |e| match &e.event {
            Some(v1::event::Event::Offers(o)) => Some(o.offers.clone()),
            _ => None,
        })
        .await
        .expect("no offers arrived")
    }

    /// Offers arriving within `within`, if any.
    pub async fn offers_within(&mut self, within: Duration) -> Option<Vec<v1::Offer>> {
        self.wait_for(within, |e| match &e.event {
            Some(v1::event::Event::Offers(o)) => Some(o.offers.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for an update of `task_id` to `state` (earlier updates of the
    /// task are acknowledged and skipped).
    pub async fn update(&mut self, task_id: &str, state: v1::TaskState) -> v1::TaskStatus {
        let deadline = Instant::now() + SOON;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let status = self
                .wait_for(left, |e| match &e.event {
                    Some(v1::event::Event::Update(u)) => u.status.clone().filter(|s| s.task_id == task_id),
                    _ => None,
                })
                .await
                .unwrap_or_else(|| panic!("no {state:?} update for {task_id}"));
            self.ack(&status).await;
            if status.state() == state {
                return status;
            }
        }
    }

    /// The next update for `task_id`, whatever its state (not acknowledged).
    pub async fn next_update(&mut self, task_id: &str, within: Duration) -> Option<v1::TaskStatus> {
        self.wait_for(within, |e| match &e.event {
            Some(v1::event::Event::Update(u)) => u.status.clone().filter(|s| s.task_id == task_id),
            _ => None,
        })
        .await
    }

    pub async fn ack(&mut self, status: &v1::TaskStatus) {
        if status.uuid.is_empty() {
            return;
        }
        self.client
            .acknowledge(v1::AcknowledgeRequest {
                caller: self.caller(),
                agent_id: status.agent_id.clone(),
                task_id: status.task_id.clone(),
                uuid: status.uuid.clone(),
            })
            .await
            .expect("acknowledge");
    }

    pub async fn launch(&mut self, offers: &[&v1::Offer], tasks: Vec<v1::TaskInfo>) {
        self.try_launch(offers, tasks, None).await.expect("accept");
    }

    pub async fn try_launch(
        &mut self,
        offers: &[&v1::Offer],
        tasks: Vec<v1::TaskInfo>,
        refuse_seconds: Option<f64>,
    ) -> Result<(), tonic::Status> {
        self.client
            .accept(v1::AcceptRequest {
                caller: self.caller(),
                offer_ids: offers.iter().map(|o| o.id.clone()).collect(),
                operations: vec![v1::Operation {
                    operation: Some(v1::operation::Operation::Launch(v1::Launch { task_infos: tasks })),
                }],
                filters: Some(v1::Filters {
                    refuse_seconds: refuse_seconds.or(Some(0.0)),
                }),
            })
            .await
            .map(|_| ())
    }

    pub async fn decline(&mut self, offers: &[&v1::Offer], refuse_seconds: f64) {
        self.client
            .decline(v1::DeclineRequest {
                caller: self.caller(),
                offer_ids: offers.iter().map(|o| o.id.clone()).collect(),
                filters: Some(v1::Filters {
                    refuse_seconds: Some(refuse_seconds),
                }),
            })
            .await
            .expect("decline");
    }

    pub async fn kill(&mut self, task_id: &str) {
        self.client
            .kill(v1::KillRequest {
                caller: self.caller(),
                task_id: task_id.into(),
                ..Default::default()
            })
            .await
            .expect("kill");
    }

    pub async fn reconcile(&mut self, task_ids: &[&str]) {
        self.client
            .reconcile(v1::ReconcileRequest {
                caller: self.caller(),
                tasks: task_ids
                    .iter()
                    .map(|t| v1::ReconcileTask {
                        task_id: t.to_string(),
                        agent_id: String::new(),
                    })
                    .collect(),
            })
            .await
            .expect("reconcile");
    }
}

impl Drop for Framework {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A task running `sh -c cmd` with the given cpus and mem.
pub fn shell_task(id: &str, cmd: &str, cpus: f64, mem: f64) -> v1::TaskInfo {
    v1::TaskInfo {
        name: id.into(),
        task_id: id.into(),
        resources: agora_proto::Resources::new()
            .scalar("cpus", cpus)
            .scalar("mem", mem)
            .to_proto(),
        command: Some(v1::CommandInfo {
            command: Some(v1::command_info::Command::Shell(cmd.into())),
            ..Default::default()
        }),
        kill_policy: Some(v1::KillPolicy {
            grace_period_seconds: Some(1.0),
        }),
        ..Default::default()
    }
}

/// The pid a task wrote to `$AGORA_SANDBOX/pid` (tests start tasks with `echo $$ > pid`).
pub async fn task_pid(cluster: &Cluster, task_id: &str) -> i32 {
    task_pid_under(cluster.dir.path(), task_id).await
}

/// [`task_pid`] for a task whose sandbox lies anywhere under `root`.
pub async fn task_pid_under(root: &Path, task_id: &str) -> i32 {
    let deadline = Instant::now() + SOON;
    loop {
        if let Some(p) = find_file(root, task_id, "pid")
            && let Ok(s) = std::fs::read_to_string(&p)
            && let Ok(pid) = s.trim().parse()
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "task {task_id} never wrote its pid");
        sleep(Duration::from_millis(20)).await;
    }
}

/// Finds `<...>/<task_id>/.../<name>` under `root` (the task's sandbox file).
fn find_file(root: &Path, task_id: &str, name: &str) -> Option<PathBuf> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == name)
                && p.components().any(|c| c.as_os_str() == task_id)
            {
                return Some(p);
            }
        }
    }
    None
}

//! Simulated agents for `agora bench cluster` and `agora bench failover`.
//! **A benchmark tool, not an agent**: they run nothing and checkpoint
//! nothing. They exist so one process can put thousands of agents in front
//! of a real master.
//!
//! Each simulated agent speaks the real agent protocol over its own
//! `AgentLink.Attach` stream: REGISTER with its resources, heartbeats at the
//! interval the master gives in REGISTERED, and on RUN_TASK a RUNNING status
//! update (fresh uuid, source AGENT) at once and FINISHED after the task
//! duration (RUN_TASK_GROUP: each of its tasks alike). Like a real agent it keeps one update per task in flight: the
//! next goes out only when the previous one is acknowledged, with
//! `latest_state` set to the task's newest state. KILL_TASK and
//! SHUTDOWN_FRAMEWORK end tasks as KILLED.
//!
//! By default a shard never reconnects: a stream that ends is counted as
//! lost. A shard made to follow the leader ([`AgentShard::following`], for
//! the failover benchmark) re-attaches every agent whose stream ended to the
//! leader published in ZooKeeper, the way a real agent does (`agent/src/link.rs`):
//! REGISTER with its agent id and its tasks (latest state), a standby's
//! UNAVAILABLE naming the leader (`agora-leader`) followed at once, other
//! failures retried after an exponential backoff (doubling up to 5 s, ±20 %
//! jitter) that a newly elected leader cuts short and resets — and, as in
//! `link.rs` today, not reset when a registered stream fails; once REGISTERED again,
//! the update in flight (if any) is resent with its uuid. The agents of one
//! shard share one connection and one backoff, and re-attach together.
//!
//! Many agents share one task and one HTTP/2 connection: an [`AgentShard`]
//! owns a few hundred agents' streams (merged with `SelectAll`), one
//! [`TimerQueue`] for their tasks' FINISHED deadlines, and one heartbeat
//! timer.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora_proto::v1;
use agora_proto::v1::agent_link_client::AgentLinkClient;
use agora_proto::v1::{TaskState, agent_message, master_message};
use agora_store::{LEADER_METADATA, LeaderInfo};
use anyhow::Context;
use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, SelectAll};
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tonic::transport::{Channel, Endpoint};

use super::timeline::{Timeline, task_index};
use super::timers::TimerQueue;

/// Attach calls a shard has in flight at once while registering.
const ATTACH_CONCURRENCY: usize = 16;
/// First wait after a failed re-attach (a real agent's, `agent/src/link.rs`).
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between re-attach attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Redirects followed at once, one after the other, before backing off.
const MAX_REDIRECTS_IN_A_ROW: u32 = 3;
/// Time allowed to open a connection to a master.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What every simulated agent has and does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Each agent's total resources.
    pub resources: Vec<v1::Resource>,
    /// How long a task "runs" between RUNNING and FINISHED.
    pub task_duration: Duration,
}

/// Counters shared by every shard.
#[derive(Debug, Default)]
pub struct SimCounters {
    /// Agents that received REGISTERED.
    pub registered: AtomicUsize,
    /// Agent streams that ended while the benchmark ran.
    pub lost_streams: AtomicUsize,
    /// Re-attach attempts (one per agent) that failed: no connection, or a
    /// master that refused the stream (following shards only).
    pub failed_attaches: AtomicUsize,
}

/// One task on a simulated agent: its newest state, and the update in
/// flight (sent and not yet acknowledged).
#[derive(Debug, Clone, PartialEq)]
pub struct SimTask {
    framework_id: String,
    state: TaskState,
    reported: TaskState,
    in_flight: Option<Vec<u8>>,
    /// The task as launched; kept only by agents that re-register.
    info: Option<v1::TaskInfo>,
}

impl SimTask {
    /// A task just received in RUN_TASK: RUNNING, nothing reported yet.
    pub fn started(framework_id: String) -> Self {
        Self {
            framework_id,
            state: TaskState::Running,
            reported: TaskState::Staging,
            in_flight: None,
            info: None,
        }
    }

    /// Keeps the task as launched, to report it when re-registering.
    pub fn with_info(mut self, info: v1::TaskInfo) -> Self {
        self.info = Some(info);
        self
    }

    /// The update sent and not yet acknowledged: its state and uuid.
    pub fn in_flight(&self) -> Option<(TaskState, &[u8])> {
        self.in_flight.as_deref().map(|uuid| (self.reported, uuid))
    }

    /// The task as a re-registering agent reports it: as launched, with its
    /// newest state.
    pub fn reported_task(&self, task_id: &str, agent_id: &str) -> v1::Task {
        let mut info = self.info.clone().unwrap_or_default();
        if info.task_id.is_empty() {
            task_id.clone_into(&mut info.task_id);
        }
        v1::Task {
            info: Some(info),
            framework_id: self.framework_id.clone(),
            status: Some(v1::TaskStatus {
                task_id: task_id.to_owned(),
                state: self.state as i32,
                source: v1::StatusSource::Agent as i32,
                agent_id: agent_id.to_owned(),
                timestamp: agora_proto::unix_seconds(std::time::SystemTime::now()),
                ..Default::default()
            }),
            group_id: String::new(),
        }
    }

    /// Moves to `state` unless the task already ended.
    pub fn transition(&mut self, state: TaskState) {
        if !agora_proto::state::is_terminal(self.state) {
            self.state = state;
        }
    }

    /// The state to report now, with a fresh uuid, if nothing is in flight
    /// and the newest state has not been reported.
    pub fn next_update(&mut self) -> Option<(TaskState, Vec<u8>)> {
        if self.in_flight.is_some() || self.state == self.reported {
            return None;
        }
        let uuid = uuid::Uuid::new_v4().as_bytes().to_vec();
        self.in_flight = Some(uuid.clone());
        self.reported = self.state;
        Some((self.state, uuid))
    }

    /// The update `uuid` was acknowledged; false if it was not the one in flight.
    pub fn acknowledged(&mut self, uuid: &[u8]) -> bool {
        if self.in_flight.as_deref() != Some(uuid) {
            return false;
        }
        self.in_flight = None;
        true
    }

    /// Terminal, reported and acknowledged: the agent can forget it.
    pub fn is_done(&self) -> bool {
        agora_proto::state::is_terminal(self.reported) && self.in_flight.is_none()
    }

    /// The task's newest state.
    pub fn state(&self) -> TaskState {
        self.state
    }
}

/// One simulated agent: its outbound stream and its tasks.
struct SimAgent {
    id: String,
    hostname: String,
    tx: mpsc::UnboundedSender<v1::AgentMessage>,
    tasks: HashMap<String, SimTask>,
    /// Which stream of this agent is the current one: messages and ends of
    /// earlier streams are ignored.
    stream: u64,
    /// The current stream is open.
    attached: bool,
    /// REGISTERED came on the current stream.
    registered: bool,
}

impl SimAgent {
    /// REGISTER for this agent: its id once it has one, and its tasks.
    fn register(&self, resources: &[v1::Resource]) -> v1::Register {
        v1::Register {
            agent: Some(v1::AgentInfo {
                id: self.id.clone(),
                hostname: self.hostname.clone(),
                resources: resources.to_vec(),
                ..Default::default()
            }),
            tasks: self
                .tasks
                .iter()
                .map(|(task_id, task)| task.reported_task(task_id, &self.id))
                .collect(),
            frameworks: Vec::new(),
        }
    }
}

/// What arrives on one agent's stream.
enum Inbound {
    Message(Box<v1::MasterMessage>),
    Ended(Option<tonic::Status>),
}

/// Messages of all of a shard's streams: (agent index, stream number, what came).
type Tagged = (usize, u64, Inbound);

/// How a following shard finds the leader and re-attaches its agents.
struct Follow {
    /// The leader published in ZooKeeper.
    leader: watch::Receiver<Option<LeaderInfo>>,
    /// The master of the last attempt.
    current: String,
    /// Where a standby said the leader is: tried next, at once.
    redirect: Option<String>,
    redirects_in_row: u32,
    backoff: Duration,
    /// Wait this long (or until another leader is elected) before the next attempt.
    wait: Option<Duration>,
    /// Agents whose stream ended, waiting to re-attach.
    waiting: BTreeSet<usize>,
    /// A stream ended since the last successful attach.
    streams_lost: bool,
    /// The re-attach attempt under way.
    attempt: Option<BoxFuture<'static, Reattached>>,
}

impl Follow {
    /// An attempt failed without a redirect: wait longer before the next.
    fn back_off(&mut self) {
        self.backoff = next_backoff(self.backoff);
        self.wait = Some(self.backoff);
        self.redirects_in_row = 0;
    }

    /// A standby named the leader: try it at once, unless redirects loop.
    fn redirected(&mut self, leader: String) {
        self.redirect = Some(leader);
        self.redirects_in_row += 1;
        if self.redirects_in_row > MAX_REDIRECTS_IN_A_ROW {
            self.back_off();
        }
    }
}

/// One agent's re-attach: its new stream, or the master's refusal.
type AttachResult = (usize, Result<Attached, tonic::Status>);

/// The outcome of one re-attach attempt.
struct Reattached {
    address: String,
    /// A newly elected leader cut the wait before the attempt short.
    leader_moved: bool,
    /// The agents the attempt was for.
    agents: Vec<usize>,
    /// Per agent, the open stream or the master's refusal; `Err` when no
    /// connection could be made.
    results: Result<Vec<AttachResult>, String>,
}

/// A group of simulated agents driven by one task over one connection.
pub struct AgentShard {
    config: Arc<SimConfig>,
    counters: Arc<SimCounters>,
    timeline: Arc<Timeline>,
    agents: Vec<SimAgent>,
    inbound: SelectAll<BoxStream<'static, Tagged>>,
    finish: TimerQueue<(usize, String)>,
    heartbeat: Option<Interval>,
    follow: Option<Follow>,
}

impl AgentShard {
    /// Attaches the agents numbered `numbers` over `channel` (each sends
    /// REGISTER first). Returns once every stream is open; REGISTERED
    /// arrives later and is counted in [`SimCounters::registered`].
    pub async fn attach(
        channel: Channel,
        numbers: Range<usize>,
        config: Arc<SimConfig>,
        counters: Arc<SimCounters>,
        timeline: Arc<Timeline>,
    ) -> anyhow::Result<Self> {
        let attached: Vec<_> = stream::iter(numbers)
            .map(|n| attach_one(channel.clone(), n, &config.resources))
            .buffer_unordered(ATTACH_CONCURRENCY)
            .try_collect()
            .await?;
        let mut agents = Vec::with_capacity(attached.len());
        let mut inbound = SelectAll::new();
        for (i, (n, (tx, messages))) in attached.into_iter().enumerate() {
            agents.push(SimAgent {
                id: String::new(),
                hostname: format!("sim-{n}"),
                tx,
                tasks: HashMap::new(),
                stream: 0,
                attached: true,
                registered: false,
            });
            inbound.push(messages.map(move |m| (i, 0, m)).boxed());
        }
        Ok(Self {
            config,
            counters,
            timeline,
            agents,
            inbound,
            finish: TimerQueue::new(),
            heartbeat: None,
            follow: None,
        })
    }

    /// Makes the shard follow the leader published in ZooKeeper (`leader`,
    /// e.g. from `agora_store::follow`): every agent whose stream ends
    /// re-attaches and re-registers with its id and tasks, as a real agent
    /// does. `attached_to` is the master the agents attached to. The agents
    /// keep their tasks' `TaskInfo`s from now on.
    pub fn following(mut self, leader: watch::Receiver<Option<LeaderInfo>>, attached_to: String) -> Self {
        self.follow = Some(Follow {
            leader,
            current: attached_to,
            redirect: None,
            redirects_in_row: 0,
            backoff: INITIAL_BACKOFF,
            wait: None,
            waiting: BTreeSet::new(),
            streams_lost: false,
            attempt: None,
        });
        self
    }

    /// Serves the agents until `stop` turns true; then closes their streams.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let deadline = self.finish.next_deadline();
            tokio::select! {
                next = next_inbound(&mut self.inbound, self.follow.is_some()) => match next {
                    Some((i, stream, Inbound::Message(m))) => self.on_message(i, stream, *m),
                    Some((i, stream, Inbound::Ended(status))) => self.on_ended(i, stream, status),
                    None => return,
                },
                _ = sleep_until_some(deadline) => self.finish_due(),
                _ = tick(&mut self.heartbeat) => self.heartbeat_all(),
                done = attempt_done(&mut self.follow) => self.on_reattached(done),
                _ = stop.wait_for(|s| *s) => return,
            }
            self.start_reattach();
        }
    }

    fn on_message(&mut self, i: usize, stream: u64, message: v1::MasterMessage) {
        let now = Instant::now();
        if self.agents.get(i).is_none_or(|a| a.stream != stream) {
            return;
        }
        let Some(message) = message.message else {
            return;
        };
        match message {
            master_message::Message::Registered(r) => {
                let Some(agent) = self.agents.get_mut(i) else {
                    return;
                };
                agent.id = r.agent_id;
                agent.registered = true;
                self.counters.registered.fetch_add(1, Ordering::Relaxed);
                if self.heartbeat.is_none() && r.heartbeat_interval_seconds > 0.0 {
                    let period = Duration::from_secs_f64(r.heartbeat_interval_seconds.min(3600.0));
                    let mut interval = tokio::time::interval_at(now + period, period);
                    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    self.heartbeat = Some(interval);
                }
                if self.follow.is_some() {
                    self.resend_in_flight(i);
                }
            }
            master_message::Message::RunTask(run) => {
                let (Some(task), Some(framework)) = (run.task, run.framework) else {
                    tracing::warn!("RUN_TASK without a task or framework");
                    return;
                };
                self.run_task(i, framework.id, task, now);
            }
            master_message::Message::RunTaskGroup(group) => {
                let Some(framework) = group.framework else {
                    tracing::warn!("RUN_TASK_GROUP without a framework");
                    return;
                };
                for task in group.tasks {
                    self.run_task(i, framework.id.clone(), task, now);
                }
            }
            master_message::Message::KillTask(kill) => {
                self.end_task(i, &kill.task_id, TaskState::Killed);
            }
            master_message::Message::Acknowledge(ack) => {
                let Some(agent) = self.agents.get_mut(i) else {
                    return;
                };
                let Some(task) = agent.tasks.get_mut(&ack.task_id) else {
                    return;
                };
                if task.acknowledged(&ack.uuid) {
                    self.flush(i, &ack.task_id);
                }
            }
            master_message::Message::ShutdownFramework(s) => {
                let ids: Vec<String> = self
                    .agents
                    .get(i)
                    .map(|a| {
                        a.tasks
                            .iter()
                            .filter(|(_, t)| t.framework_id == s.framework_id)
                            .map(|(id, _)| id.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                for id in ids {
                    self.end_task(i, &id, TaskState::Killed);
                }
            }
            master_message::Message::FrameworkMessage(_) => {}
        }
    }

    /// Starts a task: RUNNING now, FINISHED after the task duration.
    fn run_task(&mut self, i: usize, framework_id: String, task: v1::TaskInfo, now: Instant) {
        let task_id = task.task_id.clone();
        if let Some(index) = task_index(&task_id) {
            self.timeline.launched(index, now);
        }
        let keep_info = self.follow.is_some();
        let Some(agent) = self.agents.get_mut(i) else {
            return;
        };
        if agent.tasks.contains_key(&task_id) {
            return;
        }
        let mut sim = SimTask::started(framework_id);
        if keep_info {
            sim = sim.with_info(task);
        }
        agent.tasks.insert(task_id.clone(), sim);
        if let Some(at) = now.checked_add(self.config.task_duration) {
            self.finish.push(at, (i, task_id.clone()));
        }
        self.flush(i, &task_id);
    }

    fn on_ended(&mut self, i: usize, stream: u64, status: Option<tonic::Status>) {
        let Some(agent) = self.agents.get_mut(i) else {
            return;
        };
        // A failed stream ends twice (the error, then the end): count it once.
        if agent.stream != stream || !agent.attached {
            return;
        }
        agent.attached = false;
        self.counters.lost_streams.fetch_add(1, Ordering::Relaxed);
        let id = agent.id.as_str();
        let Some(follow) = self.follow.as_mut() else {
            match status {
                Some(s) => {
                    tracing::warn!(agent = id, code = ?s.code(), message = s.message(), "simulated agent's stream failed")
                }
                None => tracing::warn!(agent = id, "the master closed a simulated agent's stream"),
            }
            return;
        };
        tracing::debug!(agent = id, status = ?status.as_ref().map(|s| s.code()), "stream ended; re-attaching");
        // The shard's agents share one connection and one backoff: the
        // first stream to end decides the wait, the others join it.
        if !follow.streams_lost {
            follow.streams_lost = true;
            match status {
                // The master closed a registered stream: a real agent
                // starts over from its initial backoff.
                None if agent.registered => {
                    follow.backoff = INITIAL_BACKOFF;
                    follow.wait = Some(INITIAL_BACKOFF);
                }
                // The stream failed (a killed master), or the master took
                // it but refused the registration: like `agent/src/link.rs`
                // today, the backoff grows from where it was, even after a
                // successful registration.
                _ => follow.back_off(),
            }
        }
        follow.waiting.insert(i);
    }

    /// Starts a re-attach attempt for the waiting agents, unless one is under way.
    fn start_reattach(&mut self) {
        let Some(follow) = self.follow.as_mut() else {
            return;
        };
        if follow.attempt.is_some() || follow.waiting.is_empty() {
            return;
        }
        let agents: Vec<usize> = std::mem::take(&mut follow.waiting).into_iter().collect();
        let registers: Vec<(usize, v1::Register)> = agents
            .iter()
            .filter_map(|&i| Some((i, self.agents.get(i)?.register(&self.config.resources))))
            .collect();
        let target = follow.redirect.take();
        let wait = follow.wait.take().map(|d| (jittered(d), follow.current.clone()));
        tracing::debug!(agents = agents.len(), ?target, ?wait, "re-attaching");
        follow.attempt = Some(reattach(follow.leader.clone(), target, wait, agents, registers).boxed());
    }

    fn on_reattached(&mut self, done: Reattached) {
        let Some(follow) = self.follow.as_mut() else {
            return;
        };
        follow.attempt = None;
        follow.current = done.address;
        if done.leader_moved {
            // As `agent/src/link.rs`: the backoff grown against the old
            // leader ends, so a new one still loading is retried soon.
            follow.backoff = INITIAL_BACKOFF;
        }
        let results = match done.results {
            Ok(results) => results,
            Err(e) => {
                tracing::debug!(master = %follow.current, error = %e, "cannot connect; backing off");
                self.counters
                    .failed_attaches
                    .fetch_add(done.agents.len(), Ordering::Relaxed);
                follow.waiting.extend(done.agents);
                follow.back_off();
                return;
            }
        };
        let (mut redirect, mut refused, mut attached) = (None, None, 0);
        for (i, result) in results {
            match result {
                Ok((tx, messages)) => {
                    let Some(agent) = self.agents.get_mut(i) else {
                        continue;
                    };
                    agent.stream += 1;
                    agent.tx = tx;
                    agent.attached = true;
                    agent.registered = false;
                    follow.streams_lost = false;
                    let stream = agent.stream;
                    self.inbound.push(messages.map(move |m| (i, stream, m)).boxed());
                    attached += 1;
                }
                Err(status) => {
                    self.counters.failed_attaches.fetch_add(1, Ordering::Relaxed);
                    follow.waiting.insert(i);
                    match leader_named(&status) {
                        Some(leader) => redirect = Some(leader),
                        None => refused = Some(status.message().to_owned()),
                    }
                }
            }
        }
        tracing::debug!(
            master = %follow.current,
            attached,
            refused = follow.waiting.len(),
            redirect = ?redirect,
            reason = ?refused,
            "re-attach attempt done"
        );
        match redirect {
            Some(leader) => follow.redirected(leader),
            None if refused.is_some() => follow.back_off(),
            None => follow.redirects_in_row = 0,
        }
    }

    /// After re-registering: the update the master may not have received.
    fn resend_in_flight(&mut self, i: usize) {
        let Some(agent) = self.agents.get(i) else {
            return;
        };
        for (task_id, task) in &agent.tasks {
            if let Some((state, uuid)) = task.in_flight() {
                let update = status_update(task, task_id, &agent.id, state, uuid.to_vec());
                let _ = agent.tx.unbounded_send(update);
            }
        }
    }

    fn end_task(&mut self, i: usize, task_id: &str, state: TaskState) {
        if let Some(task) = self.agents.get_mut(i).and_then(|a| a.tasks.get_mut(task_id)) {
            task.transition(state);
            self.flush(i, task_id);
        }
    }

    fn finish_due(&mut self) {
        for (i, task_id) in self.finish.pop_due(Instant::now()) {
            self.end_task(i, &task_id, TaskState::Finished);
        }
    }

    fn heartbeat_all(&mut self) {
        for agent in self.agents.iter().filter(|a| a.registered) {
            let _ = agent.tx.unbounded_send(v1::AgentMessage {
                message: Some(agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
            });
        }
    }

    /// Sends the task's next update if one is due; forgets the task once
    /// its terminal update is acknowledged.
    fn flush(&mut self, i: usize, task_id: &str) {
        let Some(agent) = self.agents.get_mut(i) else {
            return;
        };
        let Some(task) = agent.tasks.get_mut(task_id) else {
            return;
        };
        if let Some((state, uuid)) = task.next_update() {
            let update = status_update(task, task_id, &agent.id, state, uuid);
            if agent.tx.unbounded_send(update).is_err() {
                // A following agent resends it once registered again.
                tracing::debug!(task = task_id, "the agent's stream is closed; update not sent");
            }
        } else if task.is_done() {
            agent.tasks.remove(task_id);
        }
    }
}

/// The STATUS_UPDATE message of `task`'s update `uuid` reporting `state`.
fn status_update(
    task: &SimTask,
    task_id: &str,
    agent_id: &str,
    state: TaskState,
    uuid: Vec<u8>,
) -> v1::AgentMessage {
    let update = v1::StatusUpdate {
        framework_id: task.framework_id.clone(),
        status: Some(v1::TaskStatus {
            task_id: task_id.to_owned(),
            state: state as i32,
            source: v1::StatusSource::Agent as i32,
            agent_id: agent_id.to_owned(),
            timestamp: agora_proto::unix_seconds(std::time::SystemTime::now()),
            uuid,
            ..Default::default()
        }),
        latest_state: task.state() as i32,
    };
    v1::AgentMessage {
        message: Some(agent_message::Message::StatusUpdate(update)),
    }
}

type Attached = (
    mpsc::UnboundedSender<v1::AgentMessage>,
    BoxStream<'static, Inbound>,
);

/// Opens agent `n`'s first stream with REGISTER (no id yet) as its first message.
async fn attach_one(
    channel: Channel,
    n: usize,
    resources: &[v1::Resource],
) -> anyhow::Result<(usize, Attached)> {
    let register = v1::Register {
        agent: Some(v1::AgentInfo {
            hostname: format!("sim-{n}"),
            resources: resources.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let attached = attach_with(channel, register)
        .await
        .with_context(|| format!("simulated agent {n} cannot attach"))?;
    Ok((n, attached))
}

/// Opens a stream with `register` as its first message.
async fn attach_with(channel: Channel, register: v1::Register) -> Result<Attached, tonic::Status> {
    let (tx, rx) = mpsc::unbounded();
    tx.unbounded_send(v1::AgentMessage {
        message: Some(agent_message::Message::Register(register)),
    })
    .map_err(|_| tonic::Status::internal("cannot queue REGISTER"))?;
    let response = AgentLinkClient::new(channel).attach(rx).await?;
    let messages = response
        .into_inner()
        .map(|r| match r {
            Ok(m) => Inbound::Message(Box::new(m)),
            Err(s) => Inbound::Ended(Some(s)),
        })
        .chain(stream::once(async { Inbound::Ended(None) }))
        .boxed();
    Ok((tx, messages))
}

/// One re-attach attempt: wait (`wait`: how long, and the master that
/// failed — a newly elected leader ends the wait), pick the master (a
/// standby's redirect, else the leader in ZooKeeper), connect, attach every
/// agent of `registers`.
async fn reattach(
    mut leader: watch::Receiver<Option<LeaderInfo>>,
    redirect: Option<String>,
    wait: Option<(Duration, String)>,
    agents: Vec<usize>,
    registers: Vec<(usize, v1::Register)>,
) -> Reattached {
    let mut leader_moved = false;
    if let Some((delay, failed)) = wait {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = leader_moved_from(&mut leader, &failed) => leader_moved = true,
        }
    }
    let address = match redirect {
        Some(address) => address,
        None => {
            let found = leader
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|info| info.as_ref().map(|l| l.address.clone()));
            match found {
                Some(address) => address,
                // Nobody follows ZooKeeper any more: the benchmark is ending.
                None => std::future::pending().await,
            }
        }
    };
    tracing::debug!(%address, agents = agents.len(), "connecting");
    let channel = match connect(&address).await {
        Ok(channel) => channel,
        Err(e) => {
            return Reattached {
                address,
                leader_moved,
                agents,
                results: Err(e),
            };
        }
    };
    let results = stream::iter(registers)
        .map(|(i, register)| attach_with(channel.clone(), register).map(move |r| (i, r)))
        .buffer_unordered(ATTACH_CONCURRENCY)
        .collect()
        .await;
    Reattached {
        address,
        leader_moved,
        agents,
        results: Ok(results),
    }
}

/// Resolves once ZooKeeper names a leader other than `failed`.
async fn leader_moved_from(leader: &mut watch::Receiver<Option<LeaderInfo>>, failed: &str) {
    let moved = leader
        .wait_for(|l| l.as_ref().is_some_and(|l| l.address != failed))
        .await
        .is_ok();
    if !moved {
        std::future::pending::<()>().await;
    }
}

/// One HTTP/2 connection to the master at `address`.
pub async fn connect(address: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("bad master address {address:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))
}

/// The leader a standby named in its UNAVAILABLE answer.
fn leader_named(status: &tonic::Status) -> Option<String> {
    if status.code() != tonic::Code::Unavailable {
        return None;
    }
    let leader = status.metadata().get(LEADER_METADATA)?.to_str().ok()?.trim();
    (!leader.is_empty()).then(|| leader.to_owned())
}

/// The next wait: doubled, capped (a real agent's schedule).
fn next_backoff(previous: Duration) -> Duration {
    (previous * 2).min(MAX_BACKOFF)
}

/// `wait` with ±20 % jitter, so a fleet does not reconnect in step.
fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(rand::random_range(0.8..1.2))
}

/// The next message of any stream. `None` once every stream ended, unless
/// the shard follows the leader: then new streams come with re-attaching.
async fn next_inbound(
    inbound: &mut SelectAll<BoxStream<'static, Tagged>>,
    following: bool,
) -> Option<Tagged> {
    if following && inbound.is_empty() {
        return std::future::pending().await;
    }
    match inbound.next().await {
        // The last stream just ended.
        None if following => std::future::pending().await,
        next => next,
    }
}

/// The current re-attach attempt's outcome; pending while there is none.
async fn attempt_done(follow: &mut Option<Follow>) -> Reattached {
    match follow.as_mut().and_then(|f| f.attempt.as_mut()) {
        Some(attempt) => attempt.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_task_reports_running_first() {
        let mut t = SimTask::started("fw".into());
        let (state, uuid) = t.next_update().unwrap();
        assert_eq!(state, TaskState::Running);
        assert_eq!(uuid.len(), 16);
    }

    #[test]
    fn finished_waits_for_the_ack_of_running() {
        let mut t = SimTask::started("fw".into());
        let (_, running) = t.next_update().unwrap();
        t.transition(TaskState::Finished);
        assert_eq!(t.next_update(), None);
        assert!(t.acknowledged(&running));
        let (state, finished) = t.next_update().unwrap();
        assert_eq!(state, TaskState::Finished);
        assert_ne!(finished, running);
    }

    #[test]
    fn an_ack_for_another_uuid_changes_nothing() {
        let mut t = SimTask::started("fw".into());
        let _ = t.next_update().unwrap();
        t.transition(TaskState::Finished);
        assert!(!t.acknowledged(&[0; 16]));
        assert_eq!(t.next_update(), None);
    }

    #[test]
    fn a_task_is_done_once_its_terminal_update_is_acknowledged() {
        let mut t = SimTask::started("fw".into());
        let (_, running) = t.next_update().unwrap();
        t.acknowledged(&running);
        t.transition(TaskState::Killed);
        let (_, killed) = t.next_update().unwrap();
        assert!(!t.is_done());
        t.acknowledged(&killed);
        assert!(t.is_done());
    }

    #[test]
    fn the_update_in_flight_is_kept_for_a_resend() {
        let mut t = SimTask::started("fw".into());
        assert_eq!(t.in_flight(), None);
        let (_, uuid) = t.next_update().unwrap();
        assert_eq!(t.in_flight(), Some((TaskState::Running, uuid.as_slice())));
        t.acknowledged(&uuid);
        assert_eq!(t.in_flight(), None);
    }

    #[test]
    fn a_re_registering_agent_reports_its_task_as_launched_with_the_newest_state() {
        let info = v1::TaskInfo {
            task_id: "t1".into(),
            name: "sim".into(),
            resources: agora_proto::Resources::parse("cpus:0.5").unwrap().to_proto(),
            ..Default::default()
        };
        let mut t = SimTask::started("fw".into()).with_info(info.clone());
        let _ = t.next_update();
        t.transition(TaskState::Killed);
        let reported = t.reported_task("t1", "agent-1");
        assert_eq!(reported.info, Some(info));
        assert_eq!(reported.framework_id, "fw");
        let status = reported.status.unwrap();
        assert_eq!(
            (status.state(), status.agent_id.as_str(), status.task_id.as_str()),
            (TaskState::Killed, "agent-1", "t1")
        );
        assert!(
            status.uuid.is_empty(),
            "the registration carries no update to acknowledge"
        );
    }

    #[test]
    fn a_standby_s_refusal_names_the_leader() {
        let mut status = tonic::Status::unavailable("not the leader");
        status
            .metadata_mut()
            .insert(LEADER_METADATA, "10.0.0.2:5050".parse().unwrap());
        assert_eq!(leader_named(&status).as_deref(), Some("10.0.0.2:5050"));
        assert_eq!(
            leader_named(&tonic::Status::unavailable("elected, loading")),
            None
        );
    }

    #[test]
    fn re_attach_backoff_doubles_from_200ms_to_5s_and_a_redirect_loop_backs_off() {
        let (_tx, leader) = watch::channel(None);
        let mut follow = Follow {
            leader,
            current: String::new(),
            redirect: None,
            redirects_in_row: 0,
            backoff: INITIAL_BACKOFF,
            wait: None,
            waiting: BTreeSet::new(),
            streams_lost: false,
            attempt: None,
        };
        let mut waits = Vec::new();
        for _ in 0..7 {
            follow.back_off();
            waits.push(follow.wait.take().unwrap().as_millis());
        }
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000]);
        follow.backoff = INITIAL_BACKOFF;
        for _ in 0..MAX_REDIRECTS_IN_A_ROW {
            follow.redirected("b:2".into());
            assert_eq!(follow.wait, None, "a redirect is followed at once");
        }
        follow.redirected("b:2".into());
        assert_eq!(follow.wait, Some(Duration::from_millis(200)));
    }

    #[test]
    fn an_ended_task_keeps_its_terminal_state() {
        let mut t = SimTask::started("fw".into());
        t.transition(TaskState::Killed);
        t.transition(TaskState::Finished);
        assert_eq!(t.state(), TaskState::Killed);
    }
}

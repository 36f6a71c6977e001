//! Simulated agents for `agora bench cluster`. **A benchmark tool, not an
//! agent**: they run nothing, checkpoint nothing and never reconnect. They
//! exist so one process can put 10,000 agents in front of a real master.
//!
//! Each simulated agent speaks the real agent protocol over its own
//! `AgentLink.Attach` stream: REGISTER with its resources, heartbeats at the
//! interval the master gives in REGISTERED, and on RUN_TASK a RUNNING status
//! update (fresh uuid, source AGENT) at once and FINISHED after the task
//! duration (RUN_TASK_GROUP: each of its tasks alike). Like a real agent it keeps one update per task in flight: the
//! next goes out only when the previous one is acknowledged, with
//! `latest_state` set to the task's newest state. KILL_TASK and
//! SHUTDOWN_FRAMEWORK end tasks as KILLED. Nothing is resent.
//!
//! Many agents share one task and one HTTP/2 connection: an [`AgentShard`]
//! owns a few hundred agents' streams (merged with `SelectAll`), one
//! [`TimerQueue`] for their tasks' FINISHED deadlines, and one heartbeat
//! timer.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora_proto::v1;
use agora_proto::v1::agent_link_client::AgentLinkClient;
use agora_proto::v1::{TaskState, agent_message, master_message};
use anyhow::Context;
use futures::channel::mpsc;
use futures::stream::{self, BoxStream, SelectAll};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tonic::transport::Channel;

use super::timeline::{Timeline, task_index};
use super::timers::TimerQueue;

/// Attach calls a shard has in flight at once while registering.
const ATTACH_CONCURRENCY: usize = 16;

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
}

/// One task on a simulated agent: its newest state, and the update in
/// flight (sent and not yet acknowledged).
#[derive(Debug, Clone, PartialEq)]
pub struct SimTask {
    framework_id: String,
    state: TaskState,
    reported: TaskState,
    in_flight: Option<Vec<u8>>,
}

impl SimTask {
    /// A task just received in RUN_TASK: RUNNING, nothing reported yet.
    pub fn started(framework_id: String) -> Self {
        Self {
            framework_id,
            state: TaskState::Running,
            reported: TaskState::Staging,
            in_flight: None,
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
    tx: mpsc::UnboundedSender<v1::AgentMessage>,
    tasks: HashMap<String, SimTask>,
}

/// What arrives on one agent's stream.
enum Inbound {
    Message(Box<v1::MasterMessage>),
    Ended(Option<tonic::Status>),
}

/// A group of simulated agents driven by one task over one connection.
pub struct AgentShard {
    config: Arc<SimConfig>,
    counters: Arc<SimCounters>,
    timeline: Arc<Timeline>,
    agents: Vec<SimAgent>,
    inbound: SelectAll<BoxStream<'static, (usize, Inbound)>>,
    finish: TimerQueue<(usize, String)>,
    heartbeat: Option<Interval>,
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
        for (i, (tx, messages)) in attached.into_iter().enumerate() {
            agents.push(SimAgent {
                id: String::new(),
                tx,
                tasks: HashMap::new(),
            });
            inbound.push(messages.map(move |m| (i, m)).boxed());
        }
        Ok(Self {
            config,
            counters,
            timeline,
            agents,
            inbound,
            finish: TimerQueue::new(),
            heartbeat: None,
        })
    }

    /// Serves the agents until `stop` turns true; then closes their streams.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let deadline = self.finish.next_deadline();
            tokio::select! {
                next = self.inbound.next() => match next {
                    Some((i, Inbound::Message(m))) => self.on_message(i, *m),
                    Some((i, Inbound::Ended(status))) => self.on_ended(i, status),
                    None => return,
                },
                _ = sleep_until_some(deadline) => self.finish_due(),
                _ = tick(&mut self.heartbeat) => self.heartbeat_all(),
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    fn on_message(&mut self, i: usize, message: v1::MasterMessage) {
        let now = Instant::now();
        let Some(message) = message.message else {
            return;
        };
        match message {
            master_message::Message::Registered(r) => {
                if let Some(agent) = self.agents.get_mut(i) {
                    agent.id = r.agent_id;
                }
                self.counters.registered.fetch_add(1, Ordering::Relaxed);
                if self.heartbeat.is_none() && r.heartbeat_interval_seconds > 0.0 {
                    let period = Duration::from_secs_f64(r.heartbeat_interval_seconds.min(3600.0));
                    let mut interval = tokio::time::interval_at(now + period, period);
                    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    self.heartbeat = Some(interval);
                }
            }
            master_message::Message::RunTask(run) => {
                let (Some(task), Some(framework)) = (run.task, run.framework) else {
                    tracing::warn!("RUN_TASK without a task or framework");
                    return;
                };
                self.run_task(i, framework.id, task.task_id, now);
            }
            master_message::Message::RunTaskGroup(group) => {
                let Some(framework) = group.framework else {
                    tracing::warn!("RUN_TASK_GROUP without a framework");
                    return;
                };
                for task in group.tasks {
                    self.run_task(i, framework.id.clone(), task.task_id, now);
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
    fn run_task(&mut self, i: usize, framework_id: String, task_id: String, now: Instant) {
        if let Some(index) = task_index(&task_id) {
            self.timeline.launched(index, now);
        }
        let Some(agent) = self.agents.get_mut(i) else {
            return;
        };
        if agent.tasks.contains_key(&task_id) {
            return;
        }
        agent
            .tasks
            .insert(task_id.clone(), SimTask::started(framework_id));
        self.finish
            .push(now + self.config.task_duration, (i, task_id.clone()));
        self.flush(i, &task_id);
    }

    fn on_ended(&mut self, i: usize, status: Option<tonic::Status>) {
        self.counters.lost_streams.fetch_add(1, Ordering::Relaxed);
        let agent = self.agents.get(i).map_or("", |a| a.id.as_str());
        match status {
            Some(s) => {
                tracing::warn!(agent, code = ?s.code(), message = s.message(), "simulated agent's stream failed")
            }
            None => tracing::warn!(agent, "the master closed a simulated agent's stream"),
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
        for agent in &self.agents {
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
            let update = v1::StatusUpdate {
                framework_id: task.framework_id.clone(),
                status: Some(v1::TaskStatus {
                    task_id: task_id.to_owned(),
                    state: state as i32,
                    source: v1::StatusSource::Agent as i32,
                    agent_id: agent.id.clone(),
                    timestamp: agora_proto::unix_seconds(std::time::SystemTime::now()),
                    uuid,
                    ..Default::default()
                }),
                latest_state: task.state() as i32,
            };
            if agent
                .tx
                .unbounded_send(v1::AgentMessage {
                    message: Some(agent_message::Message::StatusUpdate(update)),
                })
                .is_err()
            {
                tracing::debug!(task = task_id, "the agent's stream is closed; update dropped");
            }
        } else if task.is_done() {
            agent.tasks.remove(task_id);
        }
    }
}

type Attached = (
    mpsc::UnboundedSender<v1::AgentMessage>,
    BoxStream<'static, Inbound>,
);

/// Opens agent `n`'s stream with REGISTER as its first message.
async fn attach_one(channel: Channel, n: usize, resources: &[v1::Resource]) -> anyhow::Result<Attached> {
    let (tx, rx) = mpsc::unbounded();
    let register = v1::Register {
        agent: Some(v1::AgentInfo {
            hostname: format!("sim-{n}"),
            resources: resources.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    tx.unbounded_send(v1::AgentMessage {
        message: Some(agent_message::Message::Register(register)),
    })
    .context("cannot queue REGISTER")?;
    let response = AgentLinkClient::new(channel)
        .attach(rx)
        .await
        .with_context(|| format!("simulated agent {n} cannot attach"))?;
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
    fn an_ended_task_keeps_its_terminal_state() {
        let mut t = SimTask::started("fw".into());
        t.transition(TaskState::Killed);
        t.transition(TaskState::Finished);
        assert_eq!(t.state(), TaskState::Killed);
    }
}

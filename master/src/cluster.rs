//! The master's state and every step that changes it.
//!
//! [`Master`] owns agents, frameworks, offers, tasks and the allocator. Its
//! methods are synchronous steps: each takes `now`, changes the state and
//! queues [`Effect`]s (store writes, messages to agents, events to
//! frameworks) that the actor (`actor.rs`) carries out in order before it
//! takes the next step. Nothing here awaits, so the logic (timers included)
//! is tested by calling the steps with chosen instants.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, SystemTime};

use agora_proto::state::{is_terminal, mesos_name};
use agora_proto::v1::{self, StatusReason, StatusSource, TaskState, event, master_message};
use agora_proto::{AgentId, FrameworkId, OfferId, Resources, StreamId, TaskId};
use agora_store::Write;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;

use crate::MasterConfig;
use crate::allocator::{Allocator, AllocatorConfig};
use crate::metrics::{Metrics, label};
use crate::validation::{AcceptContext, OfferRef, ValidLaunch, validate_accept};

mod operator;
pub use operator::{
    OperatorError, OperatorRequest, RESERVATIONS_PREFIX, decode_reservations, encode_reservations,
    reservations_key,
};

/// Where a framework's events go: its Subscribe response stream.
pub type EventTx = mpsc::UnboundedSender<Result<v1::Event, Status>>;
/// Where an agent's messages go: its Attach response stream.
pub type AgentTx = mpsc::UnboundedSender<Result<v1::MasterMessage, Status>>;

/// How many finished tasks `/state` remembers.
const COMPLETED_TASKS_KEPT: usize = 1000;
/// The refuse filter when a call gives none (Mesos' default).
pub const DEFAULT_REFUSE: Duration = Duration::from_secs(5);

/// Store key of an agent's `AgentInfo`.
pub fn agent_key(id: &AgentId) -> String {
    format!("/master/agents/{id}")
}

/// Store key of a framework's `FrameworkInfo`.
pub fn framework_key(id: &FrameworkId) -> String {
    format!("/master/frameworks/{id}")
}

/// Something a step wants done outside the state, in order.
// Effects live for one step only; boxing the large messages buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Effect {
    /// Write to the store (atomically) before doing anything that follows.
    Persist(Vec<Write>),
    /// Send to the agent's current stream, if it has one.
    ToAgent(AgentId, master_message::Message),
    /// Send to the framework's current stream, if it has one.
    ToFramework(FrameworkId, event::Event),
}

/// A validated call from a subscribed framework.
#[derive(Debug, Clone)]
pub enum Call {
    Accept {
        offer_ids: Vec<OfferId>,
        operations: Vec<v1::Operation>,
        refuse: Duration,
    },
    Decline {
        offer_ids: Vec<OfferId>,
        refuse: Duration,
    },
    Revive {
        roles: Vec<String>,
    },
    Suppress {
        roles: Vec<String>,
    },
    Kill {
        task_id: TaskId,
        kill_policy: Option<v1::KillPolicy>,
    },
    Acknowledge {
        agent_id: AgentId,
        task_id: TaskId,
        uuid: Vec<u8>,
    },
    Reconcile {
        tasks: Vec<ReconcileTask>,
    },
    Message {
        agent_id: AgentId,
        task_id: TaskId,
        data: Vec<u8>,
    },
    Teardown,
}

/// A task named in an explicit reconciliation, with the agent the framework
/// believes it runs on, if it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileTask {
    /// The task asked about.
    pub task_id: TaskId,
    /// The agent the framework last saw the task on.
    pub agent_id: Option<AgentId>,
}

/// The framework and stream a call claims to come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub framework_id: FrameworkId,
    pub stream_id: StreamId,
}

struct AgentConn {
    id: u64,
    tx: AgentTx,
}

struct Agent {
    info: v1::AgentInfo,
    total: Resources,
    conn: Option<AgentConn>,
    last_seen: Instant,
    reachable: bool,
    /// The latest resource-usage sample the agent reported.
    usage: Option<v1::ResourceUsage>,
}

/// An agent read from the registry after a master (re)start that has not
/// re-registered yet: it has no resources to offer and its tasks are not
/// known until it comes back or its re-registration timeout passes.
struct RecoveringAgent {
    info: v1::AgentInfo,
    /// When the agent is marked unreachable if it has not re-registered.
    deadline: Instant,
}

struct FrameworkConn {
    stream_id: StreamId,
    tx: EventTx,
}

struct Framework {
    info: v1::FrameworkInfo,
    conn: Option<FrameworkConn>,
    /// When a disconnected framework is removed; `None` while connected (or
    /// if its failover timeout is too large to represent).
    failover_deadline: Option<Instant>,
}

impl Framework {
    fn partition_aware(&self) -> bool {
        self.info
            .capabilities
            .contains(&(v1::FrameworkCapability::PartitionAware as i32))
    }

    fn task_groups(&self) -> bool {
        self.info
            .capabilities
            .contains(&(v1::FrameworkCapability::TaskGroups as i32))
    }
}

#[derive(Clone)]
struct Task {
    info: v1::TaskInfo,
    framework_id: FrameworkId,
    agent_id: AgentId,
    resources: Resources,
    status: v1::TaskStatus,
    /// The latest agent update the framework has not acknowledged yet.
    unacked: Option<v1::TaskStatus>,
    /// Whether the task's resources went back to the allocator: once its
    /// newest state on the agent (`StatusUpdate.latest_state`) is terminal,
    /// which may be before the framework has seen that state.
    released: bool,
    /// The task group (pod) the task was launched in, if any.
    group_id: Option<String>,
}

impl Task {
    fn state(&self) -> TaskState {
        TaskState::try_from(self.status.state).unwrap_or(TaskState::Unspecified)
    }
}

struct Offer {
    framework_id: FrameworkId,
    agent_id: AgentId,
    /// The role the allocator offered the resources to.
    role: String,
    resources: Resources,
    created: Instant,
}

fn failover_timeout(info: &v1::FrameworkInfo) -> Duration {
    Duration::try_from_secs_f64(info.failover_timeout_seconds).unwrap_or(Duration::MAX)
}

fn now_seconds() -> f64 {
    agora_proto::unix_seconds(SystemTime::now())
}

/// A status update produced by the master (no uuid: needs no acknowledgement).
fn master_status(
    task_id: &str,
    agent_id: Option<&AgentId>,
    state: TaskState,
    reason: StatusReason,
    message: impl Into<String>,
) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task_id.to_owned(),
        state: state as i32,
        message: message.into(),
        source: StatusSource::Master as i32,
        reason: reason as i32,
        agent_id: agent_id.map(|a| a.as_str().to_owned()).unwrap_or_default(),
        timestamp: now_seconds(),
        ..Default::default()
    }
}

/// A status as a reconciliation answer: from the master, no uuid, now.
fn reconciliation_status(mut status: v1::TaskStatus) -> v1::TaskStatus {
    status.uuid.clear();
    status.source = StatusSource::Master as i32;
    status.reason = StatusReason::ReasonReconciliation as i32;
    status.timestamp = now_seconds();
    status
}

/// The answer for a task its (registered) agent does not have.
fn gone_status(task_id: &TaskId, agent: &AgentId, partition_aware: bool) -> v1::TaskStatus {
    let state = if partition_aware {
        TaskState::Gone
    } else {
        TaskState::Lost
    };
    master_status(
        task_id.as_str(),
        Some(agent),
        state,
        StatusReason::ReasonReconciliation,
        format!("task {task_id} is not on agent {agent}"),
    )
}

/// The answer for a task the master cannot find anywhere.
fn unknown_status(task_id: &TaskId, partition_aware: bool) -> v1::TaskStatus {
    let state = if partition_aware {
        TaskState::Unknown
    } else {
        TaskState::Lost
    };
    master_status(
        task_id.as_str(),
        None,
        state,
        StatusReason::ReasonReconciliation,
        format!("task {task_id} is not known to the master"),
    )
}

fn update(status: v1::TaskStatus) -> event::Event {
    event::Event::Update(v1::Update { status: Some(status) })
}

/// The master's state. See the module documentation.
pub struct Master {
    config: MasterConfig,
    master_id: String,
    metrics: Metrics,
    allocator: Allocator,
    agents: BTreeMap<AgentId, Agent>,
    /// Registry agents waiting to re-register (see [`Master::recover_agent`]).
    recovering: BTreeMap<AgentId, RecoveringAgent>,
    /// Explicit reconciliations not answered yet: the task may be on a
    /// recovering agent (the one named, or any when none was named).
    pending_reconciliation: BTreeMap<(FrameworkId, TaskId), Option<AgentId>>,
    frameworks: BTreeMap<FrameworkId, Framework>,
    offers: BTreeMap<OfferId, Offer>,
    tasks: BTreeMap<(FrameworkId, TaskId), Task>,
    completed: VecDeque<Task>,
    allocation_due: Option<Instant>,
    next_heartbeat: Instant,
    /// When silent agents and old offers are next looked for (see [`Master::sweep_interval`]).
    next_sweep: Instant,
    effects: Vec<Effect>,
    /// Quota, weights and dynamic reservations the operator and frameworks set.
    policy: operator::RolePolicy,
}

impl Master {
    /// A master with no agents and no frameworks.
    pub fn new(config: MasterConfig, master_id: String, metrics: Metrics, now: Instant) -> Self {
        let next_heartbeat = now + config.framework_heartbeat_interval;
        let allocator = Allocator::with_config(AllocatorConfig {
            weights: config.weights.clone(),
            min_allocatable: config.min_allocatable.clone(),
        });
        let policy = operator::RolePolicy::new(&config.weights);
        Self {
            config,
            master_id,
            metrics,
            allocator,
            agents: BTreeMap::new(),
            recovering: BTreeMap::new(),
            pending_reconciliation: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            offers: BTreeMap::new(),
            tasks: BTreeMap::new(),
            completed: VecDeque::new(),
            allocation_due: None,
            next_heartbeat,
            next_sweep: now,
            effects: Vec::new(),
            policy,
        }
    }

    /// This master process's id.
    pub fn master_id(&self) -> &str {
        &self.master_id
    }

    /// Loads frameworks from the registry after a (re)start: they are known
    /// but disconnected, and removed unless they re-subscribe within their
    /// failover timeout from `now`.
    pub fn recover_framework(&mut self, info: v1::FrameworkInfo, now: Instant) {
        let Ok(id) = FrameworkId::parse(&info.id) else {
            tracing::warn!(id = %info.id, "ignoring a stored framework with a bad id");
            return;
        };
        self.allocator.add_framework(id.clone(), &info.roles);
        let deadline = now.checked_add(failover_timeout(&info));
        self.frameworks.insert(
            id,
            Framework {
                info,
                conn: None,
                failover_deadline: deadline,
            },
        );
    }

    /// Loads an agent from the registry after a (re)start: it is
    /// "recovering" (known, nothing offered, its tasks unknown) until it
    /// re-registers, or is marked unreachable once
    /// `agent_reregister_timeout` from `now` has passed.
    pub fn recover_agent(&mut self, info: v1::AgentInfo, now: Instant) {
        let Ok(id) = AgentId::parse(&info.id) else {
            tracing::warn!(id = %info.id, "ignoring a stored agent with a bad id");
            return;
        };
        if self.agents.contains_key(&id) {
            return;
        }
        let deadline = now
            .checked_add(self.config.agent_reregister_timeout)
            .unwrap_or_else(|| now + Duration::from_secs(86400 * 365));
        self.recovering.insert(id, RecoveringAgent { info, deadline });
    }

    /// Queued effects, oldest first.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Sends a message effect to its current stream; `false` if there is none.
    pub fn deliver(&mut self, effect: Effect) -> bool {
        match effect {
            Effect::Persist(_) => false,
            Effect::ToAgent(id, message) => {
                self.agents
                    .get(&id)
                    .and_then(|a| a.conn.as_ref())
                    .is_some_and(|c| {
                        c.tx.send(Ok(v1::MasterMessage {
                            message: Some(message),
                        }))
                        .is_ok()
                    })
            }
            Effect::ToFramework(id, event) => self
                .frameworks
                .get(&id)
                .and_then(|f| f.conn.as_ref())
                .is_some_and(|c| c.tx.send(Ok(v1::Event { event: Some(event) })).is_ok()),
        }
    }

    fn send_to_agent(&mut self, id: &AgentId, message: master_message::Message) {
        self.effects.push(Effect::ToAgent(id.clone(), message));
    }

    fn send_to_framework(&mut self, id: &FrameworkId, event: event::Event) {
        self.effects.push(Effect::ToFramework(id.clone(), event));
    }

    fn schedule_allocation(&mut self, now: Instant) {
        if self.allocation_due.is_none() {
            self.allocation_due = Some(now + self.config.allocation_delay);
        }
    }

    fn agent_heartbeat_interval(&self) -> Duration {
        self.config
            .agent_heartbeat_interval
            .unwrap_or(self.config.agent_timeout / 5)
    }

    // -----------------------------------------------------------------
    // Frameworks
    // -----------------------------------------------------------------

    /// SUBSCRIBE: a new framework (empty `info.id`) or a known one
    /// re-subscribing. `info` has been validated. Returns the framework id
    /// and the new stream id; SUBSCRIBED and the replayed updates are queued.
    pub fn subscribe(
        &mut self,
        mut info: v1::FrameworkInfo,
        suppressed_roles: Vec<String>,
        tx: EventTx,
        now: Instant,
    ) -> Result<(FrameworkId, StreamId), Status> {
        let id = if info.id.is_empty() {
            FrameworkId::generate("fw")
        } else {
            let id = FrameworkId::parse(&info.id)
                .map_err(|e| Status::invalid_argument(format!("framework.id: {e}")))?;
            if !self.frameworks.contains_key(&id) {
                return Err(Status::not_found(format!(
                    "framework.id: framework {id} is not known (removed, or never subscribed)"
                )));
            }
            id
        };
        info.id = id.as_str().to_owned();
        let stream_id = StreamId::generate("stream");
        if let Some(old) = self.frameworks.get_mut(&id).and_then(|f| f.conn.take()) {
            tracing::info!(framework = %id, "framework failed over to a new stream");
            let _ = old.tx.send(Ok(v1::Event {
                event: Some(event::Event::Error(v1::Error {
                    message: "framework failed over".to_owned(),
                })),
            }));
        }
        self.recover_offers_of(&id);
        self.effects.push(Effect::Persist(vec![Write::put(
            framework_key(&id),
            info.encode_to_vec(),
        )]));
        self.allocator.add_framework(id.clone(), &info.roles);
        self.allocator.revive(&id, &[]);
        if !suppressed_roles.is_empty() {
            self.allocator.suppress(&id, &suppressed_roles);
        }
        self.allocator.activate(&id);
        tracing::info!(framework = %id, name = %info.name, "framework subscribed");
        self.frameworks.insert(
            id.clone(),
            Framework {
                info,
                conn: Some(FrameworkConn {
                    stream_id: stream_id.clone(),
                    tx,
                }),
                failover_deadline: None,
            },
        );
        self.send_to_framework(
            &id,
            event::Event::Subscribed(v1::Subscribed {
                framework_id: id.as_str().to_owned(),
                stream_id: stream_id.as_str().to_owned(),
                heartbeat_interval_seconds: self.config.framework_heartbeat_interval.as_secs_f64(),
                master_id: self.master_id.clone(),
            }),
        );
        let replay: Vec<v1::TaskStatus> = self
            .tasks
            .values()
            .filter(|t| t.framework_id == id)
            .filter_map(|t| t.unacked.clone())
            .collect();
        for status in replay {
            self.send_to_framework(&id, update(status));
        }
        self.schedule_allocation(now);
        Ok((id, stream_id))
    }

    /// The event stream `stream_id` of the framework ended (client gone).
    /// Ignored if the framework has moved to another stream since.
    pub fn framework_disconnected(&mut self, id: &FrameworkId, stream_id: &StreamId, now: Instant) {
        let Some(fw) = self.frameworks.get_mut(id) else {
            return;
        };
        if fw.conn.as_ref().map(|c| &c.stream_id) != Some(stream_id) {
            return;
        }
        fw.conn = None;
        let timeout = failover_timeout(&fw.info);
        fw.failover_deadline = now.checked_add(timeout);
        tracing::info!(framework = %id, failover_timeout = ?timeout, "framework disconnected");
        self.allocator.deactivate(id);
        self.recover_offers_of(id);
        self.schedule_allocation(now);
        if timeout.is_zero() {
            self.remove_framework(id, "framework disconnected with a failover timeout of 0", now);
        }
    }

    /// Returns every outstanding offer of the framework to the pool, silently.
    fn recover_offers_of(&mut self, id: &FrameworkId) {
        let ids: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| &o.framework_id == id)
            .map(|(k, _)| k.clone())
            .collect();
        for offer_id in ids {
            if let Some(o) = self.offers.remove(&offer_id) {
                self.allocator.recover(&o.framework_id, &o.agent_id, &o.resources);
            }
        }
    }

    /// Removes a framework for good: kills its tasks, tells its agents to
    /// shut it down, forgets it in the store. Its tasks' resources return as
    /// the agents report the kills.
    fn remove_framework(&mut self, id: &FrameworkId, why: &str, now: Instant) {
        self.recover_offers_of(id);
        let Some(fw) = self.frameworks.remove(id) else {
            return;
        };
        tracing::info!(framework = %id, why, "removing framework");
        self.pending_reconciliation.retain(|(f, _), _| f != id);
        if let Some(conn) = fw.conn {
            let _ = conn.tx.send(Ok(v1::Event {
                event: Some(event::Event::Error(v1::Error {
                    message: why.to_owned(),
                })),
            }));
        }
        self.allocator.remove_framework(id);
        let keys: Vec<(FrameworkId, TaskId)> = self.tasks.keys().filter(|(f, _)| f == id).cloned().collect();
        let mut agents = BTreeSet::new();
        for key in keys {
            let Some(task) = self.tasks.get(&key) else {
                continue;
            };
            if is_terminal(task.state()) {
                if let Some(task) = self.tasks.remove(&key) {
                    self.complete(task);
                }
                continue;
            }
            agents.insert(task.agent_id.clone());
            let agent = task.agent_id.clone();
            self.send_to_agent(
                &agent,
                master_message::Message::KillTask(v1::KillTask {
                    framework_id: id.as_str().to_owned(),
                    task_id: key.1.as_str().to_owned(),
                    kill_policy: None,
                }),
            );
        }
        for agent in agents {
            self.send_to_agent(
                &agent,
                master_message::Message::ShutdownFramework(v1::ShutdownFramework {
                    framework_id: id.as_str().to_owned(),
                }),
            );
        }
        self.effects
            .push(Effect::Persist(vec![Write::delete(framework_key(id))]));
        self.schedule_allocation(now);
    }

    fn complete(&mut self, task: Task) {
        self.completed.push_back(task);
        while self.completed.len() > COMPLETED_TASKS_KEPT {
            self.completed.pop_front();
        }
    }

    /// Checks that a call comes from a subscribed framework's current stream.
    fn check_caller(&self, caller: &Caller) -> Result<&Framework, Status> {
        let fw = self.frameworks.get(&caller.framework_id).ok_or_else(|| {
            Status::not_found(format!(
                "caller.framework_id: framework {} is not known",
                caller.framework_id
            ))
        })?;
        let conn = fw.conn.as_ref().ok_or_else(|| {
            Status::failed_precondition(format!(
                "framework {} is not subscribed; subscribe first",
                caller.framework_id
            ))
        })?;
        if conn.stream_id != caller.stream_id {
            return Err(Status::failed_precondition(format!(
                "caller.stream_id: {} is not the framework's current stream",
                caller.stream_id
            )));
        }
        Ok(fw)
    }

    /// Runs a call from a framework.
    pub fn call(&mut self, caller: &Caller, call: Call, now: Instant) -> Result<(), Status> {
        let partition_aware = self.check_caller(caller)?.partition_aware();
        let fid = &caller.framework_id;
        match call {
            Call::Accept {
                offer_ids,
                operations,
                refuse,
            } => return self.accept(fid, &offer_ids, &operations, refuse, now),
            Call::Decline { offer_ids, refuse } => {
                for offer_id in offer_ids {
                    if self.offers.get(&offer_id).is_some_and(|o| &o.framework_id == fid) {
                        if let Some(o) = self.offers.remove(&offer_id) {
                            self.metrics.offers_declined.inc();
                            self.return_to_pool(fid, &o.role, &o.agent_id, &o.resources, refuse, now);
                        }
                    } else {
                        tracing::debug!(framework = %fid, offer = %offer_id, "declined offer is not outstanding");
                    }
                }
            }
            Call::Revive { roles } => {
                self.allocator.revive(fid, &roles);
                self.schedule_allocation(now);
            }
            Call::Suppress { roles } => self.allocator.suppress(fid, &roles),
            Call::Kill { task_id, kill_policy } => {
                match self.tasks.get(&(fid.clone(), task_id.clone())) {
                    Some(task) if !is_terminal(task.state()) => {
                        let agent = task.agent_id.clone();
                        // Killing one task of a group kills the whole group.
                        let mut victims = vec![task_id.clone()];
                        if let Some(group) = &task.group_id {
                            victims.extend(
                                self.tasks
                                    .iter()
                                    .filter(|((f, t), other)| {
                                        f == fid
                                            && *t != task_id
                                            && other.group_id.as_ref() == Some(group)
                                            && !is_terminal(other.state())
                                    })
                                    .map(|((_, t), _)| t.clone()),
                            );
                        }
                        for victim in victims {
                            self.send_to_agent(
                                &agent,
                                master_message::Message::KillTask(v1::KillTask {
                                    framework_id: fid.as_str().to_owned(),
                                    task_id: victim.as_str().to_owned(),
                                    kill_policy,
                                }),
                            );
                        }
                    }
                    Some(task) => {
                        // Already terminal: tell the framework again how it ended.
                        let status = task.status.clone();
                        self.send_to_framework(fid, update(status));
                    }
                    None => {
                        let state = if partition_aware {
                            TaskState::Unknown
                        } else {
                            TaskState::Lost
                        };
                        let status = master_status(
                            task_id.as_str(),
                            None,
                            state,
                            StatusReason::ReasonTaskUnknown,
                            format!("task {task_id} is not known to the master"),
                        );
                        self.send_to_framework(fid, update(status));
                    }
                }
            }
            Call::Acknowledge {
                agent_id,
                task_id,
                uuid,
            } => {
                if self.agents.contains_key(&agent_id) {
                    self.send_to_agent(
                        &agent_id,
                        master_message::Message::Acknowledge(v1::AcknowledgeUpdate {
                            framework_id: fid.as_str().to_owned(),
                            task_id: task_id.as_str().to_owned(),
                            uuid: uuid.clone(),
                        }),
                    );
                }
                let key = (fid.clone(), task_id);
                if let Some(task) = self.tasks.get_mut(&key) {
                    if task.unacked.as_ref().is_some_and(|s| s.uuid == uuid) {
                        task.unacked = None;
                    }
                    if is_terminal(task.state())
                        && task.status.uuid == uuid
                        && let Some(task) = self.tasks.remove(&key)
                    {
                        self.complete(task);
                    }
                }
            }
            Call::Reconcile { tasks } => self.reconcile(fid, partition_aware, tasks),
            Call::Message {
                agent_id,
                task_id,
                data,
            } => {
                if !self.agents.contains_key(&agent_id) {
                    return Err(Status::not_found(format!(
                        "agent_id: agent {agent_id} is not known"
                    )));
                }
                self.send_to_agent(
                    &agent_id,
                    master_message::Message::FrameworkMessage(v1::FrameworkToAgentMessage {
                        framework_id: fid.as_str().to_owned(),
                        task_id: task_id.as_str().to_owned(),
                        data,
                    }),
                );
            }
            Call::Teardown => self.remove_framework(fid, "framework was torn down", now),
        }
        Ok(())
    }

    /// RECONCILE: implicit (no tasks) answers every live task the master
    /// knows; explicit answers each named task, except one that may be on a
    /// recovering agent: that one is answered when the agent re-registers or
    /// is marked unreachable (see [`Master::answer_pending_reconciliation`]).
    fn reconcile(&mut self, fid: &FrameworkId, partition_aware: bool, tasks: Vec<ReconcileTask>) {
        if tasks.is_empty() {
            let statuses: Vec<v1::TaskStatus> = self
                .tasks
                .values()
                .filter(|t| &t.framework_id == fid && !is_terminal(t.state()))
                .map(|t| t.status.clone())
                .collect();
            for status in statuses {
                self.send_to_framework(fid, update(reconciliation_status(status)));
            }
            return;
        }
        for ReconcileTask { task_id, agent_id } in tasks {
            let key = (fid.clone(), task_id);
            let status = if let Some(t) = self.tasks.get(&key) {
                t.status.clone()
            } else if let Some(agent) = agent_id {
                if self.recovering.contains_key(&agent) {
                    self.pending_reconciliation.insert(key, Some(agent));
                    continue;
                }
                match self.agents.get(&agent) {
                    Some(a) if a.reachable => gone_status(&key.1, &agent, partition_aware),
                    Some(_) => master_status(
                        key.1.as_str(),
                        Some(&agent),
                        TaskState::Unreachable,
                        StatusReason::ReasonReconciliation,
                        format!("agent {agent} of task {} is unreachable", key.1),
                    ),
                    None => unknown_status(&key.1, partition_aware),
                }
            } else if !self.recovering.is_empty() {
                self.pending_reconciliation.insert(key, None);
                continue;
            } else {
                unknown_status(&key.1, partition_aware)
            };
            self.send_to_framework(fid, update(reconciliation_status(status)));
        }
    }

    /// Answers the pending reconciliations `agent` settles: after it
    /// re-registered (`reachable`), a task it has gets its real state and one
    /// it lacks TASK_GONE (TASK_LOST if not partition-aware); after its
    /// re-registration timeout, its tasks get TASK_UNREACHABLE. Once no agent
    /// is recovering, tasks asked about without an agent and still not found
    /// get TASK_UNKNOWN (TASK_LOST if not partition-aware).
    fn answer_pending_reconciliation(&mut self, agent: &AgentId, reachable: bool) {
        let pending = std::mem::take(&mut self.pending_reconciliation);
        let last = self.recovering.is_empty();
        for (key, named) in pending {
            let aware = self
                .frameworks
                .get(&key.0)
                .is_some_and(Framework::partition_aware);
            let status = match self.tasks.get(&key) {
                Some(t) if named.as_ref() == Some(agent) || &t.agent_id == agent => Some(t.status.clone()),
                _ if named.as_ref() == Some(agent) => Some(if reachable {
                    gone_status(&key.1, agent, aware)
                } else {
                    master_status(
                        key.1.as_str(),
                        Some(agent),
                        TaskState::Unreachable,
                        StatusReason::ReasonReconciliation,
                        format!("agent {agent} did not re-register in time"),
                    )
                }),
                _ if named.is_none() && last => Some(unknown_status(&key.1, aware)),
                _ => None,
            };
            match status {
                Some(status) => self.send_to_framework(&key.0, update(reconciliation_status(status))),
                None => {
                    self.pending_reconciliation.insert(key, named);
                }
            }
        }
    }

    /// Marks recovering agents whose re-registration timeout has passed
    /// unreachable (the master knows none of their tasks).
    fn expire_recovering_agents(&mut self, now: Instant) {
        let expired: Vec<AgentId> = self
            .recovering
            .iter()
            .filter(|(_, a)| a.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for id in expired {
            let Some(recovering) = self.recovering.remove(&id) else {
                continue;
            };
            tracing::warn!(agent = %id, "agent did not re-register in time; it is unreachable");
            let total = Resources::from_proto(&recovering.info.resources).unwrap_or_default();
            self.agents.insert(
                id.clone(),
                Agent {
                    info: recovering.info,
                    total,
                    conn: None,
                    last_seen: now,
                    reachable: true,
                    usage: None,
                },
            );
            self.mark_unreachable(&id, now);
            self.answer_pending_reconciliation(&id, false);
        }
    }

    /// Returns offered resources to the pool, refusing them to the framework
    /// for `refuse` if it is not zero.
    fn return_to_pool(
        &mut self,
        fid: &FrameworkId,
        role: &str,
        agent: &AgentId,
        resources: &Resources,
        refuse: Duration,
        now: Instant,
    ) {
        self.allocator.recover(fid, agent, resources);
        if !refuse.is_zero()
            && !resources.is_empty()
            && let Some(until) = now.checked_add(refuse)
        {
            self.allocator.add_filter(fid.clone(), role, agent.clone(), until);
        }
        self.schedule_allocation(now);
    }

    fn accept(
        &mut self,
        fid: &FrameworkId,
        offer_ids: &[OfferId],
        operations: &[v1::Operation],
        refuse: Duration,
        now: Instant,
    ) -> Result<(), Status> {
        let no_roles = Vec::new();
        let roles = self.frameworks.get(fid).map_or(&no_roles, |f| &f.info.roles);
        let task_groups = self.frameworks.get(fid).is_some_and(Framework::task_groups);
        let context = AcceptContext {
            roles,
            dynamic_reservations: self.policy.reservations(),
            task_groups,
        };
        let plan = validate_accept(
            fid,
            offer_ids,
            operations,
            context,
            |id| {
                self.offers.get(id).map(|o| OfferRef {
                    framework_id: &o.framework_id,
                    agent_id: &o.agent_id,
                    resources: &o.resources,
                })
            },
            |tid| {
                self.tasks
                    .get(&(fid.clone(), tid.clone()))
                    .is_some_and(|t| !is_terminal(t.state()))
            },
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut consumed = Vec::new();
        for id in &plan.consumed_offers {
            if let Some(o) = self.offers.remove(id) {
                consumed.push(o);
            }
        }
        for r in &plan.rejections {
            let agent = plan.agent_id.as_ref().or(consumed.first().map(|o| &o.agent_id));
            let status = master_status(&r.task_id, agent, r.state, r.reason, r.message.clone());
            tracing::info!(framework = %fid, task = %r.task_id, reason = %r.message, "task not launched");
            self.send_to_framework(fid, update(status));
        }
        let Some(agent_id) = plan.agent_id.filter(|_| plan.offers_valid) else {
            for o in consumed {
                self.allocator.recover(&o.framework_id, &o.agent_id, &o.resources);
            }
            self.schedule_allocation(now);
            return Ok(());
        };
        self.metrics.offers_accepted.inc_by(consumed.len() as u64);
        // Reservation changes need the resources free: the offers go back
        // first, and the launches then take their resources from the free pool.
        let reserving = !plan.reservations.is_empty();
        if reserving {
            for o in &consumed {
                self.allocator.recover(&o.framework_id, &o.agent_id, &o.resources);
            }
            self.apply_reservations(&agent_id, &plan.reservations);
        }
        let framework_info = self
            .frameworks
            .get(fid)
            .map(|f| f.info.clone())
            .unwrap_or_default();
        for launch in plan.launches {
            let info = self.track_launch(fid, &agent_id, launch, None, reserving);
            self.send_to_agent(
                &agent_id,
                master_message::Message::RunTask(v1::RunTask {
                    framework: Some(framework_info.clone()),
                    task: Some(info),
                }),
            );
        }
        for group in plan.groups {
            let group_id = format!("group-{}", uuid::Uuid::new_v4());
            tracing::info!(framework = %fid, group = %group_id, agent = %agent_id, tasks = group.tasks.len(), "launching task group");
            let tasks = group
                .tasks
                .into_iter()
                .map(|launch| self.track_launch(fid, &agent_id, launch, Some(&group_id), reserving))
                .collect();
            self.send_to_agent(
                &agent_id,
                master_message::Message::RunTaskGroup(v1::RunTaskGroup {
                    framework: Some(framework_info.clone()),
                    group_id,
                    tasks,
                }),
            );
        }
        // A framework holds offers on an agent for one role at a time.
        let role = consumed.first().map(|o| o.role.clone()).unwrap_or_default();
        self.return_to_pool(fid, &role, &agent_id, &plan.unused, refuse, now);
        Ok(())
    }

    /// Accounts a validated task's resources and tracks it as STAGING on
    /// `agent_id`; returns the task info to send to the agent.
    fn track_launch(
        &mut self,
        fid: &FrameworkId,
        agent_id: &AgentId,
        launch: ValidLaunch,
        group_id: Option<&str>,
        reserving: bool,
    ) -> v1::TaskInfo {
        if reserving {
            self.allocator.add_used(fid, agent_id, &launch.resources);
        } else {
            self.allocator.launch(fid, agent_id, &launch.resources);
        }
        let status = master_status(
            launch.task_id.as_str(),
            Some(agent_id),
            TaskState::Staging,
            StatusReason::ReasonUnspecified,
            "",
        );
        tracing::info!(framework = %fid, task = %launch.task_id, agent = %agent_id, group = group_id.unwrap_or(""), "launching task");
        self.tasks.insert(
            (fid.clone(), launch.task_id),
            Task {
                info: launch.info.clone(),
                framework_id: fid.clone(),
                agent_id: agent_id.clone(),
                resources: launch.resources,
                status,
                unacked: None,
                released: false,
                group_id: group_id.map(str::to_owned),
            },
        );
        launch.info
    }

    // -----------------------------------------------------------------
    // Agents
    // -----------------------------------------------------------------

    /// REGISTER on a new agent stream `conn_id`. `register.agent` has been
    /// validated (present, hostname set, resources valid, id valid or empty).
    /// Queues the store write, REGISTERED, and whatever reconciling the
    /// agent's tasks needs.
    pub fn register_agent(
        &mut self,
        register: v1::Register,
        conn_id: u64,
        tx: AgentTx,
        now: Instant,
    ) -> Result<AgentId, Status> {
        let mut info = register
            .agent
            .ok_or_else(|| Status::invalid_argument("register.agent: must be set"))?;
        let total = Resources::from_proto(&info.resources)
            .map_err(|e| Status::invalid_argument(format!("register.agent.resources: {e}")))?;
        let id = if info.id.is_empty() {
            AgentId::generate("agent")
        } else {
            AgentId::parse(&info.id)
                .map_err(|e| Status::invalid_argument(format!("register.agent.id: {e}")))?
        };
        info.id = id.as_str().to_owned();
        let previous = self.agents.remove(&id);
        let recovered = self.recovering.remove(&id);
        let was_recovering = recovered.is_some();
        let was_unreachable = previous.as_ref().is_some_and(|a| !a.reachable);
        if previous.is_some() {
            self.rescind_offers_on(&id, now);
            self.allocator.remove_agent(&id);
        }
        tracing::info!(agent = %id, hostname = %info.hostname, resources = %total, reregister = previous.is_some(), "agent registered");
        // The registry holds the agent as it registers already (a reconnect, or every agent
        // re-registering after a failover): no write, so the registration does not wait for
        // the store, and 1,000 agents coming back do not queue 1,000 writes.
        let stored = previous
            .as_ref()
            .map(|a| &a.info)
            .or(recovered.as_ref().map(|r| &r.info));
        if stored != Some(&info) {
            self.effects.push(Effect::Persist(vec![Write::put(
                agent_key(&id),
                info.encode_to_vec(),
            )]));
        }
        self.allocator.add_agent(id.clone(), total.clone());
        self.apply_stored_reservations(&id);
        self.agents.insert(
            id.clone(),
            Agent {
                info,
                total,
                conn: Some(AgentConn { id: conn_id, tx }),
                last_seen: now,
                reachable: true,
                usage: None,
            },
        );
        self.send_to_agent(
            &id,
            master_message::Message::Registered(v1::Registered {
                agent_id: id.as_str().to_owned(),
                heartbeat_interval_seconds: self.agent_heartbeat_interval().as_secs_f64(),
                master_id: self.master_id.clone(),
            }),
        );
        self.adopt_tasks(&id, register.tasks, was_unreachable, previous.is_some());
        if was_recovering || !self.pending_reconciliation.is_empty() {
            self.answer_pending_reconciliation(&id, true);
        }
        self.schedule_allocation(now);
        Ok(id)
    }

    /// Reconciles the tasks a (re-)registering agent reports with what the
    /// master knows.
    fn adopt_tasks(&mut self, agent: &AgentId, reported: Vec<v1::Task>, was_unreachable: bool, known: bool) {
        let mut seen = BTreeSet::new();
        for t in reported {
            let info = t.info.unwrap_or_default();
            let (Ok(fid), Ok(tid)) = (FrameworkId::parse(&t.framework_id), TaskId::parse(&info.task_id))
            else {
                tracing::warn!(agent = %agent, task = %info.task_id, "agent reported a task with a bad id");
                continue;
            };
            if !self.frameworks.contains_key(&fid) {
                tracing::info!(agent = %agent, framework = %fid, task = %tid, "killing task of an unknown framework");
                self.send_to_agent(
                    agent,
                    master_message::Message::KillTask(v1::KillTask {
                        framework_id: fid.as_str().to_owned(),
                        task_id: tid.as_str().to_owned(),
                        kill_policy: None,
                    }),
                );
                continue;
            }
            let resources = Resources::from_proto(&info.resources).unwrap_or_default();
            let key = (fid.clone(), tid.clone());
            let mut status = t.status.unwrap_or_else(|| {
                master_status(
                    tid.as_str(),
                    Some(agent),
                    TaskState::Staging,
                    StatusReason::ReasonUnspecified,
                    "",
                )
            });
            status.agent_id = agent.as_str().to_owned();
            // The agent resends whatever is unacknowledged on its own.
            let unacked = None;
            // Keep the group the master knows; a restarted master learns it
            // from the agent, so killing one task still kills its whole pod.
            let group_id = self
                .tasks
                .get(&key)
                .and_then(|t| t.group_id.clone())
                .or_else(|| Some(t.group_id).filter(|g| !g.is_empty()));
            let mut task = Task {
                info,
                framework_id: fid.clone(),
                agent_id: agent.clone(),
                resources,
                status,
                unacked,
                released: false,
                group_id,
            };
            if is_terminal(task.state()) {
                task.released = true;
            } else {
                self.allocator.add_used(&fid, agent, &task.resources);
            }
            if was_unreachable {
                let mut status = task.status.clone();
                status.uuid.clear();
                status.source = StatusSource::Master as i32;
                status.reason = StatusReason::ReasonAgentReregistered as i32;
                status.timestamp = now_seconds();
                self.send_to_framework(&fid, update(status));
            }
            seen.insert(key.clone());
            self.tasks.insert(key, task);
        }
        if !known {
            return;
        }
        // Tasks the master placed on this agent that the agent no longer has.
        let missing: Vec<(FrameworkId, TaskId)> = self
            .tasks
            .iter()
            .filter(|(k, t)| &t.agent_id == agent && !seen.contains(*k) && !is_terminal(t.state()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in missing {
            let Some(mut task) = self.tasks.remove(&key) else {
                continue;
            };
            let aware = self
                .frameworks
                .get(&key.0)
                .is_some_and(Framework::partition_aware);
            let state = if aware { TaskState::Gone } else { TaskState::Lost };
            task.status = master_status(
                key.1.as_str(),
                Some(agent),
                state,
                StatusReason::ReasonAgentRestarted,
                "the agent re-registered without this task",
            );
            self.send_to_framework(&key.0, update(task.status.clone()));
            self.complete(task);
        }
    }

    fn rescind_offers_on(&mut self, agent: &AgentId, now: Instant) {
        let ids: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| &o.agent_id == agent)
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            self.rescind_offer(&id, now);
        }
    }

    /// Takes an offer back: the framework gets RESCIND, the resources return.
    fn rescind_offer(&mut self, id: &OfferId, now: Instant) {
        let Some(o) = self.offers.remove(id) else { return };
        self.allocator.recover(&o.framework_id, &o.agent_id, &o.resources);
        self.metrics.offers_rescinded.inc();
        self.schedule_allocation(now);
        self.send_to_framework(
            &o.framework_id,
            event::Event::Rescind(v1::Rescind {
                offer_id: id.as_str().to_owned(),
            }),
        );
    }

    /// A message from agent stream `conn_id` after REGISTER.
    pub fn agent_message(
        &mut self,
        id: &AgentId,
        conn_id: u64,
        message: v1::agent_message::Message,
        now: Instant,
    ) {
        let Some(agent) = self.agents.get_mut(id) else {
            return;
        };
        if agent.conn.as_ref().map(|c| c.id) != Some(conn_id) {
            return;
        }
        agent.last_seen = now;
        match message {
            v1::agent_message::Message::Heartbeat(_) => {}
            v1::agent_message::Message::Usage(usage) => {
                if let Some(a) = self.agents.get_mut(id) {
                    a.usage = Some(sanitize_usage(usage));
                }
            }
            v1::agent_message::Message::Register(_) => {
                tracing::warn!(agent = %id, "ignoring a second REGISTER on the same stream");
            }
            v1::agent_message::Message::StatusUpdate(u) => self.status_update(id, u, now),
            v1::agent_message::Message::FrameworkMessage(mut m) => {
                let owner = self
                    .tasks
                    .values()
                    .find(|t| &t.agent_id == id && t.info.task_id == m.task_id)
                    .map(|t| t.framework_id.clone());
                match owner {
                    Some(fid) => {
                        m.agent_id = id.as_str().to_owned();
                        self.send_to_framework(&fid, event::Event::Message(m));
                    }
                    None => {
                        tracing::debug!(agent = %id, task = %m.task_id, "framework message for an unknown task")
                    }
                }
            }
        }
    }

    fn status_update(&mut self, agent: &AgentId, u: v1::StatusUpdate, now: Instant) {
        let Some(mut status) = u.status else {
            tracing::warn!(agent = %agent, "status update without a status");
            return;
        };
        let (Ok(fid), Ok(tid)) = (
            FrameworkId::parse(&u.framework_id),
            TaskId::parse(&status.task_id),
        ) else {
            tracing::warn!(agent = %agent, framework = %u.framework_id, task = %status.task_id, "status update with a bad id");
            return;
        };
        self.metrics.status_updates.inc();
        status.agent_id = agent.as_str().to_owned();
        let state = TaskState::try_from(status.state).unwrap_or(TaskState::Unspecified);
        let key = (fid.clone(), tid);
        // The agent's newest state for the task; later than `state` when
        // updates queue behind an unacknowledged one.
        let latest = TaskState::try_from(u.latest_state)
            .ok()
            .filter(|s| *s != TaskState::Unspecified)
            .unwrap_or(state);
        let framework_known = self.frameworks.contains_key(&fid);
        if let Some(task) = self.tasks.get_mut(&key) {
            task.status = status.clone();
            if !status.uuid.is_empty() {
                task.unacked = Some(status.clone());
            }
            let ended = is_terminal(state) || is_terminal(latest);
            let release = (ended && !task.released).then(|| task.resources.clone());
            task.released |= ended;
            if let Some(resources) = release {
                let task_agent = task.agent_id.clone();
                self.allocator.release(&fid, &task_agent, &resources);
                self.schedule_allocation(now);
            }
            if !framework_known
                && is_terminal(state)
                && let Some(task) = self.tasks.remove(&key)
            {
                self.complete(task);
            }
        }
        if framework_known {
            self.send_to_framework(&fid, update(status));
        } else if !status.uuid.is_empty() {
            // Nobody is left to acknowledge updates of a removed framework:
            // the master does, so the agent's queue drains (and the task's
            // terminal update, which frees its resources, gets through).
            self.send_to_agent(
                agent,
                master_message::Message::Acknowledge(v1::AcknowledgeUpdate {
                    framework_id: fid.as_str().to_owned(),
                    task_id: status.task_id.clone(),
                    uuid: status.uuid.clone(),
                }),
            );
        }
    }

    /// Agent stream `conn_id` ended. The agent stays until its timeout.
    pub fn agent_disconnected(&mut self, id: &AgentId, conn_id: u64) {
        if let Some(agent) = self.agents.get_mut(id)
            && agent.conn.as_ref().map(|c| c.id) == Some(conn_id)
        {
            tracing::info!(agent = %id, "agent stream closed");
            agent.conn = None;
        }
    }

    fn mark_unreachable(&mut self, id: &AgentId, now: Instant) {
        let Some(agent) = self.agents.get_mut(id) else {
            return;
        };
        tracing::warn!(agent = %id, "agent is unreachable");
        agent.reachable = false;
        agent.conn = None;
        self.rescind_offers_on(id, now);
        self.allocator.remove_agent(id);
        let keys: Vec<(FrameworkId, TaskId)> = self
            .tasks
            .iter()
            .filter(|(_, t)| &t.agent_id == id && !is_terminal(t.state()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let status = master_status(
                key.1.as_str(),
                Some(id),
                TaskState::Unreachable,
                StatusReason::ReasonAgentUnreachable,
                "the agent stopped heart-beating",
            );
            if let Some(task) = self.tasks.get_mut(&key) {
                task.status = status.clone();
            }
            self.send_to_framework(&key.0, update(status));
        }
        self.schedule_allocation(now);
    }

    // -----------------------------------------------------------------
    // Timers
    // -----------------------------------------------------------------

    /// The next instant [`Master::tick`] has something to do.
    pub fn next_deadline(&self) -> Instant {
        // Cheap on purpose: the actor asks before every command. Agents and
        // offers are not scanned here (10,000 agents made this the master's
        // hottest function); a periodic sweep looks for silent agents and
        // old offers instead.
        let mut next = self.next_heartbeat.min(self.next_sweep);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = next.min(t);
            }
        };
        consider(self.allocation_due);
        consider(self.allocator.next_filter_expiry());
        for f in self.frameworks.values().filter(|f| f.conn.is_none()) {
            consider(f.failover_deadline);
        }
        next
    }

    /// How often silent agents and old offers are looked for: a tenth of
    /// the shortest of the two timeouts, between 50 ms and 1 s. An agent is
    /// found unreachable within `agent_timeout` plus this.
    pub fn sweep_interval(&self) -> Duration {
        let shortest = self
            .config
            .offer_timeout
            .map_or(self.config.agent_timeout, |t| t.min(self.config.agent_timeout));
        (shortest / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Does whatever timers are due at `now`.
    pub fn tick(&mut self, now: Instant) {
        if self.next_sweep <= now {
            self.next_sweep = now + self.sweep_interval();
            self.sweep(now);
        }
        let expired: Vec<FrameworkId> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.conn.is_none() && f.failover_deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for id in expired {
            self.remove_framework(&id, "failover timeout expired", now);
        }
        self.tick_heartbeat_and_allocation(now);
    }

    /// Marks silent agents, and recovering agents past their re-registration
    /// timeout, unreachable and rescinds offers held too long.
    fn sweep(&mut self, now: Instant) {
        self.expire_recovering_agents(now);
        let timeout = self.config.agent_timeout;
        let silent: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(_, a)| a.reachable && a.last_seen.checked_add(timeout).is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for id in silent {
            self.mark_unreachable(&id, now);
        }
        if let Some(t) = self.config.offer_timeout {
            let old: Vec<OfferId> = self
                .offers
                .iter()
                .filter(|(_, o)| o.created.checked_add(t).is_some_and(|d| d <= now))
                .map(|(k, _)| k.clone())
                .collect();
            for id in old {
                tracing::debug!(offer = %id, "rescinding an offer held too long");
                self.rescind_offer(&id, now);
            }
        }
    }

    fn tick_heartbeat_and_allocation(&mut self, now: Instant) {
        if self.next_heartbeat <= now {
            let ids: Vec<FrameworkId> = self
                .frameworks
                .iter()
                .filter(|(_, f)| f.conn.is_some())
                .map(|(k, _)| k.clone())
                .collect();
            for id in ids {
                self.send_to_framework(&id, event::Event::Heartbeat(v1::Heartbeat {}));
            }
            self.next_heartbeat = now + self.config.framework_heartbeat_interval;
        }
        let filter_expired = self.allocator.next_filter_expiry().is_some_and(|t| t <= now);
        if filter_expired || self.allocation_due.is_some_and(|t| t <= now) {
            self.allocate(now);
        }
    }

    /// Runs an allocation pass and sends the resulting offers.
    fn allocate(&mut self, now: Instant) {
        self.allocation_due = None;
        let started = Instant::now();
        let allocations = self.allocator.allocate(now);
        self.metrics
            .allocation_seconds
            .observe(started.elapsed().as_secs_f64());
        let mut by_framework: BTreeMap<FrameworkId, Vec<v1::Offer>> = BTreeMap::new();
        for a in allocations {
            let Some(agent) = self.agents.get(&a.agent_id) else {
                self.allocator.recover(&a.framework_id, &a.agent_id, &a.resources);
                continue;
            };
            let id = OfferId::generate("offer");
            let offer = v1::Offer {
                id: id.as_str().to_owned(),
                framework_id: a.framework_id.as_str().to_owned(),
                agent_id: a.agent_id.as_str().to_owned(),
                hostname: agent.info.hostname.clone(),
                resources: a.resources.to_proto(),
                attributes: agent.info.attributes.clone(),
                allocation_role: a.role.clone(),
            };
            self.offers.insert(
                id,
                Offer {
                    framework_id: a.framework_id.clone(),
                    agent_id: a.agent_id,
                    role: a.role,
                    resources: a.resources,
                    created: now,
                },
            );
            self.metrics.offers_made.inc();
            by_framework.entry(a.framework_id).or_default().push(offer);
        }
        for (fid, offers) in by_framework {
            self.send_to_framework(&fid, event::Event::Offers(v1::Offers { offers }));
        }
    }

    // -----------------------------------------------------------------
    // Introspection
    // -----------------------------------------------------------------

    /// Sets the gauges from the current state (before a scrape).
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        m.agents.clear();
        let active = self.agents.values().filter(|a| a.reachable).count();
        m.agents
            .get_or_create(&label("status", "active"))
            .set(active as i64);
        m.agents
            .get_or_create(&label("status", "unreachable"))
            .set((self.agents.len() - active) as i64);
        m.agents
            .get_or_create(&label("status", "recovering"))
            .set(self.recovering.len() as i64);
        m.frameworks.set(self.frameworks.len() as i64);
        m.frameworks_connected
            .set(self.frameworks.values().filter(|f| f.conn.is_some()).count() as i64);
        m.tasks.clear();
        for t in self.tasks.values() {
            m.tasks
                .get_or_create(&label("state", mesos_name(t.state())))
                .inc();
        }
        m.offers_outstanding.set(self.offers.len() as i64);
        self.refresh_usage_gauges();
        self.refresh_share_gauges();
    }

    /// Per agent: allocated vs used cpus and memory; per live task: its usage.
    /// Series of agents and tasks that are gone disappear.
    fn refresh_usage_gauges(&self) {
        let m = &self.metrics;
        m.agent_cpus_used.clear();
        m.agent_mem_used_mib.clear();
        m.agent_cpus_allocated.clear();
        m.agent_mem_allocated_mib.clear();
        m.task_cpus_used.clear();
        m.task_mem_used_mib.clear();
        for (id, a) in &self.agents {
            let labels = label("agent_id", id.as_str());
            let allocated = self.used_on(id);
            m.agent_cpus_allocated
                .get_or_create(&labels)
                .set(allocated.get_scalar("cpus"));
            m.agent_mem_allocated_mib
                .get_or_create(&labels)
                .set(allocated.get_scalar("mem"));
            if let Some(usage) = &a.usage {
                let tasks = &usage.tasks;
                m.agent_cpus_used
                    .get_or_create(&labels)
                    .set(tasks.iter().map(|t| t.cpus_used).sum());
                m.agent_mem_used_mib
                    .get_or_create(&labels)
                    .set(tasks.iter().map(|t| t.mem_used_mib).sum());
            }
        }
        for t in self.tasks.values().filter(|t| !is_terminal(t.state())) {
            if let Some(usage) = self.task_usage(t) {
                let labels = vec![
                    ("framework_id".to_owned(), t.framework_id.as_str().to_owned()),
                    ("task_id".to_owned(), t.info.task_id.clone()),
                ];
                m.task_cpus_used.get_or_create(&labels).set(usage.cpus_used);
                m.task_mem_used_mib.get_or_create(&labels).set(usage.mem_used_mib);
            }
        }
    }

    /// The live task's part of its agent's latest usage sample.
    fn task_usage(&self, t: &Task) -> Option<&v1::TaskUsage> {
        if is_terminal(t.state()) {
            return None;
        }
        self.agents
            .get(&t.agent_id)?
            .usage
            .as_ref()?
            .tasks
            .iter()
            .find(|u| u.framework_id == t.framework_id.as_str() && u.task_id == t.info.task_id)
    }

    /// A task as `/state` shows it, with its usage (null when unknown).
    fn task_state_json(&self, t: &Task) -> Value {
        let mut v = task_json(t);
        v["usage"] = match self.task_usage(t) {
            Some(u) => json!({ "cpus_used": u.cpus_used, "mem_used_mib": u.mem_used_mib }),
            None => Value::Null,
        };
        v
    }

    /// The master's state as `/state` serves it:
    ///
    /// ```text
    /// { "master_id", "version",
    ///   "agents": [{ "id", "hostname", "http_address", "attributes": {name: value},
    ///                "resources": R, "used": R, "offered": R,
    ///                "usage": U | null,
    ///                "active": bool, "status": "active"|"unreachable"|"recovering", "connected": bool }],
    ///   "frameworks": [{ "id", "name", "user", "roles": [..], "active": bool, "connected": bool,
    ///                    "status": "connected"|"disconnected", "failover_timeout_seconds",
    ///                    "used": R, "offered": R, "task_count",
    ///                    "dominant_share", "role_shares": {role: share} }],
    ///   "tasks": [T], "completed_tasks": [T] }
    /// R = { "cpus", "mem", "disk", "gpus" (numbers), "ports": "[31000-32000]", other scalars by name }
    /// T = { "id", "name", "framework_id", "agent_id", "state": "TASK_RUNNING", "message", "resources": R,
    ///       "usage": { "cpus_used", "mem_used_mib" } | null, "group_id" (only for a task group's tasks) }
    /// U = { "cpus_used", "mem_used_mib" (the agent's tasks, summed), "timestamp",
    ///       "host": { "cpus_used", "mem_used_mib", "cpus_total", "mem_total_mib" } }
    /// ("used" is what is allocated to tasks; "usage" what they actually use, as last sampled;
    /// a "recovering" agent is one from the registry that has not re-registered since the
    /// master started.)
    /// ```
    pub fn state_json(&self) -> Value {
        let mut agents: Vec<Value> = self
            .agents
            .iter()
            .map(|(id, a)| {
                let attributes: serde_json::Map<String, Value> = a
                    .info
                    .attributes
                    .iter()
                    .map(|at| (at.name.clone(), Value::String(at.value.clone())))
                    .collect();
                json!({
                    "id": id,
                    "hostname": a.info.hostname,
                    "http_address": a.info.http_address,
                    "attributes": attributes,
                    "resources": resources_json(&a.total),
                    "used": resources_json(&self.used_on(id)),
                    "offered": resources_json(&self.allocator.offered(id)),
                    "usage": a.usage.as_ref().map(usage_json),
                    "active": a.reachable,
                    "connected": a.conn.is_some(),
                    "status": if a.reachable { "active" } else { "unreachable" },
                })
            })
            .collect();
        agents.extend(self.recovering.iter().map(|(id, a)| {
            let attributes: serde_json::Map<String, Value> = a
                .info
                .attributes
                .iter()
                .map(|at| (at.name.clone(), Value::String(at.value.clone())))
                .collect();
            let total = Resources::from_proto(&a.info.resources).unwrap_or_default();
            json!({
                "id": id,
                "hostname": a.info.hostname,
                "http_address": a.info.http_address,
                "attributes": attributes,
                "resources": resources_json(&total),
                "used": resources_json(&Resources::new()),
                "offered": resources_json(&Resources::new()),
                "usage": Value::Null,
                "active": false,
                "connected": false,
                "status": "recovering",
            })
        }));
        let frameworks: Vec<Value> = self
            .frameworks
            .iter()
            .map(|(id, f)| {
                let mut used = Resources::new();
                let mut task_count = 0;
                for t in self.tasks.values().filter(|t| &t.framework_id == id) {
                    task_count += 1;
                    if !is_terminal(t.state()) {
                        used.add(&t.resources);
                    }
                }
                let mut offered = Resources::new();
                for o in self.offers.values().filter(|o| &o.framework_id == id) {
                    offered.add(&o.resources);
                }
                let (dominant_share, role_shares) = self.framework_shares_json(id);
                json!({
                    "id": id,
                    "name": f.info.name,
                    "user": f.info.user,
                    "roles": f.info.roles,
                    "hostname": f.info.hostname,
                    "webui_url": f.info.webui_url,
                    "active": f.conn.is_some(),
                    "connected": f.conn.is_some(),
                    "status": if f.conn.is_some() { "connected" } else { "disconnected" },
                    "failover_timeout_seconds": f.info.failover_timeout_seconds,
                    "used": resources_json(&used),
                    "offered": resources_json(&offered),
                    "task_count": task_count,
                    "dominant_share": dominant_share,
                    "role_shares": role_shares,
                })
            })
            .collect();
        json!({
            "master_id": self.master_id,
            "version": env!("CARGO_PKG_VERSION"),
            "agents": agents,
            "frameworks": frameworks,
            "tasks": self.tasks.values().map(|t| self.task_state_json(t)).collect::<Vec<_>>(),
            "completed_tasks": self.completed.iter().rev().map(|t| self.task_state_json(t)).collect::<Vec<_>>(),
        })
    }

    fn used_on(&self, agent: &AgentId) -> Resources {
        let mut used = Resources::new();
        for t in self
            .tasks
            .values()
            .filter(|t| &t.agent_id == agent && !is_terminal(t.state()))
        {
            used.add(&t.resources);
        }
        used
    }
}

fn task_json(t: &Task) -> Value {
    let mut v = json!({
        "id": t.info.task_id,
        "name": t.info.name,
        "framework_id": t.framework_id,
        "agent_id": t.agent_id,
        "state": mesos_name(t.state()),
        "message": t.status.message,
        "resources": resources_json(&t.resources),
    });
    if let Some(group) = &t.group_id {
        v["group_id"] = json!(group);
    }
    v
}

/// A usage sample with every figure a finite, non-negative number (an agent's
/// NaN or negative reading becomes 0), so `/state` and `/metrics` stay meaningful.
fn sanitize_usage(mut usage: v1::ResourceUsage) -> v1::ResourceUsage {
    fn clean(x: &mut f64) {
        if !x.is_finite() || *x < 0.0 {
            *x = 0.0;
        }
    }
    if let Some(h) = usage.host.as_mut() {
        for x in [
            &mut h.cpus_used,
            &mut h.mem_used_mib,
            &mut h.cpus_total,
            &mut h.mem_total_mib,
        ] {
            clean(x);
        }
    }
    for t in &mut usage.tasks {
        clean(&mut t.cpus_used);
        clean(&mut t.mem_used_mib);
    }
    clean(&mut usage.timestamp);
    usage
}

/// An agent's latest usage sample as `/state` shows it.
fn usage_json(usage: &v1::ResourceUsage) -> Value {
    let host = usage.host.unwrap_or_default();
    json!({
        "cpus_used": usage.tasks.iter().map(|t| t.cpus_used).sum::<f64>(),
        "mem_used_mib": usage.tasks.iter().map(|t| t.mem_used_mib).sum::<f64>(),
        "timestamp": usage.timestamp,
        "host": {
            "cpus_used": host.cpus_used,
            "mem_used_mib": host.mem_used_mib,
            "cpus_total": host.cpus_total,
            "mem_total_mib": host.mem_total_mib,
        },
    })
}

/// Resources as `/state` shows them.
pub fn resources_json(r: &Resources) -> Value {
    let mut out = serde_json::Map::new();
    for name in ["cpus", "mem", "disk", "gpus"] {
        out.insert(name.to_owned(), json!(r.get_scalar(name)));
    }
    out.insert("ports".to_owned(), json!(r.get_ranges("ports").to_string()));
    for (name, _) in r.keys() {
        if !out.contains_key(name) {
            let ranges = r.get_ranges(name);
            let v = if ranges.is_empty() {
                json!(r.get_scalar(name))
            } else {
                json!(ranges.to_string())
            };
            out.insert(name.to_owned(), v);
        }
    }
    Value::Object(out)
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "usage_tests.rs"]
mod usage_tests;

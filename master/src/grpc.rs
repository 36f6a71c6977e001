//! The gRPC services: the scheduler API (frameworks) and the agent link.
//!
//! Handlers check the shape of each request (fields present, ids parse) and
//! answer INVALID_ARGUMENT naming the field; everything else is decided by
//! the actor, to which they hand a command.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agora_proto::v1::{self, agent_link_server::AgentLink, scheduler_server::Scheduler};
use agora_proto::{AgentId, FrameworkId, OfferId, Resources, StreamId, TaskId};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::actor::{Command, MasterHandle};
use crate::allocator::validate_role;
use crate::cluster::{Call, Caller, DEFAULT_REFUSE, ReconcileTask};

/// The longest refuse filter honoured; longer ones are cut to this.
const MAX_REFUSE: Duration = Duration::from_secs(365 * 24 * 3600);

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send>>;
type MasterMessageStream = Pin<Box<dyn Stream<Item = Result<v1::MasterMessage, Status>> + Send>>;

fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {problem}"))
}

/// Checks a FrameworkInfo sent with SUBSCRIBE.
pub fn validate_framework_info(info: Option<v1::FrameworkInfo>) -> Result<v1::FrameworkInfo, Status> {
    let info = info.ok_or_else(|| invalid("framework", "must be set"))?;
    if info.name.trim().is_empty() {
        return Err(invalid("framework.name", "must not be empty"));
    }
    if !info.failover_timeout_seconds.is_finite() || info.failover_timeout_seconds < 0.0 {
        return Err(invalid(
            "framework.failover_timeout_seconds",
            "must be finite and >= 0",
        ));
    }
    if !info.id.is_empty() {
        FrameworkId::parse(&info.id).map_err(|e| invalid("framework.id", e))?;
    }
    for (i, role) in info.roles.iter().enumerate() {
        validate_role(role).map_err(|e| invalid(&format!("framework.roles[{i}]"), e))?;
    }
    Ok(info)
}

/// Checks a Caller: present, both ids valid.
pub fn validate_caller(caller: Option<v1::Caller>) -> Result<Caller, Status> {
    let caller = caller.ok_or_else(|| invalid("caller", "must be set"))?;
    Ok(Caller {
        framework_id: FrameworkId::parse(&caller.framework_id)
            .map_err(|e| invalid("caller.framework_id", e))?,
        stream_id: StreamId::parse(&caller.stream_id).map_err(|e| invalid("caller.stream_id", e))?,
    })
}

/// The refuse filter of a call: default 5 s, finite and >= 0.
pub fn validate_refuse(filters: Option<v1::Filters>) -> Result<Duration, Status> {
    match filters.and_then(|f| f.refuse_seconds) {
        None => Ok(DEFAULT_REFUSE),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Duration::try_from_secs_f64(s)
            .unwrap_or(MAX_REFUSE)
            .min(MAX_REFUSE)),
        Some(_) => Err(invalid("filters.refuse_seconds", "must be finite and >= 0")),
    }
}

fn validate_offer_ids(ids: &[String]) -> Result<Vec<OfferId>, Status> {
    if ids.is_empty() {
        return Err(invalid("offer_ids", "must not be empty"));
    }
    ids.iter()
        .enumerate()
        .map(|(i, id)| OfferId::parse(id).map_err(|e| invalid(&format!("offer_ids[{i}]"), e)))
        .collect()
}

fn task_id(field: &str, s: &str) -> Result<TaskId, Status> {
    TaskId::parse(s).map_err(|e| invalid(field, e))
}

fn agent_id(field: &str, s: &str) -> Result<AgentId, Status> {
    AgentId::parse(s).map_err(|e| invalid(field, e))
}

/// The RECONCILE call a request asks for: each task's id, and its agent's id
/// when given (empty means unknown); names the bad field otherwise.
pub fn reconcile_call(req: &v1::ReconcileRequest) -> Result<Call, Status> {
    let tasks = req
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(ReconcileTask {
                task_id: task_id(&format!("tasks[{i}].task_id"), &t.task_id)?,
                agent_id: if t.agent_id.is_empty() {
                    None
                } else {
                    Some(agent_id(&format!("tasks[{i}].agent_id"), &t.agent_id)?)
                },
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(Call::Reconcile { tasks })
}

/// Checks the REGISTER an agent opens its stream with.
pub fn validate_register(register: &v1::Register) -> Result<(), Status> {
    let agent = register
        .agent
        .as_ref()
        .ok_or_else(|| invalid("register.agent", "must be set"))?;
    if agent.hostname.trim().is_empty() {
        return Err(invalid("register.agent.hostname", "must not be empty"));
    }
    if !agent.id.is_empty() {
        AgentId::parse(&agent.id).map_err(|e| invalid("register.agent.id", e))?;
    }
    Resources::from_proto(&agent.resources).map_err(|e| invalid("register.agent.resources", e))?;
    Ok(())
}

/// Tells the actor when a framework's event stream is dropped.
struct DisconnectGuard {
    handle: MasterHandle,
    framework_id: FrameworkId,
    stream_id: StreamId,
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        self.handle.send(Command::FrameworkDisconnected {
            framework_id: self.framework_id.clone(),
            stream_id: self.stream_id.clone(),
        });
    }
}

/// The scheduler API.
pub struct SchedulerService {
    handle: MasterHandle,
}

impl SchedulerService {
    pub fn new(handle: MasterHandle) -> Self {
        Self { handle }
    }

    async fn call(
        &self,
        caller: Option<v1::Caller>,
        call: Call,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let caller = validate_caller(caller)?;
        self.handle
            .ask(|reply| Command::Call { caller, call, reply })
            .await??;
        Ok(Response::new(v1::CallResponse {}))
    }
}

#[tonic::async_trait]
impl Scheduler for SchedulerService {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        let info = validate_framework_info(req.framework)?;
        for (i, role) in req.suppressed_roles.iter().enumerate() {
            validate_role(role).map_err(|e| invalid(&format!("suppressed_roles[{i}]"), e))?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let suppressed_roles = req.suppressed_roles;
        let (framework_id, stream_id) = self
            .handle
            .ask(|reply| Command::Subscribe {
                info,
                suppressed_roles,
                tx,
                reply,
            })
            .await??;
        let guard = DisconnectGuard {
            handle: self.handle.clone(),
            framework_id,
            stream_id,
        };
        let stream = UnboundedReceiverStream::new(rx).map(move |event| {
            let _keep_until_the_stream_is_dropped = &guard;
            event
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn accept(
        &self,
        request: Request<v1::AcceptRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let req = request.into_inner();
        let offer_ids = validate_offer_ids(&req.offer_ids)?;
        if let Some(i) = req.operations.iter().position(|op| op.operation.is_none()) {
            return Err(invalid(&format!("operations[{i}].operation"), "must be set"));
        }
        let refuse = validate_refuse(req.filters)?;
        let call = Call::Accept {
            offer_ids,
            operations: req.operations,
            refuse,
        };
        self.call(req.caller, call).await
    }

    async fn decline(
        &self,
        request: Request<v1::DeclineRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let req = request.into_inner();
        let call = Call::Decline {
            offer_ids: validate_offer_ids(&req.offer_ids)?,
            refuse: validate_refuse(req.filters)?,
        };
        self.call(req.caller, call).await
    }

    async fn revive(
        &self,
        request: Request<v1::ReviveRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let req = request.into_inner();
        self.call(req.caller, Call::Revive { roles: req.roles }).await
    }

    async fn suppress(
        &self,
        request: Request<v1::SuppressRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let req = request.into_inner();
        self.call(req.caller, Call::Suppress { roles: req.roles }).await
    }

    async fn kill(&self, request: Request<v1::KillRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let req = request.into_inner();
        let call = Call::Kill {
            task_id: task_id("task_id", &req.task_id)?,
            kill_policy: req.kill_policy,
        };
        self.call(req.caller, call).await
    }

    async fn acknowledge(
        &self,
        request: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let req = request.into_inner();
        if req.uuid.is_empty() {
            return Err(invalid("uuid", "must not be empty"));
        }
        let call = Call::Acknowledge {
            agent_id: agent_id("agent_id", &req.agent_id)?,
            task_id: task_id("task_id", &req.task_id)?,
            uuid: req.uuid,
        };
        self.call(req.caller, call).await
    }

    async fn reconcile(
        &self,
        request: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let req = request.into_inner();
        let call = reconcile_call(&req)?;
        self.call(req.caller, call).await
    }

    async fn message(
        &self,
        request: Request<v1::MessageRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let req = request.into_inner();
        let call = Call::Message {
            agent_id: agent_id("agent_id", &req.agent_id)?,
            task_id: task_id("task_id", &req.task_id)?,
            data: req.data,
        };
        self.call(req.caller, call).await
    }

    async fn teardown(
        &self,
        request: Request<v1::TeardownRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(request.into_inner().caller, Call::Teardown).await
    }
}

/// The agent link.
pub struct AgentLinkService {
    handle: MasterHandle,
    next_conn: Arc<AtomicU64>,
}

impl AgentLinkService {
    pub fn new(handle: MasterHandle) -> Self {
        Self {
            handle,
            next_conn: Arc::new(AtomicU64::new(1)),
        }
    }
}

#[tonic::async_trait]
impl AgentLink for AgentLinkService {
    type AttachStream = MasterMessageStream;

    async fn attach(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(agent_session(self.handle.clone(), inbound, tx, conn_id));
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

/// Reads one agent stream: REGISTER first, then everything else, handing
/// each message to the actor. The answer stream is fed by the actor.
async fn agent_session(
    handle: MasterHandle,
    mut inbound: Streaming<v1::AgentMessage>,
    tx: mpsc::UnboundedSender<Result<v1::MasterMessage, Status>>,
    conn_id: u64,
) {
    let first = tokio::select! {
        first = inbound.message() => first,
        _ = handle.closed() => return,
    };
    let first = match first {
        Ok(Some(m)) => m,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(error = %e, "agent stream failed before REGISTER");
            return;
        }
    };
    let register = match first.message {
        Some(v1::agent_message::Message::Register(r)) => r,
        _ => {
            let _ = tx.send(Err(invalid(
                "message.register",
                "the first message on the stream must be register",
            )));
            return;
        }
    };
    if let Err(status) = validate_register(&register) {
        let _ = tx.send(Err(status));
        return;
    }
    let agent_tx = tx.clone();
    let result = handle
        .ask(|reply| Command::RegisterAgent {
            register,
            conn_id,
            tx: agent_tx,
            reply,
        })
        .await;
    let agent_id = match result {
        Ok(Ok(id)) => id,
        Ok(Err(status)) | Err(status) => {
            let _ = tx.send(Err(status));
            return;
        }
    };
    // From here on only the actor writes to the stream, so that dropping
    // the agent (replaced, unreachable, shutdown) ends it.
    drop(tx);
    loop {
        let next = tokio::select! {
            next = inbound.message() => next,
            // The master stopped: let go of the request stream so the
            // connection can close.
            _ = handle.closed() => return,
        };
        match next {
            Ok(Some(v1::AgentMessage {
                message: Some(message),
            })) => {
                let sent = handle.send(Command::AgentMessage {
                    agent_id: agent_id.clone(),
                    conn_id,
                    message,
                });
                if !sent {
                    return;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(agent = %agent_id, error = %e, "agent stream failed");
                break;
            }
        }
    }
    handle.send(Command::AgentDisconnected { agent_id, conn_id });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framework_info_needs_a_name() {
        let info = v1::FrameworkInfo::default();
        let err = validate_framework_info(Some(info)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("framework.name"), "{}", err.message());
    }

    #[test]
    fn framework_info_checks_failover_timeout_roles_and_id() {
        let base = v1::FrameworkInfo {
            name: "x".into(),
            ..Default::default()
        };
        let cases: Vec<(v1::FrameworkInfo, &str)> = vec![
            (
                v1::FrameworkInfo {
                    failover_timeout_seconds: f64::INFINITY,
                    ..base.clone()
                },
                "framework.failover_timeout_seconds",
            ),
            (
                v1::FrameworkInfo {
                    failover_timeout_seconds: -1.0,
                    ..base.clone()
                },
                "framework.failover_timeout_seconds",
            ),
            (
                v1::FrameworkInfo {
                    roles: vec!["ok".into(), "eng/web".into(), "a//b".into()],
                    ..base.clone()
                },
                "framework.roles[2]",
            ),
            (
                v1::FrameworkInfo {
                    id: "has space".into(),
                    ..base.clone()
                },
                "framework.id",
            ),
        ];
        for (info, field) in cases {
            let err = validate_framework_info(Some(info)).unwrap_err();
            assert!(err.message().starts_with(field), "{}", err.message());
        }
        assert!(validate_framework_info(Some(base)).is_ok());
    }

    #[test]
    fn refuse_seconds_defaults_to_five_and_must_be_finite() {
        assert_eq!(validate_refuse(None).unwrap(), Duration::from_secs(5));
        assert_eq!(
            validate_refuse(Some(v1::Filters {
                refuse_seconds: Some(0.0)
            }))
            .unwrap(),
            Duration::ZERO
        );
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            let err = validate_refuse(Some(v1::Filters {
                refuse_seconds: Some(bad),
            }))
            .unwrap_err();
            assert!(err.message().contains("filters.refuse_seconds"));
        }
    }

    #[test]
    fn register_needs_an_agent_with_a_hostname() {
        let err = validate_register(&v1::Register::default()).unwrap_err();
        assert!(err.message().contains("register.agent"));
        let err = validate_register(&v1::Register {
            agent: Some(v1::AgentInfo::default()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.message().contains("register.agent.hostname"));
    }
}

//! The actor that owns the [`Master`]: it takes commands from the gRPC and
//! HTTP handlers one at a time, fires the timers, and carries out the effects
//! of each step (store writes first, in order) before the next.

use agora_proto::v1;
use agora_proto::{AgentId, FrameworkId, StreamId};
use agora_store::SharedStore;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use tonic::Status;

use crate::cluster::{AgentTx, Call, Caller, Effect, EventTx, Master, OperatorError, OperatorRequest};

/// A request to the actor. Replies, where there are any, come back on the
/// oneshot after the step's effects are done.
pub enum Command {
    Subscribe {
        info: v1::FrameworkInfo,
        suppressed_roles: Vec<String>,
        tx: EventTx,
        reply: oneshot::Sender<Result<(FrameworkId, StreamId), Status>>,
    },
    FrameworkDisconnected {
        framework_id: FrameworkId,
        stream_id: StreamId,
    },
    Call {
        caller: Caller,
        call: Call,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    RegisterAgent {
        register: v1::Register,
        conn_id: u64,
        tx: AgentTx,
        reply: oneshot::Sender<Result<AgentId, Status>>,
    },
    AgentMessage {
        agent_id: AgentId,
        conn_id: u64,
        message: v1::agent_message::Message,
    },
    AgentDisconnected {
        agent_id: AgentId,
        conn_id: u64,
    },
    State {
        reply: oneshot::Sender<Value>,
    },
    RefreshGauges {
        reply: oneshot::Sender<()>,
    },
    /// Quota, weights, roles (the operator's HTTP API).
    Operator {
        request: OperatorRequest,
        reply: oneshot::Sender<Result<Value, OperatorError>>,
    },
}

/// A cheap handle for sending commands to the actor.
#[derive(Clone)]
pub struct MasterHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl MasterHandle {
    /// Sends a command; `false` if the actor has stopped.
    pub fn send(&self, command: Command) -> bool {
        self.tx.send(command).is_ok()
    }

    /// Resolves when the actor has stopped.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Sends a command built around a reply channel and waits for the reply.
    pub async fn ask<T>(&self, build: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Status> {
        let (reply, rx) = oneshot::channel();
        if !self.send(build(reply)) {
            return Err(Status::unavailable("the master is shutting down"));
        }
        rx.await
            .map_err(|_| Status::unavailable("the master is shutting down"))
    }
}

/// Starts the actor on the current runtime. It runs until `stop` turns
/// true (or every handle is dropped); then it drops every stream.
pub fn spawn(master: Master, store: SharedStore, stop: watch::Receiver<bool>) -> MasterHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(master, store, rx, stop));
    MasterHandle { tx }
}

async fn run(
    mut master: Master,
    store: SharedStore,
    mut rx: mpsc::UnboundedReceiver<Command>,
    mut stop: watch::Receiver<bool>,
) {
    // Effects of the start-up steps (recovered frameworks), if any.
    execute(&mut master, &store).await;
    loop {
        let deadline = master.next_deadline();
        // Due timers go before queued commands: under a steady stream of
        // commands they would otherwise never fire (no heartbeats, late
        // allocation passes). Every tick moves the deadlines it handles
        // forward, so this cannot starve the commands in turn.
        tokio::select! {
            biased;
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            _ = sleep_until(deadline) => {
                master.tick(Instant::now());
                execute(&mut master, &store).await;
            }
            command = rx.recv() => {
                let Some(command) = command else { break };
                handle(&mut master, &store, command).await;
            }
        }
    }
    tracing::info!("master actor stopped");
}

async fn handle(master: &mut Master, store: &SharedStore, command: Command) {
    let now = Instant::now();
    match command {
        Command::Subscribe {
            info,
            suppressed_roles,
            tx,
            reply,
        } => {
            let result = master.subscribe(info, suppressed_roles, tx, now);
            execute(master, store).await;
            let _ = reply.send(result);
        }
        Command::FrameworkDisconnected {
            framework_id,
            stream_id,
        } => {
            master.framework_disconnected(&framework_id, &stream_id, now);
            execute(master, store).await;
        }
        Command::Call { caller, call, reply } => {
            let result = master.call(&caller, call, now);
            execute(master, store).await;
            let _ = reply.send(result);
        }
        Command::RegisterAgent {
            register,
            conn_id,
            tx,
            reply,
        } => {
            let result = master.register_agent(register, conn_id, tx, now);
            execute(master, store).await;
            let _ = reply.send(result);
        }
        Command::AgentMessage {
            agent_id,
            conn_id,
            message,
        } => {
            master.agent_message(&agent_id, conn_id, message, now);
            execute(master, store).await;
        }
        Command::AgentDisconnected { agent_id, conn_id } => {
            master.agent_disconnected(&agent_id, conn_id);
            execute(master, store).await;
        }
        Command::State { reply } => {
            let _ = reply.send(master.state_json());
        }
        Command::RefreshGauges { reply } => {
            master.refresh_gauges();
            let _ = reply.send(());
        }
        Command::Operator { request, reply } => {
            let result = master.operator(request, now);
            execute(master, store).await;
            let _ = reply.send(result);
        }
    }
}

/// Carries out the queued effects in order. A failed store write is
/// logged; the master keeps serving (the registry catches up on the next
/// write of the same key).
async fn execute(master: &mut Master, store: &SharedStore) {
    for effect in master.take_effects() {
        match effect {
            Effect::Persist(batch) => {
                if let Err(e) = store.write(batch).await {
                    tracing::error!(error = %e, "cannot write the registry");
                }
            }
            other => {
                master.deliver(other);
            }
        }
    }
}

//! The actor that owns the [`Master`]: it takes commands from the gRPC and
//! HTTP handlers one at a time, fires the timers, and carries out the effects
//! of each step (store writes first, in order) before the next.

use std::convert::Infallible;

use agora_proto::v1;
use agora_proto::{AgentId, FrameworkId, StreamId};
use agora_store::{SharedStore, StoreError, Term};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
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

/// Why the actor stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// `stop` turned true, or every handle was dropped.
    Asked,
    /// The leadership term it served has ended (high availability).
    TermEnded,
    /// A registry write was refused because this leader was deposed.
    Fenced,
}

/// A running actor: the handle to send it commands and its task.
pub struct Actor {
    /// Sends commands to the actor.
    pub handle: MasterHandle,
    /// Completes when the actor has stopped and dropped every stream.
    pub stopped: JoinHandle<Stopped>,
}

/// Starts the actor on the current runtime. It runs until `stop` turns
/// true (or every handle is dropped); then it drops every stream.
pub fn spawn(master: Master, store: SharedStore, stop: watch::Receiver<bool>) -> MasterHandle {
    spawn_for_term(master, store, stop, None).handle
}

/// [`spawn`] for a leader: with a `term`, the actor also stops, at once and
/// before acting further, when the term ends (checked before every command
/// and every message it sends) or when a registry write is fenced off.
pub fn spawn_for_term(
    master: Master,
    store: SharedStore,
    stop: watch::Receiver<bool>,
    term: Option<Term>,
) -> Actor {
    let (tx, rx) = mpsc::unbounded_channel();
    let stopped = tokio::spawn(run(master, store, rx, stop, term));
    Actor {
        handle: MasterHandle { tx },
        stopped,
    }
}

async fn run(
    mut master: Master,
    store: SharedStore,
    mut rx: mpsc::UnboundedReceiver<Command>,
    mut stop: watch::Receiver<bool>,
    term: Option<Term>,
) -> Stopped {
    // Stopping (or losing the term) cancels whatever step is under way,
    // store write included: nothing of this term is acted on after it.
    let stopped = tokio::select! {
        biased;
        _ = stop.wait_for(|s| *s) => Stopped::Asked,
        _ = async {
            match &term {
                Some(term) => { term.lost().await; }
                None => std::future::pending().await,
            }
        } => Stopped::TermEnded,
        result = steps(&mut master, &store, &mut rx, term.as_ref()) => match result {
            Ok(never) => match never {},
            Err(stopped) => stopped,
        },
    };
    // Dropping the master drops every agent and framework stream.
    drop(master);
    drop(rx);
    tracing::info!(reason = ?stopped, "master actor stopped");
    stopped
}

/// Runs commands and timers until the actor must stop.
async fn steps(
    master: &mut Master,
    store: &SharedStore,
    rx: &mut mpsc::UnboundedReceiver<Command>,
    term: Option<&Term>,
) -> Result<Infallible, Stopped> {
    // Effects of the start-up steps (recovered frameworks), if any.
    execute(master, store, term).await?;
    loop {
        let deadline = master.next_deadline();
        // Due timers go before queued commands: under a steady stream of
        // commands they would otherwise never fire (no heartbeats, late
        // allocation passes). Every tick moves the deadlines it handles
        // forward, so this cannot starve the commands in turn.
        tokio::select! {
            biased;
            _ = sleep_until(deadline) => {
                check_term(term)?;
                master.tick(Instant::now());
                execute(master, store, term).await?;
            }
            command = rx.recv() => {
                let Some(command) = command else { return Err(Stopped::Asked) };
                check_term(term)?;
                handle(master, store, term, command).await?;
            }
        }
    }
}

fn check_term(term: Option<&Term>) -> Result<(), Stopped> {
    match term {
        Some(term) if !term.is_current() => Err(Stopped::TermEnded),
        _ => Ok(()),
    }
}

async fn handle(
    master: &mut Master,
    store: &SharedStore,
    term: Option<&Term>,
    command: Command,
) -> Result<(), Stopped> {
    let now = Instant::now();
    match command {
        Command::Subscribe {
            info,
            suppressed_roles,
            tx,
            reply,
        } => {
            let result = master.subscribe(info, suppressed_roles, tx, now);
            execute(master, store, term).await?;
            let _ = reply.send(result);
        }
        Command::FrameworkDisconnected {
            framework_id,
            stream_id,
        } => {
            master.framework_disconnected(&framework_id, &stream_id, now);
            execute(master, store, term).await?;
        }
        Command::Call { caller, call, reply } => {
            let result = master.call(&caller, call, now);
            execute(master, store, term).await?;
            let _ = reply.send(result);
        }
        Command::RegisterAgent {
            register,
            conn_id,
            tx,
            reply,
        } => {
            let result = master.register_agent(register, conn_id, tx, now);
            execute(master, store, term).await?;
            let _ = reply.send(result);
        }
        Command::AgentMessage {
            agent_id,
            conn_id,
            message,
        } => {
            master.agent_message(&agent_id, conn_id, message, now);
            execute(master, store, term).await?;
        }
        Command::AgentDisconnected { agent_id, conn_id } => {
            master.agent_disconnected(&agent_id, conn_id);
            execute(master, store, term).await?;
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
            execute(master, store, term).await?;
            let _ = reply.send(result);
        }
    }
    Ok(())
}

/// Carries out the queued effects in order. A failed store write is
/// logged; the master keeps serving (the registry catches up on the next
/// write of the same key), unless the write was fenced off: then this
/// leader was deposed and stops before sending anything more.
async fn execute(master: &mut Master, store: &SharedStore, term: Option<&Term>) -> Result<(), Stopped> {
    for effect in master.take_effects() {
        match effect {
            Effect::Persist(batch) => match store.write(batch).await {
                Ok(()) => {}
                Err(StoreError::Fenced(why)) => {
                    tracing::warn!(%why, "registry write fenced off: this master no longer leads");
                    return Err(Stopped::Fenced);
                }
                Err(e) => tracing::error!(error = %e, "cannot write the registry"),
            },
            other => {
                check_term(term)?;
                master.deliver(other);
            }
        }
    }
    Ok(())
}

//! The agent's connection to the master: dial the masters in turn with
//! exponential backoff (or the leader published in ZooKeeper, following it
//! as it changes), open the `AgentLink.Attach` stream with a Register
//! message, heartbeat, and pass everything the master says to the actor.
//! Any end of the stream means: reconnect and re-register with the same id
//! and the running tasks. A standby's UNAVAILABLE answer naming the leader
//! (`agora-leader` metadata) sends the agent there at once.

use std::time::Duration;

use agora_proto::v1;
use agora_proto::v1::agent_link_client::AgentLinkClient;
use agora_store::{Endpoints, LEADER_METADATA, LeaderFinder, ZkOptions};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::agent::Command;

/// First wait after a failed attempt.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Heartbeat interval when the master names none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why one session with a master ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("invalid master address {0:?}: {1}")]
    Address(String, String),
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("master answered {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("master closed the stream before answering Register")]
    NoAnswer,
    #[error("master answered Register with something other than Registered")]
    UnexpectedAnswer,
    #[error("the agent is stopping")]
    Stopping,
    #[error("another master was elected leader")]
    LeaderMoved,
}

impl SessionError {
    /// The master refuses this agent (e.g. an id it removed): worth a loud log.
    fn is_rejection(&self) -> bool {
        matches!(self, SessionError::Status(s)
            if matches!(s.code(), tonic::Code::NotFound | tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument))
    }

    /// The leader's address, when a standby answered.
    fn redirect(&self) -> Option<String> {
        match self {
            SessionError::Status(s) if s.code() == tonic::Code::Unavailable => {
                let leader = s.metadata().get(LEADER_METADATA)?.to_str().ok()?.trim();
                (!leader.is_empty()).then(|| leader.to_owned())
            }
            _ => None,
        }
    }
}

/// The next wait: doubled, capped, with the previous one as input.
pub(crate) fn next_backoff(previous: Duration) -> Duration {
    (previous * 2).min(MAX_BACKOFF)
}

/// `wait` with +-20% jitter so a fleet of agents does not reconnect in step.
fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(rand::random_range(0.8..1.2))
}

/// Keeps the agent connected to the leading master of `masters` until the
/// actor goes away (`zk`: the session settings when following ZooKeeper).
pub(crate) async fn maintain(masters: Endpoints, zk: ZkOptions, actor: mpsc::UnboundedSender<Command>) {
    let mut finder = LeaderFinder::new(masters, zk);
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let master = finder.next().await;
        let ended = tokio::select! {
            ended = session(&master, &actor) => ended,
            () = finder.leader_moved_from(&master) => Err(SessionError::LeaderMoved),
        };
        // `None`: try the next master at once.
        let wait = match ended {
            Ok(()) => {
                tracing::warn!(%master, "master closed the stream; reconnecting");
                backoff = INITIAL_BACKOFF;
                Some(backoff)
            }
            Err(SessionError::Stopping) => return,
            Err(SessionError::LeaderMoved) => {
                tracing::warn!(%master, "another master was elected leader; re-registering with it");
                backoff = INITIAL_BACKOFF;
                None
            }
            Err(err) => match err.redirect() {
                Some(leader) => {
                    tracing::info!(%master, %leader, "not the leader; moving to the leader it named");
                    if finder.redirected(&master, leader) {
                        None
                    } else {
                        backoff = next_backoff(backoff);
                        Some(backoff)
                    }
                }
                None => {
                    if err.is_rejection() {
                        tracing::error!(%master, %err, "MASTER REJECTED THIS AGENT; tasks keep running, retrying later");
                    } else {
                        tracing::warn!(%master, %err, "no session with master");
                    }
                    finder.failed(&master);
                    backoff = next_backoff(backoff);
                    Some(backoff)
                }
            },
        };
        if actor.send(Command::Disconnected).is_err() {
            return;
        }
        if let Some(wait) = wait {
            tokio::select! {
                () = tokio::time::sleep(jittered(wait)) => {}
                // A newly elected leader is worth trying at once, and again soon if it is
                // still loading its registry: the backoff grown against the old one ends.
                () = finder.leader_moved_from(&master) => backoff = INITIAL_BACKOFF,
            }
            finder.settled();
        }
    }
}

/// One session: connect, register, heartbeat and relay until the stream ends.
/// `Ok` means the master accepted the registration and the stream later ended.
async fn session(master: &str, actor: &mpsc::UnboundedSender<Command>) -> Result<(), SessionError> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{master}"))
        .map_err(|e| SessionError::Address(master.to_owned(), e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = endpoint.connect().await?;
    let mut client = AgentLinkClient::new(channel);

    let (reply, register) = oneshot::channel();
    actor
        .send(Command::Register(reply))
        .map_err(|_| SessionError::Stopping)?;
    let register = register.await.map_err(|_| SessionError::Stopping)?;
    tracing::info!(%master, tasks = register.tasks.len(), "registering with master");

    let (up, up_rx) = mpsc::unbounded_channel();
    let _ = up.send(v1::AgentMessage {
        message: Some(v1::agent_message::Message::Register(register)),
    });
    let mut down = client
        .attach(UnboundedReceiverStream::new(up_rx))
        .await?
        .into_inner();

    let registered = match down.message().await?.and_then(|m| m.message) {
        Some(v1::master_message::Message::Registered(r)) => r,
        Some(_) => return Err(SessionError::UnexpectedAnswer),
        None => return Err(SessionError::NoAnswer),
    };
    let interval = Duration::try_from_secs_f64(registered.heartbeat_interval_seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_HEARTBEAT)
        .max(Duration::from_millis(100));
    actor
        .send(Command::Registered {
            registered,
            link: up.clone(),
            master: master.to_owned(),
        })
        .map_err(|_| SessionError::Stopping)?;

    // Aborted however the session ends, also when it is dropped (the agent
    // shutting down): a leftover task would keep the agent alive to the master.
    let heartbeats = AbortOnDrop(tokio::spawn(heartbeat(up, interval)));
    let result = relay(&mut down, actor).await;
    drop(heartbeats);
    result
}

/// A task that is aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn heartbeat(up: mpsc::UnboundedSender<v1::AgentMessage>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let beat = v1::AgentMessage {
            message: Some(v1::agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
        };
        if up.send(beat).is_err() {
            return;
        }
    }
}

async fn relay(
    down: &mut tonic::Streaming<v1::MasterMessage>,
    actor: &mpsc::UnboundedSender<Command>,
) -> Result<(), SessionError> {
    while let Some(message) = down.message().await? {
        if let Some(message) = message.message {
            actor
                .send(Command::FromMaster(Box::new(message)))
                .map_err(|_| SessionError::Stopping)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100ms_up_to_5s() {
        let mut wait = INITIAL_BACKOFF;
        let mut seen = vec![wait.as_millis()];
        for _ in 0..8 {
            wait = next_backoff(wait);
            seen.push(wait.as_millis());
        }
        assert_eq!(seen, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(1));
            assert!(
                j >= Duration::from_millis(800) && j <= Duration::from_millis(1200),
                "{j:?}"
            );
        }
    }

    #[test]
    fn not_found_and_failed_precondition_are_rejections() {
        assert!(SessionError::Status(tonic::Status::not_found("x")).is_rejection());
        assert!(SessionError::Status(tonic::Status::failed_precondition("x")).is_rejection());
        assert!(!SessionError::Status(tonic::Status::unavailable("x")).is_rejection());
        assert!(!SessionError::NoAnswer.is_rejection());
    }

    #[test]
    fn a_standby_s_answer_names_the_leader() {
        let mut standby = tonic::Status::unavailable("not the leader; the leader is at h:5050");
        standby
            .metadata_mut()
            .insert(LEADER_METADATA, "h:5050".parse().expect("ascii"));
        assert_eq!(
            SessionError::Status(standby).redirect().as_deref(),
            Some("h:5050")
        );
        let no_leader = tonic::Status::unavailable("no leader yet");
        assert_eq!(SessionError::Status(no_leader).redirect(), None);
        assert_eq!(SessionError::NoAnswer.redirect(), None);
    }
}

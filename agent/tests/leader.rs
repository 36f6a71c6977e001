//! The agent finds the leading master: a standby's redirect (UNAVAILABLE
//! with `agora-leader` metadata) and the leader published in ZooKeeper.
//!
//! The masters are stand-ins (`support`); the ZooKeeper test campaigns in a
//! real ZooKeeper itself, publishing the stand-ins' addresses as HA masters do.

// Test helpers fail loudly: unwrap is the point here.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use agora_agent::ContainerizerKind;
use agora_proto::v1::{self, TaskState};
use agora_store::zk_server::ZkServer;
use agora_store::{Election, LEADER_METADATA, LeaderInfo, Leadership, ZkElection, ZkOptions, ZkUrl};
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};

mod support;

use support::*;

/// A standby master: refuses every Attach with UNAVAILABLE naming `leader`.
struct Standby {
    leader: SocketAddr,
}

#[tonic::async_trait]
impl v1::agent_link_server::AgentLink for Standby {
    type AttachStream = UnboundedReceiverStream<Result<v1::MasterMessage, tonic::Status>>;

    async fn attach(
        &self,
        _request: tonic::Request<tonic::Streaming<v1::AgentMessage>>,
    ) -> Result<tonic::Response<Self::AttachStream>, tonic::Status> {
        let mut status =
            tonic::Status::unavailable(format!("not the leader; the leader is at {}", self.leader));
        status
            .metadata_mut()
            .insert(LEADER_METADATA, self.leader.to_string().parse().unwrap());
        Err(status)
    }
}

async fn start_standby(leader: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(v1::agent_link_server::AgentLinkServer::new(Standby { leader }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

#[tokio::test]
async fn a_standby_s_answer_sends_the_agent_to_the_leader_it_names() {
    let (leader, mut sessions) = start_master().await;
    let standby = start_standby(leader).await;
    let dir = tempfile::tempdir().unwrap();
    // The agent knows only the standby: only the redirect can bring it to the leader.
    let agent = RunningAgent::start(standby, dir.path(), |c| {
        c.containerizers = vec![ContainerizerKind::Process];
    })
    .await;
    let session = next_session(&mut sessions).await;
    assert_eq!(session.register.agent.as_ref().unwrap().hostname, "test-host");
    agent.stop().await;
}

/// A candidate campaigning in the test's ZooKeeper for `address`.
async fn elect(root: &ZkUrl, address: SocketAddr) -> (ZkElection, Leadership) {
    let election = ZkElection::new(&root.child("leader").unwrap(), ZkOptions::default());
    let term = election
        .campaign(LeaderInfo::new(address.to_string()).to_bytes())
        .await
        .unwrap();
    (election, term)
}

#[tokio::test]
async fn the_agent_follows_the_leader_in_zookeeper_and_re_registers_its_running_tasks() {
    let zk = ZkServer::launch().await.unwrap();
    let root = ZkUrl::parse(&zk.url("/agora")).unwrap();
    let (a, mut a_sessions) = start_master().await;
    let (b, mut b_sessions) = start_master().await;
    let (_a_election, a_term) = elect(&root, a).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(a, dir.path(), |c| {
        // As clap splits `--master` on commas.
        c.master = root.to_string().split(',').map(str::to_owned).collect();
        c.containerizers = vec![ContainerizerKind::Process];
    })
    .await;
    let mut at_a = next_session(&mut a_sessions).await;
    at_a.run_task("long", "sleep 100");
    let running = at_a.expect_and_ack(TaskState::Running).await;

    let b_campaign = tokio::spawn({
        let root = root.clone();
        async move { elect(&root, b).await }
    });
    a_term.resign().await;
    let mut at_b = next_session(&mut b_sessions).await;
    assert_eq!(at_b.register.agent.as_ref().unwrap().id, "agent-1");
    let tasks: Vec<(String, TaskState)> = at_b
        .register
        .tasks
        .iter()
        .map(|t| {
            let status = t.status.clone().unwrap_or_default();
            (status.task_id.clone(), status.state())
        })
        .collect();
    assert_eq!(tasks, vec![("long".to_owned(), TaskState::Running)]);
    assert_eq!(at_b.register.tasks[0].status.as_ref().unwrap().uuid, running.uuid);
    let _b = b_campaign.await.unwrap();

    at_b.kill("long");
    at_b.expect_and_ack(TaskState::Killing).await;
    at_b.expect_and_ack(TaskState::Killed).await;
    agent.stop().await;
}

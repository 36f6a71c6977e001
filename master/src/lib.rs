//! The Agora master: agent registry, allocator, offers, task state, and the
//! scheduler and agent APIs.
//!
//! [`serve`] runs it: gRPC (`agora.v1.Scheduler`, `agora.v1.AgentLink`) and
//! HTTP (`/health`, `/state`, `/metrics`, the role API `/quota`, `/weights`,
//! `/roles`) on one port. All mutable state is
//! owned by one actor ([`cluster::Master`] driven by `actor.rs`); handlers
//! validate requests and send it commands. With `--zk`, several masters
//! elect one leader through ZooKeeper and keep the registry there ([`ha`]).
//!
//! Architecture invariants: the allocator ([`allocator`]) is pure; an ACCEPT
//! is validated completely ([`validation`]) before any of it takes effect;
//! the master never dials an agent.
#![forbid(unsafe_code)]

pub mod actor;
pub mod allocator;
pub mod cluster;
pub mod grpc;
pub mod ha;
pub mod http;
pub mod metrics;
pub mod quota;
pub mod validation;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agora_proto::v1;
use agora_proto::v1::agent_link_server::AgentLinkServer;
use agora_proto::v1::scheduler_server::SchedulerServer;
use agora_store::{StoreError, ZkUrl};
use prost::Message as _;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

use crate::cluster::Master;
use crate::metrics::Metrics;

/// How long connections get to close after shutdown before `serve` returns anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Command-line flags of `agora master`.
#[derive(Debug, Clone, clap::Args)]
pub struct MasterConfig {
    /// Address to serve gRPC and HTTP on.
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub listen: SocketAddr,
    /// Directory of the master's registry (agents and frameworks).
    #[arg(long, default_value = "./agora-data/master")]
    pub work_dir: PathBuf,
    /// An agent silent for this long is marked unreachable.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub agent_timeout: Duration,
    /// How long after a master (re)start or failover an agent from the registry
    /// may take to re-register; until then it is "recovering" (nothing offered,
    /// reconciliation of its tasks waits), afterwards it is unreachable.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub agent_reregister_timeout: Duration,
    /// Interval agents are asked to heartbeat at; default 1/5 of --agent-timeout.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub agent_heartbeat_interval: Option<Duration>,
    /// Interval of HEARTBEAT events to frameworks.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub framework_heartbeat_interval: Duration,
    /// Rescind offers held longer than this; unset means never.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub offer_timeout: Option<Duration>,
    /// How long changes are batched before an allocation pass runs.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub allocation_delay: Duration,
    /// Role weights for weighted DRF, e.g. `prod=3,dev=1` (unlisted roles weigh 1).
    #[arg(long, default_value = "", value_parser = allocator::RoleWeights::parse)]
    pub weights: allocator::RoleWeights,
    /// Smallest offers worth making: `;`-separated alternatives; resources are
    /// offered only if they meet at least one.
    #[arg(long, default_value = allocator::DEFAULT_MIN_ALLOCATABLE, value_parser = allocator::MinAllocatable::parse)]
    pub min_allocatable: allocator::MinAllocatable,
    /// High availability: the ZooKeeper ensemble and root znode, e.g.
    /// `zk://h1:2181,h2:2181/agora`. Masters started with the same URL elect
    /// one leader (`/agora/leader`, which publishes its address) and keep the
    /// registry in ZooKeeper (`/agora/state`; --work-dir is then unused).
    /// Standbys answer HTTP with 307 to the leader and gRPC with UNAVAILABLE
    /// naming it in `agora-leader` metadata. Unset: one master, registry in
    /// --work-dir.
    #[arg(long, value_parser = ZkUrl::parse)]
    pub zk: Option<ZkUrl>,
    /// With --zk: how many master candidates must be present in the election
    /// before any of them may lead; a leader that sees fewer steps down
    /// (Mesos' --quorum, adapted: Mesos counts the replicas of its log, here
    /// ZooKeeper keeps the registry and this counts the masters taking part).
    /// Use a majority of the masters you run (2 of 3), so a master cut off
    /// with a minority never leads. At least 1.
    #[arg(long, default_value_t = 1, requires = "zk", value_parser = clap::value_parser!(u32).range(1..))]
    pub quorum: u32,
    /// With --zk: the ZooKeeper session timeout asked for. A leader that has
    /// not heard from ZooKeeper for half of it stops leading; another master
    /// is elected after about this long.
    #[arg(long, default_value = "2s", requires = "zk", value_parser = humantime::parse_duration)]
    pub zk_session_timeout: Duration,
    /// With --zk: the `HOST:PORT` other masters send callers to while this
    /// one leads; default: the address this master listens on (required
    /// when that is a wildcard such as 0.0.0.0).
    #[arg(long, requires = "zk")]
    pub advertise_address: Option<String>,
}

impl MasterConfig {
    /// A configuration with every other flag at its default.
    pub fn new(listen: SocketAddr, work_dir: PathBuf) -> Self {
        Self {
            listen,
            work_dir,
            agent_timeout: Duration::from_secs(15),
            agent_reregister_timeout: Duration::from_secs(600),
            agent_heartbeat_interval: None,
            framework_heartbeat_interval: Duration::from_secs(15),
            offer_timeout: None,
            allocation_delay: Duration::from_millis(5),
            weights: allocator::RoleWeights::default(),
            min_allocatable: allocator::MinAllocatable::default(),
            zk: None,
            quorum: 1,
            zk_session_timeout: Duration::from_secs(2),
            advertise_address: None,
        }
    }
}

/// Why the master could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("cannot open the registry in {dir}: {source}")]
    OpenStore { dir: PathBuf, source: StoreError },
    #[error("cannot read the registry: {0}")]
    ReadRegistry(#[source] StoreError),
    #[error("cannot use the listener: {0}")]
    Listener(#[source] std::io::Error),
    #[error("the gRPC/HTTP server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A flag's value cannot work; names the flag.
    #[error("--{flag}: {problem}")]
    Config { flag: &'static str, problem: String },
}

/// Store prefix of the agent registry.
const AGENTS_PREFIX: &str = "/master/agents/";
/// Store prefix of the framework registry.
const FRAMEWORKS_PREFIX: &str = "/master/frameworks/";

/// Serves gRPC (Scheduler + AgentLink) and HTTP (/health, /state, /metrics)
/// on `listener` until `shutdown` resolves. With `config.zk` set it takes
/// part in leader election and serves as leader only while elected (see
/// [`ha`]).
pub async fn serve(
    config: MasterConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MasterError> {
    if config.zk.is_some() {
        return ha::serve(config, listener, shutdown).await;
    }
    let store = agora_store::open_embedded(&config.work_dir).map_err(|source| MasterError::OpenStore {
        dir: config.work_dir.clone(),
        source,
    })?;
    let addr = listener.local_addr().map_err(MasterError::Listener)?;
    let metrics = Metrics::new();
    let master_id = uuid::Uuid::new_v4().to_string();
    let master = recover(&config, &master_id, &metrics, store.as_ref()).await?;
    tracing::info!(%addr, %master_id, "master starting; known agents may re-register");

    let (stop_tx, stop_rx) = watch::channel(false);
    let handle = actor::spawn(master, store, stop_rx);
    let routes = routes(handle, metrics);
    let signal = {
        let stop_tx = stop_tx.clone();
        async move {
            shutdown.await;
            tracing::info!("master shutting down");
            // Stopping the actor drops every stream, so connections can close.
            let _ = stop_tx.send(true);
        }
    };
    serve_routes(routes, listener, signal, stop_tx).await
}

/// The gRPC services and HTTP routes of one running actor.
fn routes(handle: actor::MasterHandle, metrics: Metrics) -> tonic::service::Routes {
    tonic::service::Routes::from(http::router(handle.clone(), metrics))
        .add_service(SchedulerServer::new(grpc::SchedulerService::new(handle.clone())))
        .add_service(AgentLinkServer::new(grpc::AgentLinkService::new(handle)))
}

/// Serves `routes` on `listener` until `signal` resolves; returns at the
/// latest [`SHUTDOWN_GRACE`] after `stopped` turns true. Sets `stopped` on return.
async fn serve_routes(
    routes: tonic::service::Routes,
    listener: tokio::net::TcpListener,
    signal: impl Future<Output = ()> + Send + 'static,
    stopped: watch::Sender<bool>,
) -> Result<(), MasterError> {
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        if let Ok(s) = &stream
            && let Err(e) = s.set_nodelay(true)
        {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        stream
    });
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, signal);
    let mut stopped_rx = stopped.subscribe();
    let result = tokio::select! {
        r = server => r.map_err(MasterError::from),
        _ = async {
            let _ = stopped_rx.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("connections did not close in time; stopping anyway");
            Ok(())
        }
    };
    let _ = stopped.send(true);
    result
}

/// A master with the registry in `store` loaded: frameworks (known but
/// disconnected until they re-subscribe within their failover timeout),
/// quota, weights and reservations. Agents are "recovering" until they
/// re-register (or their re-registration timeout passes).
async fn recover(
    config: &MasterConfig,
    master_id: &str,
    metrics: &Metrics,
    store: &dyn agora_store::Store,
) -> Result<Master, MasterError> {
    let now = tokio::time::Instant::now();
    let mut master = Master::new(config.clone(), master_id.to_owned(), metrics.clone(), now);
    let frameworks = store
        .list(FRAMEWORKS_PREFIX)
        .await
        .map_err(MasterError::ReadRegistry)?;
    for (key, value) in &frameworks {
        match v1::FrameworkInfo::decode(value.as_slice()) {
            Ok(info) => master.recover_framework(info, now),
            Err(e) => tracing::warn!(%key, error = %e, "skipping an undecodable framework record"),
        }
    }
    recover_role_policy(&mut master, store).await?;
    let agents = store
        .list(AGENTS_PREFIX)
        .await
        .map_err(MasterError::ReadRegistry)?;
    for (key, value) in &agents {
        match v1::AgentInfo::decode(value.as_slice()) {
            Ok(info) => master.recover_agent(info, now),
            Err(e) => tracing::warn!(%key, error = %e, "skipping an undecodable agent record"),
        }
    }
    tracing::info!(
        %master_id,
        frameworks = frameworks.len(),
        agents = agents.len(),
        "registry loaded"
    );
    Ok(master)
}

/// Loads quota, weights (they override `--weights`) and agents' dynamic
/// reservations from the registry. Undecodable records are skipped.
async fn recover_role_policy(master: &mut Master, store: &dyn agora_store::Store) -> Result<(), MasterError> {
    let role_of = |key: &str, prefix: &str| key.strip_prefix(prefix).and_then(quota::unescape_role);
    for (key, value) in store
        .list(quota::QUOTA_PREFIX)
        .await
        .map_err(MasterError::ReadRegistry)?
    {
        match (role_of(&key, quota::QUOTA_PREFIX), quota::parse_quota(&value)) {
            (Some(role), Ok(q)) => master.recover_quota(role, q),
            _ => tracing::warn!(%key, "skipping an undecodable quota record"),
        }
    }
    for (key, value) in store
        .list(quota::WEIGHTS_PREFIX)
        .await
        .map_err(MasterError::ReadRegistry)?
    {
        match (role_of(&key, quota::WEIGHTS_PREFIX), quota::parse_weight(&value)) {
            (Some(role), Ok(w)) => master.recover_weight(role, w),
            _ => tracing::warn!(%key, "skipping an undecodable weight record"),
        }
    }
    for (key, value) in store
        .list(cluster::RESERVATIONS_PREFIX)
        .await
        .map_err(MasterError::ReadRegistry)?
    {
        let agent = key
            .strip_prefix(cluster::RESERVATIONS_PREFIX)
            .and_then(|id| agora_proto::AgentId::parse(id).ok());
        match (agent, cluster::decode_reservations(&value)) {
            (Some(agent), Some(reserved)) => master.recover_reservations(agent, reserved),
            _ => tracing::warn!(%key, "skipping an undecodable reservation record"),
        }
    }
    Ok(())
}

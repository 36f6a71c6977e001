//! The Agora master: agent registry, allocator, offers, task state, and the
//! scheduler and agent APIs.
//!
//! [`serve`] runs it: gRPC (`agora.v1.Scheduler`, `agora.v1.AgentLink`) and
//! HTTP (`/health`, `/state`, `/metrics`, the role API `/quota`, `/weights`,
//! `/roles`) on one port. All mutable state is
//! owned by one actor ([`cluster::Master`] driven by `actor.rs`); handlers
//! validate requests and send it commands.
//!
//! Architecture invariants: the allocator ([`allocator`]) is pure; an ACCEPT
//! is validated completely ([`validation`]) before any of it takes effect;
//! the master never dials an agent.
#![forbid(unsafe_code)]

pub mod actor;
pub mod allocator;
pub mod cluster;
pub mod grpc;
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
use agora_store::StoreError;
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
}

impl MasterConfig {
    /// A configuration with every other flag at its default.
    pub fn new(listen: SocketAddr, work_dir: PathBuf) -> Self {
        Self {
            listen,
            work_dir,
            agent_timeout: Duration::from_secs(15),
            agent_heartbeat_interval: None,
            framework_heartbeat_interval: Duration::from_secs(15),
            offer_timeout: None,
            allocation_delay: Duration::from_millis(5),
            weights: allocator::RoleWeights::default(),
            min_allocatable: allocator::MinAllocatable::default(),
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
}

/// Store prefix of the agent registry.
const AGENTS_PREFIX: &str = "/master/agents/";
/// Store prefix of the framework registry.
const FRAMEWORKS_PREFIX: &str = "/master/frameworks/";

/// Serves gRPC (Scheduler + AgentLink) and HTTP (/health, /state, /metrics)
/// on `listener` until `shutdown` resolves.
pub async fn serve(
    config: MasterConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MasterError> {
    let store = agora_store::open_embedded(&config.work_dir).map_err(|source| MasterError::OpenStore {
        dir: config.work_dir.clone(),
        source,
    })?;
    let addr = listener.local_addr().map_err(MasterError::Listener)?;
    let now = tokio::time::Instant::now();
    let metrics = Metrics::new();
    let master_id = uuid::Uuid::new_v4().to_string();
    let mut master = Master::new(config.clone(), master_id.clone(), metrics.clone(), now);

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
    recover_role_policy(&mut master, store.as_ref()).await?;
    let agents = store
        .list(AGENTS_PREFIX)
        .await
        .map_err(MasterError::ReadRegistry)?;
    tracing::info!(
        %addr,
        %master_id,
        frameworks = frameworks.len(),
        agents = agents.len(),
        "master starting; known agents may re-register"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let handle = actor::spawn(master, store, stop_rx);
    let routes = tonic::service::Routes::from(http::router(handle.clone(), metrics))
        .add_service(SchedulerServer::new(grpc::SchedulerService::new(handle.clone())))
        .add_service(AgentLinkServer::new(grpc::AgentLinkService::new(handle)));
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        if let Ok(s) = &stream
            && let Err(e) = s.set_nodelay(true)
        {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        stream
    });
    let signal = {
        let stop_tx = stop_tx.clone();
        async move {
            shutdown.await;
            tracing::info!("master shutting down");
            // Stopping the actor drops every stream, so connections can close.
            let _ = stop_tx.send(true);
        }
    };
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, signal);
    let mut stopped = stop_tx.subscribe();
    let result = tokio::select! {
        r = server => r.map_err(MasterError::from),
        _ = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("connections did not close in time; stopping anyway");
            Ok(())
        }
    };
    let _ = stop_tx.send(true);
    result
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

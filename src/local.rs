//! `agora local`: a master, N agents, the service framework and the cron
//! framework in one process.
//!
//! Each agent gets an equal share of the host (cpus, memory, disk, and a
//! disjoint slice of ports 31000-32000) and its own work dir, so the cluster
//! behaves like N machines. State lives under one `--work-dir`, so stopping
//! and starting `agora local` again keeps the registry and the tasks.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use agora_proto::Resources;
use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Flags of `agora local`.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// Directory for all state: the master's registry and each agent's
    /// checkpoints and sandboxes.
    #[arg(long, default_value = "./agora-data")]
    pub work_dir: PathBuf,
    /// Number of agents to run.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub agents: u16,
    /// Address of the master (gRPC and HTTP).
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub master_listen: SocketAddr,
    /// HTTP port of the first agent; agent i listens on this port + i.
    /// 0 lets the system choose every agent's port.
    #[arg(long, default_value_t = 5051)]
    pub agent_base_port: u16,
    /// Address of the service framework's Marathon-compatible REST API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub service_listen: SocketAddr,
    /// Address of the cron framework's Chronos-compatible REST API.
    #[arg(long, default_value = "127.0.0.1:4400")]
    pub cron_listen: SocketAddr,
    /// Run only the master and the agents (no service or cron framework).
    #[arg(long)]
    pub no_frameworks: bool,
}

/// How to start an in-process cluster (used by `agora local` and the benchmarks).
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub work_dir: PathBuf,
    pub agents: usize,
    pub master_listen: SocketAddr,
    /// 0: every agent binds an ephemeral port.
    pub agent_base_port: u16,
    /// Where the service framework serves its REST API (None: not started).
    pub service_listen: Option<SocketAddr>,
    /// Where the cron framework serves its REST API (None: not started).
    pub cron_listen: Option<SocketAddr>,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            work_dir: PathBuf::from("./agora-data"),
            agents: 2,
            master_listen: SocketAddr::from(([127, 0, 0, 1], 5050)),
            agent_base_port: 5051,
            service_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            cron_listen: Some(SocketAddr::from(([127, 0, 0, 1], 4400))),
        }
    }
}

/// A running in-process cluster.
pub struct LocalCluster {
    master_addr: SocketAddr,
    agent_addrs: Vec<SocketAddr>,
    service_addr: Option<SocketAddr>,
    cron_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl LocalCluster {
    /// Where the master serves gRPC and HTTP.
    pub fn master_addr(&self) -> SocketAddr {
        self.master_addr
    }

    /// Where each agent serves HTTP.
    #[allow(dead_code)]
    pub fn agent_addrs(&self) -> &[SocketAddr] {
        &self.agent_addrs
    }

    /// Where the service framework serves its REST API, if it runs.
    #[allow(dead_code)]
    pub fn service_addr(&self) -> Option<SocketAddr> {
        self.service_addr
    }

    /// Where the cron framework serves its REST API, if it runs.
    #[allow(dead_code)]
    pub fn cron_addr(&self) -> Option<SocketAddr> {
        self.cron_addr
    }

    /// Stops the frameworks, the master and the agents (tasks keep running, as with real
    /// agents) and waits for them.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.await.context("a cluster task panicked")??;
        }
        Ok(())
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// One agent's share of the host: 1/n of each scalar and a disjoint slice of
/// the ports.
pub fn agent_share(host: &Resources, n: usize, index: usize) -> Resources {
    let n = n.max(1);
    let mut share = Resources::new();
    for name in ["cpus", "mem", "disk", "gpus"] {
        let total = host.get_scalar(name);
        // Keep three decimals (the resolution of Resources) and never offer 0.
        let part = ((total / n as f64) * 1000.0).floor() / 1000.0;
        if part > 0.0 {
            share = share.scalar(name, part);
        }
    }
    let (lo, hi) = (31000u64, 32000u64);
    let width = (hi - lo + 1) / n as u64;
    if width > 0 {
        let begin = lo + width * index as u64;
        share = share.with_ranges("ports", [(begin, begin + width - 1)]);
    }
    share
}

/// Starts a master and `config.agents` agents on this process's runtime.
pub async fn start(config: LocalConfig) -> anyhow::Result<LocalCluster> {
    let (stop, stop_rx) = watch::channel(false);
    std::fs::create_dir_all(&config.work_dir)
        .with_context(|| format!("cannot create {}", config.work_dir.display()))?;
    let master_listener = TcpListener::bind(config.master_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.master_listen))?;
    let master_addr = master_listener.local_addr()?;
    let master_config = agora_master::MasterConfig::new(master_addr, config.work_dir.join("master"));
    let mut tasks = Vec::new();
    let master_stop = stopped(stop_rx.clone());
    tasks.push(tokio::spawn(async move {
        agora_master::serve(master_config, master_listener, master_stop).await?;
        Ok(())
    }));

    let supervisor = std::env::current_exe().context("cannot find the agora executable")?;
    let host = agora_agent::detect_host_resources(&config.work_dir);
    let mut agent_addrs = Vec::new();
    for i in 0..config.agents {
        let port = if config.agent_base_port == 0 {
            0
        } else {
            config.agent_base_port + i as u16
        };
        let listen = SocketAddr::new(master_addr.ip(), port);
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let mut agent_config = agora_agent::AgentConfig::new(
            vec![master_addr.to_string()],
            addr,
            config.work_dir.join(format!("agent-{i}")),
        );
        agent_config.resources = Some(agent_share(&host, config.agents, i).to_string());
        // Each agent is a distinct loopback address (127.0.0.1, 127.0.0.2, …):
        // a hostname that resolves and reaches this machine, so health checks
        // and clients can reach tasks by it, yet differs per agent, so
        // hostname constraints (UNIQUE, GROUP_BY) spread as on real machines.
        agent_config.hostname = Some(format!("127.0.0.{}", i + 1));
        agent_config.supervisor = Some(supervisor.clone());
        let agent_stop = stopped(stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            agora_agent::run(agent_config, listener, agent_stop).await?;
            Ok(())
        }));
        agent_addrs.push(addr);
    }
    tracing::info!(address = %master_addr, agents = ?agent_addrs, "local cluster listening");

    let masters = vec![master_addr.to_string()];
    let service_addr = match config.service_listen {
        None => None,
        Some(listen) => {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen} (service framework)"))?;
            let addr = listener.local_addr()?;
            let service = agora_service::runtime::ServiceConfig::new(
                masters.clone(),
                addr,
                config.work_dir.join("service"),
            );
            let service_stop = stopped(stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                agora_service::runtime::serve(service, listener, service_stop).await?;
                Ok(())
            }));
            Some(addr)
        }
    };
    let cron_addr = match config.cron_listen {
        None => None,
        Some(listen) => {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen} (cron framework)"))?;
            let addr = listener.local_addr()?;
            let cron = agora_cron::runtime::CronConfig::new(masters, addr, config.work_dir.join("cron"));
            let cron_stop = stopped(stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                agora_cron::runtime::serve(cron, listener, cron_stop).await?;
                Ok(())
            }));
            Some(addr)
        }
    };
    Ok(LocalCluster {
        master_addr,
        agent_addrs,
        service_addr,
        cron_addr,
        stop,
        tasks,
    })
}

/// `agora local`: runs until `shutdown` resolves.
pub async fn run(args: LocalArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let cluster = start(LocalConfig {
        work_dir: args.work_dir,
        agents: args.agents as usize,
        master_listen: args.master_listen,
        agent_base_port: args.agent_base_port,
        service_listen: (!args.no_frameworks).then_some(args.service_listen),
        cron_listen: (!args.no_frameworks).then_some(args.cron_listen),
    })
    .await?;
    println!(
        "Agora is running: master at http://{}  (try: agora state)",
        cluster.master_addr()
    );
    if let Some(addr) = cluster.service_addr() {
        println!("  service framework (Marathon API) at http://{addr}  (try: agora app list)");
    }
    if let Some(addr) = cluster.cron_addr() {
        println!("  cron framework (Chronos API) at http://{addr}  (try: agora job list)");
    }
    shutdown.await;
    cluster.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_shares_split_the_host_and_never_overlap_ports() {
        let host = Resources::parse("cpus:2;mem:8000;disk:1000").expect("valid");
        let a = agent_share(&host, 2, 0);
        let b = agent_share(&host, 2, 1);
        assert_eq!(a.get_scalar("cpus"), 1.0);
        assert_eq!(b.get_scalar("mem"), 4000.0);
        let pa = a.get_ranges("ports");
        let pb = b.get_ranges("ports");
        assert_eq!(pa.len(), 500);
        assert!(pa.difference(&pb) == pa, "port slices overlap: {pa} {pb}");
    }
}

//! `agora`: one binary for every Agora process.
//!
//! Each subcommand hands its flags to the crate that owns the role; this file
//! only parses the command line, sets up logging and runs the runtime.
#![forbid(unsafe_code)]

mod app_cli;
mod bench;
mod framework_api;
mod job_cli;
mod local;
mod logs;
mod state;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

/// Agora: a two-level resource-offer cluster scheduler.
///
/// A master pools the resources agents report and offers them to frameworks
/// over gRPC; frameworks accept offers to launch tasks. Start everything on
/// one machine with `agora local`.
#[derive(Debug, Parser)]
#[command(name = "agora", version, propagate_version = true)]
struct Cli {
    /// Log format: human-readable text, or one JSON object per line for machines.
    /// The level is set with RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "AGORA_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a master: pools agents' resources and offers them to frameworks.
    ///
    /// Serves gRPC (scheduler and agent APIs) and HTTP (/health, /state,
    /// /metrics) on one port. Keeps its registry of agents and frameworks in
    /// an embedded store under --work-dir.
    Master(agora_master::MasterConfig),
    /// Run an agent: reports this machine's resources to a master and runs tasks.
    Agent(agora_agent::AgentConfig),
    /// Run a master and N agents in one process, for a laptop or a demo.
    ///
    /// Each agent gets an equal share of this machine's cpus, memory, disk and
    /// the ports 31000-32000, and its own work dir under --work-dir.
    Local(local::LocalArgs),
    /// Print a readable summary of a master's /state: agents, frameworks, tasks.
    State(state::StateArgs),
    /// Print a task's stdout (or --stderr) wherever it runs or ran; --follow keeps
    /// printing until the task ends.
    Logs(logs::LogsArgs),
    /// Manage the cron framework's jobs: add, list, run, runs, rm, graph.
    Job(job_cli::JobArgs),
    /// Run the service framework: keeps long-running apps running, with a
    /// Marathon-compatible REST API on --listen and its state under --work-dir.
    Service(agora_service::runtime::ServiceConfig),
    /// Manage the service framework's apps: deploy, list, show, scale,
    /// restart, rm, tasks, versions, rollback (--wait follows the deployment).
    App(app_cli::AppArgs),
    /// List the service framework's running deployments.
    Deployments(app_cli::DeploymentsArgs),
    /// Run the cron framework: periodic and dependent jobs, run exactly once per
    /// scheduled instant, with a Chronos-compatible REST API on --listen and its
    /// state under --work-dir.
    Cron(agora_cron::runtime::CronConfig),
    /// Benchmarks that drive a real master.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// (internal) Supervise one task process for the agent; records its exit status.
    #[command(hide = true)]
    Supervise(agora_agent::supervisor::SuperviseArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Launch many short tasks through a framework on the SDK and report
    /// tasks/s and offer→RUNNING latency.
    Launch(bench::BenchArgs),
    /// Simulate a cluster: a real master, thousands of simulated agents
    /// speaking the agent protocol over gRPC, and frameworks on the SDK;
    /// report tasks/s, offer→launch latency, allocation pass time and the
    /// master's peak RSS.
    Cluster(bench::ClusterArgs),
    /// Launch N `sleep` containers through Agora, the raw engine (parallel
    /// bollard calls) and Swarm on the same engine; report the time until all
    /// run and the ratios.
    Docker(bench::DockerArgs),
    /// Deploy an app of N `sleep` tasks through the service framework, roll it
    /// over, kill its tasks' processes from outside; report the times next
    /// to the same tasks launched through the SDK, and the self-healing
    /// latency.
    Service(bench::ServiceArgs),
    /// Schedule N jobs through the cron framework, run them for M minutes and
    /// report launch lateness (p50/p99/max) and missed and doubled runs from
    /// the run history.
    Cron(bench::CronArgs),
    /// SIGKILL the leading master of an HA cluster (`--zk`, a ZooKeeper
    /// started here) again and again; report the time until a new leader
    /// is elected, all agents re-registered and every framework offered
    /// resources again.
    Failover(bench::FailoverArgs),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Supervise(args) = cli.command {
        // The supervisor is a plain synchronous process: no runtime, no logging
        // to the agent's terminal.
        return agora_agent::supervisor::run(args);
    }
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Master(config) => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            tracing::info!(address = %listener.local_addr()?, "master listening");
            agora_master::serve(config, listener, shutdown_signal()).await?;
        }
        Command::Agent(mut config) => {
            if config.supervisor.is_none() {
                config.supervisor =
                    Some(std::env::current_exe().context("cannot find the agora executable")?);
            }
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            tracing::info!(address = %listener.local_addr()?, "agent listening");
            agora_agent::run(config, listener, shutdown_signal()).await?;
        }
        Command::Local(args) => local::run(args, shutdown_signal()).await?,
        Command::State(args) => state::run(args).await?,
        Command::Logs(args) => logs::run(args).await?,
        Command::Job(args) => job_cli::run(args).await?,
        Command::App(args) => app_cli::run_app(args).await?,
        Command::Deployments(args) => app_cli::run_deployments(args).await?,
        Command::Cron(config) => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            agora_cron::runtime::serve(config, listener, shutdown_signal()).await?;
        }
        Command::Service(config) => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            agora_service::runtime::serve(config, listener, shutdown_signal()).await?;
        }
        Command::Bench(BenchCommand::Launch(args)) => bench::launch(args).await?,
        Command::Bench(BenchCommand::Cluster(args)) => bench::cluster(args).await?,
        Command::Bench(BenchCommand::Docker(args)) => bench::docker(args).await?,
        Command::Bench(BenchCommand::Service(args)) => bench::service(args).await?,
        Command::Bench(BenchCommand::Cron(args)) => bench::cron(args).await?,
        Command::Bench(BenchCommand::Failover(args)) => bench::failover(args).await?,
        Command::Supervise(_) => anyhow::bail!("supervise is handled before the runtime starts"),
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

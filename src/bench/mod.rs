//! `agora bench`: benchmarks that drive a real master.
//!
//! - `launch` ([`launch`]): one framework on the SDK against an in-process
//!   cluster of real agents running real (tiny) processes.
//! - `cluster` ([`cluster`]): a master child process, thousands of simulated
//!   agents ([`sim_agent`], a benchmark tool, not an agent) and many
//!   frameworks on the SDK.
//! - `docker` ([`docker`]): N containers through Agora, the raw engine and
//!   Swarm on the same Docker engine.
//! - `service` ([`service`]): the service framework's deploy, rolling update
//!   and self-healing through its REST API, next to an SDK baseline.
//! - `cron` ([`cron`]): the cron framework's launch lateness, missed and
//!   doubled runs, from its run history.
//! - `failover` ([`failover`]): master failover time with `--zk`, from
//!   SIGKILL of the leader until agents and frameworks are back.

mod cluster;
mod cron;
mod docker;
mod failover;
mod framework;
mod launch;
mod master_process;
mod scrape;
mod service;
mod sim_agent;
mod stats;
mod timeline;
mod timers;

pub use cluster::{ClusterArgs, cluster};
pub use cron::{CronArgs, cron};
pub use docker::{DockerArgs, docker};
pub use failover::{FailoverArgs, failover};
pub use launch::{BenchArgs, launch};
pub use service::{ServiceArgs, service};

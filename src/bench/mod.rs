//! `agora bench`: benchmarks that drive a real master.
//!
//! - `launch` ([`launch`]): one framework on the SDK against an in-process
//!   cluster of real agents running real (tiny) processes.
//! - `cluster` ([`cluster`]): a master child process, thousands of simulated
//!   agents ([`sim_agent`], a benchmark tool, not an agent) and many
//!   frameworks on the SDK.
//! - `docker` ([`docker`]): N containers through Agora, the raw engine and
//!   Swarm on the same Docker engine.

mod cluster;
mod docker;
mod framework;
mod launch;
mod master_process;
mod scrape;
mod sim_agent;
mod stats;
mod timeline;
mod timers;

pub use cluster::{ClusterArgs, cluster};
pub use docker::{DockerArgs, docker};
pub use launch::{BenchArgs, launch};

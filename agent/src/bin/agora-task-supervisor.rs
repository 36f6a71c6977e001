//! Test helper: the task supervisor as its own program, invoked as
//! `agora-task-supervisor supervise --sandbox DIR --status-file FILE -- argv...`,
//! exactly as the agent invokes `agora supervise`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use agora_agent::supervisor::{self, SuperviseArgs};
use clap::Parser;

#[derive(Debug, Parser)]
enum Cli {
    /// Run a task and record its exit status.
    Supervise(SuperviseArgs),
}

fn main() -> ExitCode {
    match Cli::parse() {
        Cli::Supervise(args) => supervisor::run(args),
    }
}

//! End-to-end tests: the real `agora` binary, real gRPC on loopback, real
//! task processes. Each test starts its own master and agents in its own
//! directory on ephemeral ports, so tests run in parallel.

mod containers;
mod harness;
mod rest;

mod accept;
mod bad_input;
mod bench;
mod cli;
mod cron;
mod docker;
mod failover;
mod ha;
mod launch;
mod monitoring;
mod offers;
mod pods;
mod recovery;
mod service;

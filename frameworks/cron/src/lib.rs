//! The cron framework: runs jobs on repeating schedules and after their parents.
//!
//! Code map:
//! - [`job`]: the job definition (Chronos JSON in and out), defaults, validation.
//! - [`schedule`]: ISO 8601 repeating intervals and cron expressions in a time zone.
//! - [`graph`]: the dependency DAG between jobs.
//! - [`engine`]: which runs are due, retries, concurrency policy, deadlines.
//!   Pure: state and time in, decisions out.
//! - [`state`]: the narrow `StateStore` (jobs, run history, in-flight runs).
//! - [`handle`]: [`handle::CronHandle`], the interface the REST API and CLI use.
//! - [`runtime`]: the actor that joins the SDK driver, the engine and the store.
//! - [`api`]: the Chronos-compatible REST API.
#![forbid(unsafe_code)]

pub mod api;
pub mod engine;
pub mod graph;
pub mod handle;
pub mod job;
pub mod runtime;
pub mod schedule;
pub mod state;

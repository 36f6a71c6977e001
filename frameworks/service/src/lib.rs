//! The service framework: keeps long-running apps running.
//!
//! Users declare apps (Marathon's JSON); the framework keeps the cluster so:
//! it launches, replaces, health-checks and rolls tasks through deployments,
//! and serves a Marathon-compatible REST API.
//!
//! Code map (each module states its own invariant):
//! - [`app`]: the app definition (Marathon JSON in and out), defaults, validation,
//!   partial updates, constraints. Pure.
//! - [`health`]: HTTP/TCP/COMMAND health checks of running tasks.
//! - [`engine`]: the controller: desired apps vs observed tasks → launch/kill,
//!   backoff, deployments. Pure: state in, decisions out, no I/O, no clock.
//! - [`state`]: the narrow `StateStore` the framework persists through.
//! - [`handle`]: [`handle::ServiceHandle`], the one interface the REST API and
//!   the CLI use to read and change the framework.
//! - [`runtime`]: the actor that joins the SDK driver, the engine, the store and
//!   the health checks.
//! - [`api`]: the Marathon-compatible REST API and its event stream.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod engine;
pub mod handle;
pub mod health;
pub mod runtime;
pub mod state;

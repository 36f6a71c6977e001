//! Write an Agora framework.
//!
//! Implement [`Scheduler`] (what to do with offers and task updates), then
//! hand it to [`run`] (or [`Driver::start`]) with a [`DriverConfig`]. The
//! driver connects to the masters in turn with exponential backoff (or, given
//! `zk://hosts/path`, to the leader the masters elect in ZooKeeper, moving
//! with it; a standby's redirect to the leader is followed at once),
//! subscribes, re-subscribes with the same framework id after any
//! disconnect, notices a silent master by missed heartbeats, acknowledges
//! status updates, and persists the framework id where you ask
//! ([`FileIdStore`], [`StoreIdStore`]). Calls that fail because no master
//! leads right now (e.g. during a failover) fail with an error for which
//! [`SdkError::is_retryable`] is true.
//!
//! [`OfferPool`] and [`TaskBuilder`] help pack many tasks into offers. See
//! `examples/batch.rs` for a complete framework.
//!
//! Architecture invariant: a framework never sees a gRPC type other than the
//! `agora_proto::v1` messages, and never a transport error it must retry
//! itself.
#![forbid(unsafe_code)]

mod backoff;
mod config;
mod driver;
mod error;
mod id_store;
mod liveness;
mod masters;
mod offers;
mod scheduler;
mod subscription;
mod task;

pub use agora_proto::{self as proto, AgentId, FrameworkId, OfferId, Resources, TaskId, v1};
pub use backoff::Backoff;
pub use config::{DriverConfig, Filters, split_masters};
pub use driver::{Driver, run};
pub use error::{RejectCode, SdkError};
pub use id_store::{FileIdStore, FrameworkIdStore, StoreIdStore};
pub use liveness::{DEFAULT_HEARTBEAT_INTERVAL, Liveness};
pub use offers::{LaunchPlan, OfferPool, Offered, PORTS};
pub use scheduler::{Scheduler, Subscribed};
pub use task::TaskBuilder;

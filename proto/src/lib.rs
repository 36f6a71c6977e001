//! Agora's wire protocol, `agora.v1`, and the small value types the wire
//! defines: typed identifiers ([`id`]) and resource arithmetic
//! ([`resources`]).
//!
//! Architecture invariant: this is the only crate that knows protobuf. Other
//! crates use the generated types through `agora_proto::v1` and convert to
//! their own domain types at their edges. No I/O happens here.
#![forbid(unsafe_code)]

pub mod container;
pub mod id;
pub mod resources;
pub mod state;

/// The generated `agora.v1` messages, clients and servers.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("agora.v1");
}

pub use id::{AgentId, FrameworkId, OfferId, StreamId, TaskId};
pub use resources::Resources;

/// Seconds since the Unix epoch, as status updates carry them.
pub fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

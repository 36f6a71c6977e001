//! The app definition: Marathon 1.x's app JSON in and out, its defaults,
//! validation, partial updates, placement constraints and the launch of one
//! task from an offer.
//!
//! Architecture invariant: the app module never does I/O and reads no clock;
//! callers pass timestamps and offers in.

pub mod constraints;
mod definition;
mod id;
mod json;
pub use json::APP_OUTPUT_KEYS;
pub mod launch;
mod timestamp;
mod validation;

#[cfg(test)]
pub(crate) mod tests;

pub use definition::{
    AppDefinition, CommandCheck, Constraint, ConstraintOperator, Container, ContainerType, DockerContainer,
    DockerParameter, FetchUri, HealthCheck, HealthCheckProtocol, KillSelection, Network, NetworkMode,
    PortDefinition, PortMapping, UnreachableStrategy, UpgradeStrategy, VersionInfo, Volume, VolumeMode,
};
pub use id::{AppId, AppIdError};
pub use timestamp::{parse_timestamp, timestamp_string};
pub use validation::{
    CMD_ARGS_OR_CONTAINER, FieldError, HEALTH_CHECK_PORT_INDEX, INVALID_JSON, OBJECT_NOT_VALID,
    ValidationErrors,
};

//! The one error type of the SDK.

use std::fmt;

/// Why the master refused a call, mirroring the gRPC status codes the
/// scheduler API uses (see `scheduler.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    /// The call was malformed; the message names the field.
    InvalidArgument,
    /// The framework is not subscribed, or the call used a stale stream id.
    FailedPrecondition,
    /// The master does not know the framework (e.g. its failover timeout
    /// expired and it was removed).
    NotFound,
    /// The caller may not do this.
    PermissionDenied,
    /// Any other refusal.
    Other,
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectCode::InvalidArgument => "invalid argument",
            RejectCode::FailedPrecondition => "failed precondition",
            RejectCode::NotFound => "not found",
            RejectCode::PermissionDenied => "permission denied",
            RejectCode::Other => "refused",
        })
    }
}

/// Everything that can go wrong in the SDK.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SdkError {
    /// The driver has no subscription right now (it is connecting or
    /// re-subscribing). Calls are not queued: offers are re-sent after the
    /// driver re-subscribes and status updates are re-delivered until
    /// acknowledged, so a framework simply acts on those.
    #[error("not connected to a master")]
    NotConnected,
    /// The master refused the call.
    #[error("master refused the call ({code}): {message}")]
    Rejected {
        /// Kind of refusal.
        code: RejectCode,
        /// The master's explanation.
        message: String,
    },
    /// The master will not serve this framework any more: it was torn down,
    /// removed after its failover timeout, or another instance subscribed
    /// with the same framework id.
    #[error("framework terminated by the master: {0}")]
    Terminated(String),
    /// The driver was stopped (`Driver::stop` or `Driver::teardown`).
    #[error("driver stopped")]
    Stopped,
    /// The configuration is unusable (no masters, bad address, ...).
    #[error("invalid driver configuration: {0}")]
    Config(String),
    /// Loading or saving the framework id failed.
    #[error("framework id store: {0}")]
    IdStore(String),
    /// Something the master sent could not be understood.
    #[error("bad data from master: {0}")]
    Protocol(String),
}

impl SdkError {
    /// True if the same call may succeed when made again, once the driver
    /// is subscribed (again): the master was unreachable, stepped down, or
    /// the driver was between subscriptions (e.g. during a master failover).
    pub fn is_retryable(&self) -> bool {
        matches!(self, SdkError::NotConnected)
    }

    /// Converts a gRPC status into an SDK error, without leaking tonic types.
    /// Transport-level failures become [`SdkError::NotConnected`].
    pub(crate) fn from_status(status: &tonic::Status) -> Self {
        use tonic::Code;
        let code = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => RejectCode::InvalidArgument,
            Code::FailedPrecondition => RejectCode::FailedPrecondition,
            Code::NotFound => RejectCode::NotFound,
            Code::PermissionDenied | Code::Unauthenticated => RejectCode::PermissionDenied,
            Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded | Code::Aborted => {
                return SdkError::NotConnected;
            }
            Code::Unknown if status.message().contains("transport") => {
                return SdkError::NotConnected;
            }
            _ => RejectCode::Other,
        };
        SdkError::Rejected {
            code,
            message: status.message().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_code_and_message() {
        let err = SdkError::from_status(&tonic::Status::failed_precondition("stale stream"));
        assert_eq!(
            err,
            SdkError::Rejected {
                code: RejectCode::FailedPrecondition,
                message: "stale stream".into()
            }
        );
    }

    #[test]
    fn unavailable_master_means_not_connected() {
        let err = SdkError::from_status(&tonic::Status::unavailable("connection refused"));
        assert_eq!(err, SdkError::NotConnected);
        assert!(err.is_retryable());
    }

    #[test]
    fn refusals_are_not_retryable() {
        let err = SdkError::from_status(&tonic::Status::invalid_argument("bad"));
        assert!(!err.is_retryable());
        assert!(!SdkError::Stopped.is_retryable());
    }
}

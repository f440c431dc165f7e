//! One error for the ceremony layer. Every refusal carries a [`Code`] chosen where the
//! refusal is decided (the daemon maps it to a gRPC status in one function, the device
//! prints it), and a failed ceremony keeps its [`DriveError`], blame evidence included.

use cosigner_relay::DriveError;
use cosigner_relay::roster::RosterError;
use cosigner_tss::TssError;

/// What kind of refusal or failure, in gRPC's vocabulary (the daemon answers with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    NotFound,
    AlreadyExists,
    ResourceExhausted,
    Aborted,
    DeadlineExceeded,
    Unavailable,
    Unimplemented,
    /// Stored data that does not read back (a damaged share file, a corrupt history).
    DataLoss,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Decided by this party: a check, a store, the gate, the policy.
    #[error("{message}")]
    Stop { code: Code, message: String },
    /// The ceremony itself failed (the relay, the engine, another party's ABORT); a blame
    /// and its evidence stay inside.
    #[error(transparent)]
    Ceremony(#[from] DriveError),
}

impl NodeError {
    pub fn new(code: Code, message: impl Into<String>) -> NodeError {
        NodeError::Stop {
            code,
            message: message.into(),
        }
    }

    /// A malformed field of a request, named.
    pub fn invalid(field: &str, why: impl std::fmt::Display) -> NodeError {
        NodeError::new(Code::InvalidArgument, format!("{field}: {why}"))
    }

    pub fn precondition(message: impl Into<String>) -> NodeError {
        NodeError::new(Code::FailedPrecondition, message)
    }

    pub fn not_allowed(message: impl Into<String>) -> NodeError {
        NodeError::new(Code::PermissionDenied, message)
    }

    pub fn internal(message: impl Into<String>) -> NodeError {
        NodeError::new(Code::Internal, message)
    }

    pub fn code(&self) -> Code {
        match self {
            NodeError::Stop { code, .. } => *code,
            NodeError::Ceremony(e) => ceremony_code(e).0,
        }
    }

    /// A ceremony that was stopped (an ABORT, a timeout, a bad message) rather than one
    /// that could not run (the relay unreachable, a local failure): the history tells them
    /// apart as `aborted` and `failed`.
    pub fn stopped(&self) -> bool {
        match self {
            NodeError::Stop { code, .. } => matches!(code, Code::Aborted | Code::DeadlineExceeded),
            NodeError::Ceremony(e) => ceremony_code(e).1,
        }
    }

    /// The ceremony's failure, when it ran and failed (for its blame evidence).
    pub fn drive(&self) -> Option<&DriveError> {
        match self {
            NodeError::Ceremony(e) => Some(e),
            NodeError::Stop { .. } => None,
        }
    }
}

/// The code of a failed ceremony, and whether it was stopped (true) or could not run.
/// A blamed failure keeps the code of what stopped it (a timeout stays a timeout).
pub fn ceremony_code(e: &DriveError) -> (Code, bool) {
    match e {
        DriveError::Timeout { .. } => (Code::DeadlineExceeded, true),
        DriveError::Aborted { .. }
        | DriveError::Envelope(_)
        | DriveError::Engine(_)
        | DriveError::Ready { .. }
        | DriveError::RosterMismatch { .. }
        | DriveError::KeyMismatch { .. } => (Code::Aborted, true),
        DriveError::EpochMismatch { .. } => (Code::FailedPrecondition, false),
        DriveError::Relay(_) => (Code::Unavailable, false),
        DriveError::Panicked(_) => (Code::Internal, false),
        DriveError::Blamed { error, .. } => ceremony_code(error),
    }
}

impl From<RosterError> for NodeError {
    fn from(e: RosterError) -> NodeError {
        match e {
            RosterError::Invalid { .. } => NodeError::new(Code::InvalidArgument, e.to_string()),
            RosterError::Conflict(m) => NodeError::new(Code::FailedPrecondition, m),
            RosterError::NotAllowed(m) => NodeError::new(Code::PermissionDenied, m),
        }
    }
}

/// Engine parameters that do not hold (a path, a committee): the request's fault.
impl From<TssError> for NodeError {
    fn from(e: TssError) -> NodeError {
        NodeError::new(Code::InvalidArgument, format!("ceremony parameters: {e}"))
    }
}

impl From<cosigner_policy::DecodeError> for NodeError {
    fn from(e: cosigner_policy::DecodeError) -> NodeError {
        use cosigner_policy::DecodeError;
        match e {
            DecodeError::Invalid { .. } => NodeError::new(Code::InvalidArgument, e.to_string()),
            DecodeError::Unsupported(m) => NodeError::new(Code::Unimplemented, m),
        }
    }
}

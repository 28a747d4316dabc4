//! The module's one error type. No message ever contains a code or a
//! password.

use std::path::PathBuf;

/// Everything that can go wrong while talking to otpd or to the user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket path is not a root-owned socket, or the process behind it
    /// is not root. Always fails closed, whatever `fail_mode` says.
    #[error("refusing socket {path}: {why}")]
    UntrustedSocket {
        /// The configured socket path.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The socket is missing or nobody listens on it.
    #[error("cannot reach otpd at {path}: {source}")]
    Unreachable {
        /// The configured socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC connection could not be set up over the socket.
    #[error("cannot talk to otpd: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// otpd did not answer within the `timeout_ms` budget.
    #[error("otpd did not answer within {ms} ms")]
    Timeout {
        /// The configured budget.
        ms: u128,
    },
    /// otpd answered with an error status.
    #[error("otpd returned {}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    /// The per-call runtime could not be created.
    #[error("cannot start the client runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The conversation with the user failed (hung up, no conversation
    /// function, ...).
    #[error("the conversation with the user failed (PAM error {code})")]
    Conversation {
        /// The libpam return code.
        code: i32,
    },
}

/// How an [`Error`] affects the PAM result (see `flow::pam_result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// otpd is down, not listening, slow, or says UNAVAILABLE: `fail_mode`
    /// decides.
    Unreachable,
    /// The socket is not trusted: fail closed regardless of `fail_mode`.
    Untrusted,
    /// otpd refused the request (INVALID_ARGUMENT, PERMISSION_DENIED,
    /// DATA_LOSS, INTERNAL, ...): authentication fails.
    Refused,
    /// A local failure in the module or its host.
    Local,
    /// The user could not be asked.
    Conversation,
}

impl Error {
    /// The class of this error.
    #[must_use]
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::UntrustedSocket { .. } => ErrorClass::Untrusted,
            Self::Unreachable { .. } | Self::Transport(_) | Self::Timeout { .. } => {
                ErrorClass::Unreachable
            }
            Self::Status(s) if s.code() == tonic::Code::Unavailable => ErrorClass::Unreachable,
            Self::Status(_) => ErrorClass::Refused,
            Self::Runtime(_) => ErrorClass::Local,
            Self::Conversation { .. } => ErrorClass::Conversation,
        }
    }

    /// True for otpd's NOT_FOUND status (no such user, for admin callers).
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status(s) if s.code() == tonic::Code::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let st = |c| Error::Status(tonic::Status::new(c, "x"));
        assert_eq!(
            st(tonic::Code::Unavailable).class(),
            ErrorClass::Unreachable
        );
        assert_eq!(
            st(tonic::Code::InvalidArgument).class(),
            ErrorClass::Refused
        );
        assert_eq!(st(tonic::Code::DataLoss).class(), ErrorClass::Refused);
        assert_eq!(st(tonic::Code::Internal).class(), ErrorClass::Refused);
        assert_eq!(
            st(tonic::Code::PermissionDenied).class(),
            ErrorClass::Refused
        );
        assert!(st(tonic::Code::NotFound).is_not_found());
        assert_eq!(Error::Timeout { ms: 5 }.class(), ErrorClass::Unreachable);
        let e = Error::UntrustedSocket {
            path: "/x".into(),
            why: "not a socket".into(),
        };
        assert_eq!(e.class(), ErrorClass::Untrusted);
        assert_eq!(e.to_string(), "refusing socket /x: not a socket");
    }
}

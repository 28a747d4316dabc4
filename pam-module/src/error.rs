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
    /// Connecting to the socket failed. Whether `fail_mode` applies depends
    /// on why: see [`Error::class`].
    #[error("cannot reach otpd at {path}: {source}")]
    Unreachable {
        /// The configured socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// otpd's listen queue stayed full (`EAGAIN` on connect) for the whole
    /// `timeout_ms` budget: it is running but busy, or flooded.
    #[error("otpd at {path} is busy: its connection queue stayed full for {ms} ms")]
    Busy {
        /// The socket path.
        path: PathBuf,
        /// The configured budget.
        ms: u128,
    },
    /// Talking to otpd failed after connecting (the connection broke).
    #[error("cannot talk to otpd: {0}")]
    Io(#[source] std::io::Error),
    /// otpd's reply is not what a gRPC reply must be.
    #[error("cannot talk to otpd: {0}")]
    Protocol(&'static str),
    /// otpd did not answer within the `timeout_ms` budget.
    #[error("otpd did not answer within {ms} ms")]
    Timeout {
        /// The configured budget.
        ms: u128,
    },
    /// otpd answered with an error status.
    #[error("otpd returned {}: {}", .0.code(), .0.message())]
    Status(GrpcStatus),
    /// A local failure: no socket could be created (out of descriptors).
    #[error("cannot create a socket: {0}")]
    Local(#[source] std::io::Error),
    /// The conversation with the user failed (hung up, no conversation
    /// function, ...).
    #[error("the conversation with the user failed (PAM error {code})")]
    Conversation {
        /// The libpam return code.
        code: i32,
    },
}

/// A gRPC status code (the names of the gRPC specification).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Code {
    Ok,
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    const ALL: [Self; 17] = [
        Self::Ok,
        Self::Cancelled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// The code of a `grpc-status` value (an unknown value is `Unknown`).
    #[must_use]
    pub fn from_u32(n: u32) -> Self {
        usize::try_from(n)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .unwrap_or(Self::Unknown)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// otpd's error answer: code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcStatus {
    code: Code,
    message: String,
}

impl GrpcStatus {
    /// A status of `code` (a `grpc-status` value) with `message`.
    #[must_use]
    pub fn new(code: u32, message: String) -> Self {
        Self {
            code: Code::from_u32(code),
            message,
        }
    }

    /// A status of `code`.
    #[must_use]
    pub fn of(code: Code, message: &str) -> Self {
        Self {
            code,
            message: message.to_owned(),
        }
    }

    /// The code.
    #[must_use]
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// How an [`Error`] affects the PAM result (see `flow::pam_result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Nothing is listening: no socket file (`ENOENT`) or nobody bound to
    /// it (`ECONNREFUSED`). Only this class lets `fail_mode` decide; no
    /// local user can cause it while otpd runs.
    NotRunning,
    /// otpd is there but could not answer: its queue stayed full (`EAGAIN`
    /// after retries), the budget ran out, the connection failed after
    /// connecting, or it said UNAVAILABLE. Fails closed whatever
    /// `fail_mode` says: a busy or slow daemon is not an absent one.
    Unavailable,
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

/// True when a failed `connect` means that nothing is listening.
#[must_use]
pub fn nothing_listening(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

impl Error {
    /// The class of this error.
    #[must_use]
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::UntrustedSocket { .. } => ErrorClass::Untrusted,
            Self::Unreachable { source, .. } if nothing_listening(source) => ErrorClass::NotRunning,
            Self::Unreachable { .. }
            | Self::Busy { .. }
            | Self::Io(_)
            | Self::Protocol(_)
            | Self::Timeout { .. } => ErrorClass::Unavailable,
            Self::Status(s) if s.code() == Code::Unavailable => ErrorClass::Unavailable,
            Self::Status(_) => ErrorClass::Refused,
            Self::Local(_) => ErrorClass::Local,
            Self::Conversation { .. } => ErrorClass::Conversation,
        }
    }

    /// True for otpd's NOT_FOUND status (no such user, for admin callers).
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status(s) if s.code() == Code::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let st = |c| Error::Status(GrpcStatus::of(c, "x"));
        assert_eq!(st(Code::Unavailable).class(), ErrorClass::Unavailable);
        assert_eq!(st(Code::InvalidArgument).class(), ErrorClass::Refused);
        assert_eq!(st(Code::DataLoss).class(), ErrorClass::Refused);
        assert_eq!(st(Code::Internal).class(), ErrorClass::Refused);
        assert_eq!(st(Code::PermissionDenied).class(), ErrorClass::Refused);
        assert!(st(Code::NotFound).is_not_found());
        assert_eq!(Error::Timeout { ms: 5 }.class(), ErrorClass::Unavailable);
        let e = Error::UntrustedSocket {
            path: "/x".into(),
            why: "not a socket".into(),
        };
        assert_eq!(e.class(), ErrorClass::Untrusted);
        assert_eq!(e.to_string(), "refusing socket /x: not a socket");
    }

    /// Only "nothing is listening" lets `fail_mode` decide; a full queue
    /// (what a local user flooding the socket causes) or any other connect
    /// failure is "unavailable".
    #[test]
    fn connect_errors_are_classified_by_errno() {
        let connect = |errno| Error::Unreachable {
            path: "/run/otpd/pam.sock".into(),
            source: std::io::Error::from_raw_os_error(errno),
        };
        assert_eq!(connect(libc::ENOENT).class(), ErrorClass::NotRunning);
        assert_eq!(connect(libc::ECONNREFUSED).class(), ErrorClass::NotRunning);
        for errno in [
            libc::EAGAIN,
            libc::EWOULDBLOCK,
            libc::EACCES,
            libc::ECONNRESET,
            libc::ETIMEDOUT,
            libc::EMFILE,
        ] {
            assert_eq!(connect(errno).class(), ErrorClass::Unavailable, "{errno}");
        }
        let busy = Error::Busy {
            path: "/run/otpd/pam.sock".into(),
            ms: 5000,
        };
        assert_eq!(busy.class(), ErrorClass::Unavailable);
        assert_eq!(
            busy.to_string(),
            "otpd at /run/otpd/pam.sock is busy: its connection queue stayed full for 5000 ms"
        );
    }
}

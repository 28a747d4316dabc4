//! The daemon's one error type. Messages never contain a code, a secret or
//! a key.

use std::path::PathBuf;

/// Everything that can go wrong in otpd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A decision of the core refused or failed (bad input, unknown
    /// device, corrupted record...).
    #[error(transparent)]
    Core(#[from] otpd_core::Error),
    /// The caller may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The store directory is in use by another process.
    #[error("the store {path} is locked by another process (is another otpd running?)")]
    StoreLocked {
        /// Store directory.
        path: PathBuf,
    },
    /// Reading or writing the store failed.
    #[error("store error: {0}")]
    Store(String),
    /// The store failed recently and is not retried yet (at most once a
    /// second); decisions fail closed meanwhile.
    #[error(
        "the store {path} failed (is the disk full?) and is reopened at most once \
         a second; retry shortly"
    )]
    StoreUnavailable {
        /// Store directory.
        path: PathBuf,
    },
    /// Other writers changed the user's record during every attempt of an
    /// update (see `store::UPDATE_ATTEMPTS`); nothing was written.
    #[error(
        "the record of user {user:?} kept changing during {attempts} attempts to \
         update it; nothing was written, retry"
    )]
    StoreContended {
        /// The user.
        user: String,
        /// How often the update decided before it gave up.
        attempts: u32,
    },
    /// The replay-watermark journal cannot be read or written.
    #[error("watermark journal {path}: {reason}")]
    Watermark {
        /// Journal file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The user's record is missing although the watermark journal says it
    /// held an enrollment: the store lost writes (rolled back). The user
    /// fails closed until `otpctl reset`.
    #[error(
        "the stored record of user {user:?} was lost (the store rolled back); this \
         user cannot log in until `otpctl reset`"
    )]
    RolledBack {
        /// The user.
        user: String,
    },
    /// The master key file is missing, unsafe or malformed.
    #[error("master key {path}: {reason}")]
    Key {
        /// Key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The state directory is missing, unsafe or not a directory.
    #[error("state directory {path}: {reason}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong (with the command that fixes it, if any).
        reason: String,
    },
    /// The configuration is invalid.
    #[error("config {path}: {reason}")]
    Config {
        /// Config file (or "command line").
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The socket cannot be set up.
    #[error("socket {path}: {reason}")]
    Socket {
        /// Socket path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The backup key cannot be set as asked (none set yet, one set
    /// already, another one than expected, malformed).
    #[error("backup key: {0}")]
    BackupKey(String),
    /// A backup could not be written (directory missing or unsafe, disk
    /// full). Logins are unaffected.
    #[error("backup {path}: {reason}")]
    Backup {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A bug or an unexpected failure of a dependency.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The same error again, for each of the callers a batch failed for
    /// (a store or journal failure fails the whole batch). Keeps the
    /// variant, which decides the status the callers see; the causes that
    /// cannot be copied keep their message.
    pub fn duplicate(&self) -> Self {
        match self {
            Self::Core(e) => Self::Internal(e.to_string()),
            Self::PermissionDenied(m) => Self::PermissionDenied(m.clone()),
            Self::StoreLocked { path } => Self::StoreLocked { path: path.clone() },
            Self::Store(m) => Self::Store(m.clone()),
            Self::StoreUnavailable { path } => Self::StoreUnavailable { path: path.clone() },
            Self::StoreContended { user, attempts } => Self::StoreContended {
                user: user.clone(),
                attempts: *attempts,
            },
            Self::Watermark { path, reason } => Self::Watermark {
                path: path.clone(),
                reason: reason.clone(),
            },
            Self::RolledBack { user } => Self::RolledBack { user: user.clone() },
            Self::Key { path, reason } => Self::Key {
                path: path.clone(),
                reason: reason.clone(),
            },
            Self::StateDir { path, reason } => Self::StateDir {
                path: path.clone(),
                reason: reason.clone(),
            },
            Self::Config { path, reason } => Self::Config {
                path: path.clone(),
                reason: reason.clone(),
            },
            Self::Socket { path, reason } => Self::Socket {
                path: path.clone(),
                reason: reason.clone(),
            },
            Self::BackupKey(m) => Self::BackupKey(m.clone()),
            Self::Backup { path, reason } => Self::Backup {
                path: path.clone(),
                reason: reason.clone(),
            },
            Self::Internal(m) => Self::Internal(m.clone()),
        }
    }
}

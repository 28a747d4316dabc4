//! The core's one error type. Messages never contain a code, a secret or a
//! key.
//!
//! Deliberately not `#[non_exhaustive]`: the daemon maps every variant to a
//! gRPC status and an exit code with an exhaustive `match`, so a new
//! variant is a compile error there, never a silent INTERNAL.

/// What a decision can refuse or fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The user name is not acceptable.
    #[error("invalid user name: {0}")]
    InvalidUser(&'static str),
    /// The code is malformed (not a wrong code: a code that cannot be one).
    #[error("invalid code: {0}")]
    InvalidCode(&'static str),
    /// Another request parameter is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The user has no active device.
    #[error("user {user:?} is not enrolled")]
    NotEnrolled {
        /// The user.
        user: String,
    },
    /// A further device needs an active one to join.
    #[error(
        "user {user:?} has no active device to add one beside; enroll first with `otpctl enroll`"
    )]
    NoActiveDevice {
        /// The user.
        user: String,
    },
    /// An import for a user who is enrolled already, without `replace`.
    #[error(
        "user {user:?} is enrolled already; the import would replace their devices \
         (use --replace to do so)"
    )]
    AlreadyEnrolled {
        /// The user.
        user: String,
    },
    /// Confirm was called without a pending enrollment.
    #[error("user {user:?} has no pending enrollment; start one with `otpctl enroll`")]
    NoPendingEnrollment {
        /// The user.
        user: String,
    },
    /// Confirm was called after the pending enrollment expired
    /// (`[enrollment] pending_expiry_seconds`).
    #[error("the enrollment of user {user:?} expired; start again with otpctl enroll")]
    EnrollmentExpired {
        /// The user.
        user: String,
    },
    /// The confirmation code does not match the pending secret.
    #[error(
        "the code does not match the pending enrollment; check that the app \
         shows this account and that the device clock is right"
    )]
    ConfirmMismatch,
    /// No device of that name.
    #[error("user {user:?} has no device named {device:?}")]
    NoSuchDevice {
        /// The user.
        user: String,
        /// The device name asked for.
        device: String,
    },
    /// The device name is taken.
    #[error("user {user:?} already has a device named {device:?}")]
    DeviceExists {
        /// The user.
        user: String,
        /// The name.
        device: String,
    },
    /// Removing the last active device needs an explicit confirmation.
    #[error(
        "{device:?} is the last device of user {user:?}: without it the user is no \
         longer enrolled (PAM lines with `nullok` then let them in without a code, \
         lines without it refuse them); confirm with --force, or add a device first"
    )]
    LastDevice {
        /// The user.
        user: String,
        /// The device.
        device: String,
    },
    /// Too many devices or app passwords.
    #[error("user {user:?} already has the most {what} allowed ({max})")]
    TooMany {
        /// The user.
        user: String,
        /// "devices" or "app passwords".
        what: &'static str,
        /// The bound.
        max: usize,
    },
    /// No app password with that id.
    #[error("user {user:?} has no app password {id:?}")]
    NoSuchAppPassword {
        /// The user.
        user: String,
        /// The id asked for.
        id: String,
    },
    /// The user's record does not open: that user fails closed.
    #[error(
        "the stored record of user {user:?} is corrupted or sealed under another \
         key; this user cannot log in until `otpctl reset` (other users are unaffected)"
    )]
    Corrupted {
        /// The user.
        user: String,
    },
    /// The record was written by a newer otpd than this one.
    #[error(
        "the stored record of user {user:?} has schema version {version}, newer than \
         this otpd understands ({supported}); upgrade otpd"
    )]
    NewerRecord {
        /// The user.
        user: String,
        /// Its version.
        version: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// A user changing their own second factor brought no proof of
    /// possession (a current code or a backup code).
    #[error(
        "{what} needs a current code from one of your devices (or a backup code) \
         in the same request; otpctl asks for it, or give it with --code"
    )]
    ProofRequired {
        /// The change, for the message.
        what: &'static str,
    },
    /// The code proving possession for a self-service change was refused
    /// (wrong, already used, or the user is locked out or throttled); a
    /// checked wrong code counted as a failed login.
    #[error("{what} refused: the code proving possession was {reason}; nothing was changed")]
    ProofRefused {
        /// The change, for the message.
        what: &'static str,
        /// Why, in words ("wrong", "already used", "not checked: locked
        /// out, retry in 60 s", ...).
        reason: String,
    },
    /// The configuration does not let users do this on their own account
    /// (`[self_service]` in otpd.toml).
    #[error(
        "permission denied: {what} is for root and the admin group here \
         ([self_service] {key} = false)"
    )]
    SelfServiceDisabled {
        /// The change, for the message.
        what: &'static str,
        /// The configuration key that would allow it.
        key: &'static str,
    },
    /// A bug or an unexpected failure of a dependency (no user input in it).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

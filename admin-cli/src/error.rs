//! The one error type of otpctl, and its mapping to exit codes.

use std::io;
use std::path::PathBuf;

use tonic::Code;

/// Exit codes other than 0 (success), documented in `otpctl --help`.
pub mod exit {
    /// The code was rejected: verify rejected, locked or throttled, or
    /// confirm with a wrong code (daemon status UNAUTHENTICATED).
    pub const REJECTED: u8 = 1;
    /// Usage error (clap's own exit code) or invalid argument (daemon
    /// status INVALID_ARGUMENT, or an unusable `--qr-png` path).
    pub const USAGE: u8 = 2;
    /// The daemon cannot be reached on its socket.
    pub const UNREACHABLE: u8 = 3;
    /// Permission denied (daemon status PERMISSION_DENIED, or the socket
    /// refuses the connection).
    pub const PERMISSION: u8 = 4;
    /// Any other error: other daemon statuses (NOT_FOUND,
    /// FAILED_PRECONDITION, DATA_LOSS, UNAVAILABLE, INTERNAL, ...) and
    /// local I/O errors; `device remove` of the last active device without
    /// `--force`; `import` when at least one user failed.
    pub const OTHER: u8 = 5;
    /// No such device (device rename/remove) or app password (app-password
    /// revoke): daemon status NOT_FOUND from those RPCs.
    pub const NO_SUCH: u8 = 6;
    /// The device name is already in use (enroll --device, device add,
    /// device rename): daemon status ALREADY_EXISTS.
    pub const NAME_IN_USE: u8 = 7;
}

/// Everything that can make otpctl fail. None of the messages holds a
/// secret, a code or a backup code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing answers on the socket.
    #[error(
        "cannot reach otpd at {socket}: {source}; is the daemon running? \
         Start it with 'systemctl start otpd' or 'otpd --socket {socket}'",
        socket = .socket.display()
    )]
    Unreachable { socket: PathBuf, source: io::Error },

    /// The socket's permissions refuse us.
    #[error(
        "permission denied: cannot connect to otpd at {socket}: {source}; \
         run otpctl as root or as a member of otpd's admin group",
        socket = .socket.display()
    )]
    SocketPermission { socket: PathBuf, source: io::Error },

    /// The socket accepted, but no gRPC connection could be set up over it.
    #[error("cannot reach otpd at {socket}: {source}", socket = .socket.display())]
    Transport {
        socket: PathBuf,
        source: tonic::transport::Error,
    },

    /// The daemon answered with an error status.
    #[error("{}", status_line(.0))]
    Status(tonic::Status),

    /// The user has no device of that name (NOT_FOUND from RenameDevice or
    /// RemoveDevice).
    #[error(
        "no device named \"{device}\" for {user}; 'otpctl device list {user}' shows the devices"
    )]
    NoSuchDevice { user: String, device: String },

    /// The user has no app password with that id (NOT_FOUND from
    /// RevokeAppPassword).
    #[error(
        "no app password with id \"{id}\" for {user}; 'otpctl app-password list {user}' \
         shows the ids"
    )]
    NoSuchAppPassword { user: String, id: String },

    /// The device name is taken (ALREADY_EXISTS from EnrollStart or
    /// RenameDevice).
    #[error("{user} already has a device named \"{device}\"; choose another name")]
    DeviceNameInUse { user: String, device: String },

    /// `device remove` of the user's last active device without `--force`
    /// (refused before calling, or FAILED_PRECONDITION from RemoveDevice).
    #[error(
        "refusing to remove \"{device}\", the last device of {user}: {user} would no longer \
         be enrolled, so PAM lines with 'nullok' would let {user} in with the password \
         alone and lines without it would refuse {user}; add a replacement first with \
         'otpctl device add {user} NAME', or remove it anyway with --force"
    )]
    LastDevice { user: String, device: String },

    /// ListUsers sent a `next_after` that does not move the listing on (a
    /// confused daemon): stop instead of asking for the same page forever.
    #[error("otpd's user listing does not advance after {after:?}; stopped")]
    ListingStuck { after: String },

    /// `--qr-png` names a file that exists already.
    #[error("refusing to overwrite {}: the file exists", .path.display())]
    PngExists { path: PathBuf },

    /// `--qr-png` names a file that cannot be created.
    #[error("cannot create {}: {source}", .path.display())]
    PngCreate { path: PathBuf, source: io::Error },

    /// Writing the PNG failed.
    #[error("cannot write the QR code to {}: {source}", .path.display())]
    PngWrite {
        path: PathBuf,
        source: image::ImageError,
    },

    /// The otpauth URI does not fit in a QR code.
    #[error("cannot make a QR code of the otpauth URI: {0}")]
    Qr(qrcode::types::QrError),

    /// The interactive enroll (or device add) got a wrong code at every
    /// try; the enrollment stays pending. `again`: the command that starts
    /// it over.
    #[error(
        "code rejected {tries} times: {reason}. The enrollment of {user} stays pending{}: \
         confirm it with 'otpctl confirm {user} CODE', or start again with '{again}'",
        match .expires_at { Some(t) => format!(" until {t}"), None => String::new() }
    )]
    NotConfirmed {
        user: String,
        tries: u32,
        reason: String,
        expires_at: Option<String>,
        again: String,
    },

    /// `enroll`: no account can have this name.
    #[error("{user:?} cannot be the name of an account: {why}; nothing was enrolled")]
    ImpossibleUser { user: String, why: String },

    /// `enroll`: the name service does not know the account.
    #[error(
        "no account named {user:?} on this machine (the name service does not know it: \
         a typo?); nothing was enrolled. To enroll an account that does not exist yet, \
         add --force"
    )]
    UnknownAccount { user: String },

    /// `enroll`: the name service could not be asked.
    #[error(
        "cannot look up the account {user:?}: {reason}; nothing was enrolled. To enroll it \
         anyway, add --force"
    )]
    AccountLookup { user: String, reason: String },

    /// A file otpctl needs cannot be read (status --all: the passwd file,
    /// otpd's config).
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },

    /// Reading the code typed at the prompt failed.
    #[error("cannot read the code from the terminal: {0}")]
    Prompt(io::Error),

    /// Writing to stdout or stderr failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),

    /// `otpctl import`: a file it needs (the passwd file) cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    ImportRead { path: PathBuf, source: io::Error },

    /// `otpctl import otpauth`: a Google Authenticator export of several
    /// QR codes was given in part (`missing`: their numbers, from 1).
    #[error(
        "the Google Authenticator export is incomplete: QR code{} {} of {size} missing \
         (first seen in {seen}); give every QR code of the export (every \
         otpauth-migration line, or --image once per picture); nothing was imported",
        if .missing.len() == 1 { "" } else { "s" },
        .missing.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    )]
    ImportIncomplete {
        missing: Vec<u32>,
        size: u32,
        seen: String,
    },

    /// `otpctl import`: the arguments do not fit the input (e.g. --user
    /// for an input of several accounts).
    #[error("{0}")]
    ImportUsage(String),

    /// `otpctl export`: the key would be shown as plain text without
    /// `--plaintext-secret`.
    #[error(
        "refusing to show the key as plain text: {what}. Whoever sees it can compute the \
         user's codes; add --plaintext-secret if that is really wanted, or use --png FILE \
         or --encrypted FILE"
    )]
    PlaintextRefused { what: &'static str },

    /// A value given on the command line is not acceptable.
    #[error("invalid argument: {0}")]
    InvalidInput(String),

    /// `otpctl export --png/--encrypted` names a file that exists already.
    #[error("refusing to overwrite {}: the file exists", .path.display())]
    OutputExists { path: PathBuf },

    /// The output file cannot be created.
    #[error("cannot create {}: {source}", .path.display())]
    OutputCreate { path: PathBuf, source: io::Error },

    /// Writing the output file failed (it was removed again).
    #[error("cannot write {}: {source}", .path.display())]
    OutputWrite { path: PathBuf, source: io::Error },

    /// No passphrase could be read, or a new one is too weak.
    #[error(transparent)]
    Passphrase(#[from] crate::passphrase::ReadError),

    /// The passphrase does not open the encrypted file.
    #[error(
        "the passphrase does not open {}: wrong passphrase (or not the file it was \
         written with); nothing was imported",
        .path.display()
    )]
    WrongPassphrase { path: PathBuf },

    /// A backup passphrase could not be read, or a new one is too weak.
    #[error("{0}")]
    BackupPassphrase(crate::passphrase::ReadError),

    /// A backup file cannot be read, is not a backup, or is damaged.
    #[error("backup {}: {reason}", .path.display())]
    BackupFile { path: PathBuf, reason: String },

    /// The passphrase does not open the backup file.
    #[error(
        "the passphrase does not open {} (a wrong passphrase, or a file altered since); \
         nothing was restored or changed",
        .path.display()
    )]
    BackupWrongPassphrase { path: PathBuf },

    /// `backup change-passphrase`: the old passphrase does not give the
    /// current backup key.
    #[error(
        "that is not the current backup passphrase (it does not give the current backup \
         key); nothing was changed"
    )]
    BackupKeyMismatch,

    /// Another backup command failure (not set up, not confirmed...).
    #[error("{0}")]
    Backup(String),

    /// `otpctl doctor`: the PAM directory cannot be read.
    #[error("cannot read {}: {source}; run otpctl doctor as root", .path.display())]
    DoctorRead { path: PathBuf, source: io::Error },

    /// The command line is not one otpctl takes (clap's words; reported
    /// this way only with --json, else clap prints its own text).
    #[error("{0}; see otpctl --help")]
    Usage(String),

    /// The async runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Status(status)
    }
}

impl Error {
    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Unreachable { .. } | Error::Transport { .. } => exit::UNREACHABLE,
            Error::SocketPermission { .. } => exit::PERMISSION,
            Error::NotConfirmed { .. } => exit::REJECTED,
            Error::ImpossibleUser { .. } | Error::UnknownAccount { .. } => exit::USAGE,
            Error::AccountLookup { .. } | Error::Read { .. } => exit::OTHER,
            Error::Status(status) => match status.code() {
                Code::Unauthenticated => exit::REJECTED,
                Code::InvalidArgument => exit::USAGE,
                Code::PermissionDenied => exit::PERMISSION,
                _ => exit::OTHER,
            },
            Error::PngExists { .. } | Error::PngCreate { .. } => exit::USAGE,
            Error::NoSuchDevice { .. } | Error::NoSuchAppPassword { .. } => exit::NO_SUCH,
            Error::DeviceNameInUse { .. } => exit::NAME_IN_USE,
            Error::LastDevice { .. } | Error::ListingStuck { .. } => exit::OTHER,
            Error::PngWrite { .. }
            | Error::Qr(_)
            | Error::Prompt(_)
            | Error::Output(_)
            | Error::Runtime(_)
            | Error::ImportRead { .. }
            | Error::ImportIncomplete { .. } => exit::OTHER,
            Error::ImportUsage(_) | Error::Usage(_) => exit::USAGE,
            Error::BackupPassphrase(crate::passphrase::ReadError::Weak(_)) => exit::USAGE,
            Error::BackupWrongPassphrase { .. } | Error::BackupKeyMismatch => exit::REJECTED,
            Error::BackupPassphrase(_) | Error::BackupFile { .. } | Error::Backup(_) => exit::OTHER,
            Error::PlaintextRefused { .. }
            | Error::InvalidInput(_)
            | Error::OutputExists { .. }
            | Error::OutputCreate { .. } => exit::USAGE,
            Error::Passphrase(e) => match e {
                crate::passphrase::ReadError::NoTerminal
                | crate::passphrase::ReadError::Mismatch
                | crate::passphrase::ReadError::FileOpen { .. }
                | crate::passphrase::ReadError::Invalid(_)
                | crate::passphrase::ReadError::Weak(_) => exit::USAGE,
                crate::passphrase::ReadError::Terminal(_)
                | crate::passphrase::ReadError::File { .. } => exit::OTHER,
            },
            Error::OutputWrite { .. } | Error::WrongPassphrase { .. } => exit::OTHER,
            Error::DoctorRead { .. } => exit::OTHER,
        }
    }

    /// A stable name for what went wrong, for `--json` (`"error":
    /// {"code"}`): the gRPC status in snake case for the daemon's errors.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unreachable { .. } | Error::Transport { .. } => "unreachable",
            Error::SocketPermission { .. } => "permission_denied",
            Error::Status(status) => match status.code() {
                Code::Ok => "ok",
                Code::Cancelled => "cancelled",
                Code::Unknown => "unknown",
                Code::InvalidArgument => "invalid_argument",
                Code::DeadlineExceeded => "deadline_exceeded",
                Code::NotFound => "not_found",
                Code::AlreadyExists => "already_exists",
                Code::PermissionDenied => "permission_denied",
                Code::ResourceExhausted => "resource_exhausted",
                Code::FailedPrecondition => "failed_precondition",
                Code::Aborted => "aborted",
                Code::OutOfRange => "out_of_range",
                Code::Unimplemented => "unimplemented",
                Code::Internal => "internal",
                Code::Unavailable => "unavailable",
                Code::DataLoss => "data_loss",
                Code::Unauthenticated => "unauthenticated",
            },
            Error::NoSuchDevice { .. } => "no_such_device",
            Error::NoSuchAppPassword { .. } => "no_such_app_password",
            Error::DeviceNameInUse { .. } => "device_name_in_use",
            Error::LastDevice { .. } => "last_device",
            Error::ListingStuck { .. } => "listing_stuck",
            Error::PngExists { .. } | Error::OutputExists { .. } => "file_exists",
            Error::PngCreate { .. } | Error::OutputCreate { .. } => "file_create",
            Error::PngWrite { .. } | Error::OutputWrite { .. } => "file_write",
            Error::Qr(_) => "qr_code",
            Error::NotConfirmed { .. } => "not_confirmed",
            Error::ImpossibleUser { .. } => "impossible_user_name",
            Error::UnknownAccount { .. } => "unknown_account",
            Error::AccountLookup { .. } => "account_lookup",
            Error::Prompt(_) => "prompt",
            Error::Output(_) => "output",
            Error::ImportRead { .. } | Error::DoctorRead { .. } | Error::Read { .. } => "file_read",
            Error::ImportIncomplete { .. } => "import_incomplete",
            Error::ImportUsage(_) | Error::Usage(_) => "usage",
            Error::PlaintextRefused { .. } => "plaintext_refused",
            Error::InvalidInput(_) => "invalid_argument",
            Error::Passphrase(_) | Error::BackupPassphrase(_) => "passphrase",
            Error::WrongPassphrase { .. } | Error::BackupWrongPassphrase { .. } => {
                "wrong_passphrase"
            }
            Error::BackupKeyMismatch => "backup_key_mismatch",
            Error::BackupFile { .. } => "backup_file",
            Error::Backup(_) => "backup",
            Error::Runtime(_) => "runtime",
        }
    }

    /// `status` as the error of a call about one of `user`'s devices:
    /// NOT_FOUND becomes [`Error::NoSuchDevice`] for `missing`, and
    /// ALREADY_EXISTS [`Error::DeviceNameInUse`] for `taken` (the contract
    /// gives them no other meaning for these RPCs); `None` keeps the status.
    pub fn for_device(
        status: tonic::Status,
        user: &str,
        missing: Option<&str>,
        taken: Option<&str>,
    ) -> Self {
        let user = user.to_owned();
        match (status.code(), missing, taken) {
            (Code::NotFound, Some(device), _) => Error::NoSuchDevice {
                user,
                device: device.to_owned(),
            },
            (Code::AlreadyExists, _, Some(device)) => Error::DeviceNameInUse {
                user,
                device: device.to_owned(),
            },
            _ => Error::Status(status),
        }
    }

    /// The error for a failed connect to the socket: "not allowed" when the
    /// socket's permissions refuse us, else "nobody listens".
    pub fn connect(socket: PathBuf, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::PermissionDenied {
            Error::SocketPermission { socket, source }
        } else {
            Error::Unreachable { socket, source }
        }
    }
}

/// A short prefix for the status code, then the daemon's message. otpd's
/// messages often begin with the same words ("permission denied: ...",
/// "internal error: ..."), or name the invalid thing themselves ("invalid
/// code: ..."): the words are said once.
fn status_line(status: &tonic::Status) -> String {
    let (prefix, same): (&str, &[&str]) = match status.code() {
        Code::Ok => ("unexpected OK status", &[]),
        Code::Cancelled => ("cancelled", &["cancelled"]),
        Code::Unknown => ("unknown error", &["unknown error"]),
        Code::InvalidArgument => ("invalid argument", &["invalid argument"]),
        Code::DeadlineExceeded => ("deadline exceeded", &["deadline exceeded"]),
        Code::NotFound => ("not found", &["not found"]),
        Code::AlreadyExists => ("already exists", &["already exists"]),
        Code::PermissionDenied => ("permission denied", &["permission denied"]),
        Code::ResourceExhausted => ("resource exhausted", &["resource exhausted"]),
        Code::FailedPrecondition => ("failed precondition", &["failed precondition"]),
        Code::Aborted => ("aborted", &["aborted"]),
        Code::OutOfRange => ("out of range", &["out of range"]),
        Code::Unimplemented => ("not implemented by this otpd", &["not implemented"]),
        Code::Internal => ("internal error in otpd", &["internal error"]),
        Code::Unavailable => ("unavailable", &["unavailable"]),
        Code::DataLoss => ("data loss", &["data loss"]),
        Code::Unauthenticated => ("code rejected", &["code rejected"]),
    };
    let message = status.message();
    let rest = same.iter().find_map(|words| {
        let head = message.get(..words.len())?;
        let rest = message[words.len()..].strip_prefix(':')?;
        head.eq_ignore_ascii_case(words).then(|| rest.trim_start())
    });
    match rest {
        Some("") => prefix.to_owned(),
        Some(rest) => format!("{prefix}: {rest}"),
        // "invalid code: ...", "invalid user name: ...": said already.
        None if status.code() == Code::InvalidArgument && message.starts_with("invalid ") => {
            message.to_owned()
        }
        None if message.is_empty() => prefix.to_owned(),
        None => format!("{prefix}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_documented_exit_codes() {
        let cases = [
            (Code::Unauthenticated, 1),
            (Code::InvalidArgument, 2),
            (Code::PermissionDenied, 4),
            (Code::NotFound, 5),
            (Code::FailedPrecondition, 5),
            (Code::DataLoss, 5),
            (Code::Unavailable, 5),
            (Code::Internal, 5),
        ];
        for (code, exit) in cases {
            assert_eq!(
                Error::Status(tonic::Status::new(code, "x")).exit_code(),
                exit,
                "{code:?}"
            );
        }
    }

    #[test]
    fn device_and_app_password_errors_have_their_own_exit_codes() {
        let user = "alice";
        let (phone, old) = (Some("phone"), Some("old"));
        let e = Error::for_device(tonic::Status::not_found("no such device"), user, phone, old);
        assert_eq!(e.exit_code(), 6);
        assert_eq!(
            e.to_string(),
            "no device named \"phone\" for alice; 'otpctl device list alice' shows the devices"
        );
        let e = Error::for_device(tonic::Status::already_exists("taken"), user, old, phone);
        assert_eq!(e.exit_code(), 7);
        assert_eq!(
            e.to_string(),
            "alice already has a device named \"phone\"; choose another name"
        );
        // Everything else keeps the daemon's words and the usual codes.
        let e = Error::for_device(
            tonic::Status::invalid_argument("bad name"),
            user,
            phone,
            phone,
        );
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "invalid argument: bad name");
        // Without a name to blame, NOT_FOUND stays the daemon's (exit 5).
        let e = Error::for_device(tonic::Status::not_found("no user"), user, None, phone);
        assert_eq!(e.exit_code(), 5);
        assert_eq!(e.to_string(), "not found: no user");
        let e = Error::NoSuchAppPassword {
            user: user.into(),
            id: "k3x9".into(),
        };
        assert_eq!(e.exit_code(), 6);
        assert_eq!(
            e.to_string(),
            "no app password with id \"k3x9\" for alice; 'otpctl app-password list alice' \
             shows the ids"
        );
        let e = Error::LastDevice {
            user: user.into(),
            device: "phone".into(),
        };
        assert_eq!(e.exit_code(), 5);
        assert_eq!(
            e.to_string(),
            "refusing to remove \"phone\", the last device of alice: alice would no longer be \
             enrolled, so PAM lines with 'nullok' would let alice in with the password alone \
             and lines without it would refuse alice; add a replacement first with \
             'otpctl device add alice NAME', or remove it anyway with --force"
        );
    }

    #[test]
    fn status_message_is_printed_verbatim_after_a_prefix() {
        let e = Error::Status(tonic::Status::permission_denied(
            "uid 1000 may not call Reset",
        ));
        assert_eq!(
            e.to_string(),
            "permission denied: uid 1000 may not call Reset"
        );
        let e = Error::Status(tonic::Status::not_found(""));
        assert_eq!(e.to_string(), "not found");
    }

    #[test]
    fn the_words_of_a_status_are_said_once() {
        let line = |s: tonic::Status| Error::Status(s).to_string();
        assert_eq!(
            line(tonic::Status::permission_denied(
                "permission denied: listing users is for root and the admin group"
            )),
            "permission denied: listing users is for root and the admin group"
        );
        assert_eq!(
            line(tonic::Status::internal(
                "internal error: store error: disk full"
            )),
            "internal error in otpd: store error: disk full"
        );
        assert_eq!(
            line(tonic::Status::invalid_argument(
                "invalid code: the code must contain digits only"
            )),
            "invalid code: the code must contain digits only"
        );
        assert_eq!(
            line(tonic::Status::invalid_argument(
                "invalid argument: period 7"
            )),
            "invalid argument: period 7"
        );
        assert_eq!(
            line(tonic::Status::invalid_argument("bad name")),
            "invalid argument: bad name"
        );
        assert_eq!(
            line(tonic::Status::permission_denied("Permission denied:")),
            "permission denied"
        );
        // A message that merely starts with the word is kept whole.
        assert_eq!(
            line(tonic::Status::not_found("not foundation")),
            "not found: not foundation"
        );
    }

    #[test]
    fn unreachable_names_the_socket_and_how_to_start_the_daemon() {
        let e = Error::connect(
            PathBuf::from("/run/otpd/otpd.sock"),
            io::Error::from_raw_os_error(2),
        );
        assert_eq!(e.exit_code(), 3);
        assert_eq!(
            e.to_string(),
            "cannot reach otpd at /run/otpd/otpd.sock: No such file or directory (os error 2); \
             is the daemon running? Start it with 'systemctl start otpd' or \
             'otpd --socket /run/otpd/otpd.sock'"
        );
        let e = Error::connect(PathBuf::from("/s"), io::Error::from_raw_os_error(13));
        assert_eq!(e.exit_code(), 4);
    }
}

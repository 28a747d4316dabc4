//! The command line: clap types only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Where otpd listens unless `--socket` or `OTPD_SOCKET` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/otpd/otpd.sock";

const AFTER_HELP: &str = "\
Exit codes:
  0  success (verify: code accepted)
  1  code rejected (verify rejected, locked or throttled; confirm with a wrong code;
     a change of your own account without its proof, or with a refused one);
     doctor: findings (errors or warnings)
  2  usage error or invalid argument
  3  otpd unreachable
  4  permission denied
  5  other error (not found, failed precondition, data loss, unavailable, internal, local I/O;
     device remove: the last device without --force; import: at least one user failed)
  6  no such device or app password (device rename/remove, app-password revoke)
  7  the device name is already in use (device add, enroll --device, device rename)";

/// Manage TOTP second factors with otpd.
#[derive(Debug, Parser)]
#[command(name = "otpctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The daemon's Unix socket.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "OTPD_SOCKET",
        default_value = DEFAULT_SOCKET
    )]
    pub socket: PathBuf,

    /// Print machine-readable JSON instead of text (never prompts). The
    /// result goes to stdout; an error goes to stderr as one line
    /// {"error":{"code","message","exit_code"}} (code: e.g. "not_found",
    /// "permission_denied", "unreachable"), a warning as
    /// {"warning":{"message"}}.
    #[arg(long, global = true)]
    pub json: bool,

    /// Self-service (a plain user changing their own account): a current
    /// code from one of your devices, or a backup code, to prove it is you
    /// (asked on the terminal when needed and not given). It is spent like
    /// a login code; a wrong one counts as a failed login. Ignored for root
    /// and the admin group.
    #[arg(long, global = true, value_name = "CODE")]
    pub code: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start an enrollment: show the QR code and key for an authenticator app.
    ///
    /// On a terminal (without --json), then asks for a code from the app,
    /// confirms the enrollment and shows the backup codes. Once confirmed,
    /// the new device replaces every device of the user and new backup
    /// codes are issued; to add a device beside the others, use
    /// `otpctl device add`. A wrong code may be typed again (3 tries);
    /// then `otpctl confirm USER CODE` finishes the pending enrollment.
    ///
    /// Re-enrolling says which devices the user has, and keeps the
    /// algorithm, digits, period and issuer of the first one unless given.
    Enroll(EnrollArgs),
    /// Confirm a pending enrollment (or device add) with a code from the app.
    ///
    /// Shows the new backup codes; a device added beside others keeps the
    /// backup codes as they are.
    Confirm(UserCodeArgs),
    /// Manage a user's devices (authenticator apps or tokens).
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Manage a user's app passwords (for clients that cannot ask for a code).
    #[command(subcommand)]
    AppPassword(AppPasswordCommand),
    /// Re-seal every stored record under a new master key.
    ///
    /// otpd creates a new master key and re-seals every user's record (and
    /// the replay-watermark journal) under it while it keeps serving. The
    /// old key stays usable until every record is re-sealed, so nothing is
    /// lost if otpd or the machine stops in the middle: run `otpctl rekey`
    /// again and it finishes the rotation. Root only.
    Rekey,
    /// Show the state of one user, or of every user.
    ///
    /// STATE shows `+no-recovery` for users with a single device and no
    /// backup code left (losing the device locks them out), and, for one
    /// user, `+must-enroll` when the enforcement policy requires a second
    /// factor they do not have.
    Status {
        /// The login name; all users when omitted (your own account when
        /// you may not list all users).
        user: Option<String>,
        /// List the users the enforcement policy ([enforcement] in
        /// otpd.toml) requires a second factor of who have no active
        /// device, with the policy's deadline.
        #[arg(long, conflicts_with_all = ["user", "locked", "pending", "low_backup_codes", "no_recovery"])]
        must_enroll: bool,
        #[command(flatten)]
        filters: StatusFilters,
        #[command(flatten)]
        all: AllAccounts,
    },
    /// Issue a new set of backup codes; every earlier code stops working.
    BackupCodes(OwnUserArgs),
    /// Clear a lockout, the throttle and the failure counters.
    Unlock(UserArgs),
    /// Remove the user's secret, pending enrollment, backup codes and counters.
    Reset(UserArgs),
    /// Check a TOTP or backup code (a used code is consumed). Exits 0 if accepted, 1 if not.
    Verify(VerifyArgs),
    /// Import devices from other tools (users keep the secret in their app).
    #[command(subcommand)]
    Import(ImportCommand),
    /// Encrypted backups of the whole store, with a passphrase otpd never
    /// sees (root only).
    ///
    /// `backup init` sets the passphrase once; otpd keeps only the public
    /// half of the key derived from it and writes age-encrypted backups on
    /// its own into [backup] directory (after changes, and on `backup
    /// now`). See the README, "Backup and restore".
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Restore users from an encrypted backup (root only).
    ///
    /// Asks for the backup's passphrase (or reads --passphrase-file) and
    /// opens the file here; shows what it holds (date, host, users,
    /// devices, app passwords, backup codes) and asks before restoring
    /// (--yes: without asking; --dry-run: only show). Each user of the
    /// backup is restored in one atomic step, replacing a stored record of
    /// the same user, but replay watermarks never move backwards: a code
    /// used after the backup stays used (the count is reported). Users
    /// otpd has that the backup does not are left alone and listed. A
    /// wrong passphrase restores nothing. Exits 0 if every user was
    /// restored, 1 on a wrong passphrase, 5 if any user failed.
    Restore(RestoreArgs),
    /// Export one device of a user (its key), to move it to a new phone or
    /// to another otpd. Root only; otpd audits who exported whose device.
    ///
    /// Exactly one output: the QR code on this terminal (default), a PNG
    /// of it (--png), the otpauth URI as text (--uri), or a file encrypted
    /// with a passphrase (--encrypted: the age format, which
    /// `otpctl import otpd-export` reads back and stock `age -d` opens).
    /// Whoever sees the key can compute the user's codes for as long as
    /// the device is enrolled: the URI, and a QR code written into a pipe
    /// or a file, need --plaintext-secret (and are marked with a warning);
    /// delete a PNG once it is scanned. The passphrase of --encrypted is
    /// asked twice on the terminal (or read from --passphrase-file) and
    /// must be strong: the file can be attacked offline.
    Export(ExportArgs),
    /// Check the installation: PAM stacks, sshd, otpd's config, state
    /// directory, sockets and users. Needs no running daemon.
    ///
    /// Reads every file of --pam-dir (following @include, include and
    /// substack) and judges each stack that runs pam_otpd; reads sshd's
    /// effective settings with `sshd -T -f --sshd-config` (the file itself
    /// when sshd is not installed) when sshd's stack runs pam_otpd; checks
    /// otpd's config (and `otpd --check-config`), the modes and owners of
    /// the state directory, master key and sockets; asks the daemon (on
    /// --socket) for its users and reports records of accounts that no
    /// longer exist and users the enforcement policy requires who have not
    /// enrolled. Each finding names the file, the line and the fix (with
    /// the README section). Exits 0 when clean, 1 with findings (errors
    /// or warnings; --ignore ID accepts one on purpose), 2 on a usage
    /// error, 5 when the PAM directory cannot be read. Run it as root.
    Doctor(DoctorArgs),
    /// Write the man pages or the shell completions (for packagers; `make
    /// install` and `make deb` run it). Hidden from --help, the man pages
    /// and the completions.
    #[command(subcommand, hide = true)]
    Generate(GenerateCommand),
}

/// `otpctl generate`: files made from these clap definitions, so that they
/// never drift from `--help`.
#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Write otpctl.8, and otpctl-COMMAND.8 for each command, into DIR.
    Man {
        /// An existing directory; files of the same names are replaced.
        dir: PathBuf,
    },
    /// Write the completion script for SHELL into DIR, under the name
    /// that SHELL looks for (bash: otpctl, zsh: _otpctl, fish: otpctl.fish).
    Completions {
        shell: CompletionShell,
        /// An existing directory; a file of the same name is replaced.
        dir: PathBuf,
    },
}

/// The shells `otpctl generate completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// `otpctl status` filters: otpd applies them (a page at a time), so only
/// the matching users cross the socket. Several: users matching all.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct StatusFilters {
    /// Only users locked out (from the local machine and known hosts, or
    /// from other hosts).
    #[arg(long, conflicts_with = "user")]
    pub locked: bool,
    /// Only users whose enrollment (or re-enrollment) awaits confirmation.
    #[arg(long, conflicts_with = "user")]
    pub pending: bool,
    /// Only enrolled users with at most N backup codes left (N: otpd's
    /// [backup_codes] low_warning, 3 by default, when not given).
    #[arg(
        long,
        value_name = "N",
        num_args = 0..=1,
        require_equals = true,
        conflicts_with = "user"
    )]
    pub low_backup_codes: Option<Option<u32>>,
    /// Only users without a recovery path (a single device and no
    /// backup code left).
    #[arg(long, conflicts_with = "user")]
    pub no_recovery: bool,
}

/// `otpctl status --all`: every login account, enrolled or not.
#[derive(Debug, Clone, Default, Args)]
pub struct AllAccounts {
    /// Every login account of the passwd file (a uid from otpd's
    /// [enforcement] min_uid, not nobody, a login shell) with its state,
    /// never-enrolled ones included, and every user otpd knows (directory
    /// users appear once otpd knows them).
    #[arg(
        long,
        conflicts_with_all = ["user", "must_enroll", "locked", "pending", "low_backup_codes", "no_recovery"]
    )]
    pub all: bool,
    /// The passwd file of --all [default: /etc/passwd].
    #[arg(long, value_name = "FILE", requires = "all")]
    pub passwd: Option<PathBuf>,
    /// otpd's config file, for --all's min_uid [default:
    /// /etc/otpd/otpd.toml when it exists, else min_uid 1000].
    #[arg(long, value_name = "FILE", requires = "all")]
    pub config: Option<PathBuf>,
}

impl StatusFilters {
    /// No filter given.
    pub fn is_empty(&self) -> bool {
        let StatusFilters {
            locked,
            pending,
            low_backup_codes,
            no_recovery,
        } = self;
        !locked && !pending && low_backup_codes.is_none() && !no_recovery
    }
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The PAM configuration directory.
    #[arg(long, value_name = "DIR", default_value = "/etc/pam.d")]
    pub pam_dir: PathBuf,
    /// sshd's config file.
    #[arg(long, value_name = "FILE", default_value = "/etc/ssh/sshd_config")]
    pub sshd_config: PathBuf,
    /// The sshd binary (looked for in $PATH and the sbin directories).
    #[arg(long, value_name = "PROGRAM", default_value = "sshd")]
    pub sshd: PathBuf,
    /// otpd's config file [default: /etc/otpd/otpd.toml, when it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The otpd binary, for `otpd --check-config`.
    #[arg(long, value_name = "PROGRAM", default_value = "otpd")]
    pub otpd: PathBuf,
    /// otpd's state directory [default: the config's state_dir, else
    /// /var/lib/otpd].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Accept the findings of this id (e.g. requisite); repeatable.
    #[arg(long, value_name = "ID")]
    pub ignore: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UserArgs {
    /// The login name.
    pub user: String,
}

/// A user who may also be the caller (self-service).
#[derive(Debug, Args)]
pub struct OwnUserArgs {
    /// The login name [default: you].
    #[arg(default_value_t = crate::proof::own_name(), hide_default_value = true)]
    pub user: String,
}

#[derive(Debug, Args)]
pub struct UserCodeArgs {
    /// The login name.
    pub user: String,
    /// The code shown in the authenticator app.
    pub code: String,
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The login name [default: you].
    #[arg(default_value_t = crate::proof::own_name(), hide_default_value = true)]
    pub user: String,
    /// The name of the device (letters, digits, '-', '_', '.'; up to 32).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_DEVICE)]
    pub device: String,
    /// Enroll USER even if the name service does not know the account
    /// (one to be created later, or a directory that does not answer).
    /// Names no account can have are refused all the same.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub totp: TotpOptions,
}

/// The name `enroll` gives the device unless `--device` says otherwise.
pub const DEFAULT_DEVICE: &str = "default";

/// How the secret of a new device is made and shown (enroll, device add).
#[derive(Debug, Args)]
pub struct TotpOptions {
    /// The issuer shown in the app [default: the daemon's, usually the host name].
    #[arg(long)]
    pub issuer: Option<String>,
    /// The HMAC algorithm [default: the daemon's].
    #[arg(long, value_enum)]
    pub algorithm: Option<Algorithm>,
    /// The number of digits per code [default: the daemon's].
    #[arg(long, value_enum)]
    pub digits: Option<Digits>,
    /// Seconds per code [default: the daemon's].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..))]
    pub period: Option<u32>,
    /// Also write the QR code to this PNG file (mode 0600; never overwritten).
    /// It holds the secret: delete it once scanned.
    #[arg(long, value_name = "FILE")]
    pub qr_png: Option<PathBuf>,
    /// A counter-based (HOTP) device: a hardware OATH token (YubiKey
    /// OATH-HOTP, Feitian) or an app set to counters; --period is ignored.
    #[arg(long)]
    pub hotp: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Enroll a further device beside the active ones (QR code, key, confirm).
    ///
    /// Works like `otpctl enroll`: the new device stays pending, and logins
    /// are unchanged, until it is confirmed with a code from it. Then it
    /// works beside the other devices; the backup codes stay as they are.
    #[command(allow_missing_positional = true)]
    Add(DeviceAddArgs),
    /// List a user's devices: parameters, enrolled at, last used, clock skew.
    List(OwnUserArgs),
    /// Rename a device (active or pending).
    Rename(DeviceRenameArgs),
    /// Remove a device (active or pending): its codes stop working at once.
    ///
    /// Removing the user's last active device asks for --force: the user is
    /// then no longer enrolled, so PAM lines with `nullok` let them in with
    /// the password alone and lines without it refuse them.
    Remove(DeviceRemoveArgs),
}

#[derive(Debug, Args)]
pub struct DeviceAddArgs {
    /// The login name [default: you].
    #[arg(default_value_t = crate::proof::own_name(), hide_default_value = true)]
    pub user: String,
    /// The name of the new device (letters, digits, '-', '_', '.'; up to 32).
    pub name: String,
    #[command(flatten)]
    pub totp: TotpOptions,
}

#[derive(Debug, Args)]
pub struct DeviceRenameArgs {
    /// The login name.
    pub user: String,
    /// The device's name now.
    pub old: String,
    /// Its new name.
    pub new: String,
}

#[derive(Debug, Args)]
pub struct DeviceRemoveArgs {
    /// The login name.
    pub user: String,
    /// The device to remove.
    pub name: String,
    /// Remove it even if it is the user's last active device.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum AppPasswordCommand {
    /// Issue an app password for one PAM service; it is shown only once.
    ///
    /// It works only on that PAM service, and only where its pam_otpd line
    /// has the `app_passwords` option, typed in place of password + code.
    Add(AppPasswordAddArgs),
    /// List a user's app passwords (never the passwords themselves).
    List(OwnUserArgs),
    /// Revoke an app password at once.
    #[command(allow_missing_positional = true)]
    Revoke(AppPasswordRevokeArgs),
}

#[derive(Debug, Args)]
pub struct AppPasswordAddArgs {
    /// The login name [default: you].
    #[arg(default_value_t = crate::proof::own_name(), hide_default_value = true)]
    pub user: String,
    /// The PAM service it works on (e.g. dovecot).
    #[arg(long, value_name = "SERVICE")]
    pub service: String,
    /// A note for the list, e.g. "Thunderbird laptop".
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub label: String,
    /// It stops working after this long (e.g. 90d, 12h, "1y 6months");
    /// never when omitted.
    #[arg(long, value_name = "DURATION", value_parser = parse_expiry)]
    pub expires: Option<u64>,
}

#[derive(Debug, Args)]
pub struct AppPasswordRevokeArgs {
    /// The login name [default: you].
    #[arg(default_value_t = crate::proof::own_name(), hide_default_value = true)]
    pub user: String,
    /// The app password's id (shown by `otpctl app-password list`).
    pub id: String,
}

/// A humantime duration ("90d", "12h 30m") as whole seconds, at least one;
/// a fraction of a second is rounded up.
fn parse_expiry(text: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    if secs == 0 {
        return Err("the expiry must be at least 1s".to_owned());
    }
    Ok(secs)
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The login name.
    pub user: String,
    /// A TOTP code or a backup code.
    pub code: String,
    /// The service name recorded in the audit log.
    #[arg(long, value_name = "NAME", default_value = "otpctl")]
    pub service: String,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import google-authenticator-libpam's ~/.google_authenticator files.
    ///
    /// Each user's key, time step (or HOTP counter), replay state
    /// (DISALLOW_REUSE) and scratch codes (which become the backup codes,
    /// stored hashed) become one active device, in one atomic step per
    /// user. WINDOW_SIZE and RATE_LIMIT are reported, not taken over: otpd
    /// applies its own window and limits. A user who is enrolled already is
    /// skipped unless --replace. Re-running is harmless. The report has one line per user: imported, skipped or
    /// failed with the reason (file and line for a malformed file); the key
    /// and the codes are never shown. Exits 0 if no user failed, 5 if any
    /// did.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["user", "all_homes"])))]
    GoogleAuthenticator(GoogleAuthenticatorArgs),
    /// Import pam_oath's users file (/etc/users.oath).
    ///
    /// Every line (HOTP, HOTP/E, HOTP/T30, HOTP/T60, with /6 or /8 digits)
    /// becomes an active device of its user, in one atomic step per user:
    /// time tokens as TOTP devices, counter tokens (pam_oath's counter,
    /// YubiKey or Feitian OATH-HOTP) as HOTP devices at their next counter.
    /// A user with several lines (several tokens) gets all of them, named
    /// NAME, NAME-2, NAME-3... (--device), in one atomic step: all or none.
    /// Users with a PIN are reported and skipped: otpd has no PIN (the
    /// account password is the first factor); remove the PIN from the line
    /// or enroll them. A malformed line is reported with its number and
    /// imports nothing (nor any other token of its user); the other users
    /// still import. A user who is enrolled already is skipped unless
    /// --replace; re-running is harmless. Users go to otpd in batches of
    /// 1000, each batch written to disk with one sync: a million users
    /// import in minutes. The key is never shown. Exits 0 if no line
    /// failed, 5 if any did.
    PamOath(PamOathArgs),
    /// Import otpauth:// URIs (one per line; `-` reads standard input),
    /// and Google Authenticator's transfer export (otpauth-migration://
    /// lines, or --image pictures of its QR codes).
    ///
    /// Each URI (otpauth://totp/... or otpauth://hotp/..., as authenticator
    /// apps export them) becomes an active device: of --user, or of the
    /// user --map names for the URI's account. One device per user and
    /// run; further URIs of a user are reported. Blank lines and lines
    /// starting with # are skipped. A malformed URI is reported with its
    /// line number and imports nothing. The key is never shown. Exits 0 if
    /// no line failed, 5 if any did.
    ///
    /// An otpauth-migration:// URI (Google Authenticator: Transfer
    /// accounts, Export accounts) holds one or more accounts; an account
    /// otpd cannot use (MD5, 7 digits) is reported and the others import.
    /// An export of several QR codes must be given whole (every
    /// otpauth-migration line or picture): if one is missing, nothing is
    /// imported and the missing numbers are named. --user takes an input
    /// of one account; with more, --map says whose each one is.
    #[command(group(clap::ArgGroup::new("whose").required(true).args(["user", "map"])))]
    Otpauth(OtpauthArgs),
    /// Import the file of `otpctl export --encrypted` (from this or another
    /// otpd).
    ///
    /// Asks for the file's passphrase (or reads --passphrase-file),
    /// decrypts it, and imports its devices for the user it names (or
    /// --user), all in one atomic step, with their counters and replay
    /// state. A user who is enrolled already is skipped unless --replace.
    /// A wrong passphrase imports nothing. The key is never shown. Exits 0
    /// if the user was imported or skipped, 5 if the import failed.
    OtpdExport(OtpdExportArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("output").args(["png", "uri", "encrypted"])))]
pub struct ExportArgs {
    /// The login name.
    pub user: String,
    /// The device to export [default: the user's first active device].
    #[arg(long, value_name = "NAME")]
    pub device: Option<String>,
    /// Write the QR code to this PNG file (mode 0600; never overwritten).
    /// It holds the key: delete it once scanned.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Print the otpauth:// URI (holds the key; needs --plaintext-secret).
    #[arg(long)]
    pub uri: bool,
    /// Write a passphrase-encrypted file (age format; mode 0600; never
    /// overwritten), for `otpctl import otpd-export` or `age -d`.
    #[arg(long, value_name = "FILE")]
    pub encrypted: Option<PathBuf>,
    /// Allow the key out as plain text: --uri, or the QR code into a pipe
    /// or file. A warning on stderr says that the output holds it.
    #[arg(long)]
    pub plaintext_secret: bool,
    /// Read the passphrase of --encrypted from the first line of this file
    /// (only its owner may read it) instead of the terminal.
    #[arg(long, value_name = "FILE", requires = "encrypted")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct OtpdExportArgs {
    /// The encrypted file written by `otpctl export --encrypted`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Import for this login name [default: the user named in the file].
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Read the passphrase from the first line of this file (only its
    /// owner may read it) instead of the terminal.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Replace the devices of the user if they are enrolled.
    #[arg(long)]
    pub replace: bool,
    /// Show what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct OtpauthArgs {
    /// The file of URIs, `-` for standard input.
    #[arg(value_name = "FILE", required_unless_present = "image")]
    pub file: Option<PathBuf>,
    /// A screenshot or photo (PNG or JPEG) of QR codes to import, e.g. of
    /// Google Authenticator's export; repeat it for an export of several
    /// QR codes. The picture holds the keys: delete it afterwards.
    #[arg(long, value_name = "FILE")]
    pub image: Vec<PathBuf>,
    /// Import for this login name (an input of one account).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// A file of `ACCOUNT USER` lines: the URI whose account (the label
    /// after `issuer:`) is ACCOUNT goes to USER; ACCOUNT may also be
    /// `ISSUER:ACCOUNT`, to tell apart accounts of the same name.
    #[arg(long, value_name = "FILE", conflicts_with = "user")]
    pub map: Option<PathBuf>,
    /// The name of the imported devices.
    #[arg(long, value_name = "NAME", default_value = "imported")]
    pub device: String,
    /// Replace the devices of users who are enrolled.
    #[arg(long)]
    pub replace: bool,
    /// Show what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct PamOathArgs {
    /// The users file [default: /etc/users.oath].
    #[arg(value_name = "FILE", default_value = "/etc/users.oath")]
    pub file: PathBuf,
    /// The name of the imported devices (a user's further tokens: NAME-2,
    /// NAME-3...).
    #[arg(long, value_name = "NAME", default_value = "oath-token")]
    pub device: String,
    /// Report only the lines that were skipped or failed, and the totals
    /// (for large files).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Replace the devices of users who are enrolled.
    #[arg(long)]
    pub replace: bool,
    /// Show what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct GoogleAuthenticatorArgs {
    /// Import FILE for this login name.
    #[arg(long, value_name = "USER", requires = "file")]
    pub user: Option<String>,
    /// The user's google-authenticator file (with --user).
    #[arg(value_name = "FILE", requires = "user")]
    pub file: Option<PathBuf>,
    /// Import every account of the passwd file that has a file (a file must
    /// belong to its account).
    #[arg(long, conflicts_with_all = ["user", "file"])]
    pub all_homes: bool,
    /// Where each account's file is (with --all-homes), like
    /// pam_google_authenticator's secret= option: ${USER} and ${HOME} are
    /// replaced, a leading ~ is the home [default: ${HOME}/.google_authenticator].
    #[arg(long, value_name = "TEMPLATE", conflicts_with = "user")]
    pub path_template: Option<String>,
    /// The passwd file walked by --all-homes (accounts only in LDAP or SSSD
    /// need --user) [default: /etc/passwd].
    #[arg(long, value_name = "FILE", conflicts_with = "user")]
    pub passwd: Option<PathBuf>,
    /// The name of the imported device.
    #[arg(long, value_name = "NAME", default_value = "google-authenticator")]
    pub device: String,
    /// Replace the devices (and backup codes) of users who are enrolled.
    #[arg(long)]
    pub replace: bool,
    /// Show what would happen; change nothing, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Move each imported file out of the home into --originals-dir (as
    /// USER.google_authenticator, mode 0600, never overwriting), so that no
    /// plaintext key stays in a home directory.
    #[arg(long)]
    pub remove_originals: bool,
    /// Where --remove-originals puts the files (created mode 0700; must be
    /// root's and closed to others) [default: /var/lib/otpd/imported].
    #[arg(long, value_name = "DIR", requires = "remove_originals")]
    pub originals_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Digits {
    #[value(name = "6")]
    Six,
    #[value(name = "8")]
    Eight,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_enroll_options() {
        let cli = Cli::try_parse_from([
            "otpctl",
            "--socket",
            "/tmp/s",
            "enroll",
            "alice",
            "--algorithm",
            "sha256",
            "--digits",
            "8",
            "--period",
            "60",
            "--json",
        ]);
        let cli = match cli {
            Ok(cli) => cli,
            Err(e) => panic!("{e}"),
        };
        assert!(cli.json);
        assert_eq!(cli.socket, PathBuf::from("/tmp/s"));
        let Command::Enroll(args) = cli.command else {
            panic!("not enroll")
        };
        assert_eq!(args.totp.algorithm, Some(Algorithm::Sha256));
        assert_eq!(args.totp.digits, Some(Digits::Eight));
        assert_eq!(args.totp.period, Some(60));
        assert_eq!(args.device, "default");
    }

    fn parse(args: &[&str]) -> Command {
        match Cli::try_parse_from(std::iter::once("otpctl").chain(args.iter().copied())) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn parses_import_google_authenticator() {
        let Command::Import(ImportCommand::GoogleAuthenticator(a)) = parse(&[
            "import",
            "google-authenticator",
            "--user",
            "alice",
            "/home/alice/.google_authenticator",
            "--dry-run",
        ]) else {
            panic!("not import")
        };
        assert_eq!(a.user.as_deref(), Some("alice"));
        assert!(a.dry_run && !a.all_homes && !a.replace);
        assert_eq!(a.device, "google-authenticator");
        let Command::Import(ImportCommand::GoogleAuthenticator(a)) = parse(&[
            "import",
            "google-authenticator",
            "--all-homes",
            "--path-template",
            "/var/ga/${USER}",
            "--remove-originals",
            "--originals-dir",
            "/root/ga",
        ]) else {
            panic!("not import")
        };
        assert!(a.all_homes && a.remove_originals && a.user.is_none());
        for bad in [
            &["import", "google-authenticator"][..],
            &["import", "google-authenticator", "--user", "alice"],
            &["import", "google-authenticator", "/f"],
            &[
                "import",
                "google-authenticator",
                "--all-homes",
                "--user",
                "a",
                "/f",
            ],
            &[
                "import",
                "google-authenticator",
                "--user",
                "a",
                "/f",
                "--path-template",
                "x",
            ],
            &[
                "import",
                "google-authenticator",
                "--user",
                "a",
                "/f",
                "--passwd",
                "/p",
            ],
            &[
                "import",
                "google-authenticator",
                "--all-homes",
                "--originals-dir",
                "/d",
            ],
        ] {
            let args = std::iter::once("otpctl").chain(bad.iter().copied());
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_device_commands() {
        let Command::Enroll(args) = parse(&["enroll", "alice", "--device", "phone"]) else {
            panic!("not enroll")
        };
        assert_eq!(args.device, "phone");
        let Command::Device(DeviceCommand::Add(args)) = parse(&[
            "device",
            "add",
            "alice",
            "tablet",
            "--digits",
            "8",
            "--qr-png",
            "/tmp/q.png",
        ]) else {
            panic!("not device add")
        };
        assert_eq!(
            (args.user.as_str(), args.name.as_str()),
            ("alice", "tablet")
        );
        assert_eq!(args.totp.digits, Some(Digits::Eight));
        assert_eq!(args.totp.qr_png, Some(PathBuf::from("/tmp/q.png")));
        let Command::Device(DeviceCommand::Remove(args)) =
            parse(&["device", "remove", "alice", "phone"])
        else {
            panic!("not device remove")
        };
        assert!(!args.force);
        let Command::Device(DeviceCommand::Remove(args)) =
            parse(&["device", "remove", "alice", "phone", "--force"])
        else {
            panic!("not device remove")
        };
        assert!(args.force);
        let Command::Device(DeviceCommand::Rename(args)) =
            parse(&["device", "rename", "alice", "phone", "old-phone"])
        else {
            panic!("not device rename")
        };
        assert_eq!(
            (args.old.as_str(), args.new.as_str()),
            ("phone", "old-phone")
        );
        assert!(matches!(
            parse(&["device", "list", "alice"]),
            Command::Device(DeviceCommand::List(_))
        ));
        assert!(Cli::try_parse_from(["otpctl", "device", "rename", "alice", "x"]).is_err());
    }

    #[test]
    fn parses_app_password_commands() {
        let Command::AppPassword(AppPasswordCommand::Add(args)) = parse(&[
            "app-password",
            "add",
            "alice",
            "--service",
            "dovecot",
            "--label",
            "Thunderbird laptop",
            "--expires",
            "90d",
        ]) else {
            panic!("not app-password add")
        };
        assert_eq!(args.service, "dovecot");
        assert_eq!(args.label, "Thunderbird laptop");
        assert_eq!(args.expires, Some(90 * 86_400));
        let Command::AppPassword(AppPasswordCommand::Add(args)) =
            parse(&["app-password", "add", "alice", "--service", "su"])
        else {
            panic!("not app-password add")
        };
        assert_eq!((args.label.as_str(), args.expires), ("", None));
        // The service is required; the expiry is a positive duration.
        assert!(Cli::try_parse_from(["otpctl", "app-password", "add", "alice"]).is_err());
        for bad in ["0s", "soon", "-5d", ""] {
            assert!(
                Cli::try_parse_from([
                    "otpctl",
                    "app-password",
                    "add",
                    "a",
                    "--service",
                    "s",
                    "--expires",
                    bad
                ])
                .is_err(),
                "{bad}"
            );
        }
        assert_eq!(parse_expiry("1h 30m"), Ok(5_400));
        assert_eq!(parse_expiry("1500ms"), Ok(2));
        let Command::AppPassword(AppPasswordCommand::Revoke(args)) =
            parse(&["app-password", "revoke", "alice", "k3x9"])
        else {
            panic!("not app-password revoke")
        };
        assert_eq!(args.id, "k3x9");
        assert!(matches!(parse(&["rekey"]), Command::Rekey));
    }

    #[test]
    fn rejects_bad_digits_and_period() {
        assert!(Cli::try_parse_from(["otpctl", "enroll", "a", "--digits", "7"]).is_err());
        assert!(Cli::try_parse_from(["otpctl", "enroll", "a", "--period", "0"]).is_err());
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"));
        assert!(help.contains("3  otpd unreachable"));
        assert!(help.contains("6  no such device or app password"));
        assert!(help.contains("7  the device name is already in use"));
    }

    #[test]
    fn rekey_help_explains_the_rotation() {
        let mut cmd = Cli::command();
        let rekey = cmd
            .find_subcommand_mut("rekey")
            .map(|c| c.render_long_help().to_string());
        let help = rekey.unwrap_or_default();
        assert!(help.contains("new master key"), "{help}");
        assert!(
            help.contains("old key stays usable until every record is re-sealed"),
            "{help}"
        );
        assert!(
            help.contains("again and it finishes the rotation"),
            "{help}"
        );
    }
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Set the backup passphrase (once) and start automatic backups.
    ///
    /// Asks for a new passphrase twice (or reads --passphrase-file); it must
    /// be long and hard to guess (at least 20 characters, 10^16 guesses:
    /// a backup can be attacked offline). otpctl derives an age key pair
    /// from it (Argon2id, 256 MiB) and gives otpd the public half; neither
    /// otpd nor otpctl stores the passphrase.
    Init(InitArgs),
    /// Write a backup now.
    Now,
    /// Show the backup key (its public half), the directory, the last
    /// backup and the last error.
    Status,
    /// Print the age identity (secret key) of a backup file, for stock
    /// `age -d -i` in a disaster.
    ///
    /// Asks for the passphrase; needs no running otpd. The output is the
    /// secret key of every backup under this passphrase: write it to a
    /// private file only, and delete it after use.
    Identity(BackupIdentityArgs),
    /// Change the backup passphrase and re-encrypt every backup under it.
    ///
    /// Asks for the current passphrase (it must give the current key),
    /// then the new one twice. otpd writes backups only under the new one
    /// from then on; every backup file in the directory that the old
    /// passphrase opens is re-encrypted under the new one, each replaced
    /// atomically, and the count is reported.
    ChangePassphrase(ChangePassphraseArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Read the passphrase from the first line of FILE (readable by its
    /// owner only) instead of the terminal.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// TESTS ONLY: derive the key with a cheap Argon2id (64 KiB, 1 pass),
    /// which makes the passphrase far easier to guess offline.
    #[arg(long, hide = true)]
    pub insecure_test_kdf: bool,
}

#[derive(Debug, Args)]
pub struct BackupIdentityArgs {
    /// A backup file (otpd-backup-*.age).
    pub file: PathBuf,
    /// Read the passphrase from the first line of FILE (readable by its
    /// owner only) instead of the terminal.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ChangePassphraseArgs {
    /// Read the current passphrase from the first line of FILE (readable
    /// by its owner only) instead of the terminal.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Read the new passphrase from the first line of FILE (readable by
    /// its owner only) instead of the terminal.
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    /// TESTS ONLY: see `backup init --insecure-test-kdf`.
    #[arg(long, hide = true)]
    pub insecure_test_kdf: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (otpd-backup-*.age).
    pub file: PathBuf,
    /// Read the passphrase from the first line of FILE (readable by its
    /// owner only) instead of the terminal.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Restore without asking for confirmation (scripts).
    #[arg(long)]
    pub yes: bool,
    /// Open the backup and show what would be restored; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

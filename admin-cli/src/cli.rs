//! The command line: clap types only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Where otpd listens unless `--socket` or `OTPD_SOCKET` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/otpd/otpd.sock";

const AFTER_HELP: &str = "\
Exit codes:
  0  success (verify: code accepted)
  1  code rejected (verify rejected, locked or throttled; confirm with a wrong code)
  2  usage error or invalid argument
  3  otpd unreachable
  4  permission denied
  5  other error (not found, failed precondition, data loss, unavailable, internal, local I/O)";

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

    /// Print machine-readable JSON instead of text (never prompts).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start an enrollment: show the QR code and key for an authenticator app.
    ///
    /// On a terminal (without --json), then asks for a code from the app,
    /// confirms the enrollment and shows the backup codes.
    Enroll(EnrollArgs),
    /// Confirm a pending enrollment with a code from the app; shows the backup codes.
    Confirm(UserCodeArgs),
    /// Show the state of one user, or of every user.
    Status {
        /// The login name; all users when omitted.
        user: Option<String>,
    },
    /// Issue a new set of backup codes; every earlier code stops working.
    BackupCodes(UserArgs),
    /// Clear a lockout, the throttle and the failure counters.
    Unlock(UserArgs),
    /// Remove the user's secret, pending enrollment, backup codes and counters.
    Reset(UserArgs),
    /// Check a TOTP or backup code (a used code is consumed). Exits 0 if accepted, 1 if not.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct UserArgs {
    /// The login name.
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
    /// The login name.
    pub user: String,
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
        assert_eq!(args.algorithm, Some(Algorithm::Sha256));
        assert_eq!(args.digits, Some(Digits::Eight));
        assert_eq!(args.period, Some(60));
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
    }
}

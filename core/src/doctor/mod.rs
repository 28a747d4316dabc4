//! `otpctl doctor`'s analysis: the traps of the README ("Protect SSH",
//! "Traps", "sudo, su and the console", "pam_otpd(8)") found in the texts
//! of PAM files and of sshd's configuration, as pure functions of those
//! texts. otpctl reads the files, runs `sshd -T` and looks at the state
//! directory and the daemon; this module only parses and judges.
//!
//! - [`pam`]: the PAM file parser (`@include`, `include`, `substack`,
//!   `[value=action ...]` controls) and the checks of the stacks that reach
//!   pam_otpd.
//! - [`sshd`]: `sshd -T` output and `sshd_config` files, and the checks of
//!   the settings the code prompt depends on.

pub mod pam;
pub mod sshd;

use serde::Serialize;

/// How bad a finding is. Both make `otpctl doctor` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The second factor can be skipped, or logins fail: fix it now.
    Error,
    /// A weakening or a setup the README advises against.
    Warning,
}

/// One problem: where it is, what it does and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// A stable name for the trap (`password-authentication`, `requisite`...).
    pub id: &'static str,
    pub severity: Severity,
    /// The file to edit (a PAM file, the sshd config, the otpd config, the
    /// state directory's key...) or the daemon's socket.
    pub file: String,
    /// The line (from 1) in `file`, when one line is to blame.
    pub line: Option<u32>,
    /// What is wrong, in one sentence.
    pub what: String,
    /// What to do, with the README section that explains it.
    pub fix: String,
}

impl Finding {
    pub fn error(
        id: &'static str,
        file: &str,
        line: Option<u32>,
        what: String,
        fix: String,
    ) -> Self {
        Finding {
            id,
            severity: Severity::Error,
            file: file.to_owned(),
            line,
            what,
            fix,
        }
    }

    pub fn warning(
        id: &'static str,
        file: &str,
        line: Option<u32>,
        what: String,
        fix: String,
    ) -> Self {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(id, file, line, what, fix)
        }
    }
}

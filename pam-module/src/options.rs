//! The module arguments from the PAM configuration line.
//!
//! Parsing never fails: an unknown or malformed argument is reported as an
//! [`OptionWarning`] (which the caller logs) and otherwise ignored, so a typo
//! in `/etc/pam.d` cannot crash the host process or disable the module.

use std::path::PathBuf;
use std::time::Duration;

/// Where otpd listens for PAM unless `socket=` says otherwise: the
/// root-only socket, which no local user can connect to or fill.
pub const DEFAULT_SOCKET: &str = "/run/otpd/pam.sock";
/// otpd's public socket: used when `socket=` is not given and
/// [`DEFAULT_SOCKET`] does not exist (an older otpd), or cannot be opened
/// by a caller that is not root (a screen locker running as the user).
pub const PUBLIC_SOCKET: &str = "/run/otpd/otpd.sock";
/// Default for `timeout_ms=`.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;
/// Largest accepted `timeout_ms=` (one minute).
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Prompt for the code alone.
pub const DEFAULT_PROMPT: &str = "Verification code: ";
/// Prompt when the password and the code are typed together.
pub const DEFAULT_COMBINED_PROMPT: &str = "Password & verification code: ";
/// Prompt of an `app_passwords_only` line that asks for one password (the
/// account password or an app password).
pub const DEFAULT_PASSWORD_PROMPT: &str = "Password: ";

/// Whether an answer may be an app password (see [`crate::app_password`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AppPasswords {
    /// Never: otpd is told not to accept one. The default.
    #[default]
    Off,
    /// `app_passwords`: an answer with the shape of an app password is
    /// checked as one, instead of the code of this line; anything else
    /// follows the usual flow.
    Accept,
    /// `app_passwords_only`: an answer with the shape of an app password is
    /// checked as one; anything else is not sent to otpd: the module steps
    /// aside (`PAM_IGNORE`) and hands the answer on in `PAM_AUTHTOK`.
    Only,
}

/// What to do when otpd is not running: no socket file, or nobody
/// listening on it. A daemon that is running but busy, slow or failing is
/// never "not running": that always fails closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Refuse the login (`PAM_AUTHINFO_UNAVAIL`). The default.
    #[default]
    Closed,
    /// Step aside (`PAM_IGNORE`): the rest of the stack decides.
    Open,
}

/// Where the code comes from and whether a password travels with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PassMode {
    /// Prompt for the code alone. The default.
    #[default]
    CodeOnly,
    /// Prompt for password and code in one answer, hand the password on in
    /// `PAM_AUTHTOK` (`forward_pass`).
    ForwardPass,
    /// Take password and code from `PAM_AUTHTOK` set by an earlier module;
    /// never prompt (`use_first_pass`).
    UseFirstPass,
    /// Like `UseFirstPass`, but prompt when there is no `PAM_AUTHTOK`
    /// (`try_first_pass`).
    TryFirstPass,
}

impl PassMode {
    /// True when the answer is a password followed by the code.
    #[must_use]
    pub fn is_combined(self) -> bool {
        !matches!(self, Self::CodeOnly)
    }
}

/// The parsed module arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `socket=PATH`: otpd's Unix socket.
    pub socket: PathBuf,
    /// Tried when `socket` does not exist or the caller may not open it;
    /// `None` when `socket=` was given.
    pub fallback_socket: Option<PathBuf>,
    /// `nullok`: users without an active enrollment are not asked.
    pub nullok: bool,
    /// `fail_mode=closed|open`.
    pub fail_mode: FailMode,
    /// `prompt=TEXT`; `None`: the default for the pass mode.
    pub prompt: Option<String>,
    /// `timeout_ms=N`: budget for all exchanges with otpd in one call.
    pub timeout: Duration,
    /// `forward_pass`, `use_first_pass`, `try_first_pass`.
    pub pass_mode: PassMode,
    /// `echo_code`: show the code while it is typed (code-only prompt).
    pub echo_code: bool,
    /// `debug`: more log lines (never a code or password).
    pub debug: bool,
    /// `app_passwords`, `app_passwords_only`.
    pub app_passwords: AppPasswords,
    /// `grace`: before prompting, ask otpd whether its `[grace]` lets this
    /// login in without a code (otpd decides; off there by default).
    pub grace: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            fallback_socket: Some(PathBuf::from(PUBLIC_SOCKET)),
            nullok: false,
            fail_mode: FailMode::Closed,
            prompt: None,
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            pass_mode: PassMode::CodeOnly,
            echo_code: false,
            debug: false,
            app_passwords: AppPasswords::Off,
            grace: false,
        }
    }
}

impl Options {
    /// The prompt to show.
    #[must_use]
    pub fn prompt_text(&self) -> &str {
        match (
            &self.prompt,
            self.pass_mode.is_combined(),
            self.app_passwords,
        ) {
            (Some(p), _, _) => p,
            (None, true, _) => DEFAULT_COMBINED_PROMPT,
            (None, false, AppPasswords::Only) => DEFAULT_PASSWORD_PROMPT,
            (None, false, AppPasswords::Off | AppPasswords::Accept) => DEFAULT_PROMPT,
        }
    }

    /// Whether the prompt echoes. A password is never echoed, so
    /// `echo_code` applies to the code-only prompt, and only where the
    /// answer cannot be an app password.
    #[must_use]
    pub fn prompt_echo(&self) -> bool {
        self.echo_code && !self.pass_mode.is_combined() && self.app_passwords == AppPasswords::Off
    }
}

/// Every option name this module knows (flags, and names of `NAME=VALUE`
/// options). `otpctl doctor` keeps the same list
/// (`otpd_core::doctor::pam::OTPD_OPTIONS`): keep them in step.
pub const OPTION_NAMES: &[&str] = &[
    "socket",
    "nullok",
    "fail_mode",
    "prompt",
    "timeout_ms",
    "forward_pass",
    "use_first_pass",
    "try_first_pass",
    "echo_code",
    "debug",
    "app_passwords",
    "app_passwords_only",
    "grace",
];

/// The known option `arg` (or its name before `=`) is probably a typo of:
/// at most two edits away, or the same but for case, `-` or `_`.
#[must_use]
pub fn did_you_mean(arg: &str) -> Option<&'static str> {
    let name = arg.split_once('=').map_or(arg, |(n, _)| n);
    // No option name is longer than 20 bytes: a long word is no typo of
    // one (and the distance would cost its length times theirs).
    if name.len() > 32 {
        return None;
    }
    let folded = |s: &str| s.to_ascii_lowercase().replace(['-', '_'], "");
    OPTION_NAMES
        .iter()
        .copied()
        .filter(|known| *known != name)
        .map(|known| {
            let d = if folded(known) == folded(name) {
                0
            } else {
                edit_distance(known.as_bytes(), name.as_bytes())
            };
            (d, known)
        })
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known)
}

/// Levenshtein distance (the names are short).
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

fn suggestion(arg: &str) -> String {
    did_you_mean(arg).map_or_else(String::new, |known| format!(" (did you mean {known}?)"))
}

/// Why an argument was ignored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionWarning {
    /// Not an option this module knows.
    #[error("ignoring unknown option {0:?}{hint}", hint = suggestion(.0))]
    Unknown(String),
    /// A known option with an unusable value; the default stays.
    #[error("ignoring option {name}={value:?}: {why}")]
    Malformed {
        /// Option name.
        name: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A flag given a value, e.g. `nullok=yes`.
    #[error("ignoring {0:?}: this option takes no value")]
    UnexpectedValue(String),
    /// An option that has no effect together with another one.
    #[error("option {name} has no effect with {with}: {why}")]
    Ineffective {
        /// The option without effect.
        name: &'static str,
        /// The option that makes it so.
        with: &'static str,
        /// What to do instead.
        why: &'static str,
    },
    /// A second pass mode replaces an earlier one.
    #[error("option {new} overrides the earlier {old}")]
    Overridden {
        /// The option that wins.
        new: &'static str,
        /// The option that is dropped.
        old: &'static str,
    },
}

impl OptionWarning {
    /// An argument that does not do what the admin wrote (an unknown
    /// option, a malformed value: a typo such as `nulok` silently changes
    /// how the line behaves): logged as an error. Options that are
    /// understood but without effect, or overridden, are warnings.
    #[must_use]
    pub fn is_error(&self) -> bool {
        match self {
            Self::Unknown(_) | Self::Malformed { .. } | Self::UnexpectedValue(_) => true,
            Self::Ineffective { .. } | Self::Overridden { .. } => false,
        }
    }
}

fn pass_mode_name(mode: PassMode) -> &'static str {
    match mode {
        PassMode::CodeOnly => "(none)",
        PassMode::ForwardPass => "forward_pass",
        PassMode::UseFirstPass => "use_first_pass",
        PassMode::TryFirstPass => "try_first_pass",
    }
}

fn app_passwords_name(mode: AppPasswords) -> &'static str {
    match mode {
        AppPasswords::Off => "(none)",
        AppPasswords::Accept => "app_passwords",
        AppPasswords::Only => "app_passwords_only",
    }
}

/// Parses the module arguments. Never fails; see [`OptionWarning`].
#[must_use]
pub fn parse<S: AsRef<str>>(args: &[S]) -> (Options, Vec<OptionWarning>) {
    let mut opts = Options::default();
    let mut warnings = Vec::new();

    for arg in args {
        let arg = arg.as_ref();
        let (name, value) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (arg, None),
        };
        let flag = |warnings: &mut Vec<OptionWarning>| -> bool {
            if value.is_some() {
                warnings.push(OptionWarning::UnexpectedValue(arg.to_owned()));
                false
            } else {
                true
            }
        };
        let set_pass_mode = |opts: &mut Options, warnings: &mut Vec<OptionWarning>, new| {
            if opts.pass_mode != PassMode::CodeOnly && opts.pass_mode != new {
                warnings.push(OptionWarning::Overridden {
                    new: pass_mode_name(new),
                    old: pass_mode_name(opts.pass_mode),
                });
            }
            opts.pass_mode = new;
        };

        match (name, value) {
            ("socket", Some(v)) => {
                if v.starts_with('/') {
                    opts.socket = PathBuf::from(v);
                    opts.fallback_socket = None;
                } else {
                    warnings.push(OptionWarning::Malformed {
                        name: "socket",
                        value: v.to_owned(),
                        why: "must be an absolute path",
                    });
                }
            }
            ("fail_mode", Some(v)) => match v {
                "closed" => opts.fail_mode = FailMode::Closed,
                "open" => opts.fail_mode = FailMode::Open,
                _ => warnings.push(OptionWarning::Malformed {
                    name: "fail_mode",
                    value: v.to_owned(),
                    why: "expected closed or open; staying closed",
                }),
            },
            ("prompt", Some(v)) => opts.prompt = Some(v.to_owned()),
            ("timeout_ms", Some(v)) => match v.parse::<u64>() {
                Ok(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => {
                    opts.timeout = Duration::from_millis(ms);
                }
                _ => warnings.push(OptionWarning::Malformed {
                    name: "timeout_ms",
                    value: v.to_owned(),
                    why: "expected milliseconds from 1 to 60000; using 5000",
                }),
            },
            ("nullok", _) => opts.nullok = flag(&mut warnings) || opts.nullok,
            ("echo_code", _) => opts.echo_code = flag(&mut warnings) || opts.echo_code,
            ("debug", _) => opts.debug = flag(&mut warnings) || opts.debug,
            ("grace", _) => opts.grace = flag(&mut warnings) || opts.grace,
            ("app_passwords", _) => {
                if flag(&mut warnings) && opts.app_passwords == AppPasswords::Off {
                    opts.app_passwords = AppPasswords::Accept;
                }
            }
            ("app_passwords_only", _) => {
                if flag(&mut warnings) {
                    opts.app_passwords = AppPasswords::Only;
                }
            }
            ("forward_pass", _) => {
                if flag(&mut warnings) {
                    set_pass_mode(&mut opts, &mut warnings, PassMode::ForwardPass);
                }
            }
            ("use_first_pass", _) => {
                if flag(&mut warnings) {
                    set_pass_mode(&mut opts, &mut warnings, PassMode::UseFirstPass);
                }
            }
            ("try_first_pass", _) => {
                if flag(&mut warnings) {
                    set_pass_mode(&mut opts, &mut warnings, PassMode::TryFirstPass);
                }
            }
            ("socket" | "fail_mode" | "prompt" | "timeout_ms", None) => {
                warnings.push(OptionWarning::Malformed {
                    name: match name {
                        "socket" => "socket",
                        "fail_mode" => "fail_mode",
                        "prompt" => "prompt",
                        _ => "timeout_ms",
                    },
                    value: String::new(),
                    why: "a value is required (NAME=VALUE)",
                });
            }
            _ => warnings.push(OptionWarning::Unknown(arg.to_owned())),
        }
    }
    if opts.app_passwords == AppPasswords::Only && opts.nullok {
        warnings.push(OptionWarning::Ineffective {
            name: "nullok",
            with: "app_passwords_only",
            why: "this line never asks about enrollment; put nullok on the code line",
        });
    }
    if opts.echo_code && opts.app_passwords != AppPasswords::Off {
        warnings.push(OptionWarning::Ineffective {
            name: "echo_code",
            with: app_passwords_name(opts.app_passwords),
            why: "the answer may be an app password, which is never echoed",
        });
    }
    (opts, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_is_off_unless_asked_for() {
        assert!(!Options::default().grace);
        let (o, w) = parse(&["grace"]);
        assert!(w.is_empty(), "{w:?}");
        assert!(o.grace);
    }

    #[test]
    fn defaults() {
        let (o, w) = parse::<&str>(&[]);
        assert!(w.is_empty());
        assert_eq!(o, Options::default());
        assert_eq!(o.socket, PathBuf::from("/run/otpd/pam.sock"));
        assert_eq!(
            o.fallback_socket,
            Some(PathBuf::from("/run/otpd/otpd.sock"))
        );
        assert_eq!(o.fail_mode, FailMode::Closed);
        assert_eq!(o.timeout, Duration::from_millis(5000));
        assert_eq!(o.prompt_text(), "Verification code: ");
        assert!(!o.prompt_echo());
    }

    #[test]
    fn every_option() {
        let (o, w) = parse(&[
            "socket=/tmp/x.sock",
            "nullok",
            "fail_mode=open",
            "prompt=OTP: ",
            "timeout_ms=250",
            "forward_pass",
            "echo_code",
            "debug",
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(o.socket, PathBuf::from("/tmp/x.sock"));
        // An explicit socket is the only one tried.
        assert_eq!(o.fallback_socket, None);
        assert!(o.nullok && o.echo_code && o.debug);
        assert_eq!(o.fail_mode, FailMode::Open);
        assert_eq!(o.prompt_text(), "OTP: ");
        assert_eq!(o.timeout, Duration::from_millis(250));
        assert_eq!(o.pass_mode, PassMode::ForwardPass);
        // A password is never echoed.
        assert!(!o.prompt_echo());
    }

    #[test]
    fn combined_prompt_default_and_echo() {
        let (o, _) = parse(&["try_first_pass"]);
        assert_eq!(o.prompt_text(), "Password & verification code: ");
        let (o, _) = parse(&["echo_code"]);
        assert!(o.prompt_echo());
    }

    #[test]
    fn unknown_option_is_reported_and_ignored() {
        let (o, w) = parse(&["nullok", "frobnicate", "debug"]);
        assert_eq!(w, vec![OptionWarning::Unknown("frobnicate".into())]);
        assert!(o.nullok && o.debug);
        assert_eq!(w[0].to_string(), "ignoring unknown option \"frobnicate\"");
    }

    #[test]
    fn a_typo_is_an_error_that_names_the_option_meant() {
        let (o, w) = parse(&["nulok", "Debug", "fail-mode=open", "frobnicate"]);
        assert!(!o.nullok && !o.debug);
        assert_eq!(o.fail_mode, FailMode::Closed);
        assert!(w.iter().all(OptionWarning::is_error), "{w:?}");
        assert_eq!(did_you_mean(&"n".repeat(10_000)), None);
        let texts: Vec<String> = w.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "ignoring unknown option \"nulok\" (did you mean nullok?)",
                "ignoring unknown option \"Debug\" (did you mean debug?)",
                "ignoring unknown option \"fail-mode=open\" (did you mean fail_mode?)",
                "ignoring unknown option \"frobnicate\"",
            ]
        );
        // Understood but without effect: a warning.
        let (_, w) = parse(&["app_passwords_only", "nullok"]);
        assert!(!w[0].is_error());
        // Every known name parses without a warning (given a value where
        // one is needed).
        for name in OPTION_NAMES {
            let arg = match *name {
                "socket" => "socket=/run/x.sock".to_owned(),
                "fail_mode" => "fail_mode=open".to_owned(),
                "prompt" => "prompt=X".to_owned(),
                "timeout_ms" => "timeout_ms=10".to_owned(),
                flag => flag.to_owned(),
            };
            let (_, w) = parse(&[arg.as_str()]);
            assert!(w.is_empty(), "{arg}: {w:?}");
            assert_eq!(did_you_mean(name), None, "{name}");
        }
    }

    #[test]
    fn malformed_values_keep_the_defaults() {
        let (o, w) = parse(&[
            "fail_mode=sideways",
            "timeout_ms=abc",
            "timeout_ms=0",
            "timeout_ms=999999999999999999999999",
            "socket=relative.sock",
            "socket",
            "nullok=yes",
            "=",
            "",
        ]);
        assert_eq!(w.len(), 9, "{w:?}");
        assert_eq!(o.fail_mode, FailMode::Closed);
        assert_eq!(o.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
        assert_eq!(o.socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(!o.nullok);
    }

    #[test]
    fn later_pass_mode_wins_with_a_warning() {
        let (o, w) = parse(&["use_first_pass", "try_first_pass"]);
        assert_eq!(o.pass_mode, PassMode::TryFirstPass);
        assert_eq!(
            w,
            vec![OptionWarning::Overridden {
                new: "try_first_pass",
                old: "use_first_pass"
            }]
        );
    }

    #[test]
    fn app_password_options() {
        let (o, w) = parse::<&str>(&[]);
        assert!(w.is_empty());
        assert_eq!(o.app_passwords, AppPasswords::Off);

        let (o, w) = parse(&["app_passwords"]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(o.app_passwords, AppPasswords::Accept);
        // The code prompt stays; the pass mode is untouched.
        assert_eq!(o.prompt_text(), DEFAULT_PROMPT);
        assert_eq!(o.pass_mode, PassMode::CodeOnly);

        let (o, w) = parse(&["app_passwords_only"]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(o.app_passwords, AppPasswords::Only);
        assert_eq!(o.prompt_text(), "Password: ");
        let (o, _) = parse(&["app_passwords_only", "forward_pass"]);
        assert_eq!(o.prompt_text(), DEFAULT_COMBINED_PROMPT);
        let (o, _) = parse(&["app_passwords_only", "prompt=Mail password: "]);
        assert_eq!(o.prompt_text(), "Mail password: ");

        // `only` is the stronger statement, in either order.
        for args in [
            ["app_passwords", "app_passwords_only"],
            ["app_passwords_only", "app_passwords"],
        ] {
            let (o, w) = parse(&args);
            assert!(w.is_empty(), "{w:?}");
            assert_eq!(o.app_passwords, AppPasswords::Only, "{args:?}");
        }

        // Flags take no value.
        let (o, w) = parse(&["app_passwords=yes", "app_passwords_only=1"]);
        assert_eq!(o.app_passwords, AppPasswords::Off);
        assert_eq!(
            w,
            vec![
                OptionWarning::UnexpectedValue("app_passwords=yes".into()),
                OptionWarning::UnexpectedValue("app_passwords_only=1".into()),
            ]
        );
        // Near misses are unknown options, not app_passwords.
        let (o, w) = parse(&["app_password", "apppasswords"]);
        assert_eq!(o.app_passwords, AppPasswords::Off);
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn an_app_password_prompt_never_echoes() {
        let (o, w) = parse(&["echo_code", "app_passwords"]);
        assert!(!o.prompt_echo());
        assert_eq!(
            w,
            vec![OptionWarning::Ineffective {
                name: "echo_code",
                with: "app_passwords",
                why: "the answer may be an app password, which is never echoed",
            }]
        );
        let (o, w) = parse(&["app_passwords_only", "echo_code", "nullok"]);
        assert!(!o.prompt_echo());
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(
            w[0].to_string(),
            "option nullok has no effect with app_passwords_only: this line never \
             asks about enrollment; put nullok on the code line"
        );
        // nullok with plain app_passwords works as always.
        let (o, w) = parse(&["app_passwords", "nullok"]);
        assert!(w.is_empty() && o.nullok);
    }

    #[test]
    fn prompt_may_contain_spaces_and_equals() {
        let (o, w) = parse(&["prompt=Code (a=b): "]);
        assert!(w.is_empty());
        assert_eq!(o.prompt_text(), "Code (a=b): ");
    }
}

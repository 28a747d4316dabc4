//! The authentication flow: ask for the code, let otpd decide, tell the user,
//! map the outcome to a PAM result.
//!
//! It is generic over the [`Conversation`] with the user, the [`Daemon`] and
//! the [`Log`], so that it is unit-tested without libpam and without a
//! running otpd; `lib.rs` plugs in libpam and `client.rs` the real daemon.

use pamsm::PamError;

use crate::app_password::{self, AppPasswordId};
use crate::error::{Code, Error, ErrorClass};
use crate::messages;
use crate::options::{AppPasswords, FailMode, Options, PassMode};
use crate::secret::Secret;

/// Longest answer accepted from the user, in bytes (as `PAM_MAX_RESP_SIZE`).
/// Longer input is refused without asking otpd.
pub const MAX_INPUT: usize = 512;

/// Number of TOTP digits assumed when otpd does not say.
pub const DEFAULT_DIGITS: usize = 6;

/// Length of a backup code.
pub const BACKUP_CODE_DIGITS: usize = 8;

/// The user side of the PAM conversation.
pub trait Conversation {
    /// Asks a question. `Ok(None)`: the user gave no answer at all.
    ///
    /// # Errors
    /// [`Error::Conversation`] when the user could not be asked.
    fn prompt(&mut self, text: &str, echo: bool) -> Result<Option<Secret>, Error>;
    /// Shows an informational message (`PAM_TEXT_INFO`).
    fn info(&mut self, text: &str);
    /// Shows an error message (`PAM_ERROR_MSG`).
    fn error(&mut self, text: &str);
}

/// otpd, as the module sees it.
pub trait Daemon {
    /// `GetStatus` for one user.
    ///
    /// # Errors
    /// When otpd cannot be reached or answers with an error status.
    fn status(&mut self, user: &[u8]) -> Result<Status, Error>;
    /// `Verify`: checks a code.
    ///
    /// # Errors
    /// When otpd cannot be reached or answers with an error status.
    fn verify(&mut self, attempt: Attempt) -> Result<Verdict, Error>;
    /// `Verify` with `grace_only` (`attempt.code` empty): whether otpd's
    /// `[grace]` lets this login in without a code. Nothing is checked or
    /// counted. A daemon that knows no grace answers `false`.
    ///
    /// # Errors
    /// When otpd cannot be reached or answers with an error status.
    fn grace(&mut self, _attempt: Attempt) -> Result<bool, Error> {
        Ok(false)
    }
    /// Checks that otpd can be reached (for the real client: the socket
    /// checks and a `connect()`, no gRPC call), before the module asks the
    /// user for an answer that only otpd can use. A connection already
    /// open counts.
    ///
    /// # Errors
    /// As for a call: not running, busy, untrusted socket.
    fn probe(&mut self) -> Result<(), Error> {
        Ok(())
    }
    /// Closes any connection kept open between calls: called before the
    /// module waits for the user.
    fn hang_up(&mut self) {}
}

/// Severity of a log line (syslog priorities).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `LOG_ERR`.
    Error,
    /// `LOG_WARNING`.
    Warning,
    /// `LOG_NOTICE`.
    Notice,
    /// `LOG_INFO`.
    Info,
    /// `LOG_DEBUG`, only with the `debug` option.
    Debug,
}

/// Where log lines go (syslog, facility authpriv, in production).
pub trait Log {
    /// Writes one line. Lines never contain a code or a password.
    fn log(&mut self, level: Level, line: &str);
}

/// A user's enrollment state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No secret at all.
    NotEnrolled,
    /// Enrollment started but not confirmed.
    Pending,
    /// Active.
    Active,
    /// Active and locked out.
    Locked,
    /// A state this module does not know.
    Unknown,
}

/// What `GetStatus` says about a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Enrollment state.
    pub state: State,
    /// TOTP digits (0 when unknown).
    pub digits: u32,
    /// What otpd's enforcement policy says about the user; `None` when it
    /// covers nobody (or otpd is older).
    pub enforcement: Option<Enforcement>,
}

/// What otpd's enforcement policy says about a user. otpd decides (from
/// the user's groups), not the PAM line: a user it refuses is refused even
/// on a line with `nullok`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enforcement {
    /// The policy requires a second factor of this user.
    pub must_enroll: bool,
    /// ...and the user has none while the deadline has passed: refuse.
    pub refused: bool,
    /// The deadline, `YYYY-MM-DD`; empty: none.
    pub deadline_date: String,
    /// Whom to ask.
    pub contact: String,
    /// Users may enroll themselves (`otpctl enroll`).
    pub self_enroll: bool,
}

impl Status {
    /// The number of digits to split off a combined answer.
    #[must_use]
    pub fn code_digits(&self) -> usize {
        match self.digits {
            d @ 6..=10 => d as usize,
            _ => DEFAULT_DIGITS,
        }
    }
}

/// otpd's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The code was valid and is now used up.
    Accepted,
    /// Wrong or replayed code.
    Rejected,
    /// Locked out; the code was not checked.
    Locked,
    /// Too many recent failures; the code was not checked.
    Throttled,
    /// No active enrollment.
    NotEnrolled,
    /// Unspecified or unknown to this module: treated as a refusal.
    Unknown,
}

/// Why otpd decided so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Accepted.
    Ok,
    /// Not a valid code.
    WrongCode,
    /// Valid, but its time step was already used.
    Replayed,
    /// Fits a time step outside the window: the device clock is off.
    ClockSkew,
    /// Anything else (locked, throttled, not enrolled, unknown).
    Other,
}

/// How the code was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// A TOTP code.
    Totp,
    /// A backup code.
    BackupCode,
    /// An app password.
    AppPassword,
    /// Not set.
    Unknown,
}

/// otpd's answer to `Verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The decision.
    pub decision: Decision,
    /// The reason.
    pub reason: Reason,
    /// How it was accepted.
    pub method: Method,
    /// Backup codes left (when accepted).
    pub backup_codes_left: u32,
    /// Seconds until the next attempt is checked (locked, throttled).
    pub retry_after_seconds: u64,
    /// Measured device clock offset (clock skew); positive: ahead.
    pub clock_skew_seconds: i64,
    /// Few backup codes left.
    pub backup_codes_low: bool,
    /// The app password's public id (when accepted as one).
    pub app_password_id: Option<AppPasswordId>,
    /// With [`Decision::NotEnrolled`]: the enforcement policy on the user.
    pub enforcement: Option<Enforcement>,
    /// When accepted: remind the user they have no recovery path; whom
    /// to ask.
    pub recovery_nudge: Option<String>,
}

/// One `Verify` request.
#[derive(Debug)]
pub struct Attempt {
    /// `PAM_USER`.
    pub user: Vec<u8>,
    /// The code, whitespace removed; or the whole app password, in the
    /// form otpd prints it.
    pub code: Secret,
    /// `code` may be an app password (`app_passwords` and the answer has
    /// the shape of one). False for every other attempt.
    pub allow_app_password: bool,
    /// `PAM_SERVICE`.
    pub service: String,
    /// `PAM_RHOST`.
    pub remote_host: String,
    /// `PAM_TTY`.
    pub tty: String,
    /// Who runs the PAM stack.
    pub requester: LocalRequester,
}

/// The process that runs the PAM stack: otpd counts the failures of
/// another local user driving su or sudo among the strangers'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalRequester {
    /// Its real uid.
    pub uid: u32,
    /// Whether `uid` is the uid of `PAM_USER`'s account.
    pub is_target_user: bool,
}

/// What the PAM glue hands to the flow.
#[derive(Debug, Default)]
pub struct Request {
    /// `PAM_USER`.
    pub user: Vec<u8>,
    /// `PAM_SERVICE`.
    pub service: String,
    /// `PAM_RHOST`.
    pub remote_host: String,
    /// `PAM_TTY`.
    pub tty: String,
    /// `PAM_AUTHTOK` from an earlier module; read for `use_first_pass` /
    /// `try_first_pass` (password and code), and for the code-only prompt,
    /// where an answer equal to it is a password, never sent to otpd.
    pub authtok: Option<Secret>,
    /// The real uid of this process (`getuid()`): the invoking user for
    /// su and sudo, 0 for sshd and login.
    pub real_uid: u32,
    /// The uid of `PAM_USER`'s account, if the system knows the name.
    pub target_uid: Option<u32>,
}

/// What the flow hands back to the PAM glue.
#[derive(Debug)]
pub struct Outcome {
    /// The PAM return code.
    pub result: PamError,
    /// Set `PAM_AUTHTOK` to this (the password part of a combined answer).
    pub authtok: Option<Secret>,
}

impl Outcome {
    fn new(result: PamError) -> Self {
        Self {
            result,
            authtok: None,
        }
    }
}

/// The one mapping from otpd's answer to a PAM return code.
///
/// `PAM_USER_UNKNOWN` is never returned, so that user names cannot be
/// probed. Only "nothing is listening" ([`ErrorClass::NotRunning`]) may
/// fail open: a daemon that is busy, slow or failing never does.
#[must_use]
pub fn pam_result(answer: Result<&Verdict, &Error>, fail_mode: FailMode) -> PamError {
    match answer {
        Ok(v) => match v.decision {
            Decision::Accepted => PamError::SUCCESS,
            Decision::Rejected
            | Decision::Locked
            | Decision::Throttled
            | Decision::NotEnrolled
            | Decision::Unknown => PamError::AUTH_ERR,
        },
        Err(e) => match e.class() {
            ErrorClass::NotRunning => match fail_mode {
                FailMode::Closed => PamError::AUTHINFO_UNAVAIL,
                FailMode::Open => PamError::IGNORE,
            },
            ErrorClass::Unavailable | ErrorClass::Untrusted => PamError::AUTHINFO_UNAVAIL,
            ErrorClass::Refused => PamError::AUTH_ERR,
            ErrorClass::Local => PamError::SYSTEM_ERR,
            ErrorClass::Conversation => PamError::CONV_ERR,
        },
    }
}

/// Runs `pam_sm_authenticate`'s logic.
pub fn authenticate<C, D, L>(
    opts: &Options,
    req: Request,
    conv: &mut C,
    daemon: &mut D,
    log: &mut L,
) -> Outcome
where
    C: Conversation,
    D: Daemon,
    L: Log,
{
    let who = printable(&req.user);
    let mut flow = Flow {
        opts,
        conv,
        daemon,
        log,
        who,
    };
    flow.run(req)
}

struct Flow<'a, C, D, L> {
    opts: &'a Options,
    conv: &'a mut C,
    daemon: &'a mut D,
    log: &'a mut L,
    /// The user name, escaped for logs and messages.
    who: String,
}

impl<C: Conversation, D: Daemon, L: Log> Flow<'_, C, D, L> {
    fn run(&mut self, mut req: Request) -> Outcome {
        self.debug(&format!(
            "user {}: service {:?}, rhost {:?}, tty {:?}, options {:?}",
            self.who, req.service, req.remote_host, req.tty, self.opts
        ));

        // nullok: users without an active enrollment are not asked.
        // (An `app_passwords_only` line never asks: it decides nothing about
        // users without an app password.)
        let mut status = None;
        let status_asked = self.opts.nullok && self.opts.app_passwords != AppPasswords::Only;
        if status_asked {
            match self.daemon.status(&req.user) {
                Ok(st) if matches!(st.state, State::NotEnrolled | State::Pending) => {
                    // otpd's enforcement policy, not `nullok`, has the last
                    // word on users it requires a second factor of.
                    if let Some(e) = st.enforcement.as_ref().filter(|e| e.must_enroll) {
                        if e.refused {
                            self.conv.error(&messages::enrollment_overdue(e, &self.who));
                            self.log(
                                Level::Notice,
                                &format!(
                                    "user {}: must enroll (enforcement policy, deadline \
                                     passed) and has no active device; refused despite nullok",
                                    self.who
                                ),
                            );
                            return Outcome::new(PamError::AUTH_ERR);
                        }
                        self.conv.info(&messages::enrollment_due(e));
                    }
                    self.log(
                        Level::Info,
                        &format!("user {}: no active enrollment; nullok: ignored", self.who),
                    );
                    return Outcome::new(PamError::IGNORE);
                }
                Ok(st) => {
                    self.debug(&format!("user {}: GetStatus: {st:?}", self.who));
                    status = Some(st);
                }
                Err(e) if e.is_not_found() => {
                    self.log(
                        Level::Info,
                        &format!("user {}: unknown to otpd; nullok: ignored", self.who),
                    );
                    return Outcome::new(PamError::IGNORE);
                }
                Err(e) => match e.class() {
                    ErrorClass::Refused | ErrorClass::Conversation => self.log(
                        Level::Warning,
                        &format!(
                            "user {}: GetStatus failed ({e}); asking for a code anyway",
                            self.who
                        ),
                    ),
                    ErrorClass::NotRunning
                    | ErrorClass::Unavailable
                    | ErrorClass::Untrusted
                    | ErrorClass::Local => {
                        return Outcome::new(self.failed(&e));
                    }
                },
            }
        }

        // `grace`: otpd (never the module) may let this login in without a
        // code, right after an accepted one from the same origin.
        if self.opts.grace && self.opts.app_passwords != AppPasswords::Only {
            match self.daemon.grace(attempt(&req, Secret::new(Vec::new()))) {
                Ok(true) => {
                    self.log(
                        Level::Notice,
                        &format!(
                            "user {}: accepted without a code (otpd grace after a login from \
                             the same origin)",
                            self.who
                        ),
                    );
                    return Outcome::new(PamError::SUCCESS);
                }
                Ok(false) => self.debug(&format!("user {}: no grace; asking", self.who)),
                Err(e) => self.log(
                    Level::Warning,
                    &format!(
                        "user {}: grace query failed ({e}); asking for a code",
                        self.who
                    ),
                ),
            }
        }

        // otpd not there: say so (or step aside, fail_mode=open) before
        // asking for a code nobody can check. Not where the answer goes on
        // to the next module whatever otpd says: app_passwords_only, and a
        // password+code prompt with fail_mode=open.
        let answer_needs_otpd = self.opts.app_passwords != AppPasswords::Only
            && (self.opts.pass_mode == PassMode::CodeOnly
                || self.opts.fail_mode == FailMode::Closed);
        let will_prompt = match self.opts.pass_mode {
            PassMode::CodeOnly | PassMode::ForwardPass => true,
            PassMode::UseFirstPass => false,
            PassMode::TryFirstPass => req.authtok.is_none(),
        };
        if answer_needs_otpd
            && will_prompt
            && let Err(e) = self.daemon.probe()
        {
            return Outcome::new(self.failed(&e));
        }

        // The answer: a code, or a password followed by a code.
        let answer = match self.opts.pass_mode {
            PassMode::CodeOnly | PassMode::ForwardPass => self.ask(),
            PassMode::UseFirstPass => match req.authtok.take() {
                Some(t) => Ok(Some(t)),
                None => {
                    self.log(
                        Level::Error,
                        "use_first_pass: no password from an earlier module \
                         (PAM_AUTHTOK is not set); refusing",
                    );
                    return Outcome::new(PamError::AUTH_ERR);
                }
            },
            PassMode::TryFirstPass => match req.authtok.take() {
                Some(t) => Ok(Some(t)),
                None => self.ask(),
            },
        };
        let answer = match answer {
            Ok(Some(a)) => a,
            Ok(None) => Secret::new(Vec::new()),
            Err(e) => return Outcome::new(self.failed(&e)),
        };
        if answer.len() > MAX_INPUT {
            self.log(
                Level::Notice,
                &format!(
                    "user {}: answer longer than {MAX_INPUT} bytes; refused",
                    self.who
                ),
            );
            return Outcome::new(PamError::AUTH_ERR);
        }

        match self.opts.app_passwords {
            AppPasswords::Off => {}
            AppPasswords::Accept | AppPasswords::Only => {
                if let Some(whole) = app_password::canonical(answer.as_bytes()) {
                    return self.app_password(&req, whole, &answer, status, status_asked);
                }
            }
        }
        if self.opts.app_passwords == AppPasswords::Only {
            // Not an app password: otpd is not asked. The next modules see
            // the answer exactly as typed (`pam_unix.so use_first_pass`).
            self.debug(&format!(
                "user {}: not an app password; app_passwords_only: ignored \
                 (PAM_IGNORE), the answer goes on in PAM_AUTHTOK",
                self.who
            ));
            return Outcome {
                result: PamError::IGNORE,
                authtok: Some(answer),
            };
        }

        if self.opts.pass_mode.is_combined() {
            self.combined(&req, &answer, status, status_asked)
        } else if req
            .authtok
            .as_ref()
            .is_some_and(|password| !answer.is_empty() && password.same_as(&answer))
        {
            // The answer to the code prompt is the password an earlier
            // module read: sshd's password method (`PasswordAuthentication
            // yes`) answers every prompt with the password, or the user
            // typed it at the wrong prompt. It is not sent to otpd.
            self.log(
                Level::Error,
                &format!(
                    "user {}: the answer to the code prompt is the password an earlier \
                     module read (PAM_AUTHTOK), not sent to otpd; refused. sshd's password \
                     method answers every prompt with the password: set \
                     `PasswordAuthentication no` and `AuthenticationMethods \
                     keyboard-interactive` (README: Protect SSH)",
                    self.who
                ),
            );
            Outcome::new(PamError::AUTH_ERR)
        } else {
            let code = strip_whitespace(answer.as_bytes());
            if code.is_empty() {
                self.log(
                    Level::Notice,
                    &format!("user {}: no code entered; refused", self.who),
                );
                return Outcome::new(PamError::AUTH_ERR);
            }
            // 6 or 8 ASCII digits: what otpd takes as a code.
            let shaped = matches!(code.len(), 6 | BACKUP_CODE_DIGITS)
                && code.as_bytes().iter().all(u8::is_ascii_digit);
            let verdict = self.daemon.verify(attempt(&req, code));
            // otpd checks the shape before it looks the user up, so the
            // hint says nothing about the account; the digits only where
            // the nullok query already told them. (INVALID_ARGUMENT for a
            // well-formed code is about something else: no hint.)
            if let Err(Error::Status(s)) = &verdict
                && s.code() == Code::InvalidArgument
                && !shaped
            {
                let digits = status
                    .as_ref()
                    .map(|st| st.digits)
                    .filter(|d| (6..=10).contains(d));
                self.conv.error(&messages::not_a_code(digits));
            }
            Outcome::new(self.finish(verdict.as_ref()))
        }
    }

    /// `forward_pass`, `use_first_pass`, `try_first_pass`: the answer is a
    /// password immediately followed by the code.
    /// `status`: from the `nullok` check, if that was made (`asked`) and
    /// succeeded.
    fn combined(
        &mut self,
        req: &Request,
        answer: &Secret,
        status: Option<Status>,
        asked: bool,
    ) -> Outcome {
        let status = match status {
            Some(st) => Some(Ok(st)),
            None if asked => None,
            None => Some(self.daemon.status(&req.user)),
        };
        let digits = match &status {
            Some(Ok(st)) => st.code_digits(),
            Some(Err(_)) | None => DEFAULT_DIGITS,
        };
        let Some((password, code)) = split(answer.as_bytes(), digits) else {
            self.log(
                Level::Notice,
                &format!(
                    "user {}: the answer does not end in a {digits}-digit code; refused",
                    self.who
                ),
            );
            // Hand the whole answer on: the next module sees the same thing
            // whether or not a code was there.
            return Outcome {
                result: PamError::AUTH_ERR,
                authtok: Some(Secret::from_slice(answer.as_bytes())),
            };
        };
        let mut authtok = Some(Secret::from_slice(password));
        self.debug(&format!(
            "user {}: split the answer into password and a {digits}-digit code",
            self.who
        ));

        match status {
            None => {}
            Some(Ok(st)) => self.debug(&format!("user {}: GetStatus: {st:?}", self.who)),
            Some(Err(e)) if e.is_not_found() => {}
            Some(Err(e)) => match e.class() {
                ErrorClass::Refused | ErrorClass::Conversation => self.log(
                    Level::Warning,
                    &format!(
                        "user {}: GetStatus failed ({e}); assuming {DEFAULT_DIGITS} digits",
                        self.who
                    ),
                ),
                ErrorClass::NotRunning
                | ErrorClass::Unavailable
                | ErrorClass::Untrusted
                | ErrorClass::Local => {
                    return Outcome {
                        result: self.failed(&e),
                        authtok,
                    };
                }
            },
        }

        let first = self.daemon.verify(attempt(req, Secret::from_slice(code)));

        // A wrong 6-digit code may be the tail of an 8-digit backup code.
        // This second Verify counts as a failed attempt too when it fails.
        let fallback = match &first {
            Ok(v) if v.decision == Decision::Rejected && v.reason == Reason::WrongCode => {
                if digits == BACKUP_CODE_DIGITS {
                    None
                } else {
                    split(answer.as_bytes(), BACKUP_CODE_DIGITS)
                }
            }
            _ => None,
        };
        let Some((password8, code8)) = fallback else {
            let result = self.finish(first.as_ref());
            return Outcome { result, authtok };
        };

        self.debug(&format!(
            "user {}: trying the trailing {BACKUP_CODE_DIGITS} digits as a backup code",
            self.who
        ));
        let second = self.daemon.verify(attempt(req, Secret::from_slice(code8)));
        let result = match second {
            Ok(v) => {
                if v.decision == Decision::Accepted {
                    authtok = Some(Secret::from_slice(password8));
                }
                self.finish(Ok(&v))
            }
            Err(e) => {
                // The first answer was a definite "wrong code": never let a
                // failure of the second attempt turn that into fail-open.
                self.log(
                    Level::Error,
                    &format!(
                        "user {}: backup code attempt failed ({e}); refusing",
                        self.who
                    ),
                );
                self.finish(first.as_ref())
            }
        };
        Outcome { result, authtok }
    }

    /// `app_passwords`, `app_passwords_only`: the answer has the shape of
    /// an app password; `whole` is all of it (never split), in otpd's form.
    fn app_password(
        &mut self,
        req: &Request,
        whole: Secret,
        answer: &Secret,
        status: Option<Status>,
        status_asked: bool,
    ) -> Outcome {
        self.debug(&format!(
            "user {}: the answer has the shape of an app password; asking otpd \
             for service {:?}",
            self.who, req.service
        ));
        let mut app_attempt = attempt(req, whole);
        app_attempt.allow_app_password = true;
        let verdict = self.daemon.verify(app_attempt);

        // `app_passwords` with a password+code prompt: an account password
        // of 16 or 18 such characters followed by the code has the shape
        // too. When otpd says "wrong" (or, an otpd without app passwords,
        // "malformed"), try the answer as password and code as well; each
        // attempt that fails counts as a failure.
        let wrong = match &verdict {
            Ok(v) => v.decision == Decision::Rejected && v.reason == Reason::WrongCode,
            Err(Error::Status(s)) => s.code() == Code::InvalidArgument,
            Err(_) => false,
        };
        if wrong
            && self.opts.app_passwords == AppPasswords::Accept
            && self.opts.pass_mode.is_combined()
            && split(answer.as_bytes(), DEFAULT_DIGITS).is_some()
        {
            self.debug(&format!(
                "user {}: not accepted as an app password; trying it as password and code",
                self.who
            ));
            self.log(
                Level::Notice,
                &format!(
                    "user {}: not accepted as an app password; trying the answer \
                     as password and code",
                    self.who
                ),
            );
            return self.combined(req, answer, status, status_asked);
        }

        let result = self.finish_as(verdict.as_ref(), Checked::AppPassword);
        Outcome {
            result,
            // An app password is not the account password: nothing is
            // handed on, unless this module steps aside (otpd not running,
            // fail_mode=open) on a line that hands answers on, when the
            // next module sees the same thing as for any other answer.
            authtok: (result == PamError::IGNORE
                && (self.opts.app_passwords == AppPasswords::Only
                    || self.opts.pass_mode.is_combined()))
            .then(|| Secret::from_slice(answer.as_bytes())),
        }
    }

    /// Prompts for the answer.
    fn ask(&mut self) -> Result<Option<Secret>, Error> {
        let echo = self.opts.prompt_echo();
        self.debug(&format!(
            "user {}: prompting (echo {})",
            self.who,
            if echo { "on" } else { "off" }
        ));
        // The user may take a minute: no connection to otpd stays open
        // meanwhile (it would hold one of otpd's connection slots).
        self.daemon.hang_up();
        self.conv.prompt(self.opts.prompt_text(), echo)
    }

    /// Tells the user what they need to know, logs, and maps the answer.
    fn finish(&mut self, answer: Result<&Verdict, &Error>) -> PamError {
        self.finish_as(answer, Checked::Code)
    }

    /// [`Self::finish`], saying in the log what was checked.
    fn finish_as(&mut self, answer: Result<&Verdict, &Error>, checked: Checked) -> PamError {
        let v = match answer {
            Ok(v) => v,
            Err(e) => return self.failed(e),
        };
        match v.decision {
            Decision::Accepted => {
                if v.method == Method::AppPassword {
                    let id = v
                        .app_password_id
                        .map_or_else(String::new, |id| format!(" {id}"));
                    self.log(
                        Level::Info,
                        &format!("user {}: app password{id} accepted", self.who),
                    );
                } else if v.method == Method::BackupCode {
                    self.conv
                        .info(&messages::backup_code_accepted(v.backup_codes_left));
                    self.conv
                        .info(&messages::re_enroll_after_backup_code(&self.who));
                    self.log(
                        Level::Info,
                        &format!(
                            "user {}: backup code accepted, {} left",
                            self.who, v.backup_codes_left
                        ),
                    );
                } else {
                    self.log(Level::Info, &format!("user {}: code accepted", self.who));
                }
                // With none left and a single device, the recovery reminder
                // below says it all.
                if v.backup_codes_low && !(v.backup_codes_left == 0 && v.recovery_nudge.is_some()) {
                    self.conv
                        .info(&messages::backup_codes_low(&self.who, v.backup_codes_left));
                }
                if let Some(contact) = &v.recovery_nudge {
                    self.conv
                        .info(&messages::no_recovery_path(&self.who, contact));
                    self.log(
                        Level::Info,
                        &format!("user {}: reminded that there is no recovery path", self.who),
                    );
                }
            }
            Decision::Locked | Decision::Throttled => {
                self.conv.error(&if v.decision == Decision::Locked {
                    messages::locked(v.retry_after_seconds)
                } else {
                    messages::throttled(v.retry_after_seconds)
                });
                self.log(
                    Level::Notice,
                    &format!(
                        "user {}: {} (retry after {} s); refused",
                        self.who,
                        if v.decision == Decision::Locked {
                            "locked out"
                        } else {
                            "throttled"
                        },
                        v.retry_after_seconds
                    ),
                );
            }
            Decision::Rejected => {
                let why = match v.reason {
                    Reason::ClockSkew => {
                        self.conv.error(&messages::clock_skew(v.clock_skew_seconds));
                        "clock skew"
                    }
                    Reason::Replayed => {
                        self.conv.error(messages::REPLAYED);
                        "code already used"
                    }
                    Reason::WrongCode | Reason::Ok | Reason::Other => match checked {
                        Checked::Code => "wrong code",
                        Checked::AppPassword => "wrong app password",
                    },
                };
                self.log(Level::Notice, &format!("user {}: {why}; refused", self.who));
            }
            Decision::NotEnrolled => {
                match v.enforcement.as_ref().filter(|e| e.must_enroll) {
                    Some(e) if e.refused => {
                        self.conv.error(&messages::enrollment_overdue(e, &self.who));
                    }
                    Some(e) => self.conv.info(&messages::enrollment_due(e)),
                    None => {}
                }
                self.log(
                    Level::Notice,
                    &format!("user {}: no active enrollment; refused", self.who),
                );
            }
            Decision::Unknown => self.log(
                Level::Error,
                &format!("user {}: otpd gave no usable decision; refused", self.who),
            ),
        }
        pam_result(Ok(v), self.opts.fail_mode)
    }

    /// Logs an error (and tells the user when otpd is unavailable), and
    /// maps it.
    fn failed(&mut self, e: &Error) -> PamError {
        let result = pam_result(Err(e), self.opts.fail_mode);
        let consequence = match (e.class(), result) {
            (ErrorClass::NotRunning, PamError::IGNORE) => {
                "otpd is not running; fail_mode=open: this module is ignored (PAM_IGNORE)"
            }
            (ErrorClass::NotRunning, _) => {
                "otpd is not running; fail_mode=closed: refusing (PAM_AUTHINFO_UNAVAIL)"
            }
            (ErrorClass::Unavailable, _) => {
                "otpd is running but did not answer; refusing (PAM_AUTHINFO_UNAVAIL) \
                 whatever fail_mode says"
            }
            (ErrorClass::Untrusted, _) => "refusing (PAM_AUTHINFO_UNAVAIL) whatever fail_mode says",
            _ => "refusing",
        };
        match e {
            // A typo, not a fault: otpd refused the answer as malformed
            // (letters, wrong length) without counting it.
            Error::Status(s) if s.code() == Code::InvalidArgument => self.log(
                Level::Notice,
                &format!(
                    "user {}: malformed code ({}); refused",
                    self.who,
                    s.message()
                ),
            ),
            _ => self.log(
                Level::Error,
                &format!("user {}: {e}; {consequence}", self.who),
            ),
        }
        if result == PamError::AUTHINFO_UNAVAIL {
            self.conv.error(messages::SERVICE_UNAVAILABLE);
        }
        result
    }

    fn log(&mut self, level: Level, line: &str) {
        self.log.log(level, line);
    }

    fn debug(&mut self, line: &str) {
        if self.opts.debug {
            self.log.log(Level::Debug, line);
        }
    }
}

/// What an attempt sent to otpd, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Checked {
    /// A TOTP or backup code.
    Code,
    /// An app password (`allow_app_password`).
    AppPassword,
}

fn attempt(req: &Request, code: Secret) -> Attempt {
    Attempt {
        user: req.user.clone(),
        code,
        allow_app_password: false,
        service: req.service.clone(),
        remote_host: req.remote_host.clone(),
        tty: req.tty.clone(),
        requester: LocalRequester {
            uid: req.real_uid,
            is_target_user: req.target_uid == Some(req.real_uid),
        },
    }
}

/// Removes all ASCII whitespace: apps show codes as "123 456".
fn strip_whitespace(input: &[u8]) -> Secret {
    let mut out = Vec::with_capacity(input.len() + 1);
    out.extend(input.iter().copied().filter(|b| !b.is_ascii_whitespace()));
    Secret::new(out)
}

/// Splits "password" + `digits` trailing ASCII digits (trailing whitespace
/// ignored). `None` when the answer does not end in that many digits.
///
/// Public for the fuzz target `pam_answer` (fuzz/): the parser of what a
/// user types at the prompt.
#[must_use]
pub fn split(input: &[u8], digits: usize) -> Option<(&[u8], &[u8])> {
    let trimmed = input.trim_ascii_end();
    let at = trimmed.len().checked_sub(digits)?;
    let (password, code) = trimmed.split_at(at);
    code.iter()
        .all(u8::is_ascii_digit)
        .then_some((password, code))
}

/// A user name (or other outside bytes) made safe for logs and messages.
#[must_use]
pub fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .flat_map(char::escape_default)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::error::GrpcStatus;
    use crate::options::parse;

    #[derive(Default)]
    struct FakeConv {
        answers: VecDeque<Result<Option<&'static str>, Error>>,
        prompts: Vec<(String, bool)>,
        infos: Vec<String>,
        errors: Vec<String>,
    }

    impl Conversation for FakeConv {
        fn prompt(&mut self, text: &str, echo: bool) -> Result<Option<Secret>, Error> {
            self.prompts.push((text.to_owned(), echo));
            let a = self.answers.pop_front().expect("unexpected prompt");
            a.map(|o| o.map(|s| Secret::from_slice(s.as_bytes())))
        }
        fn info(&mut self, text: &str) {
            self.infos.push(text.to_owned());
        }
        fn error(&mut self, text: &str) {
            self.errors.push(text.to_owned());
        }
    }

    #[derive(Default)]
    struct FakeDaemon {
        statuses: VecDeque<Result<Status, Error>>,
        verdicts: VecDeque<Result<Verdict, Error>>,
        status_calls: usize,
        /// (user, code, service, rhost, tty)
        attempts: Vec<(String, String, String, String, String)>,
        /// The requester of each attempt.
        requesters: Vec<LocalRequester>,
        /// `allow_app_password` of each attempt.
        allowed: Vec<bool>,
        /// Answers to `probe`, in order; `Ok(())` when none is left.
        probes: VecDeque<Result<(), Error>>,
        probe_calls: usize,
    }

    impl Daemon for FakeDaemon {
        fn status(&mut self, _user: &[u8]) -> Result<Status, Error> {
            self.status_calls += 1;
            self.statuses.pop_front().expect("unexpected GetStatus")
        }
        fn verify(&mut self, a: Attempt) -> Result<Verdict, Error> {
            self.requesters.push(a.requester);
            self.allowed.push(a.allow_app_password);
            self.attempts.push((
                String::from_utf8(a.user).unwrap(),
                String::from_utf8(a.code.as_bytes().to_vec()).unwrap(),
                a.service,
                a.remote_host,
                a.tty,
            ));
            self.verdicts.pop_front().expect("unexpected Verify")
        }
        fn probe(&mut self) -> Result<(), Error> {
            self.probe_calls += 1;
            self.probes.pop_front().unwrap_or(Ok(()))
        }
    }

    #[derive(Default)]
    struct FakeLog(Vec<(Level, String)>);

    impl Log for FakeLog {
        fn log(&mut self, level: Level, line: &str) {
            self.0.push((level, line.to_owned()));
        }
    }

    fn verdict(decision: Decision, reason: Reason) -> Verdict {
        Verdict {
            decision,
            reason,
            method: Method::Unknown,
            backup_codes_left: 0,
            retry_after_seconds: 0,
            clock_skew_seconds: 0,
            backup_codes_low: false,
            app_password_id: None,
            enforcement: None,
            recovery_nudge: None,
        }
    }

    fn accepted() -> Verdict {
        Verdict {
            method: Method::Totp,
            ..verdict(Decision::Accepted, Reason::Ok)
        }
    }

    fn wrong() -> Verdict {
        verdict(Decision::Rejected, Reason::WrongCode)
    }

    fn status(state: State) -> Status {
        Status {
            state,
            digits: 6,
            enforcement: None,
        }
    }

    fn unreachable() -> Error {
        Error::Unreachable {
            path: "/run/otpd/otpd.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }
    }

    fn connect_error(errno: i32) -> Error {
        Error::Unreachable {
            path: "/run/otpd/pam.sock".into(),
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    fn st(code: Code) -> Error {
        Error::Status(GrpcStatus::of(code, "from otpd"))
    }

    fn request() -> Request {
        Request {
            user: b"alice".to_vec(),
            service: "sshd".into(),
            remote_host: "192.0.2.7".into(),
            tty: "ssh".into(),
            authtok: None,
            // sshd runs as root; alice is uid 1000.
            real_uid: 0,
            target_uid: Some(1000),
        }
    }

    struct Run {
        out: Outcome,
        conv: FakeConv,
        daemon: FakeDaemon,
        log: FakeLog,
    }

    impl Run {
        fn authtok(&self) -> Option<String> {
            self.out
                .authtok
                .as_ref()
                .map(|s| String::from_utf8(s.as_bytes().to_vec()).unwrap())
        }
        fn codes(&self) -> Vec<&str> {
            self.daemon.attempts.iter().map(|a| a.1.as_str()).collect()
        }
        /// No log line contains any of these.
        fn assert_not_logged(&self, secrets: &[&str]) {
            for (_, line) in &self.log.0 {
                for s in secrets {
                    assert!(!line.contains(s), "log line leaks {s:?}: {line}");
                }
            }
        }
    }

    fn run(
        args: &[&str],
        req: Request,
        answers: Vec<Result<Option<&'static str>, Error>>,
        statuses: Vec<Result<Status, Error>>,
        verdicts: Vec<Result<Verdict, Error>>,
    ) -> Run {
        let (opts, warnings) = parse(args);
        assert!(warnings.is_empty(), "{warnings:?}");
        let mut conv = FakeConv {
            answers: answers.into(),
            ..FakeConv::default()
        };
        let mut daemon = FakeDaemon {
            statuses: statuses.into(),
            verdicts: verdicts.into(),
            ..FakeDaemon::default()
        };
        let mut log = FakeLog::default();
        let out = authenticate(&opts, req, &mut conv, &mut daemon, &mut log);
        assert!(conv.answers.is_empty(), "not every answer was asked for");
        assert!(daemon.verdicts.is_empty(), "not every Verify happened");
        assert!(daemon.statuses.is_empty(), "not every GetStatus happened");
        Run {
            out,
            conv,
            daemon,
            log,
        }
    }

    #[test]
    fn mapping_table() {
        use FailMode::{Closed, Open};
        let m = |v: Verdict| pam_result(Ok(&v), Closed);
        assert_eq!(m(accepted()), PamError::SUCCESS);
        for d in [
            Decision::Rejected,
            Decision::Locked,
            Decision::Throttled,
            Decision::NotEnrolled,
            Decision::Unknown,
        ] {
            assert_eq!(m(verdict(d, Reason::Other)), PamError::AUTH_ERR, "{d:?}");
            assert_eq!(
                pam_result(Ok(&verdict(d, Reason::Other)), Open),
                PamError::AUTH_ERR
            );
        }
        let e = |e: Error, f| pam_result(Err(&e), f);
        // Nothing listening: fail_mode decides.
        assert_eq!(e(unreachable(), Closed), PamError::AUTHINFO_UNAVAIL);
        assert_eq!(e(unreachable(), Open), PamError::IGNORE);
        assert_eq!(e(connect_error(libc::ECONNREFUSED), Open), PamError::IGNORE);
        assert_eq!(
            e(connect_error(libc::ECONNREFUSED), Closed),
            PamError::AUTHINFO_UNAVAIL
        );
        // Running but busy, slow or failing: closed whatever fail_mode says.
        // (This used to give PAM_IGNORE with fail_mode=open for a timeout
        // and for UNAVAILABLE: a local user who made otpd busy got every
        // login past the code.)
        for busy in [
            || Error::Timeout { ms: 5000 },
            || st(Code::Unavailable),
            || connect_error(libc::EAGAIN),
            || connect_error(libc::EACCES),
            || Error::Busy {
                path: "/run/otpd/pam.sock".into(),
                ms: 5000,
            },
        ] {
            assert_eq!(e(busy(), Closed), PamError::AUTHINFO_UNAVAIL);
            assert_eq!(e(busy(), Open), PamError::AUTHINFO_UNAVAIL, "{}", busy());
        }
        for code in [
            Code::InvalidArgument,
            Code::DataLoss,
            Code::Internal,
            Code::PermissionDenied,
            Code::NotFound,
            Code::Unknown,
        ] {
            assert_eq!(e(st(code), Closed), PamError::AUTH_ERR, "{code:?}");
            assert_eq!(e(st(code), Open), PamError::AUTH_ERR, "{code:?}");
        }
        let untrusted = || Error::UntrustedSocket {
            path: "/x".into(),
            why: "owned by uid 1000, not root".into(),
        };
        assert_eq!(e(untrusted(), Open), PamError::AUTHINFO_UNAVAIL);
        assert_eq!(e(untrusted(), Closed), PamError::AUTHINFO_UNAVAIL);
        assert_eq!(
            e(Error::Local(std::io::Error::other("x")), Open),
            PamError::SYSTEM_ERR
        );
        assert_eq!(
            e(Error::Conversation { code: 19 }, Open),
            PamError::CONV_ERR
        );
    }

    #[test]
    fn correct_code_with_spaces() {
        let r = run(
            &[],
            request(),
            vec![Ok(Some(" 123 456\t"))],
            vec![],
            vec![Ok(accepted())],
        );
        assert_eq!(r.out.result, PamError::SUCCESS);
        assert!(r.out.authtok.is_none());
        assert_eq!(
            r.conv.prompts,
            vec![("Verification code: ".to_owned(), false)]
        );
        assert_eq!(
            r.daemon.attempts,
            vec![(
                "alice".into(),
                "123456".into(),
                "sshd".into(),
                "192.0.2.7".into(),
                "ssh".into()
            )]
        );
        assert_eq!(r.daemon.status_calls, 0);
        assert!(r.conv.infos.is_empty() && r.conv.errors.is_empty());
        r.assert_not_logged(&["123456", "123 456"]);
    }

    #[test]
    fn wrong_code() {
        let r = run(
            &["debug"],
            request(),
            vec![Ok(Some("654321"))],
            vec![],
            vec![Ok(wrong())],
        );
        assert_eq!(r.out.result, PamError::AUTH_ERR);
        assert!(r.conv.errors.is_empty());
        assert!(r.log.0.iter().any(|(_, l)| l.contains("wrong code")));
        r.assert_not_logged(&["654321"]);
    }

    #[test]
    fn prompt_option_and_echo() {
        let r = run(
            &["prompt=OTP: ", "echo_code"],
            request(),
            vec![Ok(Some("123456"))],
            vec![],
            vec![Ok(accepted())],
        );
        assert_eq!(r.conv.prompts, vec![("OTP: ".to_owned(), true)]);
    }

    #[test]
    fn locked_message() {
        let v = Verdict {
            retry_after_seconds: 720,
            ..verdict(Decision::Locked, Reason::Other)
        };
        let r = run(
            &[],
            request(),
            vec![Ok(Some("123456"))],
            vec![],
            vec![Ok(v)],
        );
        assert_eq!(r.out.result, PamError::AUTH_ERR);
        assert_eq!(
            r.conv.errors,
            vec![
                "Locked after too many failed attempts; try again in 12 min, or ask your \
                 administrator to unlock."
                    .to_owned()
            ]
        );
    }

    #[test]
    fn throttled_message() {
        let v = Verdict {
            retry_after_seconds: 30,
            ..verdict(Decision::Throttled, Reason::Other)
        };
        let r = run(
            &[],
            request(),
            vec![Ok(Some("123456"))],
            vec![],
            vec![Ok(v)],
        );
        assert_eq!(r.out.result, PamError::AUTH_ERR);
        assert_eq!(
            r.conv.errors,
            vec!["Too many attempts in a short time; wait 30 s, then try again.".to_owned()]
        );
    }

    #[test]
    fn backup_code_message_with_count_and_low_warning() {
        let v = Verdict {
            method: Method::BackupCode,
            backup_codes_left: 3,
            backup_codes_low: true,
            ..verdict(Decision::Accepted, Reason::Ok)
        };
        let r = run(
            &[],
            request(),
            vec![Ok(Some("1234 5678"))],
            vec![],
            vec![Ok(v)],
        );
        assert_eq!(r.out.result, PamError::SUCCESS);
        assert_eq!(r.codes(), vec!["12345678"]);
        assert_eq!(
            r.conv.infos,
            vec![
                "Backup code accepted; 3 left.".to_owned(),
                messages::re_enroll_after_backup_code("alice"),
                "Running low on backup codes: ask your administrator for new ones \
                 (otpctl backup-codes alice)."
                    .to_owned()
            ]
        );
        r.assert_not_logged(&["12345678"]);
    }

    #[test]
    fn the_last_backup_code_says_none_are_left() {
        let v = |nudge: Option<&str>| Verdict {
            method: Method::BackupCode,
            backup_codes_left: 0,
            backup_codes_low: true,
            recovery_nudge: nudge.map(str::to_owned),
            ..verdict(Decision::Accepted, Reason::Ok)
        };
        let r = run(
            &[],
            request(),
            vec![Ok(Some("12345678"))],
            vec![],
            vec![Ok(v(None))],
        );
        assert_eq!(
            r.conv.infos,
            vec![
                "Backup code accepted; 0 left.".to_owned(),
                messages::re_enroll_after_backup_code("alice"),
                "No backup codes left: without your device you cannot log in. Ask your \
                 administrator for new ones (otpctl backup-codes alice)."
                    .to_owned()
            ]
        );
        // A single device too: the recovery reminder alone says so.
        let r = run(
            &[],
            request(),
            vec![Ok(Some("12345678"))],
            vec![],
            vec![Ok(v(Some("the help desk")))],
        );
        assert_eq!(r.conv.infos.len(), 3, "{:?}", r.conv.infos);
        assert!(r.conv.infos[2].starts_with("You have a single device and no backup codes"));
    }

    #[test]
    fn backup_code_without_low_warning() {
        let v = Verdict {
            method: Method::BackupCode,
            backup_codes_left: 7,
            ..verdict(Decision::Accepted, Reason::Ok)
        };
        let r = run(
            &[],
            request(),
            vec![Ok(Some("12345678"))],
            vec![],
            vec![Ok(v)],
        );
        assert_eq!(
            r.conv.infos,
            vec![
                "Backup code accepted; 7 left.".to_owned(),
                "If you used a backup code because your device is lost or broken, have a \
                 new one enrolled now: ask your administrator (otpctl enroll alice)."
                    .to_owned()
            ]
        );
    }

    #[test]
    fn clock_skew_hint_and_replay() {
        let v = Verdict {
            clock_skew_seconds: -95,
            ..verdict(Decision::Rejected, Reason::ClockSkew)
        };
        let r = run(
            &[],
            request(),
            vec![Ok(Some("123456"))],
            vec![],
            vec![Ok(v)],
        );
        assert_eq!(r.out.result, PamError::AUTH_ERR);
        assert_eq!(r.conv.errors.len(), 1);
        assert!(r.conv.errors[0].contains("clock seems off by about 95 seconds"));

        let v = verdict(Decision::Rejected, Reason::Replayed);
        let r = run(
            &[],
            request(),
            vec![Ok(Some("123456"))],
            vec![],
            vec![Ok(v)],
        );
        assert_eq!(r.out.result, PamError::AUTH_ERR);
        assert_eq!(r.conv.errors, vec![messages::REPLAYED.to_owned()]);
    }

    #[test]
    fn nullok_not_enrolled_is_ignored_without_prompt() {
        for state in [State::NotEnrolled, State::Pending] {
            let r = run(
                &["nullok"],
                request(),
                vec![],
                vec![Ok(status(state))],
                vec![],
            );
            assert_eq!(r.out.result, PamError::IGNORE);
            assert!(r.conv.prompts.is_empty());
        }
        // An unknown user (NOT_FOUND) is the same.
        let r = run(
            &["nullok"],
            request(),
            vec![],
            vec![Err(st(Code::NotFound))],
            vec![],
        );
        assert_eq!(r.out.result, PamError::IGNORE);
        assert!(r.conv.prompts.is_empty());
    }

    fn policy(refused: bool) -> Option<Enforcement> {
        Some(Enforcement {
            must_enroll: true,
            refused,
            deadline_date: "2026-12-15".into(),
            contact: "the help desk".into(),
            self_enroll: true,
        })
    }

    #[test]
    fn the_enforcement_policy_overrides_nullok_after_its_deadline_only() {
        for state in [State::NotEnrolled, State::Pending] {
            // Before the deadline: told, then ignored as before.
            let due = Status {
                enforcement: policy(false),
                ..status(state)
            };
            let r = run(&["nullok"], request(), vec![], vec![Ok(due)], vec![]);
            assert_eq!(r.out.result, PamError::IGNORE);
            assert_eq!(
                r.conv.infos,
                vec![
                    "Two-factor authentication is required from 2026-12-15. \
                     Run `otpctl enroll` now."
                ]
            );
            assert!(r.conv.prompts.is_empty() && r.conv.errors.is_empty());
            // After it: refused despite nullok, saying whom to ask.
            let overdue = Status {
                enforcement: policy(true),
                ..status(state)
            };
            let r = run(&["nullok"], request(), vec![], vec![Ok(overdue)], vec![]);
            assert_eq!(r.out.result, PamError::AUTH_ERR);
            assert_eq!(r.conv.errors.len(), 1);
            assert!(
                r.conv.errors[0].contains("Ask the help desk"),
                "{:?}",
                r.conv.errors
            );
            assert!(r.conv.prompts.is_empty());
        }
        // Not covered: as before, nothing said.
        let free = Status {
            enforcement: Some(Enforcement {
                must_enroll: false,
                refused: false,
                ..policy(false).unwrap()
            }),
            ..status(State::NotEnrolled)
        };
        let r = run(&["nullok"], request(), vec![], vec![Ok(free)], vec![]);
        assert_eq!(r.out.result, PamError::IGNORE);
        assert!(r.conv.infos.is_empty() && r.conv.errors.is_empty());
    }

    #[test]
    fn without_nullok_a_covered_user_is_refused_with_the_policy_message() {
        let not_enrolled = Verdict {
            enforcement: policy(true),
            ..verdict(Decision::NotEnrolled, Reason::Other)
        };
        let r = run(
            &[],
            request(),
            vec![Ok(Some("123456"))],
            vec![],
            vec![Ok(not_enrolled)],
        );
        assert_eq!(r.out.result, PamError::AUTH_ERR);
        assert!(
            r.conv.errors[0].starts_with("Login refused"),
            "{:?}",
            r.conv.errors
        );
    }

    #[test]
    fn an_accepted_code_may_carry_the_recovery_reminder() {
        let v = Verdict {
            recovery_nudge: Some("the help desk".into()),
            ..accepted()
        };
        let r = run(
            &[],
            request(),
            vec![Ok(Some("123456"))],
            vec![],
            vec![Ok(v)],
        );
        assert_eq!(r.out.result, PamError::SUCCESS);
        assert_eq!(r.conv.infos.len(), 1);
        assert!(
            r.conv.infos[0].contains("no backup codes left"),
            "{:?}",
            r.conv.infos
        );
    }

    #[test]
    fn nullok_active_user_is_asked() {
        let r = run(
            &["nullok"],
            request(),
            vec![Ok(Some("123456"))],
            vec![Ok(status(State::Active))],
            vec![Ok(accepted())],
        );
        assert_eq!(r.out.result, PamError::SUCCESS);
        assert_eq!(r.conv.prompts.len(), 1);
    }

    #[test]
    fn nullok_status_refused_still_asks() {
        let r = run(
            &["nullok"],
            request(),
            vec![Ok(Some("123456"))],
            vec![Err(st(Code::DataLoss))],
            vec![Err(st(Code::DataLoss))],
        );
        assert_eq!(r.out.result, PamError::AUTH_ERR);
    }

    #[test]
    fn not_enrolled_without_nullok_is_asked_then_refused() {
        let r = run(
            &[],
            request(),
            vec![Ok(Some("123456"))],
            vec![],
            vec![Ok(verdict(Decision::NotEnrolled, Reason::Other))],
        );
        assert_eq!(r.out.result, PamError::AUTH_ERR);
        assert_eq!(r.conv.prompts.len(), 1);
        assert_eq!(r.daemon.status_calls, 0);
        // Nothing that tells the user apart from a wrong code.
        assert!(r.conv.errors.is_empty() && r.conv.infos.is_empty());
    }

    #[test]
    fn unreachable_fail_closed_and_open() {
        let r = run(
            &[],
            request(),
            vec![Ok(Some("123456"))],
            vec![],
            vec![Err(unreachable())],
        );
        assert_eq!(r.out.result, PamError::AUTHINFO_UNAVAIL);
        assert_eq!(
            r.conv.errors,
            vec![messages::SERVICE_UNAVAILABLE.to_owned()]
        );
        assert!(
            r.log
                .0
                .iter()
                .any(|(l, m)| *l == Level::Error && m.contains("fail_mode=closed"))
        );

        let r = run(
            &["fail_mode=open"],
            request(),
            vec![Ok(Some("123456"))],
            vec![],
            vec![Err(unreachable())],
        );
        assert_eq!(r.out.result, PamError::IGNORE);
        assert!(r.conv.errors.is_empty());
        assert!(
            r.log
                .0
                .iter()
                .any(|(l, m)| *l == Level::Error && m.contains("fail_mode=open"))
        );
        r.assert_not_logged(&["123456"]);
    }

    /// fail_mode=open means "no daemon is running", never "the daemon is
    /// busy or slow": a timeout, a full queue or UNAVAILABLE refuse. (Until
    /// this change, the timeout case here gave PAM_IGNORE.)
    #[test]
    fn a_busy_or_slow_daemon_fails_closed_even_with_fail_mode_open() {
        for error in [
            || Error::Timeout { ms: 5000 },
            || Error::Busy {
                path: "/run/otpd/pam.sock".into(),
                ms: 5000,
            },
            || connect_error(libc::EAGAIN),
            || st(Code::Unavailable),
        ] {
            let r = run(
                &["fail_mode=open"],
                request(),
                vec![Ok(Some("123456"))],
                vec![],
                vec![Err(error())],
            );
            assert_eq!(r.out.result, PamError::AUTHINFO_UNAVAIL, "{}", error());
            assert_eq!(
                r.conv.errors,
                vec![messages::SERVICE_UNAVAILABLE.to_owned()]
            );
            assert!(
                r.log
                    .0
                    .iter()
                    .any(|(l, m)| *l == Level::Error && m.contains("whatever fail_mode says")),
                "{:?}",
                r.log.0
            );
            r.assert_not_logged(&["123456"]);
            // The same with nullok, when GetStatus is the call that fails.
            let r = run(
                &["nullok", "fail_mode=open"],
                request(),
                vec![],
                vec![Err(error())],
                vec![],
            );
            assert_eq!(r.out.result, PamError::AUTHINFO_UNAVAIL, "{}", error());
        }
    }

    #[test]
    fn nullok_unreachable_does_not_prompt() {
        let r = run(
            &["nullok", "fail_mode=open"],
            request(),
            vec![],
            vec![Err(unreachable())],
            vec![],
        );
        assert_eq!(r.out.result, PamError::IGNORE);
        let r = run(
            &["nullok"],
            request(),
            vec![],
            vec![Err(unreachable())],
            vec![],
        );
        assert_eq!(r.out.result, PamError::AUTHINFO_UNAVAIL);
    }

    #[test]
    fn untrusted_socket_fails_closed_even_with_fail_open() {
        let r = run(
            &["fail_mode=open"],
            request(),
            vec![Ok(Some("123456"))],
            vec![],
            vec![Err(Error::UntrustedSocket {
                path: "/run/otpd/otpd.sock".into(),
                why: "owned by uid 1000, not root".into(),
            })],
        );
        assert_eq!(r.out.result, PamError::AUTHINFO_UNAVAIL);
        assert!(r.log.0.iter().any(|(_, m)| m.contains("refusing socket")));
    }

    #[test]
    fn daemon_errors_fail_closed() {
        for code in [
            Code::InvalidArgument,
            Code::DataLoss,
            Code::Internal,
            Code::PermissionDenied,
        ] {
            let r = run(
                &["fail_mode=open"],
                request(),
                vec![Ok(Some("12x456"))],
                vec![],
                vec![Err(st(code))],
            );
            assert_eq!(r.out.result, PamError::AUTH_ERR, "{code:?}");
        }
    }

    #[test]
    fn empty_oversized_and_missing_input_never_reach_the_daemon() {
        for answer in [Some(""), Some("   "), None] {
            let r = run(&[], request(), vec![Ok(answer)], vec![], vec![]);
            assert_eq!(r.out.result, PamError::AUTH_ERR);
            assert!(r.daemon.attempts.is_empty());
        }
        let long: &'static str = Box::leak("1".repeat(MAX_INPUT + 1).into_boxed_str());
        let r = run(&[], request(), vec![Ok(Some(long))], vec![], vec![]);
        assert_eq!(r.out.result, PamError::AUTH_ERR);
        assert!(r.daemon.attempts.is_empty());
        // Exactly the limit is still sent.
        let max: &'static str = Box::leak("1".repeat(MAX_INPUT).into_boxed_str());
        let r = run(
            &[],
            request(),
            vec![Ok(Some(max))],
            vec![],
            vec![Err(st(Code::InvalidArgument))],
        );
        assert_eq!(r.out.result, PamError::AUTH_ERR);
    }

    #[test]
    fn conversation_failure() {
        let r = run(
            &[],
            request(),
            vec![Err(Error::Conversation { code: 19 })],
            vec![],
            vec![],
        );
        assert_eq!(r.out.result, PamError::CONV_ERR);
    }

    #[test]
    fn forward_pass_splits_and_hands_the_password_on() {
        let r = run(
            &["forward_pass"],
            request(),
            vec![Ok(Some("hunter2 x123456\n"))],
            vec![Ok(status(State::Active))],
            vec![Ok(accepted())],
        );
        assert_eq!(r.out.result, PamError::SUCCESS);
        assert_eq!(
            r.conv.prompts,
            vec![("Password & verification code: ".to_owned(), false)]
        );
        assert_eq!(r.codes(), vec!["123456"]);
        assert_eq!(r.authtok().as_deref(), Some("hunter2 x"));
        r.assert_not_logged(&["hunter2", "123456"]);
    }

    #[test]
    fn forward_pass_uses_the_users_digits() {
        let r = run(
            &["forward_pass"],
            request(),
            vec![Ok(Some("pw12345678"))],
            vec![Ok(Status {
                state: State::Active,
                digits: 8,
                enforcement: None,
            })],
            vec![Ok(wrong())],
        );
        // 8-digit TOTP: no second attempt with the same 8 digits.
        assert_eq!(r.codes(), vec!["12345678"]);
        assert_eq!(r.authtok().as_deref(), Some("pw"));
        assert_eq!(r.out.result, PamError::AUTH_ERR);
    }

    #[test]
    fn forward_pass_wrong_code_and_echo_never_on() {
        let r = run(
            &["forward_pass", "echo_code"],
            request(),
            vec![Ok(Some("pw999999"))],
            vec![Ok(status(State::Active))],
            vec![Ok(verdict(Decision::Rejected, Reason::ClockSkew))],
        );
        assert_eq!(r.out.result, PamError::AUTH_ERR);
        assert!(!r.conv.prompts[0].1, "a password must never be echoed");
        // Not a plain wrong code: no backup code attempt.
        assert_eq!(r.codes(), vec!["999999"]);
        // The password is handed on even when the code fails.
        assert_eq!(r.authtok().as_deref(), Some("pw"));
    }

    #[test]
    fn forward_pass_backup_code_fallback() {
        let backup_ok = Verdict {
            method: Method::BackupCode,
            backup_codes_left: 4,
            ..verdict(Decision::Accepted, Reason::Ok)
        };
        let r = run(
            &["forward_pass"],
            request(),
            vec![Ok(Some("secret12345678"))],
            vec![Ok(status(State::Active))],
            vec![Ok(wrong()), Ok(backup_ok)],
        );
        assert_eq!(r.out.result, PamError::SUCCESS);
        assert_eq!(r.codes(), vec!["345678", "12345678"]);
        assert_eq!(r.authtok().as_deref(), Some("secret"));
        assert_eq!(
            r.conv.infos,
            vec![
                "Backup code accepted; 4 left.".to_owned(),
                messages::re_enroll_after_backup_code("alice")
            ]
        );
        r.assert_not_logged(&["secret", "12345678", "345678"]);

        // Both wrong: the password is the 6-digit split.
        let r = run(
            &["forward_pass"],
            request(),
            vec![Ok(Some("secret12345678"))],
            vec![Ok(status(State::Active))],
            vec![Ok(wrong()), Ok(wrong())],
        );
        assert_eq!(r.out.result, PamError::AUTH_ERR);
        assert_eq!(r.authtok().as_deref(), Some("secret12"));
    }

    #[test]
    fn backup_fallback_error_never_fails_open() {
        let r = run(
            &["forward_pass", "fail_mode=open"],
            request(),
            vec![Ok(Some("secret12345678"))],
            vec![Ok(status(State::Active))],
            vec![Ok(wrong()), Err(Error::Timeout { ms: 5000 })],
        );
        assert_eq!(r.out.result, PamError::AUTH_ERR);
    }

    #[test]
    fn forward_pass_unsplittable_answer() {
        let r = run(
            &["forward_pass"],
            request(),
            vec![Ok(Some("hunter2"))],
            vec![Ok(status(State::Active))],
            vec![],
        );
        assert_eq!(r.out.result, PamError::AUTH_ERR);
        assert!(r.daemon.attempts.is_empty());
        assert_eq!(r.authtok().as_deref(), Some("hunter2"));
    }

    #[test]
    fn forward_pass_unreachable_still_hands_the_password_on() {
        let r = run(
            &["forward_pass", "fail_mode=open"],
            request(),
            vec![Ok(Some("pw123456"))],
            vec![Err(unreachable())],
            vec![],
        );
        assert_eq!(r.out.result, PamError::IGNORE);
        assert_eq!(r.authtok().as_deref(), Some("pw"));
    }

    /// otpd not running: no prompt for a code nobody can check; the
    /// user hears it at once (closed), or the module steps aside (open).
    /// A password+code prompt with fail_mode=open still asks: the password
    /// goes on to the next module.
    #[test]
    fn an_unreachable_daemon_is_found_before_the_prompt() {
        let probe_run = |args: &[&str], answers: Vec<Result<Option<&'static str>, Error>>| {
            let (opts, _) = parse(args);
            let mut conv = FakeConv {
                answers: answers.into(),
                ..FakeConv::default()
            };
            let mut daemon = FakeDaemon {
                probes: vec![Err(unreachable())].into(),
                statuses: vec![Err(unreachable())].into(),
                verdicts: vec![Err(unreachable())].into(),
                ..FakeDaemon::default()
            };
            let mut log = FakeLog::default();
            let out = authenticate(&opts, request(), &mut conv, &mut daemon, &mut log);
            (out, conv, daemon)
        };
        let (out, conv, daemon) = probe_run(&[], vec![]);
        assert_eq!(out.result, PamError::AUTHINFO_UNAVAIL);
        assert!(conv.prompts.is_empty());
        assert_eq!(conv.errors, [messages::SERVICE_UNAVAILABLE]);
        assert_eq!(daemon.probe_calls, 1);
        assert!(daemon.attempts.is_empty());

        let (out, conv, _) = probe_run(&["fail_mode=open"], vec![]);
        assert_eq!(out.result, PamError::IGNORE);
        assert!(conv.prompts.is_empty() && conv.errors.is_empty());

        let (out, conv, daemon) = probe_run(
            &["forward_pass", "fail_mode=open"],
            vec![Ok(Some("pw123456"))],
        );
        assert_eq!(out.result, PamError::IGNORE);
        assert_eq!(conv.prompts.len(), 1);
        assert_eq!(daemon.probe_calls, 0);
        assert_eq!(
            out.authtok.as_ref().map(|s| s.as_bytes().to_vec()),
            Some(b"pw".to_vec())
        );

        let (out, conv, _) = probe_run(&["app_passwords_only"], vec![Ok(Some("hunter2"))]);
        assert_eq!(out.result, PamError::IGNORE);
        assert_eq!(conv.prompts.len(), 1);
    }

    #[test]
    fn a_malformed_code_gets_a_hint_that_is_the_same_for_every_user() {
        for answer in ["12a456", "12345", "1234567"] {
            let r = run(
                &[],
                request(),
                vec![Ok(Some(answer))],
                vec![],
                vec![Err(st(Code::InvalidArgument))],
            );
            assert_eq!(r.out.result, PamError::AUTH_ERR);
            assert_eq!(
                r.conv.errors,
                [messages::not_a_code(None)],
                "{answer}: the same text whoever the user is"
            );
            r.assert_not_logged(&[answer]);
        }
        // nullok already asked otpd: the user's own digits.
        let r = run(
            &["nullok"],
            request(),
            vec![Ok(Some("abcdefgh"))],
            vec![Ok(Status {
                digits: 8,
                ..status(State::Active)
            })],
            vec![Err(st(Code::InvalidArgument))],
        );
        assert_eq!(r.conv.errors, [messages::not_a_code(Some(8))]);
        // INVALID_ARGUMENT for a well-formed code (a user name otpd
        // refuses): not a code problem, no hint.
        let r = run(
            &[],
            request(),
            vec![Ok(Some("123456"))],
            vec![],
            vec![Err(st(Code::InvalidArgument))],
        );
        assert!(r.conv.errors.is_empty(), "{:?}", r.conv.errors);
    }

    #[test]
    fn a_password_given_as_the_code_is_not_sent_to_otpd() {
        // sshd's password method answers the code prompt with the password
        // that pam_unix already read into PAM_AUTHTOK.
        let req = || Request {
            authtok: Some(Secret::from_slice(b"hunter2 pw")),
            ..request()
        };
        let r = run(&[], req(), vec![Ok(Some("hunter2 pw"))], vec![], vec![]);
        assert_eq!(r.out.result, PamError::AUTH_ERR);
        assert!(r.codes().is_empty(), "sent to otpd: {:?}", r.codes());
        assert!(r.out.authtok.is_none());
        assert!(
            r.log.0.iter().any(|(level, line)| *level == Level::Error
                && line.contains("is the password an earlier module read")
                && line.contains("PasswordAuthentication no")),
            "{:?}",
            r.log.0
        );
        r.assert_not_logged(&["hunter2"]);
        // A code with a password set by an earlier module goes to otpd.
        let r = run(
            &[],
            req(),
            vec![Ok(Some("123456"))],
            vec![],
            vec![Ok(accepted())],
        );
        assert_eq!(r.out.result, PamError::SUCCESS);
        assert_eq!(r.codes(), ["123456"]);
    }

    #[test]
    fn use_first_pass_takes_authtok_and_never_prompts() {
        let req = Request {
            authtok: Some(Secret::from_slice(b"pw123456")),
            ..request()
        };
        let r = run(
            &["use_first_pass"],
            req,
            vec![],
            vec![Ok(status(State::Active))],
            vec![Ok(accepted())],
        );
        assert_eq!(r.out.result, PamError::SUCCESS);
        assert!(r.conv.prompts.is_empty());
        assert_eq!(r.codes(), vec!["123456"]);
        assert_eq!(r.authtok().as_deref(), Some("pw"));

        let r = run(&["use_first_pass"], request(), vec![], vec![], vec![]);
        assert_eq!(r.out.result, PamError::AUTH_ERR);
        assert!(r.conv.prompts.is_empty());
    }

    #[test]
    fn try_first_pass_prompts_only_without_authtok() {
        let r = run(
            &["try_first_pass"],
            request(),
            vec![Ok(Some("pw123456"))],
            vec![Ok(status(State::Active))],
            vec![Ok(accepted())],
        );
        assert_eq!(r.out.result, PamError::SUCCESS);
        assert_eq!(r.conv.prompts.len(), 1);

        let req = Request {
            authtok: Some(Secret::from_slice(b"pw123456")),
            ..request()
        };
        let r = run(
            &["try_first_pass"],
            req,
            vec![],
            vec![Ok(status(State::Active))],
            vec![Ok(accepted())],
        );
        assert!(r.conv.prompts.is_empty());
    }

    #[test]
    fn the_requester_is_the_real_uid_and_says_whether_it_is_the_user() {
        // (real uid, target's uid) -> what otpd is told.
        let cases = [
            // sshd, login: root.
            (0, Some(1000), false),
            // `su alice` typed by bob (uid 1001): a stranger to alice.
            (1001, Some(1000), false),
            // alice herself (sudo, or su to her own name).
            (1000, Some(1000), true),
            // A name the system does not know never matches.
            (1001, None, false),
        ];
        for (real_uid, target_uid, is_target_user) in cases {
            let req = Request {
                remote_host: String::new(),
                real_uid,
                target_uid,
                ..request()
            };
            let r = run(
                &[],
                req,
                vec![Ok(Some("123456"))],
                vec![],
                vec![Ok(wrong())],
            );
            assert_eq!(
                r.daemon.requesters,
                vec![LocalRequester {
                    uid: real_uid,
                    is_target_user
                }],
                "real uid {real_uid}, target {target_uid:?}"
            );
        }
    }

    #[test]
    fn odd_user_names_are_escaped_in_logs() {
        let req = Request {
            user: b"eve\nFAKE LOG LINE".to_vec(),
            ..request()
        };
        let r = run(
            &[],
            req,
            vec![Ok(Some("123456"))],
            vec![],
            vec![Ok(wrong())],
        );
        assert!(r.log.0.iter().all(|(_, l)| !l.contains('\n')));
    }

    #[test]
    fn nullok_with_forward_pass() {
        // Not enrolled: no prompt, nothing handed on (the next module should
        // use try_first_pass so that the user gets a password prompt).
        let r = run(
            &["nullok", "forward_pass"],
            request(),
            vec![],
            vec![Ok(status(State::NotEnrolled))],
            vec![],
        );
        assert_eq!(r.out.result, PamError::IGNORE);
        assert!(r.out.authtok.is_none());
        // Enrolled: GetStatus is asked once, its digits are used.
        let r = run(
            &["nullok", "forward_pass"],
            request(),
            vec![Ok(Some("pw12345678"))],
            vec![Ok(Status {
                state: State::Active,
                digits: 8,
                enforcement: None,
            })],
            vec![Ok(accepted())],
        );
        assert_eq!(r.out.result, PamError::SUCCESS);
        assert_eq!(r.daemon.status_calls, 1);
        assert_eq!(r.authtok().as_deref(), Some("pw"));
        // GetStatus refused: asked once only, then 6 digits are assumed.
        let r = run(
            &["nullok", "forward_pass"],
            request(),
            vec![Ok(Some("pw123456"))],
            vec![Err(st(Code::PermissionDenied))],
            vec![Ok(accepted())],
        );
        assert_eq!(r.daemon.status_calls, 1);
        assert_eq!(r.codes(), vec!["123456"]);
    }

    /// The app password tests (`app_passwords`, `app_passwords_only`).
    mod app_passwords;

    #[test]
    fn split_rules() {
        assert_eq!(split(b"pw123456", 6), Some((&b"pw"[..], &b"123456"[..])));
        assert_eq!(split(b"pw123456 \n", 6), Some((&b"pw"[..], &b"123456"[..])));
        assert_eq!(split(b"123456", 6), Some((&b""[..], &b"123456"[..])));
        assert_eq!(split(b"12345", 6), None);
        assert_eq!(split(b"pw12345a", 6), None);
        assert_eq!(split(b"pw123 456", 6), None);
    }
}

//! pam_otpd: a PAM module that asks for a one-time code and lets the otpd
//! daemon decide.
//!
//! # Entry points
//!
//! | entry point            | returns |
//! |------------------------|---------|
//! | `pam_sm_authenticate`  | `PAM_SUCCESS` when otpd accepts the code; `PAM_AUTH_ERR` when it refuses it (wrong, replayed, locked, throttled, not enrolled, malformed) or when otpd reports an error other than UNAVAILABLE; `PAM_AUTHINFO_UNAVAIL` when otpd is not running (no socket file, or nobody listening on it) with `fail_mode=closed` (the default), when otpd is running but busy, slow or failing (its queue stays full, the `timeout_ms` budget runs out, the connection fails after connecting, it answers UNAVAILABLE) whatever `fail_mode` says, and when the socket is not trusted; `PAM_IGNORE` for `nullok` users without an active enrollment, when otpd is not running with `fail_mode=open`, and with `app_passwords_only` for an answer that is not shaped like an app password (handed on in `PAM_AUTHTOK`); `PAM_CONV_ERR` when the user cannot be asked; `PAM_SYSTEM_ERR` on an internal error. Never `PAM_USER_UNKNOWN`. |
//! | `pam_sm_setcred`       | `PAM_SUCCESS` (there are no credentials to set). |
//! | `pam_sm_acct_mgmt`     | `PAM_IGNORE` (account policy is left to other modules). |
//! | `pam_sm_open_session`, `pam_sm_close_session` | `PAM_IGNORE`. |
//! | `pam_sm_chauthtok`     | `PAM_IGNORE` (codes are managed with `otpctl`, not `passwd`). |
//!
//! Options and the full behaviour are described in `README-pam.md`.
//!
//! # Layout
//!
//! - [`flow`]: the prompt flow, generic over the conversation, the daemon
//!   and the log; the mapping from otpd's answer to a PAM result.
//! - [`client`]: the blocking gRPC client (a runtime per exchange).
//! - [`app_password`]: the shape of an app password as typed.
//! - [`options`], [`messages`], [`error`], [`secret`].
//! - `ffi` (private): the only unsafe code — the exported entry points
//!   and the libpam calls.
//!
//! A panic never crosses into the host process: every entry point runs its
//! body under `catch_unwind` and turns a panic into `PAM_SYSTEM_ERR`.

#[allow(unsafe_code)]
mod ffi;

pub mod app_password;
pub mod client;
pub mod error;
pub mod flow;
pub mod h2;
pub mod hpack;
pub mod messages;
pub mod options;
pub mod secret;

use std::panic::{AssertUnwindSafe, catch_unwind};

use pamsm::{Pam, PamError, PamFlags, PamServiceModule};

use crate::client::Client;
use crate::error::Error;
use crate::flow::{Conversation, Level, Log, Request};
use crate::options::PassMode;
use crate::secret::Secret;

/// The module, as pamsm sees it.
pub struct PamOtpd;

impl PamServiceModule for PamOtpd {
    fn authenticate(pamh: Pam, flags: PamFlags, args: Vec<String>) -> PamError {
        let handle = ffi::Handle::new(pamh);
        guarded(
            || authenticate(&handle, flags, &args),
            || handle.syslog(Level::Error, "internal error (panic); refusing"),
        )
    }

    fn setcred(_: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        PamError::SUCCESS
    }

    fn acct_mgmt(_: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        PamError::IGNORE
    }

    fn open_session(_: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        PamError::IGNORE
    }

    fn close_session(_: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        PamError::IGNORE
    }

    fn chauthtok(_: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        PamError::IGNORE
    }
}

/// Runs `body`; a panic becomes `PAM_SYSTEM_ERR` (after `on_panic`, itself
/// guarded) instead of unwinding into the host process.
fn guarded(body: impl FnOnce() -> PamError, on_panic: impl FnOnce()) -> PamError {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(_panic) => {
            let _ = catch_unwind(AssertUnwindSafe(on_panic));
            PamError::SYSTEM_ERR
        }
    }
}

/// `pam_sm_authenticate`: reads the PAM items, runs the flow, hands the
/// password part on.
fn authenticate(handle: &ffi::Handle, flags: PamFlags, args: &[String]) -> PamError {
    let (opts, warnings) = options::parse(args);
    let mut log = SysLog { handle };
    for warning in &warnings {
        let level = if warning.is_error() {
            Level::Error
        } else {
            Level::Warning
        };
        log.log(level, &warning.to_string());
    }

    let user = match handle.user() {
        Ok(user) => user,
        Err(code) => {
            log.log(
                Level::Error,
                &format!("cannot get the user name (PAM error {code}); refusing"),
            );
            return PamError::AUTH_ERR;
        }
    };
    let (user, target_uid) = canonical_user(user);
    let text = |item: Option<Vec<u8>>| {
        item.map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    };
    let request = Request {
        user,
        service: text(handle.service()),
        remote_host: text(handle.rhost()),
        tty: text(handle.tty()),
        // Code only: to tell a password given as the code (sshd's password
        // method answers every prompt with it) from a code.
        authtok: match opts.pass_mode {
            PassMode::UseFirstPass | PassMode::TryFirstPass | PassMode::CodeOnly => {
                handle.authtok()
            }
            PassMode::ForwardPass => None,
        },
        // Who is asking: the invoking user for su and sudo (setuid root),
        // root for sshd and login.
        real_uid: nix::unistd::getuid().as_raw(),
        target_uid,
    };

    let mut conv = PamConversation {
        handle,
        silent: flags.contains(PamFlags::SILENT),
    };
    let mut daemon =
        Client::new(opts.socket.clone(), opts.timeout).with_fallback(opts.fallback_socket.clone());
    let outcome = flow::authenticate(&opts, request, &mut conv, &mut daemon, &mut log);

    if let Some(token) = &outcome.authtok
        && let Err(code) = handle.set_authtok(token)
    {
        log.log(
            Level::Error,
            &format!("cannot set PAM_AUTHTOK for the next module (PAM error {code})"),
        );
    }
    outcome.result
}

/// The account name the system knows `raw` by: name → uid → the uid's
/// name. sshd and su pass on the name as typed, and a name service may
/// accept aliases (`ALICE`, `alice@example.com`, a second passwd entry
/// with the same uid) for the account `alice`; otpd must be asked about
/// the account, or `nullok` would let an alias past the code. A name the
/// system does not know is sent as it is (otpd knows it as no one).
/// Also returns the account's uid, if the system knows the name.
fn canonical_user(raw: Vec<u8>) -> (Vec<u8>, Option<u32>) {
    use nix::unistd::User;
    std::str::from_utf8(&raw)
        .ok()
        .and_then(|name| User::from_name(name).ok().flatten())
        .and_then(|account| User::from_uid(account.uid).ok().flatten())
        .map_or((raw, None), |account| {
            (account.name.into_bytes(), Some(account.uid.as_raw()))
        })
}

/// The application's conversation function, via libpam.
struct PamConversation<'a> {
    handle: &'a ffi::Handle,
    /// `PAM_SILENT`: no messages (prompts still happen).
    silent: bool,
}

impl Conversation for PamConversation<'_> {
    fn prompt(&mut self, text: &str, echo: bool) -> Result<Option<Secret>, Error> {
        self.handle
            .prompt(text, echo)
            .map_err(|code| Error::Conversation { code })
    }

    fn info(&mut self, text: &str) {
        if !self.silent {
            self.handle.message(false, text);
        }
    }

    fn error(&mut self, text: &str) {
        if !self.silent {
            self.handle.message(true, text);
        }
    }
}

/// pam_syslog: facility authpriv, prefixed by libpam with the module and
/// service names.
struct SysLog<'a> {
    handle: &'a ffi::Handle,
}

impl Log for SysLog<'_> {
    fn log(&mut self, level: Level, line: &str) {
        self.handle.syslog(level, line);
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_system_err() {
        let mut logged = false;
        let r = guarded(|| panic!("boom"), || logged = true);
        assert_eq!(r, PamError::SYSTEM_ERR);
        assert!(logged);
        // A panic while logging the panic is swallowed too.
        let r = guarded(|| panic!("boom"), || panic!("again"));
        assert_eq!(r, PamError::SYSTEM_ERR);
        assert_eq!(guarded(|| PamError::SUCCESS, || {}), PamError::SUCCESS);
    }

    #[test]
    fn canonical_user_is_the_passwd_name_or_the_name_as_given() {
        assert_eq!(
            canonical_user(b"root".to_vec()),
            (b"root".to_vec(), Some(0))
        );
        assert_eq!(
            canonical_user(b"no-such-user-otpd".to_vec()),
            (b"no-such-user-otpd".to_vec(), None)
        );
        assert_eq!(
            canonical_user(b"\xff\xfe".to_vec()),
            (b"\xff\xfe".to_vec(), None)
        );
    }
}

//! Self-service: the proof of possession a plain user gives when changing
//! their own account (add a device, rename one, new backup codes, app
//! passwords), and the default USER of those commands (the caller).
//!
//! otpctl first calls without a proof: root and the admin group need none,
//! nor does a user's very first enrollment. When otpd answers that the
//! change needs one, otpctl asks on the terminal for a current code (or a
//! backup code) and calls once more; `--code` gives it up front (scripts).
//! The code is checked by otpd like a login code: spent when accepted,
//! counted as a failed login when wrong.

use std::future::Future;
use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::OnceLock;

use tonic::{Code, Status};
use zeroize::Zeroizing;

/// `--code`, and whether otpctl may ask (a terminal, no --json).
static GIVEN: OnceLock<(Option<Zeroizing<String>>, bool)> = OnceLock::new();

/// Notes `--code` and whether otpctl may prompt (once, at start).
pub fn init(code: Option<String>, json: bool) {
    let code = code.map(|c| Zeroizing::new(c.chars().filter(|c| !c.is_whitespace()).collect()));
    let interactive = !json && io::stdin().is_terminal();
    let _ = GIVEN.set((code, interactive));
}

/// The caller's login name: the USER of self-service commands when none
/// is given (empty when the uid has no name; otpd then refuses it).
pub fn own_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default()
}

/// Whether otpd refused a change for want of a proof.
fn wants_proof(s: &Status) -> bool {
    s.code() == Code::Unauthenticated && s.message().contains("needs a current code")
}

/// Calls `call` with the proof (`--code`, else none); if otpd wants one
/// and otpctl may ask, asks for it and calls once more.
pub async fn with_proof<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let (given, interactive) = match GIVEN.get() {
        Some((g, i)) => (g.as_ref(), *i),
        None => (None, false),
    };
    let first = given.map(|c| c.as_bytes().to_vec()).unwrap_or_default();
    match call(first).await {
        Err(s) if given.is_none() && interactive && wants_proof(&s) => match prompt() {
            Some(code) if !code.is_empty() => call(code.as_bytes().to_vec()).await,
            _ => Err(s),
        },
        other => other,
    }
}

/// Asks for the code on the terminal (shown as typed: it is valid for
/// seconds and spent once used); `None` at end of input.
fn prompt() -> Option<Zeroizing<String>> {
    let mut err = io::stderr().lock();
    let _ = write!(
        err,
        "To prove it is you, enter a current code from one of your devices (or a backup code): "
    );
    let _ = err.flush();
    let mut line = Zeroizing::new(String::new());
    match io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(Zeroizing::new(
            line.chars().filter(|c| !c.is_whitespace()).collect(),
        )),
    }
}

//! The audit trail: one structured `tracing` event per decision, under the
//! target `otpd::audit`. Never a code, a secret or a key.
//!
//! **One event, one unambiguous line.** Every text value (user, service,
//! remote host, tty, reason, error text) is recorded as a `&str`, never with
//! `%` (Display): the text format then writes it quoted with Rust's escapes
//! (`\"`, `\\`, `\n`, `\u{2028}`, `\u{202e}`, …), the JSON format as a JSON
//! string, and [`crate::log_output`] escapes what JSON leaves raw. So a
//! caller cannot end a value early, add a field or a line, or hide text
//! with bidi controls.
//!
//! **Bounded volume.** Refusals that are not decisions (every request
//! refused with an error — permission denied, malformed input, store or
//! journal down, corrupted or rolled-back record, internal error — and
//! Verify answers given without checking a code: throttled, locked, not
//! enrolled) of a non-root caller are rate-limited per
//! caller uid by a [`Repeats`]: the first [`REFUSALS_LOGGED`] of a minute
//! are logged, the rest summarised once a minute ("N requests refused from
//! uid U in the last minute"). Decisions (checked codes, admin actions) and
//! everything root does are always logged one by one.

use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::authz::Caller;
use crate::engine::{Decision, LoginContext, Rejection, Verdict, Via};
use crate::error::Error;
use crate::record::Method;
use crate::repeats::{Note, Repeats, Summary};

/// Target of every audit event (filter with `RUST_LOG=otpd::audit=info`).
pub const TARGET: &str = "otpd::audit";

/// Refusals of one uid logged one by one per [`REFUSAL_WINDOW`].
pub const REFUSALS_LOGGED: u32 = 10;

/// The window of the refusal summaries.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// Uids tracked at once; refusals of further uids share one summary.
const REFUSAL_KEYS: usize = 1024;

/// Longest request-supplied text logged, in characters.
const MAX_FIELD_CHARS: usize = 128;

static REFUSALS: LazyLock<Mutex<Repeats<u32>>> =
    LazyLock::new(|| Mutex::new(Repeats::new(REFUSALS_LOGGED, REFUSAL_WINDOW, REFUSAL_KEYS)));

fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Accepted => "accepted",
        Decision::Rejected => "rejected",
        Decision::Locked => "locked",
        Decision::Throttled => "throttled",
        Decision::NotEnrolled => "not_enrolled",
    }
}

/// Name of a method for logs and the CLI.
pub fn method_name(m: Option<Method>) -> &'static str {
    match m {
        Some(Method::Totp) => "totp",
        Some(Method::BackupCode) => "backup_code",
        Some(Method::AppPassword) => "app_password",
        None => "none",
    }
}

/// Request-supplied text cut to a bounded length for a log field. Log the
/// result as a `&str` (not with `%`): the formatters quote and escape it.
pub fn clip(s: &str) -> &str {
    match s.char_indices().nth(MAX_FIELD_CHARS) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// Whether this event of `uid` may be logged one by one. Root is never
/// limited; pending summaries of any uid are logged on the way.
fn admit_refusal(uid: u32) -> bool {
    if uid == 0 {
        summarise(Instant::now());
        return true;
    }
    let now = Instant::now();
    let (note, due) = {
        let mut r = REFUSALS.lock().unwrap_or_else(PoisonError::into_inner);
        let note = r.note(uid, now);
        (note, r.due(now))
    };
    log_summaries(&due);
    note == Note::Log
}

/// Logs the refusal summaries whose window has ended by `now`.
fn summarise(now: Instant) {
    let due = REFUSALS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .due(now);
    log_summaries(&due);
}

/// Logs every pending refusal summary, open windows included. Call at
/// shutdown.
pub fn flush_refusals() {
    let all = REFUSALS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain(Instant::now());
    log_summaries(&all);
}

/// Logs due refusal summaries every `period`, so that they appear also
/// when no further event comes. Runs until dropped.
pub async fn summarise_every(period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        summarise(Instant::now());
    }
}

fn log_summaries(summaries: &[Summary<u32>]) {
    for s in summaries {
        let secs = s.over.as_secs();
        let over = if s.over >= REFUSAL_WINDOW {
            "minute".to_owned()
        } else {
            format!("{secs} s")
        };
        let (uid, from) = match s.key {
            Some(uid) => (i64::from(uid), format!("uid {uid}")),
            None => (-1, "further uids".to_owned()),
        };
        // A field, not the message: the text format quotes fields only.
        let summary = format!(
            "{} requests refused from {from} in the last {over}",
            s.quiet
        );
        tracing::warn!(
            target: TARGET,
            event = "refused_summary",
            outcome = "error",
            summary = summary.as_str(),
            refused = s.quiet,
            seconds = secs,
            peer_uid = uid,
        );
    }
}

/// A Verify decision.
pub fn verify(caller: &Caller, user: &str, ctx: &LoginContext, v: &Verdict) {
    // Answers given without checking a code are not decisions: to a
    // non-root caller (a user hammering their own locked account) they are
    // rate-limited like other refusals.
    let unchecked = matches!(
        v.decision(),
        Decision::Locked | Decision::Throttled | Decision::NotEnrolled
    );
    if unchecked && !admit_refusal(caller.uid) {
        return;
    } else if !unchecked {
        summarise(Instant::now());
    }
    let outcome = decision_name(v.decision());
    let (method, credential, backup_codes_left, clock_skew_seconds) = match v {
        Verdict::Accepted {
            via,
            backup_codes_left,
            ..
        } => (
            Some(via.method()),
            match via {
                Via::Totp { device } => Some(device.as_str()),
                Via::AppPassword { id } => Some(id.as_str()),
                Via::BackupCode => None,
            },
            *backup_codes_left,
            0,
        ),
        Verdict::Rejected {
            rejection: Rejection::ClockSkew { skew_seconds },
            ..
        } => (None, None, 0, *skew_seconds),
        _ => (None, None, 0, 0),
    };
    macro_rules! ev {
        ($lvl:ident) => {
            tracing::$lvl!(
                target: TARGET,
                event = "verify",
                user = clip(user),
                service = clip(&ctx.service),
                remote_host = clip(&ctx.remote_host),
                tty = clip(&ctx.tty),
                // The local requester's real uid, as the PAM module (root)
                // reported it; absent when not told or not believed.
                requester_uid = ctx.requester.map(|r| r.uid),
                outcome,
                reason = v.reason().name(),
                method = method_name(method),
                // The device (TOTP) or app password id; never a secret.
                credential,
                backup_codes_left,
                retry_after = v.retry_after(),
                clock_skew_seconds,
                peer_uid = caller.uid,
                peer_pid = caller.pid.unwrap_or(0),
            )
        };
    }
    if v.is_accepted() {
        ev!(info);
    } else {
        ev!(warn);
    }
}

/// A login accepted without a code, within the grace after an earlier
/// accepted code of the same user from the same origin (`[grace]`).
pub fn grace(caller: &Caller, user: &str, ctx: &LoginContext) {
    summarise(Instant::now());
    tracing::info!(
        target: TARGET,
        event = "verify",
        user = clip(user),
        service = clip(&ctx.service),
        remote_host = clip(&ctx.remote_host),
        tty = clip(&ctx.tty),
        requester_uid = ctx.requester.map(|r| r.uid),
        outcome = "accepted",
        reason = "ok",
        method = "grace",
        peer_uid = caller.uid,
        peer_pid = caller.pid.unwrap_or(0),
    );
}

/// An administrative action that succeeded.
pub fn admin(caller: &Caller, action: &'static str, user: &str) {
    summarise(Instant::now());
    tracing::info!(
        target: TARGET,
        event = action,
        user = clip(user),
        outcome = "ok",
        peer_uid = caller.uid,
        peer_pid = caller.pid.unwrap_or(0),
    );
}

/// A plain user's change of their own account (self-service): who, what,
/// and how possession was proven (`proof`: the method, and the device of
/// a TOTP code; "none" for a first enrollment). Warning level: a second
/// factor changed without an admin.
pub fn self_service(caller: &Caller, action: &'static str, user: &str, proof: Option<&Via>) {
    summarise(Instant::now());
    let (proof, credential) = match proof {
        None => ("none", None),
        Some(via) => (
            method_name(Some(via.method())),
            match via {
                Via::Totp { device } => Some(device.as_str()),
                Via::BackupCode | Via::AppPassword { .. } => None,
            },
        ),
    };
    tracing::warn!(
        target: TARGET,
        event = action,
        user = clip(user),
        self_service = true,
        proof,
        credential,
        outcome = "ok",
        peer_uid = caller.uid,
        peer_user = caller.name.as_deref().unwrap_or_default(),
        peer_pid = caller.pid.unwrap_or(0),
    );
}

/// A device's key handed out (ExportDevice): who exported whose device,
/// for what; never the key. Warning level: it is a copy of a secret.
pub fn export(caller: &Caller, user: &str, device: &str, format: &str) {
    summarise(Instant::now());
    tracing::warn!(
        target: TARGET,
        event = "export_device",
        user = clip(user),
        device = clip(device),
        format = clip(format),
        outcome = "ok",
        peer_uid = caller.uid,
        peer_user = caller.name.as_deref().unwrap_or_default(),
        peer_pid = caller.pid.unwrap_or(0),
    );
}

/// A backup action that succeeded (init, change of passphrase, backup
/// now): who did it, and the public key or file; never a passphrase or a
/// secret key.
pub fn backup(caller: &Caller, action: &'static str, detail: &str) {
    summarise(Instant::now());
    tracing::warn!(
        target: TARGET,
        event = action,
        detail = clip(detail),
        outcome = "ok",
        peer_uid = caller.uid,
        peer_pid = caller.pid.unwrap_or(0),
    );
}

/// A user restored from a backup: who restored whom, whether a stored
/// record was replaced, and how many newer stored watermarks were kept.
pub fn restore(caller: &Caller, user: &str, replaced: bool, watermarks_kept: usize) {
    summarise(Instant::now());
    tracing::warn!(
        target: TARGET,
        event = "restore",
        user = clip(user),
        replaced,
        watermarks_kept,
        outcome = "ok",
        peer_uid = caller.uid,
        peer_pid = caller.pid.unwrap_or(0),
    );
}

/// Whether the refusal of `caller`'s request with `_error` may be logged
/// one by one. An error is never a decision: whatever it is (bad input,
/// permission, store down, disk full, a rolled-back or corrupted record),
/// a non-root caller's refusals are rate-limited, so that a local user
/// repeating Verify/GetStatus on their own account during an outage
/// cannot grow the log without bound. Root's are always logged.
fn admit_error(caller: Option<&Caller>, _error: &Error) -> bool {
    match caller {
        Some(c) => admit_refusal(c.uid),
        None => {
            summarise(Instant::now());
            true
        }
    }
}

/// A request refused with an error (bad input, permission, store trouble).
pub fn refused(caller: Option<&Caller>, action: &'static str, user: Option<&str>, error: &Error) {
    if !admit_error(caller, error) {
        return;
    }
    let reason = error.to_string();
    tracing::warn!(
        target: TARGET,
        event = action,
        user = clip(user.unwrap_or_default()),
        outcome = "error",
        reason = reason.as_str(),
        peer_uid = caller.map_or(-1, |c| i64::from(c.uid)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_at_a_character_boundary() {
        assert_eq!(clip("abc"), "abc");
        let long = "é".repeat(200);
        assert_eq!(clip(&long).chars().count(), MAX_FIELD_CHARS);
    }

    #[test]
    fn root_is_never_rate_limited() {
        for _ in 0..(REFUSALS_LOGGED * 5) {
            assert!(admit_refusal(0));
        }
    }

    #[test]
    fn a_flood_of_one_uid_is_cut_after_the_first_refusals() {
        // A uid no other test uses.
        let uid = 4_000_123;
        let logged = (0..REFUSALS_LOGGED * 5)
            .filter(|_| admit_refusal(uid))
            .count();
        assert_eq!(logged, REFUSALS_LOGGED as usize);
    }

    #[test]
    fn no_user_name_is_logged_with_display() -> std::io::Result<()> {
        // `%user` writes the name raw in the text format (a name may hold
        // `"`, spaces and `=`); log `user.as_str()` instead (quoted).
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        // Built here, so that this test does not find itself.
        let (a, b) = (["user", "=%"].concat(), ["=%", "user"].concat());
        let mut found = Vec::new();
        for entry in std::fs::read_dir(src)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)?;
                for (n, line) in text.lines().enumerate() {
                    let l = line.replace(' ', "");
                    if l.contains(&a) || l.contains(&b) {
                        found.push(format!("{}:{}", path.display(), n + 1));
                    }
                }
            }
        }
        assert!(found.is_empty(), "user names logged with %: {found:?}");
        Ok(())
    }

    fn caller(uid: u32) -> Caller {
        Caller {
            uid,
            pid: None,
            name: None,
            admin: false,
        }
    }

    /// Errors a user's own Verify/GetStatus can meet during an outage.
    fn outage_errors() -> Vec<Error> {
        vec![
            Error::StoreUnavailable { path: "/s".into() },
            Error::Store("disk full".into()),
            Error::Watermark {
                path: "/w".into(),
                reason: "disk full".into(),
            },
            Error::Core(otpd_core::Error::Corrupted { user: "u".into() }),
            Error::RolledBack { user: "u".into() },
            Error::Internal("x".into()),
        ]
    }

    #[test]
    fn store_and_internal_errors_of_a_non_root_caller_are_rate_limited() {
        for (i, error) in outage_errors().iter().enumerate() {
            // Uids no other test uses.
            let c = caller(4_100_000 + i as u32);
            let logged = (0..REFUSALS_LOGGED * 5)
                .filter(|_| admit_error(Some(&c), error))
                .count();
            assert_eq!(logged, REFUSALS_LOGGED as usize, "{error:?}");
        }
    }

    #[test]
    fn store_errors_of_root_are_always_logged() {
        for error in outage_errors() {
            for _ in 0..(REFUSALS_LOGGED * 3) {
                assert!(admit_error(Some(&caller(0)), &error));
            }
        }
    }
}

//! The audit trail: one structured `tracing` event per decision, under the
//! target `otpd::audit`. Never a code, a secret or a key.

use crate::authz::Caller;
use crate::engine::{Decision, LoginContext, Verdict};
use crate::error::Error;
use crate::record::Method;

/// Target of every audit event (filter with `RUST_LOG=otpd::audit=info`).
pub const TARGET: &str = "otpd::audit";

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
        None => "none",
    }
}

/// Makes request-supplied text safe for a log line.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .take(128)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A Verify decision.
pub fn verify(caller: &Caller, user: &str, ctx: &LoginContext, v: &Verdict) {
    let outcome = decision_name(v.decision);
    macro_rules! ev {
        ($lvl:ident) => {
            tracing::$lvl!(
                target: TARGET,
                event = "verify",
                user,
                service = %sanitize(&ctx.service),
                remote_host = %sanitize(&ctx.remote_host),
                tty = %sanitize(&ctx.tty),
                outcome,
                reason = v.reason.name(),
                method = method_name(v.method),
                backup_codes_left = v.backup_codes_left,
                retry_after = v.retry_after,
                clock_skew_seconds = v.clock_skew_seconds,
                peer_uid = caller.uid,
                peer_pid = caller.pid.unwrap_or(0),
            )
        };
    }
    if v.decision == Decision::Accepted {
        ev!(info);
    } else {
        ev!(warn);
    }
}

/// An administrative action that succeeded.
pub fn admin(caller: &Caller, action: &'static str, user: &str) {
    tracing::info!(
        target: TARGET,
        event = action,
        user,
        outcome = "ok",
        peer_uid = caller.uid,
        peer_pid = caller.pid.unwrap_or(0),
    );
}

/// A request refused with an error (bad input, permission, store trouble).
pub fn refused(caller: Option<&Caller>, action: &'static str, user: Option<&str>, error: &Error) {
    tracing::warn!(
        target: TARGET,
        event = action,
        user = user.map(sanitize).unwrap_or_default(),
        outcome = "error",
        reason = %error,
        peer_uid = caller.map_or(-1, |c| i64::from(c.uid)),
    );
}

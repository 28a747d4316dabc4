//! Self-service: a plain user changing the second factor of their own
//! account (add a spare device, rename one, new backup codes, app
//! passwords), authorised by the socket's peer credentials and by a proof
//! of possession in the same request.
//!
//! The proof is a real login check ([`super::verify`] and
//! [`super::finish`]): the gate (throttle, lockout) applies, an accepted
//! TOTP code is spent (replay protection) and an accepted backup code is
//! used up, a wrong code counts as a failure. The daemon decides proof and
//! change in one atomic update of the record, so a code proves exactly one
//! change, and a stolen unlocked shell cannot add a device without a
//! current code.
//!
//! Only the very first enrollment of a user without an active device needs
//! no proof (there is nothing to prove possession of), and only when the
//! configuration allows self-enrollment.

use super::{Attempt, Config, HashJob, LoginContext, Rejection, Step, Verdict, Via};
use crate::error::Error;
use crate::kdf::KdfHash;
use crate::record::UserRecord;
use crate::secret::Code;

#[cfg(test)]
mod tests;

/// What users may do on their own account beyond the changes that a proof
/// always allows (`[self_service]` in otpd.toml). By default nothing: an
/// admin hands out each first device, and removing or resetting stays
/// theirs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// A user without an active device may enroll their first one.
    pub enroll: bool,
    /// A user may remove one of their devices (with a proof).
    pub remove_device: bool,
    /// A user may reset their account (with a proof).
    pub reset: bool,
}

/// A change a user makes to their own account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start an enrollment that replaces the devices (the first one, or a
    /// re-enrollment).
    Enroll,
    /// Start the enrollment of a further device.
    AddDevice,
    /// Rename a device.
    RenameDevice,
    /// Issue new backup codes.
    RegenerateBackupCodes,
    /// Issue an app password.
    AddAppPassword,
    /// Revoke an app password.
    RevokeAppPassword,
    /// Remove a device.
    RemoveDevice,
    /// Remove the devices, backup codes and app passwords.
    Reset,
}

impl Action {
    /// The change in words, for messages.
    pub fn what(self) -> &'static str {
        match self {
            Self::Enroll => "enrolling",
            Self::AddDevice => "adding a device",
            Self::RenameDevice => "renaming a device",
            Self::RegenerateBackupCodes => "new backup codes",
            Self::AddAppPassword => "adding an app password",
            Self::RevokeAppPassword => "revoking an app password",
            Self::RemoveDevice => "removing a device",
            Self::Reset => "resetting",
        }
    }
}

/// What a user must bring for a change of their own account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// A current code or a backup code, checked as a login.
    Proof,
    /// Nothing: the first enrollment of a user without an active device.
    FirstEnrollment,
}

/// What `action` needs on the user's record, or why users may not do it
/// themselves. Decided on the record inside the atomic update.
pub fn requirement(
    rec: &UserRecord,
    action: Action,
    policy: &Policy,
    user: &str,
) -> Result<Requirement, Error> {
    match action {
        Action::RemoveDevice if !policy.remove_device => {
            return Err(Error::SelfServiceDisabled {
                what: action.what(),
                key: "remove_device",
            });
        }
        Action::Reset if !policy.reset => {
            return Err(Error::SelfServiceDisabled {
                what: action.what(),
                key: "reset",
            });
        }
        _ => {}
    }
    if rec.is_enrolled() {
        return Ok(Requirement::Proof);
    }
    match action {
        Action::Enroll if policy.enroll => Ok(Requirement::FirstEnrollment),
        Action::Enroll => Err(Error::SelfServiceDisabled {
            what: "enrolling your first device",
            key: "enroll",
        }),
        // Without an active device there is nothing to add beside, rename
        // (a pending device is renamed by enrolling again) or protect.
        _ => Err(Error::NotEnrolled {
            user: user.to_owned(),
        }),
    }
}

/// The proof's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proven {
    /// The code was valid and is now spent: apply the change.
    Accepted(Via),
    /// The code was refused (a checked wrong code was counted): change
    /// nothing else, but write the record when `changed`.
    Refused(Verdict),
}

/// A step of a proof.
#[derive(Debug)]
pub enum ProofStep {
    /// Decided. `changed`: the record must be written (with the change, if
    /// accepted).
    Done {
        /// The outcome.
        proof: Proven,
        /// Whether the proof itself changed the record.
        changed: bool,
    },
    /// The code may be a backup code: hash outside the update, then
    /// [`finish`] on the fresh record.
    Hash(HashJob),
}

fn from_step(step: Step) -> ProofStep {
    match step {
        Step::Done {
            verdict: Verdict::Accepted { via, .. },
            changed,
        } => ProofStep::Done {
            proof: Proven::Accepted(via),
            changed,
        },
        Step::Done { verdict, changed } => ProofStep::Done {
            proof: Proven::Refused(verdict),
            changed,
        },
        Step::Hash(job) => ProofStep::Hash(job),
    }
}

/// First step of a proof: exactly a login's first step with this code
/// (app passwords never prove anything).
pub fn prove(
    rec: &mut UserRecord,
    code: &Code,
    ctx: &LoginContext,
    now: u64,
    cfg: &Config,
    take_slot: &mut dyn FnMut() -> bool,
) -> ProofStep {
    from_step(super::verify(
        rec,
        Attempt::Code(code),
        ctx,
        now,
        cfg,
        take_slot,
    ))
}

/// Second step of a proof (a possible backup code), on the freshly loaded
/// record: exactly a login's second step.
pub fn finish(
    rec: &mut UserRecord,
    job: &HashJob,
    hash: Option<&KdfHash>,
    ctx: &LoginContext,
    now: u64,
    cfg: &Config,
) -> ProofStep {
    from_step(super::finish(rec, job, hash, ctx, now, cfg))
}

/// Why a refused proof was refused, in words for the user (never which
/// check failed beyond what a login tells).
pub fn refusal(v: &Verdict) -> String {
    let retry = |s: u64| format!("retry in {s} s");
    match v {
        Verdict::Accepted { .. } => "accepted".into(),
        Verdict::Rejected {
            rejection: Rejection::Replayed,
            retry_after,
        } => match retry_after {
            None => "already used; wait for the next code".into(),
            Some(s) => format!("already used; too many failures, {}", retry(*s)),
        },
        Verdict::Rejected { retry_after, .. } => match retry_after {
            None => "wrong (counted as a failed login)".into(),
            Some(s) => format!(
                "wrong (counted as a failed login); too many failures, {}",
                retry(*s)
            ),
        },
        Verdict::Locked { retry_after } => {
            format!(
                "not checked: the account is locked out, {}",
                retry(*retry_after)
            )
        }
        Verdict::Throttled { retry_after } => {
            format!(
                "not checked: too many recent failures, {}",
                retry(*retry_after)
            )
        }
        Verdict::Busy => "not checked: another check is running, retry in a second".into(),
        Verdict::NotEnrolled => "not checked: the account has no active device".into(),
    }
}

/// Resets the user's second factor in place (devices, pending enrollment,
/// backup codes, app passwords, counters), keeping what guards the record
/// itself (its version and generation).
pub fn reset(rec: &mut UserRecord) {
    rec.devices.clear();
    rec.pending = None;
    rec.backup_codes = None;
    rec.app_passwords.clear();
    super::unlock(rec);
}

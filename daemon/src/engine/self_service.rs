//! Self-service changes: a plain user's change of their own account and
//! its proof of possession, decided in one atomic update of the store
//! (proof checked as a login, change applied, one write), see
//! [`otpd_core::ops::self_service`].
//!
//! A proof that may be a backup code needs the slow hash: as for a login,
//! the first update decides what it can, the hash runs outside it
//! ([`Engine::self_service_kdf`]), and a second update on the fresh record
//! checks the gate again and decides proof and change together.

use otpd_core::device::DeviceName;
use otpd_core::ops::self_service::{self as ss, Action, Policy, ProofStep, Proven, Requirement};
use otpd_core::ops::{self, HashJob, HashTarget};
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use super::{
    AppPasswordStatus, Change, Credential, Engine, EnrollOptions, EnrollStarted, InFlight,
    KdfAttempt, LoginContext, Verdict, Via,
};
use crate::backup_codes::PlainCode;
use crate::error::Error;
use crate::record::{UserName, UserRecord};
use crate::secret::Code;

/// A change a user asks for on their own account.
#[derive(Debug, Clone)]
pub enum SelfChange {
    /// Start an enrollment (`add`: a further device).
    Enroll(EnrollOptions),
    /// Rename a device.
    RenameDevice {
        /// Its name.
        old: DeviceName,
        /// The new name.
        new: DeviceName,
    },
    /// Remove a device.
    RemoveDevice {
        /// Its name.
        name: DeviceName,
        /// Even the last active one.
        allow_last: bool,
    },
    /// New backup codes.
    RegenerateBackupCodes,
    /// A new app password.
    AddAppPassword {
        /// PAM service.
        service: String,
        /// Label.
        label: String,
        /// Lifetime in seconds.
        expires_in: Option<u64>,
    },
    /// Revoke an app password.
    RevokeAppPassword {
        /// Its id.
        id: String,
    },
    /// Remove devices, backup codes and app passwords.
    Reset,
}

impl SelfChange {
    /// What kind of change it is.
    pub fn action(&self) -> Action {
        match self {
            Self::Enroll(o) if o.add => Action::AddDevice,
            Self::Enroll(_) => Action::Enroll,
            Self::RenameDevice { .. } => Action::RenameDevice,
            Self::RemoveDevice { .. } => Action::RemoveDevice,
            Self::RegenerateBackupCodes => Action::RegenerateBackupCodes,
            Self::AddAppPassword { .. } => Action::AddAppPassword,
            Self::RevokeAppPassword { .. } => Action::RevokeAppPassword,
            Self::Reset => Action::Reset,
        }
    }
}

/// What an applied change gives back (secrets shown once).
pub enum SelfDone {
    /// The pending enrollment (its secret: shown once).
    Started(EnrollStarted),
    /// Renamed.
    Renamed,
    /// Removed; active devices left.
    Removed(usize),
    /// The new backup codes.
    BackupCodes(Vec<PlainCode>),
    /// The app password (shown once) and its listing.
    AppPassword(Zeroizing<String>, AppPasswordStatus),
    /// Revoked.
    Revoked,
    /// Reset.
    Reset,
}

impl std::fmt::Debug for SelfDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Started(_) => "SelfDone::Started(<redacted>)",
            Self::Renamed => "SelfDone::Renamed",
            Self::Removed(_) => "SelfDone::Removed",
            Self::BackupCodes(_) => "SelfDone::BackupCodes(<redacted>)",
            Self::AppPassword(..) => "SelfDone::AppPassword(<redacted>)",
            Self::Revoked => "SelfDone::Revoked",
            Self::Reset => "SelfDone::Reset",
        })
    }
}

/// The decision on a self-service request.
#[derive(Debug)]
pub enum SelfOutcome {
    /// Applied. `proof`: how possession was proven (`None`: a first
    /// enrollment, which needs none).
    Applied {
        /// The result.
        done: SelfDone,
        /// The accepted proof.
        proof: Option<Via>,
    },
    /// The proof was refused (recorded like a login's refusal); nothing
    /// else changed.
    Refused(Verdict),
}

/// The first phase's answer.
#[derive(Debug)]
pub enum SelfStep {
    /// Decided (and recorded).
    Done(SelfOutcome),
    /// The proof needs its slow hash: take a KDF permit, then
    /// [`Engine::self_service_kdf`] (or drop it: refused unchecked).
    NeedsKdf(SelfKdf),
}

/// A self-service request whose proof awaits its hash.
#[derive(Debug)]
pub struct SelfKdf {
    attempt: KdfAttempt,
    change: SelfChange,
}

enum Phase {
    Done(SelfOutcome),
    Hash(HashJob),
}

impl Engine {
    /// Applies `change` to the record (after the proof, or for a first
    /// enrollment).
    fn apply_self(
        &self,
        rec: &mut UserRecord,
        user: &UserName,
        change: &SelfChange,
        now: u64,
    ) -> Result<SelfDone, otpd_core::Error> {
        Ok(match change {
            SelfChange::Enroll(opts) => SelfDone::Started(ops::enroll_start(
                rec,
                user,
                opts.clone(),
                now,
                &self.cfg,
                &mut OsRng,
            )?),
            SelfChange::RenameDevice { old, new } => {
                ops::rename_device(rec, user, old, new.clone())?;
                SelfDone::Renamed
            }
            SelfChange::RemoveDevice { name, allow_last } => {
                SelfDone::Removed(ops::remove_device(rec, user, name, *allow_last)?)
            }
            SelfChange::RegenerateBackupCodes => SelfDone::BackupCodes(
                ops::regenerate_backup_codes(rec, user, &self.cfg, &mut OsRng, &self.kdf_mem)?,
            ),
            SelfChange::AddAppPassword {
                service,
                label,
                expires_in,
            } => {
                let (shown, stored) = ops::add_app_password(
                    rec,
                    user,
                    service,
                    label,
                    *expires_in,
                    now,
                    &self.cfg,
                    &mut OsRng,
                    &self.kdf_mem,
                )?;
                SelfDone::AppPassword(shown, AppPasswordStatus::from(&stored))
            }
            SelfChange::RevokeAppPassword { id } => {
                ops::revoke_app_password(rec, user, id)?;
                SelfDone::Revoked
            }
            SelfChange::Reset => {
                ss::reset(rec);
                SelfDone::Reset
            }
        })
    }

    /// After a proof's step: apply the change if it was accepted.
    fn after_proof(
        &self,
        mut rec: UserRecord,
        user: &UserName,
        change: &SelfChange,
        step: ProofStep,
        now: u64,
    ) -> Result<(Phase, Change), Error> {
        match step {
            ProofStep::Done {
                proof: Proven::Accepted(via),
                ..
            } => {
                // A change that fails writes nothing: the proof is not
                // spent either.
                let done = self.apply_self(&mut rec, user, change, now)?;
                Ok((
                    Phase::Done(SelfOutcome::Applied {
                        done,
                        proof: Some(via),
                    }),
                    Change::Save(Box::new(rec)),
                ))
            }
            ProofStep::Done {
                proof: Proven::Refused(verdict),
                changed,
            } => Ok((
                Phase::Done(SelfOutcome::Refused(verdict)),
                if changed {
                    Change::Save(Box::new(rec))
                } else {
                    Change::Keep
                },
            )),
            ProofStep::Hash(job) => Ok((Phase::Hash(job), Change::Keep)),
        }
    }

    /// A user's change of their own account, first phase: in one atomic
    /// update, what the change needs ([`ss::requirement`]), the proof as a
    /// login's first step, and the change if the proof is accepted. The
    /// caller must have checked that the caller is `user`.
    pub fn self_service(
        &self,
        user: &UserName,
        proof: Option<Code>,
        change: SelfChange,
        policy: &Policy,
        ctx: &LoginContext,
    ) -> Result<SelfStep, Error> {
        let now = self.clock.now();
        let action = change.action();
        let mut slot = None;
        let phase = self.transact(user, |rec| {
            let mut rec = rec.unwrap_or_else(UserRecord::new);
            match ss::requirement(&rec, action, policy, user.as_str())? {
                Requirement::FirstEnrollment => {
                    let done = self.apply_self(&mut rec, user, &change, now)?;
                    Ok((
                        Phase::Done(SelfOutcome::Applied { done, proof: None }),
                        Change::Save(Box::new(rec)),
                    ))
                }
                Requirement::Proof => {
                    let Some(code) = &proof else {
                        return Err(otpd_core::Error::ProofRequired {
                            what: action.what(),
                        }
                        .into());
                    };
                    let step = ss::prove(&mut rec, code, ctx, now, &self.cfg, &mut || {
                        if slot.is_none() {
                            slot = InFlight::enter(&self.kdf_in_flight, user);
                        }
                        slot.is_some()
                    });
                    self.after_proof(rec, user, &change, step, now)
                }
            }
        })?;
        match phase {
            Phase::Done(outcome) => Ok(SelfStep::Done(outcome)),
            Phase::Hash(job) => {
                let slot =
                    slot.ok_or_else(|| Error::Internal("hash requested without a slot".into()))?;
                let credential = Credential::Code(
                    proof
                        .ok_or_else(|| Error::Internal("hash requested without a proof".into()))?,
                );
                Ok(SelfStep::NeedsKdf(SelfKdf {
                    attempt: KdfAttempt {
                        user: user.clone(),
                        credential,
                        job,
                        _in_flight: slot,
                    },
                    change,
                }))
            }
        }
    }

    /// Second phase: hashes the proof (outside the update, in memory from
    /// the pool), then in one update on the fresh record decides proof and
    /// change. Blocks: run it off the async workers, holding a permit of
    /// [`Engine::kdf_permits`].
    pub fn self_service_kdf(
        &self,
        pending: SelfKdf,
        policy: &Policy,
        ctx: &LoginContext,
    ) -> Result<SelfOutcome, Error> {
        let SelfKdf { attempt, change } = pending;
        let hashed = match (&attempt.job.target, &attempt.credential) {
            (HashTarget::BackupCode(probe), Credential::Code(code)) => {
                probe.hash(code.as_bytes(), &self.kdf_mem)
            }
            _ => return Err(Error::Internal("a proof is a code".into())),
        };
        let now = self.clock.now();
        let user = &attempt.user;
        let action = change.action();
        let phase = self.transact(user, |rec| {
            let rec = rec.unwrap_or_else(UserRecord::new);
            match ss::requirement(&rec, action, policy, user.as_str())? {
                // The devices went away while the proof was hashed.
                Requirement::FirstEnrollment => Ok((
                    Phase::Done(SelfOutcome::Refused(Verdict::NotEnrolled)),
                    Change::Keep,
                )),
                Requirement::Proof => {
                    let mut rec = rec;
                    let step = ss::finish(
                        &mut rec,
                        &attempt.job,
                        hashed.as_ref().ok(),
                        ctx,
                        now,
                        &self.cfg,
                    );
                    self.after_proof(rec, user, &change, step, now)
                }
            }
        })?;
        // A hash that failed was counted as a failure; now report it.
        hashed.map_err(Error::from)?;
        match phase {
            Phase::Done(outcome) => Ok(outcome),
            Phase::Hash(_) => Err(Error::Internal(
                "second phase asked for another hash".into(),
            )),
        }
    }
}

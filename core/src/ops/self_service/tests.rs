//! The proof of a self-service change is a login check: spent once,
//! counted when wrong, gated by throttle and lockout; and who needs one.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::super::{EnrollOptions, enroll_confirm, enroll_start};
use super::*;
use crate::backup_codes::PlainCode;
use crate::device::DeviceName;
use crate::kdf::{Fresh, KdfParams};
use crate::record::UserName;
use crate::totp;

const T0: u64 = 1_800_000_000;

fn cfg() -> Config {
    Config {
        kdf: KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        },
        ..Config::default()
    }
}

fn code(s: &str) -> Code {
    match Code::parse(s.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("test code: {e}"),
    }
}

/// The user themself, on this machine (as the daemon builds it).
fn own() -> LoginContext {
    LoginContext {
        service: "otpctl".into(),
        requester: Some(super::super::LocalRequester {
            uid: 1000,
            is_target_user: true,
        }),
        ..LoginContext::default()
    }
}

/// Alice with the device "phone" enrolled at T0, and her backup codes.
fn enrolled() -> Result<(UserRecord, Vec<PlainCode>), Error> {
    let mut rng = StdRng::seed_from_u64(7);
    let user = UserName::test("alice");
    let mut rec = UserRecord::new();
    let opts = EnrollOptions {
        device: Some(DeviceName::parse("phone")?),
        ..EnrollOptions::default()
    };
    enroll_start(&mut rec, &user, opts, T0, &cfg(), &mut rng)?;
    let pending = rec.pending.as_ref().ok_or(Error::Internal("no pending"))?;
    let d = &pending.device;
    let c = code(&totp::code_at_step(
        &d.secret,
        d.params,
        totp::step_of(d.params, T0),
    ));
    let confirmed = enroll_confirm(&mut rec, &user, &c, T0, &cfg(), &mut rng, &Fresh)?;
    let codes = confirmed.backup_codes.ok_or(Error::Internal("no codes"))?;
    Ok((rec, codes))
}

/// The code of the phone at `now`.
fn current(rec: &UserRecord, now: u64) -> Result<Code, Error> {
    let d = rec.devices.first().ok_or(Error::Internal("no device"))?;
    Ok(code(&totp::code_at_step(
        &d.secret,
        d.params,
        totp::step_of(d.params, now),
    )))
}

/// Both steps of a proof, as the daemon runs them.
fn run(rec: &mut UserRecord, c: &Code, now: u64) -> Result<(Proven, bool), Error> {
    match prove(rec, c, &own(), now, &cfg(), &mut || true) {
        ProofStep::Done { proof, changed } => Ok((proof, changed)),
        ProofStep::Hash(job) => {
            let hash = match &job.target {
                super::super::HashTarget::BackupCode(p) => p.hash(c.as_bytes(), &Fresh)?,
                super::super::HashTarget::AppPassword(_) => {
                    return Err(Error::Internal("an app password job for a code"));
                }
            };
            match finish(rec, &job, Some(&hash), &own(), now, &cfg()) {
                ProofStep::Done { proof, changed } => Ok((proof, changed)),
                ProofStep::Hash(_) => Err(Error::Internal("a second hash")),
            }
        }
    }
}

#[test]
fn the_first_enrollment_alone_needs_no_proof_and_only_when_allowed() -> Result<(), Error> {
    let empty = UserRecord::new();
    let open = Policy {
        enroll: true,
        ..Policy::default()
    };
    assert_eq!(
        requirement(&empty, Action::Enroll, &open, "alice")?,
        Requirement::FirstEnrollment
    );
    let closed = Policy::default();
    assert!(matches!(
        requirement(&empty, Action::Enroll, &closed, "alice"),
        Err(Error::SelfServiceDisabled { key: "enroll", .. })
    ));
    // Nothing to add beside or to protect without an active device.
    for action in [
        Action::AddDevice,
        Action::RenameDevice,
        Action::RegenerateBackupCodes,
        Action::AddAppPassword,
        Action::RevokeAppPassword,
    ] {
        assert!(matches!(
            requirement(&empty, action, &open, "alice"),
            Err(Error::NotEnrolled { .. })
        ));
    }
    // Enrolled: every change needs a proof, a re-enrollment too, whatever
    // `enroll` says.
    let (rec, _) = enrolled()?;
    for action in [
        Action::Enroll,
        Action::AddDevice,
        Action::RenameDevice,
        Action::RegenerateBackupCodes,
        Action::AddAppPassword,
        Action::RevokeAppPassword,
    ] {
        assert_eq!(
            requirement(&rec, action, &closed, "alice")?,
            Requirement::Proof
        );
    }
    Ok(())
}

#[test]
fn removing_and_resetting_stay_admin_only_unless_configured() -> Result<(), Error> {
    let (rec, _) = enrolled()?;
    let open = Policy::default();
    assert!(matches!(
        requirement(&rec, Action::RemoveDevice, &open, "alice"),
        Err(Error::SelfServiceDisabled {
            key: "remove_device",
            ..
        })
    ));
    assert!(matches!(
        requirement(&rec, Action::Reset, &open, "alice"),
        Err(Error::SelfServiceDisabled { key: "reset", .. })
    ));
    let all = Policy {
        remove_device: true,
        reset: true,
        ..open
    };
    assert_eq!(
        requirement(&rec, Action::RemoveDevice, &all, "alice")?,
        Requirement::Proof
    );
    assert_eq!(
        requirement(&rec, Action::Reset, &all, "alice")?,
        Requirement::Proof
    );
    Ok(())
}

#[test]
fn a_current_code_proves_once_and_is_then_spent() -> Result<(), Error> {
    let (mut rec, _) = enrolled()?;
    let now = T0 + 60;
    let c = current(&rec, now)?;
    let (proof, changed) = run(&mut rec, &c, now)?;
    assert!(changed);
    assert!(matches!(proof, Proven::Accepted(Via::Totp { .. })));
    // The same code for a second change: a replay.
    let (again, _) = run(&mut rec, &c, now + 1)?;
    assert!(matches!(
        again,
        Proven::Refused(Verdict::Rejected {
            rejection: Rejection::Replayed,
            ..
        })
    ));
    // ... and a login with it is refused too.
    let login = super::super::verify(
        &mut rec,
        Attempt::Code(&c),
        &own(),
        now + 2,
        &cfg(),
        &mut || true,
    );
    assert!(matches!(
        login,
        Step::Done {
            verdict: Verdict::Rejected { .. },
            ..
        }
    ));
    Ok(())
}

#[test]
fn a_wrong_proof_counts_as_a_failed_login_and_the_lockout_applies() -> Result<(), Error> {
    let (mut rec, _) = enrolled()?;
    let now = T0 + 60;
    let right = current(&rec, now)?;
    let wrong = (0u32..)
        .map(|n| code(&format!("{n:06}")))
        .find(|c| !c.ct_matches(right.as_bytes()))
        .ok_or(Error::Internal("no wrong code"))?;
    let threshold = cfg().policy.lock_threshold;
    let mut refused = 0;
    for i in 0..u64::from(threshold) + 3 {
        let (proof, _) = run(&mut rec, &wrong, now + i)?;
        match proof {
            Proven::Refused(Verdict::Rejected { .. }) => refused += 1,
            Proven::Refused(Verdict::Locked { .. } | Verdict::Throttled { .. }) => break,
            other => panic!("a wrong proof gave {other:?}"),
        }
    }
    assert!(refused >= 1);
    assert!(rec.counters.consecutive_failures >= 1);
    assert_eq!(rec.counters.consecutive_failures, refused);
    // Gated now: even the right code is not checked (and not spent).
    let (proof, changed) = run(&mut rec, &right, now + 10)?;
    assert!(
        matches!(
            proof,
            Proven::Refused(Verdict::Locked { .. } | Verdict::Throttled { .. })
        ),
        "{proof:?}"
    );
    assert!(!changed);
    assert!(refusal(&Verdict::Locked { retry_after: 60 }).contains("retry in 60 s"));
    Ok(())
}

#[test]
fn a_backup_code_proves_once_and_is_used_up() -> Result<(), Error> {
    let (mut rec, codes) = enrolled()?;
    let first = codes.first().ok_or(Error::Internal("no codes"))?;
    let c = code(first.as_str());
    let (proof, changed) = run(&mut rec, &c, T0 + 90)?;
    assert!(changed);
    assert_eq!(proof, Proven::Accepted(Via::BackupCode));
    let left = rec.backup_codes.as_ref().map(|s| s.remaining());
    assert_eq!(left, Some(codes.len() - 1));
    let (again, _) = run(&mut rec, &c, T0 + 120)?;
    assert!(matches!(again, Proven::Refused(Verdict::Rejected { .. })));
    Ok(())
}

#[test]
fn reset_keeps_what_guards_the_record() -> Result<(), Error> {
    let (mut rec, _) = enrolled()?;
    rec.generation = 7;
    reset(&mut rec);
    assert!(!rec.is_enrolled());
    assert!(rec.backup_codes.is_none() && rec.pending.is_none());
    assert_eq!(rec.generation, 7);
    Ok(())
}

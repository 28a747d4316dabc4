//! The decisions through their public functions: enrollment, devices,
//! verification of TOTP codes, backup codes and app passwords (both steps),
//! throttle and lockout, the admin operations, and a property test of
//! interleaved verifications from two devices.

use std::collections::BTreeSet;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::kdf::Fresh;
use crate::policy::Counters;

/// Aligned to 30 and 60 second steps.
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

fn rng() -> StdRng {
    StdRng::seed_from_u64(0x07d)
}

fn user() -> UserName {
    UserName::test("alice")
}

fn name(s: &str) -> DeviceName {
    match DeviceName::parse(s) {
        Ok(n) => n,
        Err(e) => panic!("test device name {s:?}: {e}"),
    }
}

fn code(s: &str) -> Code {
    match Code::parse(s.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("test code: {e}"),
    }
}

fn local(service: &str) -> LoginContext {
    LoginContext {
        service: service.into(),
        ..LoginContext::default()
    }
}

fn sshd() -> LoginContext {
    local("sshd")
}

/// The record as stored, to show that a decision changed nothing.
fn snapshot(rec: &UserRecord) -> Result<String, Error> {
    serde_json::to_string(rec).map_err(|_| Error::Internal("encode record"))
}

fn dev<'a>(rec: &'a UserRecord, n: &str) -> Result<&'a Device, Error> {
    rec.device(&name(n))
        .ok_or(Error::Internal("no such device in the test"))
}

fn code_of(d: &Device, step: u64) -> Code {
    code(&totp::code_at_step(&d.secret, d.params, step))
}

/// The code device `n` shows at `now`, `offset` steps off.
fn code_now(rec: &UserRecord, n: &str, now: u64, offset: i64) -> Result<Code, Error> {
    let d = dev(rec, n)?;
    let step = totp::step_of(d.params, now)
        .checked_add_signed(offset)
        .ok_or(Error::Internal("step out of range"))?;
    Ok(code_of(d, step))
}

/// A code of `digits` digits that no active device shows anywhere near
/// `now` and that is no backup code of the test (they are unknown, but a
/// hit among 10 of 10^8 is no concern).
fn wrong_code(rec: &UserRecord, now: u64, digits: usize) -> Code {
    let near = |c: &Code| {
        let pending = rec.pending.as_ref().map(|p| &p.device);
        rec.devices.iter().chain(pending).any(|d| {
            let current = totp::step_of(d.params, now);
            (current.saturating_sub(12)..=current + 12)
                .any(|s| c.ct_matches(code_of(d, s).as_bytes()))
        })
    };
    (0u64..)
        .map(|n| code(&format!("{n:0digits$}")))
        .find(|c| !near(c))
        .unwrap_or_else(|| code(&"0".repeat(digits)))
}

/// Starts and confirms an enrollment of device `n` with its current code.
fn enroll(
    rec: &mut UserRecord,
    n: &str,
    add: bool,
    now: u64,
    rng: &mut StdRng,
) -> Result<Confirmed, Error> {
    enroll_with(
        rec,
        EnrollOptions {
            device: Some(name(n)),
            add,
            ..EnrollOptions::default()
        },
        now,
        rng,
    )
}

fn enroll_with(
    rec: &mut UserRecord,
    opts: EnrollOptions,
    now: u64,
    rng: &mut StdRng,
) -> Result<Confirmed, Error> {
    enroll_start(rec, &user(), opts, now, &cfg(), rng)?;
    let pending = rec.pending.as_ref().ok_or(Error::Internal("no pending"))?;
    let c = code_of(&pending.device, totp::step_of(pending.device.params, now));
    enroll_confirm(rec, &user(), &c, now, &cfg(), rng, &Fresh)
}

/// A user with the device `phone`, enrolled at `T0`, and its backup codes.
fn enrolled() -> Result<(UserRecord, Vec<PlainCode>, StdRng), Error> {
    let mut rng = rng();
    let mut rec = UserRecord::new();
    let confirmed = enroll(&mut rec, "phone", false, T0, &mut rng)?;
    let codes = confirmed
        .backup_codes
        .ok_or(Error::Internal("no backup codes"))?;
    Ok((rec, codes, rng))
}

/// Same, with the second device `token` (SHA-256, 8 digits, 60 s).
fn two_devices() -> Result<(UserRecord, Vec<PlainCode>, StdRng), Error> {
    let (mut rec, codes, mut rng) = enrolled()?;
    let confirmed = enroll_with(
        &mut rec,
        EnrollOptions {
            device: Some(name("token")),
            add: true,
            algorithm: Some(Algorithm::Sha256),
            digits: Some(8),
            period: Some(60),
            ..EnrollOptions::default()
        },
        T0,
        &mut rng,
    )?;
    assert!(confirmed.backup_codes.is_none());
    Ok((rec, codes, rng))
}

/// The hash a job asks for.
fn hash_for(job: &HashJob, attempt: Attempt<'_>) -> Result<KdfHash, Error> {
    match (&job.target, attempt) {
        (HashTarget::BackupCode(probe), Attempt::Code(c)) => probe.hash(c.as_bytes(), &Fresh),
        (HashTarget::AppPassword(probe), Attempt::AppPassword(input)) => probe.hash(input, &Fresh),
        _ => Err(Error::Internal("hash job for the other kind of attempt")),
    }
}

fn done(step: Step) -> Result<(Verdict, bool), Error> {
    match step {
        Step::Done { verdict, changed } => Ok((verdict, changed)),
        Step::Hash(_) => Err(Error::Internal("a second hash asked for")),
    }
}

/// Both steps of a Verify, as the daemon runs them (slot always granted).
fn run(
    rec: &mut UserRecord,
    attempt: Attempt<'_>,
    ctx: &LoginContext,
    now: u64,
) -> Result<(Verdict, bool), Error> {
    let cfg = cfg();
    match verify(rec, attempt, ctx, now, &cfg, &mut || true) {
        Step::Done { verdict, changed } => Ok((verdict, changed)),
        Step::Hash(job) => {
            let hash = hash_for(&job, attempt)?;
            done(finish(rec, &job, Some(&hash), ctx, now, &cfg))
        }
    }
}

fn run_code(rec: &mut UserRecord, c: &Code, now: u64) -> Result<Verdict, Error> {
    Ok(run(rec, Attempt::Code(c), &sshd(), now)?.0)
}

fn totp_via(device: &str) -> Via {
    Via::Totp {
        device: name(device),
    }
}

fn assert_accepted(v: &Verdict, via: &Via) {
    match v {
        Verdict::Accepted { via: got, .. } => assert_eq!(got, via),
        other => panic!("expected acceptance via {via:?}, got {other:?}"),
    }
}

fn assert_rejected(v: &Verdict, rejection: Rejection) {
    match v {
        Verdict::Rejected { rejection: got, .. } => assert_eq!(*got, rejection),
        other => panic!("expected {rejection:?}, got {other:?}"),
    }
}

fn app_input(shown: &str) -> AppPasswordInput {
    match AppPasswordInput::parse(shown.as_bytes()) {
        Some(i) => i,
        None => panic!("an issued app password does not parse"),
    }
}

/// The same id with another secret.
fn wrong_app_input(shown: &str) -> AppPasswordInput {
    let mut other = shown.as_bytes().to_vec();
    let last = other.len() - 1;
    other[last] = if other[last] == b'0' { b'1' } else { b'0' };
    match AppPasswordInput::parse(&other) {
        Some(i) => i,
        None => panic!("a changed app password does not parse"),
    }
}

// ---------------------------------------------------------------- enroll

#[test]
fn fresh_enrollment_issues_backup_codes_and_replaces_every_device() -> Result<(), Error> {
    let (mut rec, first_codes, mut rng) = two_devices()?;
    assert_eq!(first_codes.len(), crate::backup_codes::COUNT);
    assert_eq!(rec.devices.len(), 2);
    let old_set = rec.backup_codes.as_ref().map(BackupCodeSet::set_id);
    cfg()
        .policy
        .record_failure(rec.counters_mut(Bucket::Trusted), T0);

    let confirmed = enroll(&mut rec, "laptop", false, T0 + 30, &mut rng)?;
    assert_eq!(confirmed.device, name("laptop"));
    let codes = confirmed.backup_codes.ok_or(Error::Internal("no codes"))?;
    assert_eq!(codes.len(), crate::backup_codes::COUNT);
    let names: Vec<&str> = rec.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["laptop"]);
    assert_ne!(
        rec.backup_codes.as_ref().map(BackupCodeSet::set_id),
        old_set
    );
    assert_eq!(
        rec.counters,
        Counters::default(),
        "a fresh start clears the counters"
    );
    assert!(rec.pending.is_none());
    // The confirming step is used; the old backup codes no longer work.
    let now = T0 + 30;
    let replay = code_now(&rec, "laptop", now, 0)?;
    assert_rejected(&run_code(&mut rec, &replay, now)?, Rejection::Replayed);
    assert_rejected(
        &run_code(&mut rec, &code(&first_codes[0]), now)?,
        Rejection::WrongCode,
    );
    assert_accepted(
        &run_code(&mut rec, &code(&codes[0]), now)?,
        &Via::BackupCode,
    );
    Ok(())
}

#[test]
fn an_added_device_joins_the_others_and_keeps_the_backup_codes() -> Result<(), Error> {
    let (mut rec, codes, mut rng) = enrolled()?;
    let set = rec.backup_codes.as_ref().map(BackupCodeSet::set_id);
    let confirmed = enroll(&mut rec, "tablet", true, T0 + 60, &mut rng)?;
    assert_eq!(confirmed.device, name("tablet"));
    assert!(confirmed.backup_codes.is_none());
    let names: Vec<&str> = rec.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["phone", "tablet"]);
    assert_eq!(rec.backup_codes.as_ref().map(BackupCodeSet::set_id), set);
    assert_accepted(
        &run_code(&mut rec, &code(&codes[3]), T0 + 60)?,
        &Via::BackupCode,
    );
    Ok(())
}

#[test]
fn adding_needs_an_enrolled_user_a_free_name_and_room() -> Result<(), Error> {
    let mut rng = rng();
    let mut fresh = UserRecord::new();
    let add = |n: &str| EnrollOptions {
        device: Some(name(n)),
        add: true,
        ..EnrollOptions::default()
    };
    assert!(matches!(
        enroll_start(&mut fresh, &user(), add("phone"), T0, &cfg(), &mut rng),
        Err(Error::NoActiveDevice { .. })
    ));
    assert!(fresh.pending.is_none());

    let (mut rec, _, mut rng) = enrolled()?;
    assert!(matches!(
        enroll_start(&mut rec, &user(), add("phone"), T0, &cfg(), &mut rng),
        Err(Error::DeviceExists { ref device, .. }) if device == "phone"
    ));
    assert!(rec.pending.is_none());
    for i in 1..MAX_DEVICES {
        enroll(&mut rec, &format!("spare{i}"), true, T0, &mut rng)?;
    }
    assert_eq!(rec.devices.len(), MAX_DEVICES);
    assert!(matches!(
        enroll_start(&mut rec, &user(), add("one-more"), T0, &cfg(), &mut rng),
        Err(Error::TooMany {
            what: "devices",
            max: MAX_DEVICES,
            ..
        })
    ));
    // A fresh enrollment is no addition: it may start (and replaces all).
    enroll(&mut rec, "phone", false, T0 + 30, &mut rng)?;
    assert_eq!(rec.devices.len(), 1);
    Ok(())
}

#[test]
fn a_name_taken_while_pending_is_refused_at_confirmation() -> Result<(), Error> {
    let (mut rec, _, mut rng) = two_devices()?;
    let opts = EnrollOptions {
        device: Some(name("tablet")),
        add: true,
        ..EnrollOptions::default()
    };
    enroll_start(&mut rec, &user(), opts, T0, &cfg(), &mut rng)?;
    // The pending name is taken: renaming onto it is refused.
    assert!(matches!(
        rename_device(&mut rec, &user(), &name("token"), name("tablet")),
        Err(Error::DeviceExists { .. })
    ));
    let pending = rec.pending.as_ref().ok_or(Error::Internal("no pending"))?;
    let c = code_of(&pending.device, totp::step_of(pending.device.params, T0));
    // An active device got the name anyway (an older record, a bug):
    // confirming must not create a second device of that name.
    rec.devices[1].name = name("tablet");
    assert!(matches!(
        enroll_confirm(&mut rec, &user(), &c, T0, &cfg(), &mut rng, &Fresh),
        Err(Error::DeviceExists { .. })
    ));
    assert_eq!(rec.devices.len(), 2);
    Ok(())
}

#[test]
fn a_wrong_confirmation_code_changes_nothing() -> Result<(), Error> {
    let (mut rec, _, mut rng) = enrolled()?;
    enroll_start(
        &mut rec,
        &user(),
        EnrollOptions::default(),
        T0 + 30,
        &cfg(),
        &mut rng,
    )?;
    let before = snapshot(&rec)?;
    let wrong = wrong_code(&rec, T0 + 30, 6);
    // The active device's code is no confirmation of the pending one.
    let phone = code_now(&rec, "phone", T0 + 30, 0)?;
    for c in [&wrong, &phone] {
        assert_eq!(
            enroll_confirm(&mut rec, &user(), c, T0 + 30, &cfg(), &mut rng, &Fresh).err(),
            Some(Error::ConfirmMismatch)
        );
        assert_eq!(snapshot(&rec)?, before);
    }
    Ok(())
}

#[test]
fn confirming_without_a_pending_enrollment_is_refused() {
    let mut rec = UserRecord::new();
    let mut rng = rng();
    assert!(matches!(
        enroll_confirm(
            &mut rec,
            &user(),
            &code("123456"),
            T0,
            &cfg(),
            &mut rng,
            &Fresh
        ),
        Err(Error::NoPendingEnrollment { .. })
    ));
}

#[test]
fn logins_are_unchanged_while_an_enrollment_is_pending() -> Result<(), Error> {
    let mut rng = rng();
    // Not enrolled yet: only pending.
    let mut rec = UserRecord::new();
    enroll_start(
        &mut rec,
        &user(),
        EnrollOptions::default(),
        T0,
        &cfg(),
        &mut rng,
    )?;
    let pending = rec.pending.as_ref().ok_or(Error::Internal("no pending"))?;
    let c = code_of(&pending.device, totp::step_of(pending.device.params, T0));
    let before = snapshot(&rec)?;
    let (verdict, changed) = run(&mut rec, Attempt::Code(&c), &sshd(), T0)?;
    assert_eq!((verdict, changed), (Verdict::NotEnrolled, false));
    assert_eq!(snapshot(&rec)?, before);

    // Enrolled, re-enrolling: the old device works, the new one not yet.
    let (mut rec, _, mut rng) = enrolled()?;
    let now = T0 + 30;
    let started = enroll_start(
        &mut rec,
        &user(),
        EnrollOptions::default(),
        now,
        &cfg(),
        &mut rng,
    )?;
    assert_eq!(started.device, name("default"));
    assert!(started.otpauth_uri.starts_with("otpauth://totp/"));
    let pending = rec.pending.as_ref().ok_or(Error::Internal("no pending"))?;
    let new = code_of(&pending.device, totp::step_of(pending.device.params, now));
    let started_at = pending.device.enrolled_at;
    assert_rejected(&run_code(&mut rec, &new, now)?, Rejection::WrongCode);
    let old = code_now(&rec, "phone", now, 0)?;
    assert_accepted(&run_code(&mut rec, &old, now)?, &totp_via("phone"));
    assert_eq!(
        rec.pending.as_ref().map(|p| p.device.enrolled_at),
        Some(started_at)
    );
    Ok(())
}

#[test]
fn bad_enrollment_parameters_are_refused() {
    let mut rng = rng();
    let mut rec = UserRecord::new();
    for opts in [
        EnrollOptions {
            digits: Some(7),
            ..EnrollOptions::default()
        },
        EnrollOptions {
            period: Some(10),
            ..EnrollOptions::default()
        },
        EnrollOptions {
            issuer: Some("a:b".into()),
            ..EnrollOptions::default()
        },
    ] {
        assert!(matches!(
            enroll_start(&mut rec, &user(), opts, T0, &cfg(), &mut rng),
            Err(Error::InvalidArgument(_))
        ));
        assert!(rec.pending.is_none());
    }
}

// ---------------------------------------------------------------- TOTP

#[test]
fn either_device_s_code_is_accepted_and_named() -> Result<(), Error> {
    let (mut rec, _, _) = two_devices()?;
    let now = T0 + 120;
    let a = code_now(&rec, "phone", now, 0)?;
    let b = code_now(&rec, "token", now, 0)?;
    let (verdict, changed) = run(&mut rec, Attempt::Code(&a), &sshd(), now)?;
    assert!(changed);
    assert_eq!(
        verdict,
        Verdict::Accepted {
            via: totp_via("phone"),
            backup_codes_left: 10,
            backup_codes_low: false,
            recovery_nudge: false,
        }
    );
    // A's code again: replayed. B's code of the same moment: A's watermark
    // does not touch it.
    assert_rejected(&run_code(&mut rec, &a, now)?, Rejection::Replayed);
    assert_accepted(&run_code(&mut rec, &b, now)?, &totp_via("token"));
    assert_rejected(&run_code(&mut rec, &b, now)?, Rejection::Replayed);
    let last = rec
        .last_success
        .clone()
        .ok_or(Error::Internal("no last success"))?;
    assert_eq!(
        (last.method, last.credential.as_deref()),
        (Method::Totp, Some("token"))
    );
    assert_eq!(dev(&rec, "phone")?.last_used_at, Some(now));
    assert_eq!(dev(&rec, "token")?.last_used_at, Some(now));
    Ok(())
}

#[test]
fn skew_and_last_use_are_kept_per_device() -> Result<(), Error> {
    let (mut rec, _, _) = two_devices()?;
    let now = T0 + 300;
    let ahead = code_now(&rec, "phone", now, 1)?;
    assert_accepted(&run_code(&mut rec, &ahead, now)?, &totp_via("phone"));
    assert_eq!(dev(&rec, "phone")?.clock_skew_seconds, 30);
    assert_eq!(dev(&rec, "phone")?.last_used_at, Some(now));
    assert_eq!(dev(&rec, "token")?.clock_skew_seconds, 0);
    assert_eq!(
        dev(&rec, "token")?.last_used_at,
        None,
        "confirmation is no login"
    );

    let later = now + 600;
    let behind = code_now(&rec, "token", later, -1)?;
    assert_accepted(&run_code(&mut rec, &behind, later)?, &totp_via("token"));
    assert_eq!(dev(&rec, "token")?.clock_skew_seconds, -60);
    assert_eq!(dev(&rec, "token")?.last_used_at, Some(later));
    assert_eq!(dev(&rec, "phone")?.clock_skew_seconds, 30);
    assert_eq!(dev(&rec, "phone")?.last_used_at, Some(now));
    Ok(())
}

#[test]
fn a_code_from_a_clock_ahead_spends_only_its_own_step() -> Result<(), Error> {
    let (mut rec, _, _) = enrolled()?;
    let now = T0 + 300;
    let current = totp::step_of(TotpParams::default(), now);
    let ahead = code_now(&rec, "phone", now, 3)?;
    let (verdict, changed) = run(&mut rec, Attempt::Code(&ahead), &sshd(), now)?;
    assert!(changed);
    assert_rejected(&verdict, Rejection::ClockSkew { skew_seconds: 90 });
    assert_eq!(rec.counters.consecutive_failures, 1, "counted");
    assert_eq!(dev(&rec, "phone")?.spent_ahead, [current + 3]);
    // The steps before it still work, at their time.
    let c = code_now(&rec, "phone", now, 0)?;
    assert_accepted(&run_code(&mut rec, &c, now)?, &totp_via("phone"));
    let then = now + 60;
    let c = code_now(&rec, "phone", then, 0)?;
    assert_accepted(&run_code(&mut rec, &c, then)?, &totp_via("phone"));
    // The spent one never does, and the one after it does.
    let its_time = now + 90;
    assert_rejected(&run_code(&mut rec, &ahead, its_time)?, Rejection::Replayed);
    let c = code_now(&rec, "phone", its_time, 1)?;
    assert_accepted(&run_code(&mut rec, &c, its_time)?, &totp_via("phone"));
    // A clock behind spends nothing.
    let behind = code_now(&rec, "phone", its_time + 600, -3)?;
    assert_rejected(
        &run_code(&mut rec, &behind, its_time + 600)?,
        Rejection::ClockSkew { skew_seconds: -90 },
    );
    assert!(dev(&rec, "phone")?.spent_ahead.is_empty());
    Ok(())
}

#[test]
fn wrong_codes_are_counted_and_reported() -> Result<(), Error> {
    let (mut rec, _, _) = two_devices()?;
    let now = T0 + 30;
    let (six, eight) = (wrong_code(&rec, now, 6), wrong_code(&rec, now, 8));
    let (verdict, changed) = run(&mut rec, Attempt::Code(&six), &sshd(), now)?;
    assert!(changed);
    assert_eq!(
        verdict,
        Verdict::Rejected {
            rejection: Rejection::WrongCode,
            retry_after: None
        }
    );
    // 8 digits: hashed against the backup codes, then wrong.
    assert_rejected(&run_code(&mut rec, &eight, now)?, Rejection::WrongCode);
    assert_eq!(rec.counters.consecutive_failures, 2);
    assert_eq!(rec.counters.recent_failures, [now, now]);
    Ok(())
}

// ---------------------------------------------------------------- backup codes

#[test]
fn a_backup_code_is_accepted_once_through_the_two_steps() -> Result<(), Error> {
    let (mut rec, codes, _) = enrolled()?;
    let cfg = cfg();
    let now = T0 + 45;
    let c = code(&codes[0]);
    let before = snapshot(&rec)?;
    let job = match verify(&mut rec, Attempt::Code(&c), &sshd(), now, &cfg, &mut || {
        true
    }) {
        Step::Hash(job) => job,
        other => panic!("expected a hash job, got {other:?}"),
    };
    assert_eq!(snapshot(&rec)?, before, "the first step records nothing");
    assert_eq!(job.kdf(), cfg.kdf);
    let HashTarget::BackupCode(probe) = &job.target else {
        panic!("expected a backup code job, got {job:?}");
    };
    let hash = probe.hash(c.as_bytes(), &Fresh)?;
    let (verdict, changed) = done(finish(&mut rec, &job, Some(&hash), &sshd(), now, &cfg))?;
    assert!(changed);
    assert_eq!(
        verdict,
        Verdict::Accepted {
            via: Via::BackupCode,
            backup_codes_left: 9,
            backup_codes_low: false,
            recovery_nudge: false,
        }
    );
    let last = rec
        .last_success
        .clone()
        .ok_or(Error::Internal("no last success"))?;
    assert_eq!((last.method, last.credential), (Method::BackupCode, None));
    // Used up: the same code again is wrong (and counted).
    assert_rejected(&run_code(&mut rec, &c, now + 1)?, Rejection::WrongCode);
    assert_eq!(rec.counters.consecutive_failures, 1);
    // The hash job of the spent code, finished again, is no second use.
    let (verdict, _) = done(finish(&mut rec, &job, Some(&hash), &sshd(), now + 2, &cfg))?;
    assert_rejected(&verdict, Rejection::WrongCode);
    Ok(())
}

#[test]
fn the_low_warning_comes_with_the_last_backup_codes() -> Result<(), Error> {
    let (mut rec, codes, _) = enrolled()?;
    let mut now = T0 + 30;
    for (i, c) in codes.iter().enumerate() {
        match run_code(&mut rec, &code(c), now)? {
            Verdict::Accepted {
                via: Via::BackupCode,
                backup_codes_left,
                backup_codes_low,
                ..
            } => {
                let left = u32::try_from(codes.len() - i - 1).unwrap_or(u32::MAX);
                assert_eq!(backup_codes_left, left);
                assert_eq!(backup_codes_low, left <= 3);
            }
            other => panic!("backup code {i}: {other:?}"),
        }
        now += 1;
    }
    // None left: an 8-digit code is no longer hashed.
    let c = code(&codes[0]);
    let step = verify(
        &mut rec,
        Attempt::Code(&c),
        &sshd(),
        now,
        &cfg(),
        &mut || panic!("no slot is needed without backup codes"),
    );
    assert!(matches!(
        step,
        Step::Done {
            verdict: Verdict::Rejected { .. },
            changed: true
        }
    ));
    Ok(())
}

#[test]
fn no_slot_means_busy_and_nothing_changed() -> Result<(), Error> {
    let (mut rec, codes, _) = two_devices()?;
    let now = T0 + 120;
    let before = snapshot(&rec)?;
    // A backup code, a wrong 8-digit code, and even a valid 8-digit TOTP
    // code: the slot is taken before anything is checked.
    let token = code_now(&rec, "token", now, 0)?;
    for c in [code(&codes[0]), wrong_code(&rec, now, 8), token.clone()] {
        let mut asked = 0;
        let step = verify(
            &mut rec,
            Attempt::Code(&c),
            &sshd(),
            now,
            &cfg(),
            &mut || {
                asked += 1;
                false
            },
        );
        assert_eq!(asked, 1);
        assert_eq!(done(step)?, (Verdict::Busy, false));
        assert_eq!(snapshot(&rec)?, before);
    }
    // 6-digit codes never need the slot.
    let phone = code_now(&rec, "phone", now, 0)?;
    let step = verify(
        &mut rec,
        Attempt::Code(&phone),
        &sshd(),
        now,
        &cfg(),
        &mut || false,
    );
    assert_accepted(&done(step)?.0, &totp_via("phone"));
    // With the slot, the TOTP code decides in the first step.
    let step = verify(
        &mut rec,
        Attempt::Code(&token),
        &sshd(),
        now,
        &cfg(),
        &mut || true,
    );
    assert_accepted(&done(step)?.0, &totp_via("token"));
    // The backup code was not used up by the busy attempt.
    assert_accepted(
        &run_code(&mut rec, &code(&codes[0]), now)?,
        &Via::BackupCode,
    );
    Ok(())
}

#[test]
fn regenerating_backup_codes_invalidates_the_old_ones_and_stale_jobs() -> Result<(), Error> {
    let (mut rec, old, mut rng) = enrolled()?;
    let cfg = cfg();
    let now = T0 + 30;
    let c = code(&old[1]);
    let Step::Hash(job) = verify(&mut rec, Attempt::Code(&c), &sshd(), now, &cfg, &mut || {
        true
    }) else {
        panic!("expected a hash job");
    };
    let hash = hash_for(&job, Attempt::Code(&c))?;
    let new = regenerate_backup_codes(&mut rec, &user(), &cfg, &mut rng, &Fresh)?;
    assert_eq!(new.len(), crate::backup_codes::COUNT);
    // The job was for the replaced set: decided nothing, counted nothing.
    let before = snapshot(&rec)?;
    assert_eq!(
        done(finish(&mut rec, &job, Some(&hash), &sshd(), now, &cfg))?,
        (Verdict::Busy, false)
    );
    assert_eq!(snapshot(&rec)?, before);
    assert_rejected(
        &run_code(&mut rec, &code(&old[0]), now)?,
        Rejection::WrongCode,
    );
    assert_accepted(&run_code(&mut rec, &code(&new[0]), now)?, &Via::BackupCode);

    let mut fresh = UserRecord::new();
    assert!(matches!(
        regenerate_backup_codes(&mut fresh, &user(), &cfg, &mut rng, &Fresh),
        Err(Error::NotEnrolled { .. })
    ));
    Ok(())
}

#[test]
fn finish_checks_the_gate_again() -> Result<(), Error> {
    let (mut rec, codes, _) = enrolled()?;
    let cfg = cfg();
    let now = T0 + 30;
    let c = code(&codes[0]);
    let Step::Hash(job) = verify(&mut rec, Attempt::Code(&c), &sshd(), now, &cfg, &mut || {
        true
    }) else {
        panic!("expected a hash job");
    };
    let hash = hash_for(&job, Attempt::Code(&c))?;
    // Locked by other attempts while this one was hashed.
    rec.counters.locked_until = now + 100;
    rec.counters.consecutive_failures = 8;
    let before = snapshot(&rec)?;
    assert_eq!(
        done(finish(&mut rec, &job, Some(&hash), &sshd(), now, &cfg))?,
        (Verdict::Locked { retry_after: 100 }, false)
    );
    assert_eq!(snapshot(&rec)?, before, "not checked, not counted");
    // Throttled likewise.
    rec.counters = Counters {
        recent_failures: vec![now; 5],
        consecutive_failures: 5,
        locked_until: 0,
    };
    let before = snapshot(&rec)?;
    assert_eq!(
        done(finish(&mut rec, &job, Some(&hash), &sshd(), now + 10, &cfg))?,
        (Verdict::Throttled { retry_after: 50 }, false)
    );
    assert_eq!(snapshot(&rec)?, before);
    // Unenrolled in between.
    let mut gone = rec.clone();
    remove_device(&mut gone, &user(), &name("phone"), true)?;
    assert_eq!(
        done(finish(&mut gone, &job, Some(&hash), &sshd(), now, &cfg))?,
        (Verdict::NotEnrolled, false)
    );
    // Once open again, the code works.
    unlock(&mut rec);
    assert_accepted(
        &done(finish(&mut rec, &job, Some(&hash), &sshd(), now, &cfg))?.0,
        &Via::BackupCode,
    );
    Ok(())
}

#[test]
fn a_hash_that_could_not_be_computed_counts_as_a_failure() -> Result<(), Error> {
    let (mut rec, codes, _) = enrolled()?;
    let cfg = cfg();
    let c = code(&codes[0]);
    let Step::Hash(job) = verify(
        &mut rec,
        Attempt::Code(&c),
        &sshd(),
        T0 + 30,
        &cfg,
        &mut || true,
    ) else {
        panic!("expected a hash job");
    };
    let (verdict, changed) = done(finish(&mut rec, &job, None, &sshd(), T0 + 30, &cfg))?;
    assert!(changed);
    assert_rejected(&verdict, Rejection::WrongCode);
    assert_eq!(rec.counters.consecutive_failures, 1);
    assert_eq!(
        rec.backup_codes.as_ref().map(BackupCodeSet::remaining),
        Some(10)
    );
    Ok(())
}

// ---------------------------------------------------------------- app passwords

#[test]
fn an_app_password_works_on_its_service_only() -> Result<(), Error> {
    let (mut rec, _, mut rng) = enrolled()?;
    let cfg = cfg();
    let now = T0 + 100;
    let (shown, stored) = add_app_password(
        &mut rec,
        &user(),
        "dovecot",
        "laptop",
        None,
        now,
        &cfg,
        &mut rng,
        &Fresh,
    )?;
    assert_eq!(rec.app_passwords.len(), 1);
    assert!(
        !snapshot(&rec)?.contains(&shown[5..]),
        "stored as a hash only"
    );
    let input = app_input(&shown);
    assert_eq!(input.id(), stored.id);

    // Its service: two steps, accepted, last use recorded.
    let ctx = local("dovecot");
    let job = match verify(
        &mut rec,
        Attempt::AppPassword(&input),
        &ctx,
        now + 1,
        &cfg,
        &mut || true,
    ) {
        Step::Hash(job) => job,
        other => panic!("expected a hash job, got {other:?}"),
    };
    let HashTarget::AppPassword(probe) = &job.target else {
        panic!("expected an app password job");
    };
    assert_eq!(probe.id, stored.id);
    let hash = probe.hash(&input, &Fresh)?;
    let (verdict, changed) = done(finish(&mut rec, &job, Some(&hash), &ctx, now + 1, &cfg))?;
    assert!(changed);
    assert_accepted(
        &verdict,
        &Via::AppPassword {
            id: stored.id.clone(),
        },
    );
    assert_eq!(rec.app_passwords[0].last_used, Some(now + 1));
    let last = rec
        .last_success
        .clone()
        .ok_or(Error::Internal("no last success"))?;
    assert_eq!(
        (last.method, last.service.as_str()),
        (Method::AppPassword, "dovecot")
    );
    assert_eq!(last.credential.as_deref(), Some(stored.id.as_str()));
    // Not single-use: it works again.
    assert_accepted(
        &run(&mut rec, Attempt::AppPassword(&input), &ctx, now + 2)?.0,
        &Via::AppPassword {
            id: stored.id.clone(),
        },
    );

    // Another service: refused unhashed, counted.
    let (verdict, changed) = run(&mut rec, Attempt::AppPassword(&input), &sshd(), now + 3)?;
    assert!(changed);
    assert_rejected(&verdict, Rejection::AppPassword(Refusal::OtherService));
    assert_eq!(verdict.reason().name(), "app_password_other_service");
    assert_eq!(rec.counters.consecutive_failures, 1);
    assert_eq!(rec.app_passwords[0].last_used, Some(now + 2));
    Ok(())
}

#[test]
fn expired_unknown_and_wrong_app_passwords_are_refused_and_counted() -> Result<(), Error> {
    let (mut rec, _, mut rng) = enrolled()?;
    let cfg = cfg();
    let now = T0 + 100;
    let (shown, _) = add_app_password(
        &mut rec,
        &user(),
        "dovecot",
        "",
        Some(50),
        now,
        &cfg,
        &mut rng,
        &Fresh,
    )?;
    let ctx = local("dovecot");
    let input = app_input(&shown);
    assert_accepted(
        &run(&mut rec, Attempt::AppPassword(&input), &ctx, now + 49)?.0,
        &Via::AppPassword { id: input.id() },
    );

    let mut no_slot = || -> bool { panic!("refused before any hash") };
    let step = verify(
        &mut rec,
        Attempt::AppPassword(&input),
        &ctx,
        now + 50,
        &cfg,
        &mut no_slot,
    );
    let (verdict, changed) = done(step)?;
    assert!(changed);
    assert_rejected(&verdict, Rejection::AppPassword(Refusal::Expired));

    let unknown = app_input("zzzz-0000-0000-0000-0000-0000");
    assert_ne!(unknown.id(), input.id());
    let step = verify(
        &mut rec,
        Attempt::AppPassword(&unknown),
        &ctx,
        now + 50,
        &cfg,
        &mut no_slot,
    );
    assert_rejected(&done(step)?.0, Rejection::AppPassword(Refusal::Unknown));

    let (shown, _) = add_app_password(
        &mut rec,
        &user(),
        "dovecot",
        "",
        None,
        now,
        &cfg,
        &mut rng,
        &Fresh,
    )?;
    let wrong = wrong_app_input(&shown);
    let (verdict, changed) = run(&mut rec, Attempt::AppPassword(&wrong), &ctx, now + 50)?;
    assert!(changed);
    assert_rejected(&verdict, Rejection::AppPassword(Refusal::Wrong));
    assert_eq!(verdict.decision(), Decision::Rejected);
    assert_eq!(rec.counters.consecutive_failures, 3);
    assert!(
        rec.app_passwords
            .iter()
            .all(|p| p.last_used != Some(now + 50))
    );
    Ok(())
}

/// The second step runs later than the first (after the hash, and after
/// waiting for capacity): an app password that expired in between is
/// refused like one that had expired before.
#[test]
fn an_app_password_that_expires_while_hashed_is_refused() -> Result<(), Error> {
    let (mut rec, _, mut rng) = enrolled()?;
    let cfg = cfg();
    let now = T0 + 100;
    let (shown, _) = add_app_password(
        &mut rec,
        &user(),
        "dovecot",
        "",
        Some(60),
        now,
        &cfg,
        &mut rng,
        &Fresh,
    )?;
    let ctx = local("dovecot");
    let input = app_input(&shown);
    let Step::Hash(job) = verify(
        &mut rec,
        Attempt::AppPassword(&input),
        &ctx,
        now + 59,
        &cfg,
        &mut || true,
    ) else {
        panic!("expected a hash job");
    };
    let hash = hash_for(&job, Attempt::AppPassword(&input))?;
    let (verdict, changed) = done(finish(&mut rec, &job, Some(&hash), &ctx, now + 60, &cfg))?;
    assert!(changed);
    assert_rejected(&verdict, Rejection::AppPassword(Refusal::Expired));
    assert_eq!(rec.app_passwords[0].last_used, None);
    assert_eq!(rec.counters.consecutive_failures, 1);
    Ok(())
}

#[test]
fn revoking_an_app_password_stops_it_at_once() -> Result<(), Error> {
    let (mut rec, _, mut rng) = enrolled()?;
    let cfg = cfg();
    let (shown, stored) = add_app_password(
        &mut rec,
        &user(),
        "su",
        "cron",
        None,
        T0,
        &cfg,
        &mut rng,
        &Fresh,
    )?;
    let (other, _) = add_app_password(
        &mut rec,
        &user(),
        "su",
        "backup",
        None,
        T0,
        &cfg,
        &mut rng,
        &Fresh,
    )?;
    let ctx = local("su");
    let input = app_input(&shown);
    // Revoked while its attempt was hashed: refused as unknown, counted.
    let Step::Hash(job) = verify(
        &mut rec,
        Attempt::AppPassword(&input),
        &ctx,
        T0 + 1,
        &cfg,
        &mut || true,
    ) else {
        panic!("expected a hash job");
    };
    let hash = hash_for(&job, Attempt::AppPassword(&input))?;
    revoke_app_password(&mut rec, &user(), &stored.id.to_ascii_uppercase())?;
    let (verdict, changed) = done(finish(&mut rec, &job, Some(&hash), &ctx, T0 + 1, &cfg))?;
    assert!(changed);
    assert_rejected(&verdict, Rejection::AppPassword(Refusal::Unknown));
    assert_rejected(
        &run(&mut rec, Attempt::AppPassword(&input), &ctx, T0 + 2)?.0,
        Rejection::AppPassword(Refusal::Unknown),
    );
    assert!(matches!(
        revoke_app_password(&mut rec, &user(), &stored.id),
        Err(Error::NoSuchAppPassword { .. })
    ));
    // The other one is untouched.
    assert_eq!(rec.app_passwords.len(), 1);
    let other = app_input(&other);
    assert_accepted(
        &run(&mut rec, Attempt::AppPassword(&other), &ctx, T0 + 3)?.0,
        &Via::AppPassword { id: other.id() },
    );
    Ok(())
}

#[test]
fn app_passwords_are_bounded_per_user() -> Result<(), Error> {
    let (mut rec, _, mut rng) = enrolled()?;
    let cfg = cfg();
    for _ in 0..app_password::MAX_PER_USER {
        add_app_password(
            &mut rec,
            &user(),
            "imap",
            "",
            None,
            T0,
            &cfg,
            &mut rng,
            &Fresh,
        )?;
    }
    let ids: BTreeSet<&str> = rec.app_passwords.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len(), app_password::MAX_PER_USER, "distinct ids");
    assert!(matches!(
        add_app_password(
            &mut rec,
            &user(),
            "imap",
            "",
            None,
            T0,
            &cfg,
            &mut rng,
            &Fresh
        ),
        Err(Error::TooMany {
            what: "app passwords",
            ..
        })
    ));
    let mut fresh = UserRecord::new();
    assert!(matches!(
        add_app_password(
            &mut fresh,
            &user(),
            "bad service",
            "",
            None,
            T0,
            &cfg,
            &mut rng,
            &Fresh
        ),
        Err(Error::InvalidArgument(_))
    ));
    assert!(fresh.app_passwords.is_empty());
    Ok(())
}

#[test]
fn app_password_failures_throttle_and_lock_like_codes() -> Result<(), Error> {
    let (mut rec, _, mut rng) = enrolled()?;
    let cfg = cfg();
    let policy = cfg.policy;
    let (shown, stored) = add_app_password(
        &mut rec,
        &user(),
        "dovecot",
        "",
        Some(10),
        T0,
        &cfg,
        &mut rng,
        &Fresh,
    )?;
    let (good_shown, good) = add_app_password(
        &mut rec,
        &user(),
        "dovecot",
        "",
        None,
        T0,
        &cfg,
        &mut rng,
        &Fresh,
    )?;
    let dovecot = local("dovecot");
    let expired = app_input(&shown);
    let good_input = app_input(&good_shown);
    let wrong = wrong_app_input(&good_shown);
    let unknown = app_input("zzzz-0000-0000-0000-0000-0000");
    assert_ne!(unknown.id(), good.id);
    assert_ne!(unknown.id(), stored.id);

    // Every kind of refusal counts: wrong, other service, expired, unknown,
    // and a wrong code.
    let mut now = T0 + 100;
    let sshd = sshd();
    let wrong_totp = wrong_code(&rec, now, 6);
    let attempts: [(Attempt<'_>, &LoginContext); 5] = [
        (Attempt::AppPassword(&wrong), &dovecot),
        (Attempt::AppPassword(&good_input), &sshd),
        (Attempt::AppPassword(&expired), &dovecot),
        (Attempt::AppPassword(&unknown), &dovecot),
        (Attempt::Code(&wrong_totp), &dovecot),
    ];
    for (i, (attempt, ctx)) in attempts.into_iter().enumerate() {
        let (verdict, changed) = run(&mut rec, attempt, ctx, now)?;
        assert!(changed);
        let last = i + 1 == policy.max_failures as usize;
        assert!(
            matches!(verdict, Verdict::Rejected { .. }),
            "{i}: {verdict:?}"
        );
        assert_eq!(
            verdict.retry_after(),
            if last { policy.window } else { 0 },
            "{i}"
        );
    }
    // Throttled: even the right password is refused unchecked.
    let before = snapshot(&rec)?;
    assert_eq!(
        run(
            &mut rec,
            Attempt::AppPassword(&good_input),
            &dovecot,
            now + 1
        )?,
        (
            Verdict::Throttled {
                retry_after: policy.window - 1
            },
            false
        )
    );
    assert_eq!(snapshot(&rec)?, before);

    // After the window, three more failures reach the lockout threshold.
    now += policy.window;
    let remaining = policy.lock_threshold - policy.max_failures;
    for i in 0..remaining {
        let (verdict, _) = run(&mut rec, Attempt::AppPassword(&wrong), &dovecot, now)?;
        let locks = i + 1 == remaining;
        assert_eq!(
            verdict.retry_after(),
            if locks { policy.lock_duration } else { 0 }
        );
    }
    let before = snapshot(&rec)?;
    let phone = code_now(&rec, "phone", now, 0)?;
    for attempt in [Attempt::AppPassword(&good_input), Attempt::Code(&phone)] {
        let (verdict, changed) = run(&mut rec, attempt, &dovecot, now + 10)?;
        assert_eq!(
            verdict,
            Verdict::Locked {
                retry_after: policy.lock_duration - 10
            }
        );
        assert_eq!(verdict.decision(), Decision::Locked);
        assert!(!changed);
    }
    assert_eq!(snapshot(&rec)?, before, "not checked, not counted");
    assert_eq!(
        rec.app_passwords
            .iter()
            .find(|p| p.id == good.id)
            .and_then(|p| p.last_used),
        None
    );

    // Unlock: the right password works again and clears the counters.
    unlock(&mut rec);
    assert_eq!(rec.counters, Counters::default());
    assert_accepted(
        &run(
            &mut rec,
            Attempt::AppPassword(&good_input),
            &dovecot,
            now + 11,
        )?
        .0,
        &Via::AppPassword {
            id: good.id.clone(),
        },
    );
    Ok(())
}

// ---------------------------------------------------------------- buckets

#[test]
fn strangers_do_not_lock_out_the_console() -> Result<(), Error> {
    let (mut rec, _, _) = enrolled()?;
    let policy = cfg().policy;
    let stranger = LoginContext {
        service: "sshd".into(),
        remote_host: "203.0.113.9".into(),
        ..LoginContext::default()
    };
    let foreign_su = LoginContext {
        service: "su".into(),
        requester: Some(LocalRequester {
            uid: 1001,
            is_target_user: false,
        }),
        ..LoginContext::default()
    };
    assert_eq!(foreign_su.bucket(&rec), Bucket::Strangers);
    let mut now = T0 + 100;
    for i in 0..policy.lock_threshold {
        if i == policy.max_failures {
            now += policy.window;
        }
        let ctx = if i % 2 == 0 { &stranger } else { &foreign_su };
        let wrong = wrong_code(&rec, now, 6);
        assert!(matches!(
            run(&mut rec, Attempt::Code(&wrong), ctx, now)?.0,
            Verdict::Rejected { .. }
        ));
    }
    assert!(rec.stranger_counters.locked_until > now);
    assert_eq!(rec.counters, Counters::default());
    let c = code_now(&rec, "phone", now, 0)?;
    assert!(matches!(
        run(&mut rec, Attempt::Code(&c), &stranger, now)?.0,
        Verdict::Locked { .. }
    ));
    assert_accepted(
        &run(&mut rec, Attempt::Code(&c), &sshd(), now)?.0,
        &totp_via("phone"),
    );
    Ok(())
}

// ---------------------------------------------------------------- devices

#[test]
fn renaming_keeps_the_device_and_refuses_taken_names() -> Result<(), Error> {
    let (mut rec, _, mut rng) = two_devices()?;
    let id = dev(&rec, "phone")?.id;
    rename_device(&mut rec, &user(), &name("phone"), name("mobile"))?;
    assert_eq!(dev(&rec, "mobile")?.id, id);
    assert!(rec.device(&name("phone")).is_none());
    rename_device(&mut rec, &user(), &name("mobile"), name("mobile"))?;
    assert!(matches!(
        rename_device(&mut rec, &user(), &name("mobile"), name("token")),
        Err(Error::DeviceExists { .. })
    ));
    assert!(matches!(
        rename_device(&mut rec, &user(), &name("phone"), name("other")),
        Err(Error::NoSuchDevice { ref device, .. }) if device == "phone"
    ));
    let now = T0 + 60;
    let c = code_now(&rec, "mobile", now, 0)?;
    assert_accepted(&run_code(&mut rec, &c, now)?, &totp_via("mobile"));
    // The pending device can be renamed too.
    enroll_start(
        &mut rec,
        &user(),
        EnrollOptions {
            device: Some(name("tablet")),
            add: true,
            ..EnrollOptions::default()
        },
        now,
        &cfg(),
        &mut rng,
    )?;
    rename_device(&mut rec, &user(), &name("tablet"), name("ipad"))?;
    assert_eq!(
        rec.pending.as_ref().map(|p| p.device.name.as_str()),
        Some("ipad")
    );
    assert!(matches!(
        rename_device(&mut rec, &user(), &name("token"), name("ipad")),
        Err(Error::DeviceExists { .. })
    ));
    Ok(())
}

#[test]
fn removing_devices_the_last_one_only_when_allowed() -> Result<(), Error> {
    let (mut rec, _, mut rng) = two_devices()?;
    let now = T0 + 120;
    let token_code = code_now(&rec, "token", now, 0)?;
    assert_eq!(remove_device(&mut rec, &user(), &name("token"), false)?, 1);
    assert_rejected(&run_code(&mut rec, &token_code, now)?, Rejection::WrongCode);
    assert!(matches!(
        remove_device(&mut rec, &user(), &name("token"), false),
        Err(Error::NoSuchDevice { .. })
    ));
    assert!(matches!(
        remove_device(&mut rec, &user(), &name("phone"), false),
        Err(Error::LastDevice { .. })
    ));
    assert_eq!(rec.devices.len(), 1);
    // A pending device goes without ceremony.
    enroll_start(
        &mut rec,
        &user(),
        EnrollOptions {
            device: Some(name("tablet")),
            add: true,
            ..EnrollOptions::default()
        },
        now,
        &cfg(),
        &mut rng,
    )?;
    assert_eq!(remove_device(&mut rec, &user(), &name("tablet"), false)?, 1);
    assert!(rec.pending.is_none());
    // The last one, confirmed.
    let phone = code_now(&rec, "phone", now, 0)?;
    assert_eq!(remove_device(&mut rec, &user(), &name("phone"), true)?, 0);
    assert!(!rec.is_enrolled());
    let before = snapshot(&rec)?;
    assert_eq!(
        run(&mut rec, Attempt::Code(&phone), &sshd(), now)?,
        (Verdict::NotEnrolled, false)
    );
    assert_eq!(snapshot(&rec)?, before);
    Ok(())
}

#[test]
fn unlock_clears_both_buckets() -> Result<(), Error> {
    let (mut rec, _, _) = enrolled()?;
    let now = T0 + 100;
    rec.counters.locked_until = now + 900;
    rec.counters.consecutive_failures = 8;
    rec.stranger_counters.recent_failures = vec![now; 5];
    let c = code_now(&rec, "phone", now, 0)?;
    assert!(matches!(
        run_code(&mut rec, &c, now)?,
        Verdict::Locked { retry_after: 900 }
    ));
    unlock(&mut rec);
    assert_eq!(
        (&rec.counters, &rec.stranger_counters),
        (&Counters::default(), &Counters::default())
    );
    assert_accepted(&run_code(&mut rec, &c, now)?, &totp_via("phone"));
    Ok(())
}

// ---------------------------------------------------------------- migration

/// A version 1 record (otpd 0.1; the values of the user `alice` of
/// tests/fixtures/store-v0.1) migrates to the device `default` and keeps
/// its replay watermark, counters and backup codes.
#[test]
fn a_version_1_record_migrates_and_keeps_refusing_its_used_step() -> Result<(), Error> {
    let secret = data_encoding::BASE32_NOPAD
        .decode(b"TT7BJXF3MEHCIFJMSCRD2KW67M75JINB")
        .map_err(|_| Error::Internal("base32"))?;
    let mut rng = rng();
    let (codes, set) = BackupCodeSet::generate(cfg().kdf, &mut rng, &Fresh)?;
    let v1 = serde_json::json!({
        "active": {
            "secret": secret,
            "params": {"algorithm": "sha1", "digits": 6, "period": 30},
            "issuer": "otpd-fixture",
            "since": 1_800_000_000u64,
        },
        "pending": null,
        "backup_codes": set,
        "last_used_step": 60_000_003u64,
        "counters": {
            "recent_failures": [1_800_000_095u64, 1_800_000_096u64],
            "consecutive_failures": 2,
            "locked_until": 0,
        },
        "stranger_counters": {"recent_failures": [], "consecutive_failures": 0, "locked_until": 0},
        "known_origins": ["192.0.2.7"],
        "last_success": {"time": 1_800_000_090u64, "service": "sshd", "remote_host": "192.0.2.7", "method": "totp"},
        "clock_skew_seconds": 0,
        "generation": 7,
    });
    let plain = serde_json::to_vec(&v1).map_err(|_| Error::Internal("json"))?;
    let mut rec = UserRecord::decode(&user(), &plain)?;
    assert_eq!(rec.version, crate::record::RECORD_VERSION);
    let d = dev(&rec, "default")?;
    assert_eq!(
        (d.last_used_step, d.last_used_at),
        (Some(60_000_003), Some(1_800_000_090))
    );

    let now = 1_800_000_100;
    let used = code_of(d, 60_000_003);
    let older = code_of(d, 60_000_002);
    assert_rejected(&run_code(&mut rec, &used, now)?, Rejection::Replayed);
    assert_rejected(&run_code(&mut rec, &older, now)?, Rejection::Replayed);
    assert_eq!(
        rec.counters.consecutive_failures, 4,
        "the migrated counters go on"
    );
    let later = now + 20;
    let next = code_now(&rec, "default", later, 0)?;
    assert_accepted(&run_code(&mut rec, &next, later)?, &totp_via("default"));
    assert_eq!(dev(&rec, "default")?.last_used_step, Some(60_000_004));
    assert_eq!(rec.counters, Counters::default());
    assert_rejected(&run_code(&mut rec, &next, later)?, Rejection::Replayed);
    // Its backup codes still work, once.
    assert_accepted(
        &run_code(&mut rec, &code(&codes[0]), later)?,
        &Via::BackupCode,
    );
    assert_rejected(
        &run_code(&mut rec, &code(&codes[0]), later)?,
        Rejection::WrongCode,
    );
    // Written back as version 2, it reads back the same.
    let json = serde_json::to_vec(&rec).map_err(|_| Error::Internal("json"))?;
    let mut back = UserRecord::decode(&user(), &json)?;
    assert_rejected(&run_code(&mut back, &next, later)?, Rejection::Replayed);
    Ok(())
}

// ---------------------------------------------------------------- properties

/// One step of the model: what happens next to the user.
#[derive(Debug, Clone)]
enum Op {
    /// Time passes.
    Advance(u64),
    /// A code shown by `phone` (false) or `token` (true), `offset` steps
    /// from the current one.
    Device { token: bool, offset: i64 },
    /// A code accepted earlier, again (index into the accepted ones).
    Replay(usize),
    /// A random code (6 or 8 digits).
    Random { digits8: bool, n: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..=90).prop_map(Op::Advance),
        1 => (300u64..=2000).prop_map(Op::Advance),
        6 => (any::<bool>(), -1i64..=1).prop_map(|(token, offset)| Op::Device { token, offset }),
        1 => (any::<bool>(), prop_oneof![-3i64..=-2, 2i64..=3])
            .prop_map(|(token, offset)| Op::Device { token, offset }),
        2 => any::<usize>().prop_map(Op::Replay),
        2 => (any::<bool>(), 0u32..100_000_000).prop_map(|(digits8, n)| Op::Random { digits8, n }),
    ]
}

/// The throttle and lockout as the policy documents them, kept from the
/// verdicts alone.
#[derive(Debug, Default)]
struct Limits {
    /// Failures counted since the last success.
    failures: Vec<u64>,
    locked_until: u64,
}

impl Limits {
    fn expected_refusal(&self, p: &Policy, now: u64) -> Option<Verdict> {
        if self.locked_until > now {
            return Some(Verdict::Locked {
                retry_after: self.locked_until - now,
            });
        }
        let recent: Vec<u64> = self
            .failures
            .iter()
            .copied()
            .filter(|&t| t + p.window > now)
            .collect();
        let max = p.max_failures as usize;
        (recent.len() >= max).then(|| Verdict::Throttled {
            retry_after: recent[recent.len() - max] + p.window - now,
        })
    }

    fn failure(&mut self, p: &Policy, now: u64) -> Result<(), TestCaseError> {
        self.failures.push(now);
        // The throttle bound: never more than max_failures in a window.
        let in_window = self
            .failures
            .iter()
            .filter(|&&t| t + p.window > now)
            .count();
        prop_assert!(
            in_window <= p.max_failures as usize,
            "{in_window} failures within {} s",
            p.window
        );
        let n = u32::try_from(self.failures.len()).unwrap_or(u32::MAX);
        if n.is_multiple_of(p.lock_threshold) {
            self.locked_until = now + p.lock_duration_for(n / p.lock_threshold);
        }
        Ok(())
    }
}

fn tc(e: Error) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn interleaving(seed: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let cfg = cfg();
    let p = cfg.policy;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rec = UserRecord::new();
    enroll(&mut rec, "phone", false, T0, &mut rng).map_err(tc)?;
    enroll_with(
        &mut rec,
        EnrollOptions {
            device: Some(name("token")),
            add: true,
            algorithm: Some(Algorithm::Sha256),
            digits: Some(8),
            period: Some(60),
            ..EnrollOptions::default()
        },
        T0,
        &mut rng,
    )
    .map_err(tc)?;
    // (device id, step) pairs used: the confirmation steps first.
    let mut used: BTreeSet<(u64, u64)> = rec
        .devices
        .iter()
        .filter_map(|d| d.last_used_step.map(|s| (d.id, s)))
        .collect();
    prop_assert_eq!(used.len(), 2);
    // Future steps revealed by a clock-skew refusal.
    let mut revealed: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut accepted_codes: Vec<Code> = Vec::new();
    let mut limits = Limits::default();
    let mut now = T0;

    for op in ops {
        let (submitted, aimed) = match *op {
            Op::Advance(s) => {
                now += s;
                continue;
            }
            Op::Device { token, offset } => {
                let d = &rec.devices[usize::from(token)];
                let step = totp::step_of(d.params, now).saturating_add_signed(offset);
                (
                    code_of(d, step),
                    Some((
                        d.id,
                        step,
                        offset * i64::try_from(d.params.period).unwrap_or(0),
                    )),
                )
            }
            Op::Replay(i) if !accepted_codes.is_empty() => {
                (accepted_codes[i % accepted_codes.len()].clone(), None)
            }
            Op::Replay(_) => continue,
            Op::Random { digits8, n } => {
                let text = if digits8 {
                    format!("{n:08}")
                } else {
                    format!("{:06}", n % 1_000_000)
                };
                (code(&text), None)
            }
        };
        let expected = limits.expected_refusal(&p, now);
        let before = snapshot(&rec).map_err(tc)?;
        let (verdict, changed) =
            run(&mut rec, Attempt::Code(&submitted), &sshd(), now).map_err(tc)?;
        if let Some(refusal) = expected {
            // Nothing is checked while locked or throttled.
            prop_assert_eq!(&verdict, &refusal);
            prop_assert!(!changed);
            prop_assert_eq!(snapshot(&rec).map_err(tc)?, before);
            continue;
        }
        match &verdict {
            Verdict::Accepted {
                via: Via::Totp { device },
                ..
            } => {
                let d = rec
                    .device(device)
                    .ok_or_else(|| TestCaseError::fail("accepted by a missing device"))?;
                let step = d
                    .last_used_step
                    .ok_or_else(|| TestCaseError::fail("no watermark after acceptance"))?;
                prop_assert!(
                    submitted.ct_matches(code_of(d, step).as_bytes()),
                    "accepted for another step"
                );
                prop_assert!(
                    used.insert((d.id, step)),
                    "{} step {} accepted twice",
                    device,
                    step
                );
                prop_assert!(
                    !revealed.contains(&(d.id, step)),
                    "a skew-revealed step accepted"
                );
                prop_assert_eq!(d.last_used_at, Some(now));
                accepted_codes.push(submitted.clone());
                limits = Limits::default();
            }
            Verdict::Accepted {
                via: Via::BackupCode,
                ..
            } => limits = Limits::default(),
            Verdict::Rejected { rejection, .. } => {
                prop_assert!(changed);
                if let (Some((id, step, skew)), Rejection::ClockSkew { skew_seconds }) =
                    (aimed, rejection)
                    && skew > 0
                    && *skew_seconds == skew
                {
                    revealed.insert((id, step));
                }
                limits.failure(&p, now)?;
            }
            other => prop_assert!(false, "unexpected verdict {:?}", other),
        }
        // The core's counters agree with the model.
        prop_assert_eq!(
            limits.expected_refusal(&p, now),
            gate(&cfg, &rec, Bucket::Trusted, now)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For any interleaving of codes from two devices (in and out of the
    /// window), replays, random codes and time passing: no (device, step)
    /// is accepted twice, no step a clock-skew refusal revealed is ever
    /// accepted, never more than `max_failures` failures are counted in a
    /// throttle window, and nothing is checked while locked or throttled.
    #[test]
    fn no_code_twice_and_the_throttle_holds(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..80)) {
        interleaving(seed, &ops)?;
    }
}

fn ga_import(secret: &[u8], backup: &[&str], last_used_step: Option<u64>, replace: bool) -> Import {
    Import {
        device: DeviceName::default_name(),
        secret: TotpSecret::from_bytes(secret.to_vec()),
        params: TotpParams::default(),
        issuer: None,
        backup_codes: backup.iter().map(|c| code(c)).collect(),
        last_used_step,
        replace,
        hotp: false,
    }
}

#[test]
fn an_imported_device_logs_in_at_once_keeps_its_replay_state_and_scratch_codes() -> Result<(), Error>
{
    let mut rng = rng();
    let mut rec = UserRecord::new();
    let step = totp::step_of(TotpParams::default(), T0);
    let import = ga_import(
        b"0123456789abcdef",
        &["12345678", "87654321"],
        Some(step),
        false,
    );
    let imported = import_device(&mut rec, &user(), import, T0, &cfg(), &mut rng, &Fresh)?;
    assert_eq!(imported.device.as_str(), "default");
    assert_eq!((imported.replaced, imported.backup_codes), (false, 2));
    // The step the old tool saw used stays used; the next one logs in.
    let used = code_now(&rec, "default", T0, 0)?;
    assert_rejected(&run_code(&mut rec, &used, T0)?, Rejection::Replayed);
    let next = code_now(&rec, "default", T0 + 30, 0)?;
    assert_accepted(&run_code(&mut rec, &next, T0 + 30)?, &totp_via("default"));
    // A scratch code is a backup code, once.
    assert_accepted(
        &run_code(&mut rec, &code("87654321"), T0 + 31)?,
        &Via::BackupCode,
    );
    assert_rejected(
        &run_code(&mut rec, &code("87654321"), T0 + 32)?,
        Rejection::WrongCode,
    );
    Ok(())
}

#[test]
fn an_import_over_an_enrolled_user_needs_replace_and_then_replaces_everything() -> Result<(), Error>
{
    let (mut rec, old_codes, mut rng) = enrolled()?;
    let before = snapshot(&rec)?;
    assert!(matches!(
        import_device(
            &mut rec,
            &user(),
            ga_import(b"0123456789abcdef", &[], None, false),
            T0,
            &cfg(),
            &mut rng,
            &Fresh
        ),
        Err(Error::AlreadyEnrolled { .. })
    ));
    assert_eq!(
        snapshot(&rec)?,
        before,
        "a refused import changed the record"
    );
    let imported = import_device(
        &mut rec,
        &user(),
        ga_import(b"0123456789abcdef", &["11112222"], None, true),
        T0 + 60,
        &cfg(),
        &mut rng,
        &Fresh,
    )?;
    assert!(imported.replaced);
    assert_eq!(rec.devices.len(), 1);
    assert!(
        rec.device(&name("phone")).is_none(),
        "the old device is gone"
    );
    // The old backup codes are replaced by the imported ones.
    assert_rejected(
        &run_code(&mut rec, &code(&old_codes[0]), T0 + 61)?,
        Rejection::WrongCode,
    );
    assert_accepted(
        &run_code(&mut rec, &code("11112222"), T0 + 62)?,
        &Via::BackupCode,
    );
    Ok(())
}

#[test]
fn imports_with_bad_keys_or_codes_change_nothing() -> Result<(), Error> {
    let mut rng = rng();
    let mut rec = UserRecord::new();
    let before = snapshot(&rec)?;
    for import in [
        ga_import(b"short", &[], None, false),
        ga_import(&[7u8; 65], &[], None, false),
        ga_import(b"0123456789abcdef", &["123456"], None, false),
    ] {
        assert!(matches!(
            import_device(&mut rec, &user(), import, T0, &cfg(), &mut rng, &Fresh),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(snapshot(&rec)?, before);
    }
    Ok(())
}

fn hotp_code(rec: &UserRecord, n: &str, counter: u64) -> Result<Code, Error> {
    let d = dev(rec, n)?;
    Ok(code(&crate::hotp::code_at(&d.secret, d.params, counter)))
}

#[test]
fn an_hotp_device_takes_each_counter_once_and_resyncs_from_two_consecutive_codes()
-> Result<(), Error> {
    let mut rng = rng();
    let mut rec = UserRecord::new();
    let started = enroll_start(
        &mut rec,
        &user(),
        EnrollOptions {
            device: Some(name("yubikey")),
            hotp: true,
            ..EnrollOptions::default()
        },
        T0,
        &cfg(),
        &mut rng,
    )?;
    assert!(started.otpauth_uri.starts_with("otpauth://hotp/"));
    assert!(started.otpauth_uri.contains("counter=0"));
    let pending = rec
        .pending
        .as_ref()
        .map(|p| p.device.clone())
        .ok_or(Error::Internal("no pending device"))?;
    let first = code(&crate::hotp::code_at(&pending.secret, pending.params, 2));
    // Time does not matter for counters: confirm far outside any TOTP
    // window (within the pending enrollment's 15 minutes).
    enroll_confirm(
        &mut rec,
        &user(),
        &first,
        T0 + 600,
        &cfg(),
        &mut rng,
        &Fresh,
    )?;
    let now = T0 + 10_000;
    assert_rejected(&run_code(&mut rec, &first, now)?, Rejection::Replayed);
    let c3 = hotp_code(&rec, "yubikey", 3)?;
    assert_accepted(&run_code(&mut rec, &c3, now)?, &totp_via("yubikey"));
    // The same code twice within a second: the second is a replay.
    let c5 = hotp_code(&rec, "yubikey", 5)?;
    assert_accepted(&run_code(&mut rec, &c5, now)?, &totp_via("yubikey"));
    assert_rejected(&run_code(&mut rec, &c5, now)?, Rejection::Replayed);
    // Pressed 40 times without a login: out of sync, then the next code
    // resynchronises; a non-consecutive one does not.
    let (c46, c48, c49) = (
        hotp_code(&rec, "yubikey", 46)?,
        hotp_code(&rec, "yubikey", 48)?,
        hotp_code(&rec, "yubikey", 49)?,
    );
    assert_rejected(&run_code(&mut rec, &c46, now)?, Rejection::OutOfSync);
    assert_rejected(&run_code(&mut rec, &c48, now)?, Rejection::OutOfSync);
    assert_accepted(&run_code(&mut rec, &c49, now)?, &totp_via("yubikey"));
    assert_eq!(dev(&rec, "yubikey")?.last_used_step, Some(49));
    Ok(())
}

#[test]
fn an_imported_hotp_device_starts_at_the_old_tools_counter() -> Result<(), Error> {
    let mut rng = rng();
    let mut rec = UserRecord::new();
    let mut import = ga_import(b"12345678901234567890", &[], Some(6), false);
    import.hotp = true;
    import_device(&mut rec, &user(), import, T0, &cfg(), &mut rng, &Fresh)?;
    // RFC 4226 Appendix D: counter 6 is "287922" (used), 7 is "162583".
    assert_rejected(
        &run_code(&mut rec, &code("287922"), T0)?,
        Rejection::Replayed,
    );
    assert_accepted(
        &run_code(&mut rec, &code("162583"), T0)?,
        &totp_via("default"),
    );
    Ok(())
}

/// The reminder that a user has no recovery path comes with the login
/// that accepted the code (its own write), at most once per interval, and
/// never with a refusal.
#[test]
fn a_login_without_a_recovery_path_is_reminded_once_per_interval() -> Result<(), Error> {
    let (mut rec, _, _) = enrolled()?;
    rec.backup_codes = None;
    let mut cfg = cfg();
    cfg.enforcement.nudge_interval = 3600;
    let login = |rec: &mut UserRecord, c: &Code, now: u64| {
        let mut step = verify(rec, Attempt::Code(c), &sshd(), now, &cfg, &mut || true);
        remind(&mut step, rec, now, &cfg);
        done(step)
    };
    let reminded = |v: &Verdict| {
        matches!(
            v,
            Verdict::Accepted {
                recovery_nudge: true,
                ..
            }
        )
    };
    let wrong = wrong_code(&rec, T0 + 30, 6);
    let (v, _) = login(&mut rec, &wrong, T0 + 30)?;
    assert!(!reminded(&v) && rec.recovery_nudged_at.is_none(), "{v:?}");
    let c = code_now(&rec, "phone", T0 + 60, 0)?;
    let (v, changed) = login(&mut rec, &c, T0 + 60)?;
    assert!(reminded(&v) && changed, "{v:?}");
    assert_eq!(rec.recovery_nudged_at, Some(T0 + 60));
    let c = code_now(&rec, "phone", T0 + 120, 0)?;
    let (v, _) = login(&mut rec, &c, T0 + 120)?;
    assert!(!reminded(&v), "within the interval: {v:?}");
    let later = T0 + 60 + 3600;
    let c = code_now(&rec, "phone", later, 0)?;
    let (v, _) = login(&mut rec, &c, later)?;
    assert!(reminded(&v), "after the interval: {v:?}");
    // A proof of self-service (ops::verify without remind) notes nothing.
    let c = code_now(&rec, "phone", later + 7200, 0)?;
    let mut step = verify(
        &mut rec,
        Attempt::Code(&c),
        &sshd(),
        later + 7200,
        &cfg,
        &mut || true,
    );
    assert!(matches!(
        &step,
        Step::Done {
            verdict: Verdict::Accepted {
                recovery_nudge: false,
                ..
            },
            ..
        }
    ));
    step = unchanged(Verdict::Busy);
    remind(&mut step, &mut rec, later + 7200, &cfg);
    assert_eq!(rec.recovery_nudged_at, Some(later));
    Ok(())
}

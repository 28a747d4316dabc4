//! The login experience: pending enrollments that expire, clock drift
//! learned per device.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::kdf::Fresh;

/// Aligned to 30 second steps.
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

fn user() -> UserName {
    UserName::test("alice")
}

fn code_at(d: &Device, step: u64) -> Code {
    match Code::parse(totp::code_at_step(&d.secret, d.params, step).as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("test code: {e}"),
    }
}

fn pending_device(rec: &UserRecord) -> Result<Device, Error> {
    rec.pending
        .as_ref()
        .map(|p| p.device.clone())
        .ok_or(Error::Internal("no pending enrollment"))
}

fn started(at: u64) -> Result<(UserRecord, StdRng), Error> {
    let mut rng = StdRng::seed_from_u64(9);
    let mut rec = UserRecord::new();
    enroll_start(
        &mut rec,
        &user(),
        EnrollOptions::default(),
        at,
        &cfg(),
        &mut rng,
    )?;
    Ok((rec, rng))
}

#[test]
fn a_pending_enrollment_is_confirmed_within_its_time() -> Result<(), Error> {
    let (mut rec, mut rng) = started(T0)?;
    let d = pending_device(&rec)?;
    let last = T0 + cfg().pending_expiry - 1;
    let c = code_at(&d, totp::step_of(d.params, last));
    enroll_confirm(&mut rec, &user(), &c, last, &cfg(), &mut rng, &Fresh)?;
    assert!(rec.is_enrolled() && rec.pending.is_none());
    Ok(())
}

#[test]
fn an_expired_pending_enrollment_cannot_be_confirmed() -> Result<(), Error> {
    let (mut rec, mut rng) = started(T0)?;
    let d = pending_device(&rec)?;
    let at = T0 + cfg().pending_expiry;
    // A valid code of the pending secret, at the moment it expires.
    let c = code_at(&d, totp::step_of(d.params, at));
    let e = enroll_confirm(&mut rec, &user(), &c, at, &cfg(), &mut rng, &Fresh);
    assert!(matches!(e, Err(Error::EnrollmentExpired { .. })), "{e:?}");
    let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("the enrollment") && msg.contains("expired; start again with otpctl enroll"),
        "{msg}"
    );
    assert!(!rec.is_enrolled(), "nothing was activated");
    Ok(())
}

#[test]
fn the_expiry_is_configurable() -> Result<(), Error> {
    let (mut rec, mut rng) = started(T0)?;
    let d = pending_device(&rec)?;
    let short = Config {
        pending_expiry: 60,
        ..cfg()
    };
    let at = T0 + 90;
    let c = code_at(&d, totp::step_of(d.params, at));
    let e = enroll_confirm(&mut rec, &user(), &c, at, &short, &mut rng, &Fresh);
    assert!(matches!(e, Err(Error::EnrollmentExpired { .. })), "{e:?}");
    // The default (15 minutes) still takes it.
    enroll_confirm(&mut rec, &user(), &c, at, &cfg(), &mut rng, &Fresh)?;
    Ok(())
}

#[test]
fn an_expired_pending_enrollment_is_dropped_and_a_live_one_kept() -> Result<(), Error> {
    let (mut rec, _) = started(T0)?;
    let expiry = cfg().pending_expiry;
    let p = rec.pending.clone().ok_or(Error::Internal("pending"))?;
    assert_eq!(p.seconds_left(T0 + 60, expiry), expiry - 60);
    assert_eq!(p.seconds_left(T0 + expiry + 5, expiry), 0);
    assert!(!rec.drop_expired_pending(T0 + expiry - 1, expiry));
    assert!(rec.pending.is_some());
    assert!(rec.drop_expired_pending(T0 + expiry, expiry));
    assert!(rec.pending.is_none());
    Ok(())
}

#[test]
fn starting_again_after_expiry_gives_a_fresh_time() -> Result<(), Error> {
    let (mut rec, mut rng) = started(T0)?;
    let later = T0 + 3_600;
    enroll_start(
        &mut rec,
        &user(),
        EnrollOptions::default(),
        later,
        &cfg(),
        &mut rng,
    )?;
    let d = pending_device(&rec)?;
    let c = code_at(&d, totp::step_of(d.params, later + 30));
    enroll_confirm(&mut rec, &user(), &c, later + 30, &cfg(), &mut rng, &Fresh)?;
    assert!(rec.is_enrolled());
    Ok(())
}

/// A user with one device, enrolled at `T0` by a phone on time.
fn enrolled() -> Result<UserRecord, Error> {
    let (mut rec, mut rng) = started(T0)?;
    let d = pending_device(&rec)?;
    let c = code_at(&d, totp::step_of(d.params, T0));
    enroll_confirm(&mut rec, &user(), &c, T0, &cfg(), &mut rng, &Fresh)?;
    Ok(rec)
}

fn phone(rec: &UserRecord) -> Result<Device, Error> {
    rec.devices
        .first()
        .cloned()
        .ok_or(Error::Internal("no device"))
}

/// What the phone shows at `t` when its clock is `late` seconds behind.
fn shown(rec: &UserRecord, t: u64, late: u64) -> Result<Code, Error> {
    let d = phone(rec)?;
    Ok(code_at(&d, totp::step_of(d.params, t - late)))
}

fn login(rec: &mut UserRecord, c: &Code, t: u64, cfg: &Config) -> Result<Verdict, Error> {
    let ctx = LoginContext {
        service: "sshd".into(),
        ..LoginContext::default()
    };
    match verify(rec, Attempt::Code(c), &ctx, t, cfg, &mut || true) {
        Step::Done { verdict, .. } => Ok(verdict),
        Step::Hash(_) => Err(Error::Internal("no backup code was typed")),
    }
}

/// A phone whose clock slowly falls behind to 70 s late: logins every ten
/// minutes teach otpd its offset, and it keeps working at every moment of
/// a step, with the window as narrow as configured.
#[test]
fn a_phone_seventy_seconds_late_keeps_working() -> Result<(), Error> {
    let mut rec = enrolled()?;
    let mut t = T0 + 600 + 15;
    for late in [10, 20, 30, 40, 50, 60, 70] {
        // Three logins at each lateness: the offset moves only on the
        // third code in a row off the centre.
        for _ in 0..3 {
            let c = shown(&rec, t, late)?;
            let v = login(&mut rec, &c, t, &cfg())?;
            assert!(v.is_accepted(), "{late} s late: {v:?}");
            t += 600;
        }
    }
    assert_eq!(phone(&rec)?.drift_steps, -2);
    // Now 70 s late at any moment of a step (the code is 2 or 3 steps old).
    for phase in 0..30 {
        let at = t + 600 * phase + phase;
        let c = shown(&rec, at, 70)?;
        let v = login(&mut rec, &c, at, &cfg())?;
        assert!(v.is_accepted(), "phase {phase}: {v:?}");
    }
    // The same code from a fresh device is outside its window: refused.
    let mut fresh = enrolled()?;
    let at = T0 + 3_600;
    let c = shown(&fresh, at, 70)?;
    let v = login(&mut fresh, &c, at, &cfg())?;
    assert!(
        matches!(
            v,
            Verdict::Rejected {
                rejection: Rejection::ClockSkew {
                    skew_seconds: -90 | -60
                },
                ..
            }
        ),
        "{v:?}"
    );
    Ok(())
}

/// One code typed just before its step ended (a step old) moves nothing:
/// the window stays centred on now, so the phone's next code, even one a
/// step ahead, is still accepted. The confirmation code moves nothing
/// either.
#[test]
fn one_slow_code_does_not_move_the_window() -> Result<(), Error> {
    let (mut rec, mut rng) = started(T0)?;
    let d = pending_device(&rec)?;
    let step = totp::step_of(d.params, T0);
    let c = code_at(&d, step - 1);
    enroll_confirm(&mut rec, &user(), &c, T0, &cfg(), &mut rng, &Fresh)?;
    assert_eq!(phone(&rec)?.drift_steps, 0, "confirmation");
    let t = T0 + 600;
    let late = code_at(&d, totp::step_of(d.params, t) - 1);
    assert!(login(&mut rec, &late, t, &cfg())?.is_accepted());
    assert_eq!(phone(&rec)?.drift_steps, 0);
    let ahead = code_at(&d, totp::step_of(d.params, t) + 1);
    assert!(login(&mut rec, &ahead, t + 1, &cfg())?.is_accepted());
    Ok(())
}

#[test]
fn a_code_accepted_in_a_shifted_window_is_refused_after_use() -> Result<(), Error> {
    let mut rec = enrolled()?;
    rec.devices[0].drift_steps = -2;
    let t = T0 + 900;
    let c = shown(&rec, t, 90)?;
    assert!(login(&mut rec, &c, t, &cfg())?.is_accepted());
    let again = login(&mut rec, &c, t + 5, &cfg())?;
    assert!(
        matches!(
            again,
            Verdict::Rejected {
                rejection: Rejection::Replayed,
                ..
            }
        ),
        "{again:?}"
    );
    // And a code of the current step (on time) is no longer in the window
    // of a device that runs 2 steps late: the window moved, it did not grow.
    let on_time = shown(&rec, t + 60, 0)?;
    let v = login(&mut rec, &on_time, t + 60, &cfg())?;
    assert!(!v.is_accepted(), "{v:?}");
    Ok(())
}

#[test]
fn the_learned_offset_is_bounded() -> Result<(), Error> {
    let mut rec = enrolled()?;
    let mut t = T0 + 615;
    // The phone keeps falling behind, 20 s per login, up to 5 minutes.
    for late in (20..=300).step_by(20) {
        for _ in 0..3 {
            let c = shown(&rec, t, late)?;
            let _ = login(&mut rec, &c, t, &cfg())?;
            assert!(phone(&rec)?.drift_steps.abs() <= 2, "{late}");
            t += 600;
        }
    }
    assert_eq!(phone(&rec)?.drift_steps, -2);
    // 150 s late is 5 steps: outside the shifted window (-3..=-1).
    let c = shown(&rec, t, 150)?;
    assert!(!login(&mut rec, &c, t, &cfg())?.is_accepted());
    // Learning off: the offset stays 0.
    let mut off = enrolled()?;
    let no_learning = Config {
        max_drift_steps: 0,
        ..cfg()
    };
    let c = shown(&off, T0 + 615, 20)?;
    assert!(login(&mut off, &c, T0 + 615, &no_learning)?.is_accepted());
    assert_eq!(phone(&off)?.drift_steps, 0);
    Ok(())
}

#[test]
fn an_old_record_without_an_offset_reads_as_zero() -> Result<(), Error> {
    let rec = enrolled()?;
    let mut json = serde_json::to_value(phone(&rec)?).map_err(|_| Error::Internal("encode"))?;
    assert!(json.get("drift_steps").is_none(), "0 is not written");
    json["drift_steps"] = serde_json::Value::from(-1);
    let d: Device = serde_json::from_value(json).map_err(|_| Error::Internal("decode"))?;
    assert_eq!(d.drift_steps, -1);
    Ok(())
}

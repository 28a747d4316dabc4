//! Verify decisions in batches (`Engine::verify_batch`, what the daemon's
//! deciding threads run): each call is decided as if alone, the batch's
//! writes reach the store together, and a user is decided at most once
//! per batch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use otpd::clock::ManualClock;
use otpd::crypto::MasterKey;
use otpd::engine::{
    Credential, Decision, Engine, EngineConfig, EnrollOptions, LoginContext, Verification,
    VerifyCall,
};
use otpd::record::UserName;
use otpd::secret::{Code, TotpSecret};
use otpd::store::SledStore;
use otpd::totp::{code_at_step, step_of};

const T0: u64 = 1_800_000_000;

struct Enrolled {
    user: UserName,
    secret: TotpSecret,
}

fn engine(dir: &std::path::Path, key: &[u8; 32], clock: &Arc<ManualClock>) -> Engine {
    let store = SledStore::open(&dir.join("store")).unwrap();
    let cfg = EngineConfig::default();
    Engine::new(
        Box::new(store),
        MasterKey::from_bytes(zeroize::Zeroizing::new(*key)),
        clock.clone(),
        cfg,
    )
}

fn enroll(engine: &Engine, name: &str) -> Enrolled {
    let user = UserName::parse(name.as_bytes()).unwrap();
    let started = engine
        .enroll_start(&user, EnrollOptions::default())
        .unwrap();
    let secret = TotpSecret::from_bytes(
        data_encoding::BASE32_NOPAD
            .decode(started.secret_base32.as_bytes())
            .unwrap(),
    );
    let c = code_at_step(&secret, started.params, step_of(started.params, T0));
    engine
        .enroll_confirm(&user, &Code::parse(c.as_bytes()).unwrap())
        .unwrap();
    Enrolled { user, secret }
}

fn call(user: &UserName, code: &str) -> VerifyCall {
    VerifyCall {
        user: user.clone(),
        credential: Credential::Code(Code::parse(code.as_bytes()).unwrap()),
        ctx: LoginContext {
            service: "sshd".into(),
            remote_host: "203.0.113.9".into(),
            ..Default::default()
        },
    }
}

fn decision(r: &Result<Verification, otpd::error::Error>) -> Decision {
    match r {
        Ok(Verification::Done(v)) => v.decision(),
        other => panic!("expected a decision, got {other:?}"),
    }
}

#[test]
fn a_batch_decides_each_call_as_alone_and_its_writes_are_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let key = [7u8; 32];
    let clock = Arc::new(ManualClock::new(T0));
    let e = engine(dir.path(), &key, &clock);
    let users: Vec<Enrolled> = (0..20).map(|i| enroll(&e, &format!("u{i}"))).collect();
    clock.advance(60);
    let p = otpd::totp::TotpParams::default();
    let now = step_of(p, T0 + 60);
    let right = |u: &Enrolled| code_at_step(&u.secret, p, now);
    // Valid codes for the even users, wrong ones for the odd, and one
    // unknown user.
    let mut calls: Vec<VerifyCall> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            if i % 2 == 0 {
                call(&u.user, &right(u))
            } else {
                let c = right(u);
                let wrong = if c.as_str() == "000000" {
                    "000001"
                } else {
                    "000000"
                };
                call(&u.user, wrong)
            }
        })
        .collect();
    calls.push(call(&UserName::parse(b"nobody-here").unwrap(), "123456"));
    let results = e.verify_batch(calls);
    assert_eq!(results.len(), 21);
    for (i, r) in results.iter().take(20).enumerate() {
        let want = if i % 2 == 0 {
            Decision::Accepted
        } else {
            Decision::Rejected
        };
        assert_eq!(decision(r), want, "user u{i}");
    }
    assert_eq!(decision(&results[20]), Decision::NotEnrolled);
    // Written: after a restart on the same store, the used codes are
    // replays and the failures are counted.
    drop(e);
    let e = engine(dir.path(), &key, &clock);
    for (i, u) in users.iter().enumerate() {
        let s = e.status(&u.user).unwrap();
        // (From an origin the user never logged in from: the strangers'
        // counter.)
        let failures = s.consecutive_failures + s.stranger_failures;
        assert_eq!(failures, u32::from(i % 2 == 1), "user u{i}");
    }
    let again: Vec<VerifyCall> = users
        .iter()
        .step_by(2)
        .map(|u| call(&u.user, &right(u)))
        .collect();
    for r in e.verify_batch(again) {
        assert_eq!(decision(&r), Decision::Rejected, "a used code, again");
    }
}

#[test]
fn a_user_is_decided_once_per_batch_and_a_code_accepted_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let e = engine(dir.path(), &[9u8; 32], &clock);
    let u = enroll(&e, "alice");
    clock.advance(60);
    let p = otpd::totp::TotpParams::default();
    let c = code_at_step(&u.secret, p, step_of(p, T0 + 60));
    let results = e.verify_batch(vec![call(&u.user, &c), call(&u.user, &c)]);
    assert_eq!(decision(&results[0]), Decision::Accepted);
    match &results[1] {
        Err(otpd::error::Error::Internal(m)) => assert!(m.contains("twice"), "{m}"),
        other => panic!("a second entry of the same user must be refused: {other:?}"),
    }
    // In the next batch it is decided: a replay.
    let results = e.verify_batch(vec![call(&u.user, &c)]);
    assert_eq!(decision(&results[0]), Decision::Rejected);
}

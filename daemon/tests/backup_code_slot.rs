//! With 8-digit TOTP every code may also be a backup code. While one of a
//! user's backup-code attempts is being hashed, further attempts are
//! refused as busy — and must be refused before their TOTP check, or each
//! would be a guess checked and never counted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use otpd::clock::ManualClock;
use otpd::crypto::MasterKey;
use otpd::engine::{Decision, Engine, EngineConfig, EnrollOptions, LoginContext, Verification};
use otpd::kdf::KdfParams;
use otpd::record::UserName;
use otpd::secret::{Code, TotpSecret};
use otpd::store::SledStore;
use otpd::totp::{TotpParams, code_at_step, step_of};

const T0: u64 = 1_800_000_000;

#[test]
fn eight_digit_totp_is_not_checked_while_a_backup_code_attempt_is_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("store")).unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let mut cfg = EngineConfig::default();
    cfg.defaults.digits = 8;
    cfg.kdf = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    let engine = Engine::new(
        Box::new(store),
        MasterKey::generate(&mut rand::rngs::OsRng),
        clock.clone(),
        cfg,
    );
    let user = UserName::parse(b"alice").unwrap();
    let started = engine
        .enroll_start(&user, EnrollOptions::default())
        .unwrap();
    let secret = TotpSecret::from_bytes(
        data_encoding::BASE32_NOPAD
            .decode(started.secret_base32.as_bytes())
            .unwrap(),
    );
    let p: TotpParams = started.params;
    assert_eq!(p.digits, 8);
    let confirm = code_at_step(&secret, p, step_of(p, T0));
    engine
        .enroll_confirm(&user, &Code::parse(confirm.as_bytes()).unwrap())
        .unwrap();
    clock.advance(90);
    let ctx = LoginContext {
        remote_host: "203.0.113.9".into(),
        ..Default::default()
    };

    // One backup-code attempt holds the user's slot (hashed later).
    let held = match engine
        .verify(&user, &Code::parse(b"00000001").unwrap(), &ctx)
        .unwrap()
    {
        Verification::NeedsKdf(a) => a,
        Verification::Done(v) => panic!("expected a backup-code check, got {v:?}"),
    };
    // Meanwhile even the right TOTP code is refused unchecked: a check here
    // would be one nobody counts.
    let right = code_at_step(&secret, p, step_of(p, T0 + 90));
    for guess in ["10000000", "10000001", right.as_str()] {
        match engine
            .verify(&user, &Code::parse(guess.as_bytes()).unwrap(), &ctx)
            .unwrap()
        {
            Verification::Done(v) => assert_eq!(v.decision(), Decision::Throttled),
            Verification::NeedsKdf(_) => panic!("a second attempt got the slot"),
        }
    }
    let s = engine.status(&user).unwrap();
    assert_eq!((s.consecutive_failures, s.stranger_failures), (0, 0));
    drop(held);

    // With the slot free, the right code is checked and accepted.
    match engine
        .verify(&user, &Code::parse(right.as_bytes()).unwrap(), &ctx)
        .unwrap()
    {
        Verification::Done(v) => assert_eq!(v.decision(), Decision::Accepted),
        Verification::NeedsKdf(_) => panic!("the right TOTP code went to the backup-code check"),
    }
}

//! Imports of several devices of one user in one decision (pam_oath lists
//! a user with several tokens on several lines): all of them or none.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::kdf::Fresh;

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
    StdRng::seed_from_u64(0x1d9)
}

fn user() -> UserName {
    UserName::test("alice")
}

fn name(s: &str) -> DeviceName {
    DeviceName::parse(s).unwrap_or_else(|e| panic!("test device name {s:?}: {e}"))
}

fn code(s: &str) -> Code {
    Code::parse(s.as_bytes()).unwrap_or_else(|e| panic!("test code: {e}"))
}

fn totp(device: &str, secret: &[u8]) -> Import {
    Import {
        device: name(device),
        secret: TotpSecret::from_bytes(secret.to_vec()),
        params: TotpParams::default(),
        issuer: None,
        backup_codes: Vec::new(),
        last_used_step: None,
        replace: false,
        hotp: false,
    }
}

fn hotp(device: &str, secret: &[u8], last_used: Option<u64>) -> Import {
    Import {
        hotp: true,
        last_used_step: last_used,
        ..totp(device, secret)
    }
}

fn snapshot(rec: &UserRecord) -> String {
    serde_json::to_string(rec).unwrap_or_else(|e| panic!("encode record: {e}"))
}

/// The verdict on a code (TOTP and HOTP codes decide in one step).
fn check(rec: &mut UserRecord, c: &Code, now: u64) -> Verdict {
    let ctx = LoginContext {
        service: "sshd".into(),
        ..LoginContext::default()
    };
    match verify(rec, Attempt::Code(c), &ctx, now, &cfg(), &mut || false) {
        Step::Done { verdict, .. } => verdict,
        Step::Hash(_) => panic!("a device code asked for a hash"),
    }
}

fn accepted_by(v: &Verdict) -> Option<&str> {
    match v {
        Verdict::Accepted {
            via: Via::Totp { device },
            ..
        } => Some(device.as_str()),
        _ => None,
    }
}

/// RFC 4226 Appendix D's key: counter 6 is "287922", 7 is "162583".
const RFC_KEY: &[u8] = b"12345678901234567890";

#[test]
fn every_token_of_a_user_becomes_a_device_that_logs_in() -> Result<(), Error> {
    let mut rec = UserRecord::new();
    let time_key = b"0123456789abcdef";
    let done = import_devices(
        &mut rec,
        &user(),
        vec![
            totp("oath-token", time_key),
            hotp("oath-token-2", RFC_KEY, Some(6)),
        ],
        T0,
        &cfg(),
        &mut rng(),
        &Fresh,
    )?;
    assert_eq!(done.devices, [name("oath-token"), name("oath-token-2")]);
    assert_eq!((done.replaced, done.backup_codes), (false, 0));
    assert!(rec.is_enrolled());
    assert_eq!(rec.devices.len(), 2);
    assert_ne!(rec.devices[0].id, rec.devices[1].id);
    // The time token logs in with its current code.
    let d = rec
        .device(&name("oath-token"))
        .ok_or(Error::Internal("gone"))?;
    let now_code = code(&totp::code_at_step(
        &d.secret,
        d.params,
        totp::step_of(d.params, T0),
    ));
    assert_eq!(
        accepted_by(&check(&mut rec, &now_code, T0)),
        Some("oath-token")
    );
    // The counter token: its used counter refused, the next accepted.
    assert!(accepted_by(&check(&mut rec, &code("287922"), T0 + 1)).is_none());
    assert_eq!(
        accepted_by(&check(&mut rec, &code("162583"), T0 + 2)),
        Some("oath-token-2")
    );
    Ok(())
}

#[test]
fn a_bad_token_imports_none_of_the_users_tokens() -> Result<(), Error> {
    let mut rng = rng();
    let mut rec = UserRecord::new();
    let before = snapshot(&rec);
    let good = totp("oath-token", b"0123456789abcdef");
    let cases: Vec<(Vec<Import>, &str)> = vec![
        (vec![good.clone(), totp("oath-token-2", b"short")], "key"),
        (vec![good.clone(), totp("oath-token", RFC_KEY)], "same name"),
        (Vec::new(), "no device"),
        (
            vec![
                good.clone(),
                Import {
                    replace: true,
                    ..totp("oath-token-2", RFC_KEY)
                },
            ],
            "replace disagrees",
        ),
        (
            vec![
                Import {
                    backup_codes: vec![code("12345678")],
                    ..good.clone()
                },
                Import {
                    backup_codes: vec![code("87654321")],
                    ..totp("oath-token-2", RFC_KEY)
                },
            ],
            "two sets of backup codes",
        ),
        (
            (1..=MAX_DEVICES + 1)
                .map(|n| totp(&format!("t{n}"), RFC_KEY))
                .collect(),
            "too many",
        ),
    ];
    for (imports, why) in cases {
        let r = import_devices(&mut rec, &user(), imports, T0, &cfg(), &mut rng, &Fresh);
        assert!(r.is_err(), "{why}: accepted");
        assert_eq!(snapshot(&rec), before, "{why}: the record changed");
    }
    // MAX_DEVICES is fine.
    let all: Vec<Import> = (1..=MAX_DEVICES)
        .map(|n| totp(&format!("t{n}"), RFC_KEY))
        .collect();
    let done = import_devices(&mut rec, &user(), all, T0, &cfg(), &mut rng, &Fresh)?;
    assert_eq!(done.devices.len(), MAX_DEVICES);
    Ok(())
}

#[test]
fn an_enrolled_user_keeps_their_devices_unless_replace() -> Result<(), Error> {
    let mut rng = rng();
    let mut rec = UserRecord::new();
    import_devices(
        &mut rec,
        &user(),
        vec![totp("phone", RFC_KEY)],
        T0,
        &cfg(),
        &mut rng,
        &Fresh,
    )?;
    let before = snapshot(&rec);
    let again = vec![
        totp("oath-token", b"0123456789abcdef"),
        hotp("oath-token-2", RFC_KEY, None),
    ];
    let r = import_devices(
        &mut rec,
        &user(),
        again.clone(),
        T0,
        &cfg(),
        &mut rng,
        &Fresh,
    );
    assert!(matches!(r, Err(Error::AlreadyEnrolled { .. })), "{r:?}");
    assert_eq!(snapshot(&rec), before);
    let replacing = again
        .into_iter()
        .map(|i| Import { replace: true, ..i })
        .collect();
    let done = import_devices(&mut rec, &user(), replacing, T0, &cfg(), &mut rng, &Fresh)?;
    assert!(done.replaced);
    let names: Vec<&str> = rec.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["oath-token", "oath-token-2"], "phone is replaced");
    Ok(())
}

#[test]
fn backup_codes_come_from_the_one_device_that_brings_them() -> Result<(), Error> {
    let mut rec = UserRecord::new();
    let done = import_devices(
        &mut rec,
        &user(),
        vec![
            totp("a", RFC_KEY),
            Import {
                backup_codes: vec![code("12345678"), code("87654321")],
                ..totp("b", b"0123456789abcdef")
            },
        ],
        T0,
        &cfg(),
        &mut rng(),
        &Fresh,
    )?;
    assert_eq!(done.backup_codes, 2);
    Ok(())
}

#[test]
fn further_tokens_are_numbered_within_the_name_limit() -> Result<(), Error> {
    let base = name("oath-token");
    assert_eq!(numbered_device_name(&base, 1)?, base);
    assert_eq!(numbered_device_name(&base, 2)?.as_str(), "oath-token-2");
    assert_eq!(numbered_device_name(&base, 16)?.as_str(), "oath-token-16");
    let long = name(&"x".repeat(crate::device::MAX_NAME_LEN));
    let n = numbered_device_name(&long, 12)?;
    assert!(n.as_str().ends_with("-12"));
    assert_eq!(n.as_str().len(), crate::device::MAX_NAME_LEN);
    Ok(())
}

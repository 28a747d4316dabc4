//! Exports of one active device: what an authenticator needs, read only;
//! imported elsewhere, it logs in and keeps its replay state.

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

fn user() -> UserName {
    UserName::test("alice")
}

fn name(s: &str) -> DeviceName {
    DeviceName::parse(s).unwrap_or_else(|e| panic!("test device name {s:?}: {e}"))
}

/// RFC 4226 Appendix D's key: counter 6 is "287922", 7 is "162583".
const RFC_KEY: &[u8] = b"12345678901234567890";

fn import(device: &str, hotp: bool, last_used_step: Option<u64>) -> Import {
    Import {
        device: name(device),
        secret: TotpSecret::from_bytes(RFC_KEY.to_vec()),
        params: TotpParams::default(),
        issuer: Some("ACME".into()),
        backup_codes: Vec::new(),
        last_used_step,
        replace: false,
        hotp,
    }
}

fn enrolled() -> UserRecord {
    let mut rec = UserRecord::new();
    let imports = vec![
        import(
            "phone",
            false,
            Some(totp::step_of(TotpParams::default(), T0)),
        ),
        import("token", true, Some(6)),
    ];
    let mut rng = StdRng::seed_from_u64(7);
    import_devices(&mut rec, &user(), imports, T0, &cfg(), &mut rng, &Fresh)
        .unwrap_or_else(|e| panic!("import: {e}"));
    rec
}

#[test]
fn the_first_or_the_named_device_with_its_counter_and_replay_state() {
    let rec = enrolled();
    let before = serde_json::to_string(&rec).unwrap_or_default();
    let first = export_device(&rec, &user(), None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.device, name("phone"));
    assert_eq!(first.secret.expose(), RFC_KEY);
    assert_eq!((first.issuer.as_str(), first.hotp_counter), ("ACME", None));
    assert_eq!(
        first.last_used_step,
        Some(totp::step_of(TotpParams::default(), T0))
    );
    let token =
        export_device(&rec, &user(), Some(&name("token"))).unwrap_or_else(|e| panic!("{e}"));
    // Counter 6 was used: the token shows 7 next.
    assert_eq!((token.hotp_counter, token.last_used_step), (Some(7), None));
    // Read only; the key never in Debug.
    assert_eq!(serde_json::to_string(&rec).unwrap_or_default(), before);
    assert!(!format!("{token:?}").contains("1234567890"));
}

#[test]
fn a_missing_or_pending_device_and_a_user_without_devices_are_refused() {
    let rec = enrolled();
    assert!(matches!(
        export_device(&rec, &user(), Some(&name("tablet"))),
        Err(Error::NoSuchDevice { .. })
    ));
    assert!(matches!(
        export_device(&UserRecord::new(), &user(), None),
        Err(Error::NotEnrolled { .. })
    ));
    // A pending enrollment is not exportable, by name or as the first.
    let mut pending = UserRecord::new();
    let opts = EnrollOptions {
        device: Some(name("new")),
        ..EnrollOptions::default()
    };
    let mut rng = StdRng::seed_from_u64(8);
    enroll_start(&mut pending, &user(), opts, T0, &cfg(), &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(pending.pending.is_some());
    assert!(matches!(
        export_device(&pending, &user(), Some(&name("new"))),
        Err(Error::NoSuchDevice { .. })
    ));
    assert!(matches!(
        export_device(&pending, &user(), None),
        Err(Error::NotEnrolled { .. })
    ));
}

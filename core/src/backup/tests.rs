use proptest::prelude::*;

use super::*;
use crate::device::{Device, DeviceName};
use crate::secret::TotpSecret;
use crate::totp::TotpParams;

fn device(id: u64, step: Option<u64>) -> Device {
    Device {
        id,
        name: DeviceName::default_name(),
        secret: TotpSecret::from_bytes(vec![7; 20]),
        params: TotpParams::default(),
        issuer: "otpd".into(),
        enrolled_at: 1,
        last_used_step: step,
        spent_ahead: Vec::new(),
        clock_skew_seconds: 0,
        last_used_at: None,
        kind: Kind::Totp,
        hotp_resync: None,
        drift_steps: 0,
        drift_streak: 0,
    }
}

fn doc() -> Document {
    let mut rec = UserRecord::new();
    rec.devices.push(device(1, Some(100)));
    rec.generation = 5;
    Document::new(1_800_000_000, "host1", vec![(UserName::test("alice"), rec)])
}

#[test]
fn a_document_round_trips_with_its_watermarks() {
    let json = doc().to_json().unwrap();
    let text = std::str::from_utf8(&json).unwrap();
    assert!(
        text.contains(r#""format":"otpd-backup","version":1"#),
        "{text}"
    );
    assert!(text.contains(r#""watermarks":{"generation":5,"devices":[{"id":1,"name":"default","kind":"totp","step":100}]}"#), "{text}");
    let back = parse(&json).unwrap();
    assert_eq!((back.created, back.host.as_str()), (1_800_000_000, "host1"));
    assert_eq!(back.users.len(), 1);
    assert_eq!(back.users[0].1.devices[0].last_used_step, Some(100));
    assert_eq!(back.users[0].1.devices[0].secret.expose(), &[7; 20]);
    assert_eq!(
        back.summary(),
        Summary {
            users: 1,
            devices: 1,
            app_passwords: 0,
            backup_codes: 0
        }
    );
}

#[test]
fn a_device_below_its_watermark_is_raised() {
    let mut d = doc();
    d.users[0].watermarks.devices[0].step = Some(250);
    d.users[0].watermarks.generation = 9;
    let back = parse(&d.to_json().unwrap()).unwrap();
    assert_eq!(back.users[0].1.devices[0].last_used_step, Some(250));
    assert_eq!(back.users[0].1.generation, 9);
}

#[test]
fn other_formats_newer_versions_bad_names_and_repeats_are_refused() {
    let mut d = doc();
    d.version = 2;
    assert!(matches!(
        parse(&d.to_json().unwrap()),
        Err(Error::Unsupported { version: 2, .. })
    ));
    let mut d = doc();
    d.format = "other".into();
    assert!(matches!(
        parse(&d.to_json().unwrap()),
        Err(Error::Unsupported { .. })
    ));
    let mut d = doc();
    d.users[0].user = "a:b".into();
    assert!(matches!(
        parse(&d.to_json().unwrap()),
        Err(Error::BadUser { index: 0, .. })
    ));
    let mut d = doc();
    d.users.push(d.users[0].clone());
    assert!(matches!(
        parse(&d.to_json().unwrap()),
        Err(Error::BadUser { index: 1, .. })
    ));
    let mut d = doc();
    d.users[0].record.version = RECORD_VERSION + 1;
    assert!(matches!(
        parse(&d.to_json().unwrap()),
        Err(Error::BadUser { .. })
    ));
    assert!(matches!(parse(b"{"), Err(Error::Malformed(_))));
    assert!(matches!(parse(b""), Err(Error::Malformed(_))));
}

#[test]
fn a_malformed_document_error_never_quotes_the_input() {
    let json = doc().to_json().unwrap();
    let text = String::from_utf8(json.to_vec()).unwrap();
    // A secret where a number belongs.
    let bad = text.replacen("[7,7,7", "[\"SECRETVALUE\",7", 1);
    let e = parse(bad.as_bytes()).unwrap_err().to_string();
    assert!(!e.contains("SECRETVALUE"), "{e}");
}

#[test]
fn the_stanza_round_trips_and_refuses_costs_out_of_bounds() {
    let s = KdfStanza::new([9; 16], STRONG_KDF);
    assert_eq!(s.salt.len(), 22);
    assert_eq!(KdfStanza::parse(&s.args()).unwrap(), s);
    let mut args = s.args();
    args[1] = format!("m={}", MAX_M_KIB + 1);
    assert!(KdfStanza::parse(&args).is_err());
    let mut args = s.args();
    args[2] = "t=0".into();
    assert!(KdfStanza::parse(&args).is_err());
    let mut args = s.args();
    args[4] = "not base64!".into();
    assert!(KdfStanza::parse(&args).is_err());
    assert!(KdfStanza::parse(&s.args()[..4]).is_err());
    let mut args = s.args();
    args[0] = "v2".into();
    assert!(KdfStanza::parse(&args).is_err());
}

/// The derivation is plain Argon2id of the passphrase with the salt's
/// ASCII bytes, as the README's by-hand path computes it.
#[test]
fn the_secret_is_argon2id_of_the_passphrase_and_the_salt_text() {
    use argon2::{Algorithm, Argon2, Params, Version};
    let s = KdfStanza::new([1; 16], TEST_KDF);
    let got = derive_secret(b"mellow cabin ripple orbit fancy", &s).unwrap();
    let mut want = [0u8; 32];
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(64, 1, 1, Some(32)).unwrap(),
    )
    .hash_password_into(
        b"mellow cabin ripple orbit fancy",
        s.salt.as_bytes(),
        &mut want,
    )
    .unwrap();
    assert_eq!(*got, want);
    let other = derive_secret(b"mellow cabin ripple orbit fancz", &s).unwrap();
    assert_ne!(*got, *other);
}

proptest! {
    #[test]
    fn untrusted_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn untrusted_stanza_args_never_panic(args in proptest::collection::vec(".{0,24}", 0..7)) {
        let _ = KdfStanza::parse(&args);
    }
}

#[test]
fn a_restore_never_moves_a_watermark_back_nor_revives_a_used_backup_code() {
    use crate::backup_codes::BackupCodeSet;
    use crate::kdf::{Fresh, KdfParams};
    use crate::secret::Code;
    let kdf = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    let (codes, set) = BackupCodeSet::generate(kdf, &mut rand::rngs::OsRng, &Fresh).unwrap();
    // The backup: device 1 at step 100, device 2 at 50, every code unused.
    let mut old = UserRecord::new();
    old.devices.push(device(1, Some(100)));
    old.devices.push(device(2, Some(50)));
    old.backup_codes = Some(set.clone());
    // The store since: device 1 used up to 130 (and 140 ahead), one code used,
    // device 2 untouched, locked out.
    let mut now = old.clone();
    now.devices[0].use_step(130);
    now.devices[0].spend_step(140, 0);
    let used = Code::parse(codes[0].as_bytes()).unwrap();
    assert!(
        now.backup_codes
            .as_mut()
            .unwrap()
            .consume(&used, &Fresh)
            .unwrap()
    );
    now.counters.locked_until = 99;
    let m = merge(Some(&now), old.clone());
    assert!(m.replaced);
    assert_eq!(m.watermarks_kept, 1);
    assert_eq!(m.record.devices[0].last_used_step, Some(130));
    assert_eq!(m.record.devices[0].spent_ahead, [140]);
    assert_eq!(m.record.devices[1].last_used_step, Some(50));
    assert_eq!(m.backup_codes_kept_used, 1);
    let mut restored_set = m.record.backup_codes.clone().unwrap();
    assert!(
        !restored_set.consume(&used, &Fresh).unwrap(),
        "a used code stays used"
    );
    assert_eq!(
        m.record.counters.locked_until, 99,
        "a restore is not an unlock"
    );
    // A backup ahead of the store wins; a fresh store takes the backup as it is.
    let m = merge(Some(&old), now.clone());
    assert_eq!(
        (m.watermarks_kept, m.record.devices[0].last_used_step),
        (0, Some(130))
    );
    let m = merge(None, old);
    assert!(!m.replaced);
    assert_eq!(m.record.backup_codes.unwrap().remaining(), 10);
}

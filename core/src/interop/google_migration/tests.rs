use super::*;

/// A protobuf writer for the tests: builds payloads field by field.
#[derive(Default, Clone)]
pub(super) struct Pb(pub(super) Vec<u8>);

impl Pb {
    fn varint(mut self, mut v: u64) -> Self {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return self;
            }
            self.0.push(b | 0x80);
        }
    }
    fn int(self, field: u64, v: i64) -> Self {
        self.varint(field << 3).varint(v as u64)
    }
    fn bytes(self, field: u64, b: &[u8]) -> Self {
        let mut s = self.varint((field << 3) | 2).varint(b.len() as u64);
        s.0.extend_from_slice(b);
        s
    }
    fn uri(&self) -> String {
        format!(
            "otpauth-migration://offline?data={}",
            data_encoding::BASE64.encode(&self.0)
        )
    }
}

const KEY: &[u8] = b"12345678901234567890";

fn account(name: &str, issuer: &str) -> Pb {
    Pb::default()
        .bytes(1, KEY)
        .bytes(2, name.as_bytes())
        .bytes(3, issuer.as_bytes())
        .int(4, 1)
        .int(5, 1)
        .int(6, 2)
}

fn payload(accounts: &[Pb]) -> Pb {
    let mut p = Pb::default();
    for a in accounts {
        p = p.bytes(1, &a.0);
    }
    p.int(2, 1).int(3, 1).int(4, 0).int(5, -559038737)
}

fn ok(uri: &str) -> Payload {
    match parse(uri) {
        Ok(p) => p,
        Err(e) => panic!("{uri}: {e}"),
    }
}

fn only(p: &Payload) -> &OtpAuth {
    assert_eq!(p.accounts.len(), 1);
    match &p.accounts[0].result {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    }
}

/// Payloads published with public decoders, decoded here to what their
/// authors state they hold.
#[test]
fn public_examples() {
    // From the README of github.com/dim13/otpauth (also used by
    // digitalduke/otpauth-migration-decoder): no padding, no batch fields;
    // it holds otpauth://totp/Example:alice@google.com?issuer=Example&secret=JBSWY3DPEHPK3PXP
    let p = ok(
        "otpauth-migration://offline?data=CjEKCkhlbGxvId6tvu8SGEV4YW1wbGU6YWxpY2VAZ29vZ2xlLmNvbRoHRXhhbXBsZTAC",
    );
    let a = only(&p);
    assert_eq!(a.secret.to_base32().as_str(), "JBSWY3DPEHPK3PXP");
    assert_eq!(
        (a.issuer.as_deref(), a.account.as_str(), a.kind),
        (Some("Example"), "alice@google.com", Kind::Totp)
    );
    assert_eq!(a.params, TotpParams::default());
    assert_eq!(p.accounts[0].name, "Example:alice@google.com");
    assert_eq!(
        p.batch,
        Batch {
            size: 1,
            index: 0,
            id: 0
        }
    );

    // From example_export.txt of github.com/scito/extract_otp_secrets
    // (a real app export, percent-encoded, negative batch_id): holds
    // otpauth://totp/pi@raspberrypi?secret=7KSQL2JTUDIS5EF65KLMRQIIGY&issuer=raspberrypi
    let p = ok(
        "otpauth-migration://offline?data=CjUKEPqlBekzoNEukL7qlsjBCDYSDnBpQHJhc3BiZXJyeXBpGgtyYXNwYmVycnlwaSABKAEwAhABGAEgACjr4JKK%2B%2F%2F%2F%2F%2F8B",
    );
    let a = only(&p);
    assert_eq!(a.secret.to_base32().as_str(), "7KSQL2JTUDIS5EF65KLMRQIIGY");
    assert_eq!(
        (a.issuer.as_deref(), a.account.as_str()),
        (Some("raspberrypi"), "pi@raspberrypi")
    );
    assert_eq!((p.version, p.batch.size, p.batch.index), (1, 1, 0));
    assert!(p.batch.id < 0);

    // Same file: otpauth://hotp/hotp%20demo?secret=7KSQL2JTUDIS5EF65KLMRQIIGY&counter=4
    let p = ok(
        "otpauth-migration://offline?data=CiUKEPqlBekzoNEukL7qlsjBCDYSCWhvdHAgZGVtbyABKAEwATgEEAEYASAAKNuv15j6%2F%2F%2F%2F%2FwE%3D",
    );
    let a = only(&p);
    assert_eq!(
        (a.kind, a.issuer.as_deref()),
        (Kind::Hotp { counter: 4 }, None)
    );
    assert_eq!(a.account, "hotp demo");

    // Same file: the name "encoding: ¿äÄéÉ? (demo)", no issuer field.
    let p = ok(
        "otpauth-migration://offline?data=CjYKEPqlBekzoNEukL7qlsjBCDYSHGVuY29kaW5nOiDCv8Okw4TDqcOJPyAoZGVtbykgASgBMAIQARgBIAAorfCurv%2F%2F%2F%2F%2F%2FAQ%3D%3D",
    );
    let a = only(&p);
    assert_eq!(
        (a.issuer.as_deref(), a.account.as_str()),
        (Some("encoding"), "¿äÄéÉ? (demo)")
    );
}

#[test]
fn accounts_batches_and_encodings() {
    let p = payload(&[
        account("ACME:alice@example.com", "ACME"),
        account("bob", "")
            .int(4, 3)
            .int(5, 2)
            .int(6, 1)
            .int(7, 41)
            // Unknown fields of every wire type are skipped.
            .bytes(8, b"unique-id")
            .int(9, 7),
        account("Other:carol", "ACME").int(4, 2),
    ])
    .int(15, 3);
    let mut with_fixed = p.clone();
    with_fixed
        .0
        .extend_from_slice(&[(14 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
    with_fixed.0.extend_from_slice(&[(13 << 3) | 5, 1, 2, 3, 4]);
    let got = ok(&with_fixed.uri());
    assert_eq!(got.batch.id, -559038737);
    let [a, b, c] = &got.accounts[..] else {
        panic!()
    };
    let (a, b, c) = (
        a.result.as_ref().unwrap(),
        b.result.as_ref().unwrap(),
        c.result.as_ref().unwrap(),
    );
    assert_eq!(
        (a.issuer.as_deref(), a.account.as_str()),
        (Some("ACME"), "alice@example.com")
    );
    assert_eq!(a.secret.expose(), KEY);
    assert_eq!(b.kind, Kind::Hotp { counter: 41 });
    assert_eq!(
        (b.params.algorithm, b.params.digits, b.issuer.as_deref()),
        (Algorithm::Sha512, 8, None)
    );
    // A name whose prefix is not the issuer stays whole.
    assert_eq!(
        (c.issuer.as_deref(), c.account.as_str(), c.params.algorithm),
        (Some("ACME"), "Other:carol", Algorithm::Sha256)
    );

    // The same bytes in every spelling found in the wild.
    let b64 = data_encoding::BASE64.encode(&p.0);
    let spellings = [
        b64.clone(),
        b64.trim_end_matches('=').to_owned(),
        b64.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D"),
        b64.replace('+', "%2b").replace('/', "%2f"),
        b64.replace('+', "-").replace('/', "_"),
        b64.replace('+', " "),
    ];
    for data in spellings {
        let got = ok(&format!(" OTPAUTH-MIGRATION://offline?data={data}&x=1\n"));
        assert_eq!(got.accounts.len(), 3, "{data}");
        assert_eq!(
            got.accounts[0].result.as_ref().unwrap().secret.expose(),
            KEY
        );
    }
    assert!(is_migration_uri("  otpauth-migration://offline?data=x"));
    assert!(!is_migration_uri("otpauth://totp/x"));

    // Batch 2 of 3.
    let p = Pb::default()
        .bytes(1, &account("x", "").0)
        .int(3, 3)
        .int(4, 2)
        .int(5, 77);
    assert_eq!(
        ok(&p.uri()).batch,
        Batch {
            size: 3,
            index: 2,
            id: 77
        }
    );
}

#[test]
fn bad_accounts_are_refused_alone() {
    let p = payload(&[
        account("md5", "").int(4, 4),
        account("algo", "").int(4, 9),
        account("seven", "").int(5, 3),
        account("type", "").int(6, 5),
        account("short", "").bytes(1, b"123456789"),
        Pb::default().bytes(2, b"nokey"),
        account("neg", "").int(6, 1).int(7, -1),
        account("bad\u{1b}[2J", ""),
        account("x", "bad\u{7}"),
        Pb::default().bytes(1, KEY).bytes(2, &[0xff, 0xfe]),
        account("fine", ""),
    ]);
    let got = ok(&p.uri());
    let results: Vec<_> = got
        .accounts
        .iter()
        .map(|a| (a.name.as_str(), a.result.as_ref().err().cloned()))
        .collect();
    assert_eq!(
        results,
        [
            ("md5", Some(AccountError::Md5)),
            ("algo", Some(AccountError::UnknownAlgorithm(9))),
            ("seven", Some(AccountError::Digits(3))),
            ("type", Some(AccountError::UnknownType(5))),
            ("short", Some(AccountError::SecretLength(9))),
            ("nokey", Some(AccountError::SecretLength(0))),
            ("neg", Some(AccountError::Counter)),
            ("", Some(AccountError::Encoding("name"))),
            ("x", Some(AccountError::Encoding("issuer"))),
            ("", Some(AccountError::Encoding("name"))),
            ("fine", None),
        ]
    );
    for a in &got.accounts {
        if let Err(e) = &a.result {
            assert!(!e.to_string().contains("1234567890"), "{e}");
        }
    }
}

#[test]
fn bad_payloads_are_refused_whole_without_the_secret() {
    let good = payload(&[account("a", "")]);
    let cut = Pb(good.0[..good.0.len() / 2].to_vec());
    let long_len = Pb::default().varint(10).varint(1 << 40);
    let huge_varint = Pb(vec![
        0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ]);
    let group = Pb(vec![0x0b, 0x0c]);
    let wrong_type = Pb::default().int(1, 5);
    let field_zero = Pb(vec![0x00, 0x01]);
    let bad_batch = payload(&[account("a", "")]).int(3, 2).int(4, 2);
    let neg_batch = payload(&[account("a", "")]).int(3, -1);
    let many = payload(&vec![Pb::default(); MAX_ACCOUNTS + 1]);
    let inner_cut = Pb::default().bytes(1, &account("a", "").0[..5]);
    let uri = |p: &Pb| p.uri();
    for (text, err) in [
        (
            "otpauth://totp/x?secret=A".to_owned(),
            PayloadError::NotMigration,
        ),
        (
            "otpauth-migration://online?data=AA".to_owned(),
            PayloadError::NotMigration,
        ),
        (
            "otpauth-migration://offline".to_owned(),
            PayloadError::MissingData,
        ),
        (
            "otpauth-migration://offline?data=".to_owned(),
            PayloadError::MissingData,
        ),
        (
            format!("{}&data=AA", uri(&good)),
            PayloadError::RepeatedData,
        ),
        (
            "otpauth-migration://offline?data=Cj%zz".to_owned(),
            PayloadError::Encoding,
        ),
        (
            "otpauth-migration://offline?data=Cj%2".to_owned(),
            PayloadError::Encoding,
        ),
        (
            "otpauth-migration://offline?data=C!j".to_owned(),
            PayloadError::Base64,
        ),
        (
            "otpauth-migration://offline?data=C".to_owned(),
            PayloadError::Base64,
        ),
        (uri(&cut), PayloadError::Protobuf("truncated")),
        (uri(&inner_cut), PayloadError::Protobuf("truncated")),
        (uri(&long_len), PayloadError::Protobuf("truncated")),
        (
            uri(&huge_varint),
            PayloadError::Protobuf("varint out of range"),
        ),
        (uri(&group), PayloadError::Protobuf("unsupported wire type")),
        (
            uri(&wrong_type),
            PayloadError::Protobuf("a field has the wrong type"),
        ),
        (uri(&field_zero), PayloadError::Protobuf("bad field number")),
        (uri(&Pb::default().int(2, 1)), PayloadError::NoAccounts),
        (
            uri(&bad_batch),
            PayloadError::BadBatch { index: 2, size: 2 },
        ),
        (
            uri(&neg_batch),
            PayloadError::BadBatch { index: 0, size: -1 },
        ),
        (uri(&many), PayloadError::TooManyAccounts),
        ("x".repeat(MAX_URI_LEN + 1), PayloadError::TooLong),
    ] {
        let got = parse(&text).err();
        assert_eq!(got.as_ref(), Some(&err), "{text:.80}");
        let shown = got.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            !shown.contains("1234567890") && !shown.contains("MTIzNDU2"),
            "{shown}"
        );
    }
}

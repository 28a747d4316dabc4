//! `otpctl import otpauth` with Google Authenticator's transfer export:
//! payloads built here, drawn as real QR codes by `qrencode` (PNG, one
//! re-encoded as JPEG as a phone photo would be), read back by otpctl's QR
//! reader, imported into the in-process daemon with a manual clock; codes
//! from `oathtool`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use otpd::Clock;
use otpd_proto::v1 as pb;
use otpd_tests::*;
use serde_json::Value;

/// RFC 4226's key, and another for a second account.
const KEY: &[u8] = b"12345678901234567890";
const KEY2: &[u8] = b"abcdefghijklmnopqrstuvwxyz012345";

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A protobuf writer: the payload as Google Authenticator encodes it.
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(mut self, mut v: u64) -> Self {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
    fn int(self, field: u64, v: i64) -> Self {
        self.varint(field << 3).varint(v as u64)
    }
    fn bytes(self, field: u64, b: &[u8]) -> Self {
        let mut s = self.varint((field << 3) | 2).varint(b.len() as u64);
        s.0.extend_from_slice(b);
        s
    }
}

/// OtpParameters: key, name, issuer, algorithm, digits, type, counter.
fn account(key: &[u8], name: &str, issuer: &str, algo: i64, digits: i64, kind: i64) -> Pb {
    Pb::default()
        .bytes(1, key)
        .bytes(2, name.as_bytes())
        .bytes(3, issuer.as_bytes())
        .int(4, algo)
        .int(5, digits)
        .int(6, kind)
}

/// A MigrationPayload of batch `index` of `size`, as a URI with the data
/// percent-encoded as the app does.
fn export(accounts: Vec<Pb>, size: i64, index: i64, id: i64) -> String {
    uri(&payload(accounts, size, index, id))
}

fn payload(accounts: Vec<Pb>, size: i64, index: i64, id: i64) -> Vec<u8> {
    let mut p = Pb::default();
    for a in accounts {
        p = p.bytes(1, &a.0);
    }
    p.int(2, 1).int(3, size).int(4, index).int(5, id).0
}

fn uri(payload: &[u8]) -> String {
    let data = base64(payload)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    format!("otpauth-migration://offline?data={data}")
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                char::from(A[(n >> (18 - 6 * i)) as usize & 63])
            } else {
                '='
            });
        }
    }
    out
}

/// The URI as a QR code in a PNG, drawn by the real `qrencode`.
fn qrencode(uri: &str, png: &Path) {
    let out = Command::new("qrencode")
        .args(["-t", "PNG", "-s", "6", "-m", "4", "-o"])
        .arg(png)
        .arg(uri)
        .output()
        .expect("qrencode (Debian package qrencode)");
    assert!(out.status.success(), "{out:?}");
}

/// The PNG re-encoded as a JPEG (lossy, as a camera writes it).
fn to_jpeg(png: &Path) -> PathBuf {
    let jpeg = png.with_extension("jpg");
    image::open(png)
        .unwrap()
        .to_rgb8()
        .save_with_format(&jpeg, image::ImageFormat::Jpeg)
        .unwrap();
    jpeg
}

fn results(out: &snapbox::cmd::OutputAssert) -> Vec<(String, String)> {
    let report: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    report
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["user"].as_str().unwrap().to_owned(),
                o["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(u, r)| ((*u).to_owned(), (*r).to_owned()))
        .collect()
}

fn output(out: &snapbox::cmd::OutputAssert) -> String {
    let o = out.get_output();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Never a key in the output, in any spelling.
fn assert_no_secret(text: &str) {
    for key in [KEY, KEY2] {
        for spelling in [
            String::from_utf8_lossy(key).into_owned(),
            hex(key),
            base64(key)[..12].to_owned(),
        ] {
            assert!(!text.contains(&spelling), "{spelling} in {text}");
        }
    }
    assert!(!text.contains("GEZDGNBV"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_qr_code_export_from_pictures_imports_for_the_mapped_users() {
    let d = InProcess::start();
    let dir = tempfile::tempdir().unwrap();
    // QR code 1 of 2: alice (TOTP), carol (MD5: refused), a stranger;
    // QR code 2 of 2: bob (HOTP at 5, 8 digits), erin (TOTP SHA512 8 digits).
    let qr1 = export(
        vec![
            account(KEY, "ACME:alice@example.com", "ACME", 1, 1, 2),
            account(KEY, "ACME:carol@example.com", "ACME", 4, 1, 2),
            account(KEY, "Other:stranger@example.com", "Other", 1, 1, 2),
        ],
        2,
        0,
        -123456,
    );
    let qr2 = export(
        vec![
            account(KEY, "bob@example.com", "", 1, 2, 1).int(7, 5),
            account(KEY2, "ACME:erin@example.com", "ACME", 3, 2, 2),
        ],
        2,
        1,
        -123456,
    );
    let (png1, png2) = (dir.path().join("shot1.png"), dir.path().join("photo2.png"));
    qrencode(&qr1, &png1);
    qrencode(&qr2, &png2);
    let jpeg2 = to_jpeg(&png2);
    let map = dir.path().join("map");
    std::fs::write(
        &map,
        "# account user\nalice@example.com alice\nbob@example.com bob\n\
         carol@example.com carol\nACME:erin@example.com erin\n",
    )
    .unwrap();
    let import = |extra: &[&str], images: &[&Path]| {
        let mut cmd = otpctl(d.socket())
            .args(["--json", "import", "otpauth", "--map"])
            .arg(&map)
            .args(extra);
        for image in images {
            cmd = cmd.arg("--image").arg(image);
        }
        cmd.stdin("")
    };

    // Half of the export: refused, naming what is missing; nothing sent.
    let out = import(&[], &[&png1]).assert().code(5);
    let text = output(&out);
    assert!(
        text.contains("incomplete") && text.contains("QR code 2 of 2 missing"),
        "{text}"
    );
    assert!(text.contains("shot1.png"), "{text}");
    assert_no_secret(&text);

    // --dry-run: the report, and nothing written (the real run below still
    // imports rather than finding the users enrolled).
    let expected = pairs(&[
        ("alice", "imported"),
        ("?", "failed"),
        ("stranger@example.com", "skipped"),
        ("bob", "imported"),
        ("erin", "imported"),
    ]);
    let out = import(&["--dry-run"], &[&png1, &jpeg2]).assert().code(5);
    assert_eq!(results(&out), expected, "{}", output(&out));
    let out = import(&[], &[&jpeg2, &png1]).assert().code(5);
    let text = output(&out);
    let mut got = results(&out);
    got.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want, "{text}");
    assert!(
        text.contains("MD5") && text.contains("carol@example.com"),
        "{text}"
    );
    assert_no_secret(&text);

    let mut c = d.client().await;
    let t = d.clock.now();
    let code = oathtool(&["--totp", &format!("--now=@{t}"), &hex(KEY)]);
    let v = verify(&mut c, "alice", &code).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
    let now = format!("--now=@{t}");
    let code = oathtool(&["--totp=sha512", "--digits=8", &now, &hex(KEY2)]);
    let v = verify(&mut c, "erin", &code).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
    let code = oathtool(&["--hotp", "--digits=8", "--counter=5", &hex(KEY)]);
    let v = verify(&mut c, "bob", &code).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
    let v = verify(&mut c, "carol", "123456").await;
    assert_ne!(v.decision(), pb::Decision::Accepted, "{v:?}");

    // Again: harmless, the users are enrolled already.
    let out = import(&[], &[&png1, &jpeg2]).assert().code(5);
    assert_eq!(
        results(&out),
        pairs(&[
            ("alice", "skipped"),
            ("?", "failed"),
            ("stranger@example.com", "skipped"),
            ("bob", "skipped"),
            ("erin", "skipped"),
        ])
    );
    let code = oathtool(&["--hotp", "--digits=8", "--counter=6", &hex(KEY)]);
    let v = verify(&mut c, "bob", &code).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn export_lines_for_one_user_and_bad_input_named() {
    let d = InProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let one = export(vec![account(KEY, "ACME:dave", "ACME", 1, 1, 2)], 1, 0, 7);
    let two = export(
        vec![
            account(KEY, "a", "", 1, 1, 2),
            account(KEY, "b", "", 1, 1, 2),
        ],
        1,
        0,
        8,
    );
    // A cut payload, and a payload that is not base64, on lines 3 and 4.
    let whole = payload(vec![account(KEY, "ACME:dave", "ACME", 1, 1, 2)], 1, 0, 7);
    let cut = uri(&whole[..whole.len() / 2]);
    let lines = dir.path().join("export.txt");
    std::fs::write(
        &lines,
        format!("# from the phone\n{one}\n{cut}\notpauth-migration://offline?data=%%%\n"),
    )
    .unwrap();
    let out = otpctl(d.socket())
        .args(["--json", "import", "otpauth", "--user", "dave"])
        .arg(&lines)
        .assert()
        .code(5);
    let text = output(&out);
    assert_eq!(
        results(&out),
        pairs(&[("?", "failed"), ("?", "failed"), ("dave", "imported")]),
        "{text}"
    );
    assert!(
        text.contains("export.txt:3: the data is not a Google Authenticator export")
            && text.contains("export.txt:4: badly percent-encoded"),
        "{text}"
    );
    assert_no_secret(&text);
    let mut c = d.client().await;
    let t = d.clock.now();
    let code = oathtool(&["--totp", &format!("--now=@{t}"), &hex(KEY)]);
    let v = verify(&mut c, "dave", &code).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");

    // --user for an export of two accounts: refused, nothing imported.
    let out = otpctl(d.socket())
        .args(["import", "otpauth", "--user", "frank", "-"])
        .stdin(format!("{two}\n"))
        .assert()
        .code(2);
    let text = output(&out);
    assert!(text.contains("--map") && text.contains("holds 2"), "{text}");
    let v = verify(&mut c, "frank", "123456").await;
    assert_ne!(v.decision(), pb::Decision::Accepted, "{v:?}");

    // A picture without a QR code, and a file that is no picture: each
    // named, nothing imported.
    let blank = dir.path().join("blank.png");
    image::GrayImage::from_pixel(300, 300, image::Luma([255]))
        .save(&blank)
        .unwrap();
    let out = otpctl(d.socket())
        .args(["import", "otpauth", "--user", "gina", "--image"])
        .arg(&blank)
        .assert()
        .code(5);
    let text = output(&out);
    assert!(
        text.contains("blank.png") && text.contains("no QR code found"),
        "{text}"
    );
    let out = otpctl(d.socket())
        .args(["import", "otpauth", "--user", "gina", "--image"])
        .arg(&lines)
        .assert()
        .code(5);
    let text = output(&out);
    assert!(
        text.contains("export.txt") && text.contains("not a PNG or JPEG"),
        "{text}"
    );
    assert_no_secret(&text);
    let v = verify(&mut c, "gina", "123456").await;
    assert_ne!(v.decision(), pb::Decision::Accepted, "{v:?}");
}

//! `otpctl import otpauth`: URIs from a file (accounts mapped to users) or
//! standard input, against the in-process daemon with a manual clock;
//! codes from `oathtool`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use otpd::Clock;
use otpd_proto::v1 as pb;
use otpd_tests::*;
use serde_json::Value;

const KEY_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const KEY_HEX: &str = "3132333435363738393031323334353637383930";

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

#[tokio::test(flavor = "multi_thread")]
async fn uris_from_a_file_mapped_to_users_and_from_stdin() {
    let d = InProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let uris = dir.path().join("export.txt");
    std::fs::write(
        &uris,
        format!(
            "# exported\n\
             otpauth://totp/ACME:alice@example.com?secret={KEY_B32}&issuer=ACME\n\
             otpauth://hotp/ACME:bob@example.com?secret={KEY_B32}&issuer=ACME&counter=3\n\
             otpauth://totp/ACME:carol@example.com?secret=NOTBASE32!\n\
             otpauth://totp/ACME:nobody@example.com?secret={KEY_B32}\n"
        ),
    )
    .unwrap();
    let map = dir.path().join("map");
    std::fs::write(
        &map,
        "alice@example.com alice\nbob@example.com bob\ncarol@example.com carol\n",
    )
    .unwrap();
    let out = otpctl(d.socket())
        .args(["--json", "import", "otpauth", "--map"])
        .arg(&map)
        .arg(&uris)
        .stdin("")
        .assert()
        .code(5);
    let got = results(&out);
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert_eq!(
        got,
        [
            ("alice", "imported"),
            ("bob", "imported"),
            ("?", "failed"),
            ("nobody@example.com", "skipped")
        ]
        .map(|(u, r)| (u.to_owned(), r.to_owned())),
        "{text}"
    );
    assert!(
        !text.contains(KEY_B32) && text.contains("export.txt:4"),
        "{text}"
    );

    let mut c = d.client().await;
    let t = d.clock.now();
    let v = verify(
        &mut c,
        "alice",
        &oathtool(&["--totp", &format!("--now=@{t}"), KEY_HEX]),
    )
    .await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
    let v = verify(
        &mut c,
        "bob",
        &oathtool(&["--hotp", "--counter=3", KEY_HEX]),
    )
    .await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");

    // From standard input, for one user.
    let out = otpctl(d.socket())
        .args(["--json", "import", "otpauth", "--user", "dave", "-"])
        .stdin(format!(
            "otpauth://totp/x?secret={KEY_B32}&digits=8&period=60\n"
        ))
        .assert()
        .success();
    assert_eq!(results(&out), [("dave".to_owned(), "imported".to_owned())]);
    let code = oathtool(&[
        "--totp",
        "--digits=8",
        "--time-step-size=60s",
        &format!("--now=@{t}"),
        KEY_HEX,
    ]);
    let v = verify(&mut c, "dave", &code).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
}

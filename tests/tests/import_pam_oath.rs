//! `otpctl import pam-oath` with a users file, against the in-process
//! daemon with a manual clock; codes computed by `oathtool` (the tool
//! pam_oath's users use): time tokens log in as TOTP devices, counter
//! tokens as HOTP devices from their next counter, a user's further tokens
//! as further devices (all in one step), PIN users are reported, a
//! malformed line names its number and imports none of its user's tokens
//! while the other users import, re-running is harmless; thousands of
//! users go in batches.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use otpd::Clock;
use otpd_proto::v1 as pb;
use otpd_tests::*;
use serde_json::Value;

const TOTP_KEY: &str = "3132333435363738393031323334353637383930";
const HOTP_KEY: &str = "00112233445566778899aabbccddeeff00112233";

fn otpctl(socket: &Path) -> snapbox::cmd::Command {
    snapbox::cmd::Command::new(built("otpctl"))
        .arg("--socket")
        .arg(socket)
        .env_remove("OTPD_SOCKET")
        .stdin("")
}

fn oathtool(args: &[&str]) -> String {
    let out = Command::new("oathtool")
        .args(args)
        .output()
        .expect("oathtool (Debian package oathtool) must be installed");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_users_file_imports_time_and_counter_tokens_and_reports_the_rest() {
    let d = InProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.oath");
    std::fs::write(
        &file,
        format!(
            "# pam_oath users\n\
             HOTP/T30\talice\t-\t{TOTP_KEY}\n\
             HOTP\tbob\t-\t{HOTP_KEY}\t5\n\
             HOTP/T30/8\tcarol\t1234\t{TOTP_KEY}\n\
             HOTP/T30\talice\t-\t{HOTP_KEY}\n\
             HOTP/T30\tdave\t-\tnothex\n\
             HOTP/E/8\terin\t+\t{HOTP_KEY}\n"
        ),
    )
    .unwrap();
    let out = otpctl(d.socket())
        .args(["--json", "import", "pam-oath"])
        .arg(&file)
        .assert()
        .code(5);
    let report: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let results: Vec<(String, String)> = report
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["user"].as_str().unwrap().to_owned(),
                o["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("alice", "imported"),
        ("bob", "imported"),
        ("carol", "skipped"),
        ("alice", "imported"),
        ("dave", "failed"),
        ("erin", "imported"),
    ]
    .iter()
    .map(|(u, r)| ((*u).to_owned(), (*r).to_owned()))
    .collect();
    assert_eq!(results, expected, "{report:#}");
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        !text.contains(TOTP_KEY) && !text.contains("1234"),
        "a secret in the report"
    );
    assert!(text.contains(":6"), "the malformed line is named: {text}");

    let mut c = d.client().await;
    // alice: a time token; oathtool's code at the daemon's time logs in.
    let t = d.clock.now();
    let code = oathtool(&["--totp", &format!("--now=@{t}"), TOTP_KEY]);
    let v = verify(&mut c, "alice", &code).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
    // alice's second line is her second device, and logs in too.
    let s = status(&mut c, "alice").await;
    let names: Vec<&str> = s.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["oath-token", "oath-token-2"], "{s:?}");
    d.clock.advance(30);
    let t = d.clock.now();
    let code = oathtool(&["--totp", &format!("--now=@{t}"), HOTP_KEY]);
    let v = verify(&mut c, "alice", &code).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
    assert_eq!(v.device, "oath-token-2", "{v:?}");
    // bob: a counter token at 5; counter 4 was used under pam_oath.
    let used = oathtool(&["--hotp", "--counter=4", HOTP_KEY]);
    let next = oathtool(&["--hotp", "--counter=5", HOTP_KEY]);
    let v = verify(&mut c, "bob", &used).await;
    assert_eq!(v.decision(), pb::Decision::Rejected, "{v:?}");
    let v = verify(&mut c, "bob", &next).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
    let v = verify(&mut c, "bob", &next).await;
    assert_eq!(v.reason(), pb::Reason::Replayed, "{v:?}");
    let s = status(&mut c, "bob").await;
    assert!(s.devices[0].hotp && s.devices[0].counter == 6, "{s:?}");
    let out = otpctl(d.socket())
        .args(["device", "list", "bob"])
        .assert()
        .success();
    let list = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(list.contains("hotp sha1/6 #6"), "{list}");
    let out = otpctl(d.socket())
        .args(["--json", "device", "list", "bob"])
        .assert()
        .success();
    let json: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(json["devices"][0]["counter"], 6, "{json}");
    // carol (a PIN) and dave (a bad line) are not enrolled.
    for user in ["carol", "dave"] {
        assert_eq!(status(&mut c, user).await.state(), pb::State::NotEnrolled);
    }
    // erin: an 8-digit counter token at 0.
    let code = oathtool(&["--hotp", "--digits=8", "--counter=0", HOTP_KEY]);
    let v = verify(&mut c, "erin", &code).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");

    // Re-running is harmless: the imported users are skipped.
    let out = otpctl(d.socket())
        .args(["--json", "import", "pam-oath", "--dry-run"])
        .arg(&file)
        .assert()
        .code(5);
    let report: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert!(
        report
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["result"] != "imported"),
        "{report:#}"
    );
}

/// A user's tokens are one import: a malformed line of theirs imports
/// none of them (the line named), while the other users import.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_token_line_imports_none_of_its_users_tokens() {
    let d = InProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.oath");
    std::fs::write(
        &file,
        format!(
            "HOTP/T30\tfrank\t-\t{TOTP_KEY}\n\
             HOTP\tgina\t-\t{HOTP_KEY}\t2\n\
             HOTP/T30\tfrank\t-\tnothex\n"
        ),
    )
    .unwrap();
    let out = otpctl(d.socket())
        .args(["import", "pam-oath"])
        .arg(&file)
        .assert()
        .code(5);
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        text.contains("users.oath:3"),
        "the bad line is named: {text}"
    );
    assert!(text.contains("1 imported, 0 skipped, 2 failed"), "{text}");
    let mut c = d.client().await;
    assert_eq!(
        status(&mut c, "frank").await.state(),
        pb::State::NotEnrolled,
        "half of frank's tokens were imported"
    );
    let code = oathtool(&["--hotp", "--counter=2", HOTP_KEY]);
    let v = verify(&mut c, "gina", &code).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
}

/// 2,500 users (three batches) import with --quiet: the totals only, and
/// re-running skips every one of them.
#[tokio::test(flavor = "multi_thread")]
async fn thousands_of_users_import_in_batches_and_rerunning_skips_them() {
    const USERS: usize = 2500;
    let d = InProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.oath");
    let mut text = String::new();
    for i in 0..USERS {
        let key = format!("{:040x}", 0x1234_5678_9abc_u64 + i as u64);
        if i % 2 == 0 {
            text.push_str(&format!("HOTP/T30\tuser{i}\t-\t{key}\n"));
        } else {
            text.push_str(&format!("HOTP\tuser{i}\t-\t{key}\t{i}\n"));
        }
    }
    std::fs::write(&file, &text).unwrap();
    let out = otpctl(d.socket())
        .args(["import", "pam-oath", "--quiet"])
        .arg(&file)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert_eq!(stdout, format!("{USERS} imported, 0 skipped, 0 failed\n"));
    let mut c = d.client().await;
    for i in [0, 999, 1000, 2001, USERS - 1] {
        let key = format!("{:040x}", 0x1234_5678_9abc_u64 + i as u64);
        let code = if i % 2 == 0 {
            let t = d.clock.now();
            oathtool(&["--totp", &format!("--now=@{t}"), &key])
        } else {
            oathtool(&["--hotp", &format!("--counter={i}"), &key])
        };
        let v = verify(&mut c, &format!("user{i}"), &code).await;
        assert_eq!(v.decision(), pb::Decision::Accepted, "user{i}: {v:?}");
    }
    let out = otpctl(d.socket())
        .args(["import", "pam-oath", "-q"])
        .arg(&file)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        stdout.ends_with(&format!("0 imported, {USERS} skipped, 0 failed\n")),
        "{stdout}"
    );
}

//! `otpctl status` over many users: the listing pages through ListUsers
//! (complete, in order, one header, one JSON array), and its filters
//! (`--locked`, `--pending`, `--low-backup-codes[=N]`, `--no-recovery`)
//! run in otpd, which reads a bounded number of records per call: a
//! filter that matches nobody in the first 10,000 users answers an empty
//! page that says where to go on; a page never grows past what one reply
//! carries (1,000 users with their devices do not fit in 64 KiB).
//!
//! The store is filled the way a large site fills it, by `otpctl import
//! pam-oath` (batched ImportUsers), then a few users are enrolled, locked
//! and left pending by RPC, against the in-process daemon (manual clock)
//! with `[lockout] threshold = 1` and `[backup_codes] low_warning = 10`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use otpd::ManualClock;
use otpd::engine::LIST_SCAN_PER_CALL;
use otpd_proto::v1 as pb;
use otpd_tests::*;
use serde_json::Value;

/// Imported users for the filters: several pages.
const IMPORTED: usize = 2_500;

/// Imported users for the bound: more than one filtered call reads.
const MANY: usize = LIST_SCAN_PER_CALL + 500;

/// `otpctl ARGS`: (success, stdout, stderr).
fn run(socket: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(built("otpctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("OTPD_SOCKET")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The users of `otpctl --json status ARGS`, in the order printed.
fn json_users(socket: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["--json", "status"];
    all.extend_from_slice(args);
    let (ok, out, err) = run(socket, &all);
    assert!(ok, "{all:?}: {err}");
    let json: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:.200}"));
    json.as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap().to_owned())
        .collect()
}

/// The users of the table `otpctl status ARGS` prints (after its header).
fn table_users(socket: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["status"];
    all.extend_from_slice(args);
    let (ok, out, err) = run(socket, &all);
    assert!(ok, "{all:?}: {err}");
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("USER "), "{out:.200}");
    lines
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

/// A user's name in the import: sorts before the "zz-" users.
fn imported(i: usize) -> String {
    format!("user{i:05}")
}

/// Whether imported user `i` has two tokens (two devices).
fn two_tokens(i: usize) -> bool {
    i % 50 == 49
}

fn start() -> InProcess {
    let dir = shared_tempdir();
    let mut config = config_in(dir.path());
    config.lockout.threshold = 1;
    config.backup_codes.low_warning = 10;
    InProcess::start_in(dir, config, Arc::new(ManualClock::new(T0)))
}

fn import(d: &InProcess, n: usize) {
    let mut text = String::new();
    for i in 0..n {
        let tokens = if two_tokens(i) { 2 } else { 1 };
        for t in 0..tokens {
            let key = format!("{:040x}", (i as u128) << 8 | t as u128 | 1 << 100);
            writeln!(text, "HOTP/T30\t{}\t-\t{key}", imported(i)).unwrap();
        }
    }
    let file = d.dir.path().join("users.oath");
    std::fs::write(&file, text).unwrap();
    let (ok, out, err) = run(
        d.socket(),
        &["import", "pam-oath", "--quiet", file.to_str().unwrap()],
    );
    assert!(ok, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_pages_through_every_user_and_otpd_filters_them() {
    let d = start();
    import(&d, IMPORTED);
    let mut c = d.client().await;
    // Enrolled: 1 device, 10 backup codes (low with low_warning = 10).
    enroll(&mut c, "zz-active", T0).await;
    // Locked out by one wrong code (threshold 1).
    let (app, _) = enroll(&mut c, "zz-locked", T0).await;
    let r = verify(&mut c, "zz-locked", &app.wrong_code_at(T0)).await;
    assert_eq!(
        pb::Decision::try_from(r.decision),
        Ok(pb::Decision::Rejected)
    );
    // Started, never confirmed.
    c.enroll_start(pb::EnrollStartRequest {
        user: b"zz-pending".to_vec().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let s = d.socket();

    // Everyone, page by page, in name order: the table has one header.
    let mut everyone: Vec<String> = (0..IMPORTED).map(imported).collect();
    everyone.extend(["zz-active", "zz-locked", "zz-pending"].map(String::from));
    assert_eq!(table_users(s, &[]), everyone);
    assert_eq!(json_users(s, &[]), everyone);

    for args in [&["--locked"][..], &["--locked", "--low-backup-codes"]] {
        assert_eq!(json_users(s, args), ["zz-locked"], "{args:?}");
        assert_eq!(table_users(s, args), ["zz-locked"], "{args:?}");
    }
    assert_eq!(json_users(s, &["--pending"]), ["zz-pending"]);
    assert_eq!(table_users(s, &["--pending"]), ["zz-pending"]);
    // Several filters: the users matching all of them.
    assert!(json_users(s, &["--pending", "--low-backup-codes"]).is_empty());
    assert!(table_users(s, &["--locked", "--low-backup-codes=9"]).is_empty());

    // Imported users have no backup code: low at any threshold, and
    // without a recovery path when they have a single device.
    let mut low: Vec<String> = (0..IMPORTED).map(imported).collect();
    assert_eq!(json_users(s, &["--low-backup-codes=9"]), low);
    low.extend(["zz-active", "zz-locked"].map(String::from));
    // Without N: otpd's [backup_codes] low_warning (10 here).
    assert_eq!(json_users(s, &["--low-backup-codes"]), low);
    assert_eq!(json_users(s, &["--low-backup-codes=10"]), low);
    let single: Vec<String> = (0..IMPORTED)
        .filter(|&i| !two_tokens(i))
        .map(imported)
        .collect();
    assert_eq!(json_users(s, &["--no-recovery"]), single);
    assert_eq!(table_users(s, &["--no-recovery"]), single);

    // A filter with a user names no user.
    let (ok, _, err) = run(s, &["status", "zz-locked", "--locked"]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");
}

/// One filtered call reads at most LIST_SCAN_PER_CALL records: the only
/// locked user comes after that many, so the first page is empty and says
/// where to go on; an unfiltered page of 1000 ends after 1000.
#[tokio::test(flavor = "multi_thread")]
async fn a_filtered_call_reads_a_bounded_number_of_records() {
    let d = start();
    import(&d, MANY);
    let mut c = d.client().await;
    let (app, _) = enroll(&mut c, "zz-locked", T0).await;
    verify(&mut c, "zz-locked", &app.wrong_code_at(T0)).await;

    let locked = |after: &str| pb::ListUsersRequest {
        after: after.into(),
        limit: 1000,
        locked: true,
        ..Default::default()
    };
    let first = c.list_users(locked("")).await.unwrap().into_inner();
    assert!(first.users.is_empty(), "{:?}", first.users.first());
    assert_eq!(first.next_after, imported(LIST_SCAN_PER_CALL - 1));
    let second = c
        .list_users(locked(&first.next_after))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = second.users.iter().map(|u| u.user.as_str()).collect();
    assert_eq!(names, ["zz-locked"]);
    assert_eq!(second.next_after, "", "the listing is complete");

    // A full page of matches ends at its last match.
    let no_recovery = pb::ListUsersRequest {
        limit: 10,
        no_recovery_path: true,
        ..Default::default()
    };
    let page = c.list_users(no_recovery).await.unwrap().into_inner();
    assert_eq!(page.users.len(), 10);
    assert_eq!(page.next_after, imported(9));

    // Unfiltered: at most `limit` users, and no more than fit in a reply
    // (1000 of these do not), the last one's name to go on from.
    let page = c
        .list_users(pb::ListUsersRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let n = page.users.len();
    assert!((100..1000).contains(&n), "{n} users in a page");
    assert_eq!(page.next_after, imported(n - 1));
    let page = c
        .list_users(pb::ListUsersRequest {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.users.len(), 10);
    assert_eq!(page.next_after, imported(9));
}

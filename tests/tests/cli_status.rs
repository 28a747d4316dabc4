//! `otpctl status` against the daemon library on its own socket, with a
//! clock the test sets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use otpd::clock::Clock;
use otpd_tests::*;

#[test]
fn status_all_lists_every_login_account_with_its_state() {
    let d = InProcess::start();
    let dir = d.dir.path();
    let passwd = dir.join("passwd");
    std::fs::write(
        &passwd,
        "root:x:0:0:root:/root:/bin/bash\n\
         daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
         carol:x:1003:1003::/home/carol:/bin/zsh\n\
         alice:x:1001:1001::/home/alice:/bin/bash\n\
         svc:x:1002:1002::/srv:/usr/sbin/nologin\n\
         old:x:900:900::/home/old:/bin/bash\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
    )
    .unwrap();
    let config = dir.join("otpd.toml");
    std::fs::write(&config, "[enforcement]\nmin_uid = 1000\n").unwrap();
    // alice is enrolled; zed has a record but no line in passwd (a
    // directory user).
    for user in ["alice", "zed"] {
        otpctl(d.socket())
            .args(["--json", "enroll", user, "--force"])
            .assert()
            .success();
    }
    let all = |json: bool| {
        let mut args = vec!["status", "--all", "--passwd"];
        args.push(passwd.to_str().unwrap());
        args.extend(["--config", config.to_str().unwrap()]);
        if json {
            args.insert(0, "--json");
        }
        otpctl(d.socket()).args(args).assert().success()
    };
    all(false).stdout_eq(
        "USER   STATE         TOTP        BACKUP  FAILS  LOCKED-UNTIL  LAST-SUCCESS  ENROLLED  DEVICES
alice  pending       sha1/6/30s  0       0      -             -             -         0 (+default pending, 15m left)
carol  not_enrolled  -           0       0      -             -             -         0
zed    pending       sha1/6/30s  0       0      -             -             -         0 (+default pending, 15m left)
",
    );
    let out = all(true);
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let states: Vec<(&str, &str)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["user"].as_str().unwrap(), u["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("alice", "pending"),
            ("carol", "not_enrolled"),
            ("zed", "pending")
        ]
    );
    // Without --all: only the users otpd knows.
    otpctl(d.socket())
        .args(["status"])
        .assert()
        .success()
        .stdout_eq(
            "USER   STATE    TOTP        BACKUP  FAILS  LOCKED-UNTIL  LAST-SUCCESS  ENROLLED  DEVICES
alice  pending  sha1/6/30s  0       0      -             -             -         0 (+default pending, 15m left)
zed    pending  sha1/6/30s  0       0      -             -             -         0 (+default pending, 15m left)
",
        );
    // A lower min_uid takes old (uid 900) too; root stays out below it.
    std::fs::write(&config, "[enforcement]\nmin_uid = 500\n").unwrap();
    let out = all(true);
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let users: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice", "carol", "old", "zed"]);
    // --all lists; it is not a filter of one user.
    otpctl(d.socket())
        .args(["status", "alice", "--all"])
        .assert()
        .code(2);
}

/// Starts an enrollment of `user` and confirms it at the clock's time;
/// returns the app and the backup codes.
fn enroll_confirm(d: &InProcess, user: &str) -> (App, Vec<String>) {
    let out = otpctl(d.socket())
        .args(["--json", "enroll", user])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let app = App::from_uri(json["otpauth_uri"].as_str().unwrap());
    let now = d.clock.now();
    let out = otpctl(d.socket())
        .args(["--json", "confirm", user, &app.code_at(now)])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let codes = json["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (app, codes)
}

#[test]
fn status_says_to_re_enroll_after_a_login_with_a_backup_code() {
    let d = InProcess::start();
    let (_, codes) = enroll_confirm(&d, "root");
    d.clock.advance(60);
    otpctl(d.socket())
        .args(["verify", "root", &codes[0]])
        .assert()
        .success()
        .stdout_eq("accepted (backup code, 9 left)\n");
    otpctl(d.socket())
        .args(["status", "root"])
        .assert()
        .success()
        .stdout_eq(
            "USER  STATE             TOTP        BACKUP  FAILS  LOCKED-UNTIL  LAST-SUCCESS  [..]
root  active+re-enroll  sha1/6/30s  9       0      -             [..]
",
        );
    let out = otpctl(d.socket())
        .args(["--json", "status"])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(json[0]["re_enroll_suggested"], true, "{json}");
    // A new device: done.
    d.clock.advance(60);
    enroll_confirm(&d, "root");
    let out = otpctl(d.socket())
        .args(["--json", "status", "root"])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(json[0]["state"], "active", "{json}");
    assert_eq!(json[0].get("re_enroll_suggested"), None, "{json}");
}

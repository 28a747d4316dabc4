//! Golden tests of `otpctl` against the real daemon binary: stdout, stderr
//! and exit status of the human and `--json` output. `[..]` matches the
//! variable part of a line (times, random codes), `...` whole lines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use otpd_tests::*;
use snapbox::cmd::OutputAssert;

/// Enrolls `user` through the CLI; returns the app.
fn enroll_cli(socket: &Path, user: &str) -> App {
    let out = otpctl(socket)
        .args(["--json", "enroll", user, "--force", "--issuer", "Example"])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    App::from_uri(json["otpauth_uri"].as_str().unwrap())
}

#[test]
fn enroll_confirm_status_verify_golden() {
    let dir = shared_tempdir();
    let d = Process::start(dir.path());
    let s = &d.socket;

    otpctl(s).arg("status").assert().success().stdout_eq(
        "USER  STATE  TOTP  BACKUP  FAILS  LOCKED-UNTIL  LAST-SUCCESS  ENROLLED  DEVICES\n",
    );
    otpctl(s)
        .args(["--json", "status"])
        .assert()
        .success()
        .stdout_eq("[]\n");

    // Human enroll without a terminal: QR, details, and the confirm hint.
    otpctl(s)
        .args(["enroll", "bob", "--force", "--issuer", "Example", "--digits", "8", "--algorithm", "sha256", "--period", "60"])
        .stdin("")
        .assert()
        .success()
        .stdout_eq(
            "...
Scan the QR code with an authenticator app, or type in the key by hand.

Account:    bob
Device:     default
Issuer:     Example
Algorithm:  SHA256
Digits:     8
Period:     60s
Key:        [..] [..] [..] [..] [..] [..] [..] [..]
URI:        otpauth://totp/Example:bob?secret=[..]&digits=8&algorithm=SHA256&issuer=Example&period=60

Confirm with: otpctl confirm bob CODE
",
        );

    let out = otpctl(s)
        .args(["--json", "enroll", "alice", "--force", "--issuer", "Example"])
        .assert()
        .success()
        .stdout_eq(
            r#"{"user":"alice","device":"default","issuer":"Example","secret":"[..]","otpauth_uri":"otpauth://totp/Example:alice?secret=[..]&issuer=Example","algorithm":"sha1","digits":6,"period":30,"replaces":[]}
"#,
        );
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let mut codes = Codes::new(App::from_uri(json["otpauth_uri"].as_str().unwrap()));

    // A wrong confirmation code: exit 1, still pending.
    otpctl(s)
        .args(["confirm", "alice", &codes.app.wrong_code_at(0)])
        .assert()
        .code(1)
        .stdout_eq("")
        .stderr_eq("otpctl: error: code rejected: the code does not match the pending enrollment; check that the app shows this account and that the device clock is right\n");

    otpctl(s)
        .args(["confirm", "alice", &codes.fresh()])
        .assert()
        .success()
        .stdout_eq(
            "Backup codes for alice (shown only this once; each code works once):
[..]
[..]
[..]
[..]
[..]
[..]
[..]
[..]
[..]
[..]
",
        );

    // (The human "accepted (totp)" line is pinned in the non-root test: a
    // user gets two fresh codes at a time, and the confirmation took one.)
    let used = codes.fresh();
    otpctl(s)
        .args(["--json", "verify", "alice", &used])
        .assert()
        .success()
        .stdout_eq(r#"{"user":"alice","accepted":true,"decision":"accepted","reason":"ok","method":"totp","backup_codes_left":10,"retry_after_seconds":0,"clock_skew_seconds":0,"backup_codes_low":false}
"#);
    otpctl(s)
        .args(["verify", "alice", &used])
        .assert()
        .code(1)
        .stdout_eq("rejected: code already used\n");
    otpctl(s)
        .args(["verify", "alice", "12ab56"])
        .assert()
        .code(2)
        .stdout_eq("")
        .stderr_eq("otpctl: error: invalid code: the code must contain digits only\n");

    otpctl(s).arg("status").assert().success().stdout_eq(
        "USER   STATE    TOTP          BACKUP  FAILS  LOCKED-UNTIL  LAST-SUCCESS                 ENROLLED              DEVICES
alice  active   sha1/6/30s    10      1      -             [..]Z otpctl  [..]Z  1
bob    pending  sha256/8/60s  0       0      -             -                            -                     0[..]
",
    );
    otpctl(s).args(["--json", "status", "alice"]).assert().success().stdout_eq(
        r#"[{"user":"alice","state":"active","pending":false,"algorithm":"sha1","digits":6,"period":30,"backup_codes_left":10,"consecutive_failures":1,"locked_until":null,"last_success":{"time":"[..]Z","service":"otpctl","remote_host":"","method":"totp"},"enrolled_at":"[..]Z","clock_skew_seconds":[..]}]
"#,
    );

    // Backup codes: regenerate, use one, count reported.
    let out = otpctl(s)
        .args(["--json", "backup-codes", "alice"])
        .assert()
        .success()
        .stdout_eq(r#"{"user":"alice","backup_codes":["[..]","[..]","[..]","[..]","[..]","[..]","[..]","[..]","[..]","[..]"]}
"#);
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let backup = json["backup_codes"][0].as_str().unwrap().to_owned();
    otpctl(s)
        .args(["verify", "alice", &backup])
        .assert()
        .success()
        .stdout_eq("accepted (backup code, 9 left)\n");
    otpctl(s)
        .args(["verify", "alice", &backup])
        .assert()
        .code(1)
        .stdout_eq("rejected: wrong code\n");

    // Lock out, see it, unlock.
    for _ in 0..4 {
        otpctl(s)
            .args(["verify", "alice", &codes.app.wrong_code_at(0)])
            .assert()
            .code(1);
    }
    otpctl(s)
        .args(["verify", "alice", &codes.app.code_at(0)])
        .assert()
        .code(1)
        .stdout_eq("rejected: throttled, retry in [..]\n");
    otpctl(s)
        .args(["unlock", "alice"])
        .assert()
        .success()
        .stdout_eq("unlocked alice\n");
    otpctl(s)
        .args(["--json", "unlock", "alice"])
        .assert()
        .success()
        .stdout_eq("{\"user\":\"alice\",\"ok\":true}\n");

    otpctl(s)
        .args(["reset", "bob"])
        .assert()
        .success()
        .stdout_eq("reset bob: secret, backup codes and counters removed\n");
    otpctl(s)
        .args(["reset", "bob"])
        .assert()
        .code(5)
        .stderr_eq("otpctl: error: not found: user \"bob\" is not enrolled\n");
    otpctl(s)
        .args(["verify", "bob", "123456"])
        .assert()
        .code(1)
        .stdout_eq("rejected: not enrolled\n");
}

#[test]
fn unreachable_daemon_and_usage_errors() {
    let dir = shared_tempdir();
    let missing = dir.path().join("missing.sock");
    otpctl(&missing)
        .arg("status")
        .assert()
        .code(3)
        .stdout_eq("")
        .stderr_eq(format!(
            "otpctl: error: cannot reach otpd at {0}: No such file or directory (os error 2); is the daemon running? Start it with 'systemctl start otpd' or 'otpd --socket {0}'\n",
            missing.display()
        ));
    otpctl(&missing)
        .args(["--json", "status"])
        .assert()
        .code(3)
        .stdout_eq("")
        .stderr_eq(format!(
            "{{\"error\":{{\"code\":\"unreachable\",\"message\":\"cannot reach otpd at {0}: No such file or directory (os error 2); is the daemon running? Start it with 'systemctl start otpd' or 'otpd --socket {0}'\",\"exit_code\":3}}}}\n",
            missing.display()
        ));
    // The socket also comes from OTPD_SOCKET.
    snapbox::cmd::Command::new(built("otpctl"))
        .env("OTPD_SOCKET", &missing)
        .arg("status")
        .assert()
        .code(3);
    otpctl(&missing).arg("frobnicate").assert().code(2);
    otpctl(&missing)
        .args(["enroll", "x", "--digits", "7"])
        .assert()
        .code(2);
    otpctl(&missing).arg("verify").assert().code(2);
    // With --json, a usage error is the JSON error object too.
    let out = otpctl(&missing)
        .args(["--json", "enroll", "x", "--digits", "7"])
        .assert()
        .code(2)
        .stdout_eq("");
    let err: serde_json::Value = serde_json::from_slice(&out.get_output().stderr).unwrap();
    assert_eq!(err["error"]["code"], "usage", "{err}");
    assert_eq!(err["error"]["exit_code"], 2, "{err}");
    assert_eq!(
        err["error"]["message"], "invalid value '7' for '--digits <DIGITS>'; see otpctl --help",
        "{err}"
    );
    // --help stays help.
    otpctl(&missing)
        .args(["--json", "--help"])
        .assert()
        .success();
}

/// Runs otpctl as `nobody` from a copy in the (world-traversable) test
/// directory: the build tree may sit under a directory `nobody` cannot enter.
fn as_nobody(socket: &Path, args: &[&str]) -> OutputAssert {
    let dir = socket.parent().unwrap();
    let exe = dir.join("otpctl");
    if !exe.exists() {
        std::fs::copy(built("otpctl"), &exe).unwrap();
    }
    let out = Command::new(&exe)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("OTPD_SOCKET")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    OutputAssert::new(out)
}

#[test]
fn non_root_caller_may_only_verify_and_read_its_own_account() {
    let dir = shared_tempdir();
    let d = Process::start(dir.path());
    let s = &d.socket;
    let mut alice = Codes::new(enroll_cli(s, "alice"));
    otpctl(s)
        .args(["confirm", "alice", &alice.fresh()])
        .assert()
        .success();

    for args in [
        &["status", "--locked"][..],
        &["status", "alice"],
        &["verify", "alice", "123456"],
        &["unlock", "alice"],
        &["reset", "alice"],
        &["backup-codes", "alice"],
        &["enroll", "nobody"],
        &["confirm", "nobody", "123456"],
    ] {
        let out = as_nobody(s, args).code(4).stdout_eq("");
        let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        // Said once, though otpd's message begins with the same words.
        assert!(
            err.starts_with("otpctl: error: permission denied: "),
            "{err}"
        );
        assert_eq!(err.matches("permission denied").count(), 1, "{err}");
    }
    as_nobody(s, &["status", "alice"]).code(4).stderr_eq(
        "otpctl: error: permission denied: uid 65534 may read the status only for its own \
         account\n",
    );
    as_nobody(s, &["unlock", "alice"]).code(4).stderr_eq(
        "otpctl: error: permission denied: unlocking users is for root and the admin group; \
         uid 65534 may only verify codes for and read the status of its own account\n",
    );
    // Its own account: status readable, also without a name (it may not
    // list everyone); a verify for an unenrolled account
    // looks exactly like a wrong code.
    as_nobody(s, &["--json", "status", "nobody"])
        .success()
        .stdout_eq(
            r#"[{"user":"nobody","state":"not_enrolled",[..]}]
"#,
        );
    as_nobody(s, &["--json", "status"]).success().stdout_eq(
        r#"[{"user":"nobody","state":"not_enrolled",[..]}]
"#,
    );
    as_nobody(s, &["status"]).success().stdout_eq(
        "USER    STATE  [..]
nobody  not_enrolled  -     0       0      -             -             -         0
",
    );
    let unknown = as_nobody(s, &["--json", "verify", "nobody", "123456"]).code(1);
    let unknown = String::from_utf8_lossy(&unknown.get_output().stdout).into_owned();
    assert!(
        unknown.contains(r#""decision":"rejected","reason":"wrong_code""#),
        "{unknown}"
    );

    let mut own = Codes::new(enroll_cli(s, "nobody"));
    otpctl(s)
        .args(["confirm", "nobody", &own.fresh()])
        .assert()
        .success();
    let wrong = as_nobody(
        s,
        &["--json", "verify", "nobody", &own.app.wrong_code_at(0)],
    )
    .code(1);
    assert_eq!(String::from_utf8_lossy(&wrong.get_output().stdout), unknown);
    as_nobody(s, &["verify", "nobody", &own.fresh()])
        .success()
        .stdout_eq("accepted (totp)\n");
    // Alice was untouched by all of it.
    otpctl(s)
        .args(["verify", "alice", &alice.fresh()])
        .assert()
        .success();
}

//! `otpctl export`: one device's key out of otpd, checked with the tools a
//! person would use on the other end: `oathtool` computes codes from the
//! exported URI, `zbarimg` reads the PNG, stock `age -d` opens the
//! encrypted file, and `otpctl import otpd-export` moves it into a second
//! daemon. Refusals (plain text without the flag, a non-root caller, a
//! weak or wrong passphrase) fetch or import nothing and never print the
//! key; the audit trail names who exported whose device.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use otpd::Clock;
use otpd_proto::v1 as pb;
use otpd_tests::*;
use serde_json::Value;
use snapbox::cmd::OutputAssert;

const STRONG: &str = "mellow cabin ripple orbit fancy";
const OTHER_STRONG: &str = "sled wind otter clay march nine";

fn otpctl(socket: &Path) -> snapbox::cmd::Command {
    snapbox::cmd::Command::new(built("otpctl"))
        .arg("--socket")
        .arg(socket)
        .env_remove("OTPD_SOCKET")
        // Never a terminal.
        .stdin("")
}

fn stdout(out: &OutputAssert) -> String {
    String::from_utf8_lossy(&out.get_output().stdout).into_owned()
}

fn stderr(out: &OutputAssert) -> String {
    String::from_utf8_lossy(&out.get_output().stderr).into_owned()
}

fn oathtool(args: &[&str]) -> String {
    let out = Command::new("oathtool").args(args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Enrolls `user` through the API at the daemon's time; the base32 key.
fn enroll_user(d: &InProcess, user: &str) -> String {
    let rt = runtime();
    rt.block_on(async {
        let mut c = d.client().await;
        let (app, _) = enroll(&mut c, user, d.clock.now()).await;
        app.secret_base32()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The TOTP code oathtool computes from `key_b32` at `t` (SHA1, 6, 30s).
fn code_at(key_b32: &str, t: u64) -> String {
    oathtool(&["--totp", "-b", &format!("--now=@{t}"), key_b32])
}

fn verify_decision(d: &InProcess, user: &str, code: &str) -> pb::Decision {
    runtime().block_on(async {
        let mut c = d.client().await;
        verify(&mut c, user, code).await.decision()
    })
}

fn state(d: &InProcess, user: &str) -> pb::State {
    runtime().block_on(async {
        let mut c = d.client().await;
        status(&mut c, user).await.state()
    })
}

/// The `secret` parameter of an otpauth URI.
fn secret_of(uri: &str) -> String {
    let query = uri.split_once('?').unwrap().1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("secret="))
        .unwrap()
        .to_owned()
}

/// A passphrase file only root can read.
fn passphrase_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_uri_needs_the_plaintext_flag_and_gives_codes_the_daemon_accepts() {
    let d = InProcess::start();
    let key = enroll_user(&d, "alice");

    // Plain text without the flag: refused before anything is fetched.
    for args in [
        &["export", "alice", "--uri"][..],
        &["--json", "export", "alice", "--uri"],
        // The QR code into a pipe (stdout here is not a terminal).
        &["export", "alice"],
        &["--json", "export", "alice"],
    ] {
        let out = otpctl(d.socket()).args(args).assert().code(2);
        assert_eq!(stdout(&out), "", "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("refusing to show the key as plain text"),
            "{err}"
        );
        assert!(!err.contains(&key), "{err}");
    }

    let out = otpctl(d.socket())
        .args(["export", "alice", "--uri", "--plaintext-secret"])
        .assert()
        .success();
    let uri = stdout(&out).trim().to_owned();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.ends_with("&algorithm=SHA1&digits=6&period=30"), "{uri}");
    assert!(
        stderr(&out).starts_with(
            "otpctl: warning: the output holds the secret key of device \"default\" of alice"
        ),
        "{}",
        stderr(&out)
    );
    let exported = secret_of(&uri);
    assert_eq!(exported, key);

    // A code oathtool computes from the exported key logs in.
    d.clock.advance(30);
    let code = code_at(&exported, d.clock.now());
    assert_eq!(verify_decision(&d, "alice", &code), pb::Decision::Accepted);

    // --json holds the key only when the URI was asked for.
    let out = otpctl(d.socket())
        .args(["--json", "export", "alice", "--uri", "--plaintext-secret"])
        .assert()
        .success();
    let json: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(json["otpauth_uri"].as_str(), Some(uri.as_str()));
    assert_eq!(
        (json["user"].as_str(), json["format"].as_str()),
        (Some("alice"), Some("uri"))
    );

    // The QR code is drawn into a pipe only with the flag.
    let out = otpctl(d.socket())
        .args(["export", "alice", "--plaintext-secret"])
        .assert()
        .success();
    assert!(stdout(&out).contains('\u{2588}'), "{}", stdout(&out));
    assert!(!stdout(&out).contains(&key));

    // No such device, a user without devices: no key, clear errors.
    let out = otpctl(d.socket())
        .args([
            "export",
            "alice",
            "--device",
            "tablet",
            "--uri",
            "--plaintext-secret",
        ])
        .assert()
        .code(6);
    assert_eq!(stdout(&out), "");
    let out = otpctl(d.socket())
        .args(["export", "bob", "--uri", "--plaintext-secret"])
        .assert()
        .code(5);
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("not enrolled"), "{}", stderr(&out));
}

#[test]
fn the_png_holds_the_same_uri_for_zbarimg_and_is_never_overwritten() {
    let d = InProcess::start();
    let key = enroll_user(&d, "alice");
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("alice.png");
    let out = otpctl(d.socket())
        .args(["export", "alice", "--png"])
        .arg(&png)
        .assert()
        .success();
    assert!(!stdout(&out).contains(&key) && !stderr(&out).contains(&key));
    assert_eq!(mode(&png), 0o600);
    let scanned = Command::new("zbarimg")
        .args(["--quiet", "--raw"])
        .arg(&png)
        .output()
        .unwrap();
    assert!(scanned.status.success(), "{scanned:?}");
    let scanned = String::from_utf8(scanned.stdout).unwrap().trim().to_owned();
    let uri = stdout(
        &otpctl(d.socket())
            .args(["export", "alice", "--uri", "--plaintext-secret"])
            .assert()
            .success(),
    );
    assert_eq!(scanned, uri.trim());

    // An existing file is left alone, and nothing is fetched.
    let before = std::fs::read(&png).unwrap();
    let out = otpctl(d.socket())
        .args(["export", "alice", "--png"])
        .arg(&png)
        .assert()
        .code(2);
    assert!(
        stderr(&out).contains("refusing to overwrite"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&png).unwrap(), before);
}

/// Runs stock `age -d` on `file`, typing `passphrase` at its terminal
/// prompt (it reads passphrases from the terminal only); its exit code and
/// the plaintext.
fn stock_age_decrypt(file: &Path, passphrase: &str) -> (i32, Vec<u8>) {
    let out_dir = tempfile::tempdir().unwrap();
    let plain = out_dir.path().join("plain");
    let script = r#"
import os, pty, sys
file, out, pw = sys.argv[1], sys.argv[2], sys.argv[3]
pid, fd = pty.fork()
if pid == 0:
    os.execvp("age", ["age", "--decrypt", "--output", out, file])
seen = b""
while b"passphrase" not in seen.lower():
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
os.write(fd, pw.encode() + b"\n")
while True:
    try:
        if not os.read(fd, 1024):
            break
    except OSError:
        break
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let status = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(file)
        .arg(&plain)
        .arg(passphrase)
        .status()
        .unwrap();
    let bytes = std::fs::read(&plain).unwrap_or_default();
    (status.code().unwrap_or(-1), bytes)
}

#[test]
fn the_encrypted_file_opens_with_stock_age_and_moves_the_device_to_another_otpd() {
    let d = InProcess::start();
    let key = enroll_user(&d, "alice");
    // Used once, so that the replay state travels with the device.
    d.clock.advance(30);
    let used = code_at(&key, d.clock.now());
    assert_eq!(verify_decision(&d, "alice", &used), pb::Decision::Accepted);

    let dir = shared_tempdir();
    let pass = passphrase_file(dir.path(), "pass", STRONG);
    let file = dir.path().join("alice.age");

    // A weak passphrase is refused, and no file is left behind.
    let weak = passphrase_file(dir.path(), "weak", "Summer2026!Summer2026!");
    let out = otpctl(d.socket())
        .args(["export", "alice", "--encrypted"])
        .arg(&file)
        .arg("--passphrase-file")
        .arg(&weak)
        .assert()
        .code(2);
    assert!(
        stderr(&out).contains("too easy to guess"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(&key));
    assert!(!file.exists());

    let out = otpctl(d.socket())
        .args(["export", "alice", "--encrypted"])
        .arg(&file)
        .arg("--passphrase-file")
        .arg(&pass)
        .assert()
        .success();
    assert!(!stdout(&out).contains(&key) && !stderr(&out).contains(&key));
    assert_eq!(mode(&file), 0o600);
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n-> scrypt "));
    assert!(!String::from_utf8_lossy(&bytes).contains(&key));

    // Stock age opens it with the passphrase, and not without it.
    let (code, plain) = stock_age_decrypt(&file, STRONG);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&plain));
    let doc: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(doc["format"], "otpd-export");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["user"], "alice");
    let device = &doc["devices"][0];
    assert_eq!(device["name"], "default");
    assert_eq!(device["kind"], "totp");
    assert_eq!(device["secret"].as_str(), Some(key.as_str()));
    assert_eq!(
        (device["algorithm"].as_str(), device["digits"].as_u64()),
        (Some("SHA1"), Some(6))
    );
    assert_eq!(device["period"], 30);
    assert_eq!(device["last_used_step"].as_u64(), Some(d.clock.now() / 30));
    let (code, plain) = stock_age_decrypt(&file, OTHER_STRONG);
    assert_ne!(code, 0);
    assert!(plain.is_empty());

    // Into a second otpd: a wrong passphrase imports nothing.
    let d2 = InProcess::start();
    let wrong = passphrase_file(dir.path(), "wrong", OTHER_STRONG);
    let out = otpctl(d2.socket())
        .args(["import", "otpd-export"])
        .arg(&file)
        .arg("--passphrase-file")
        .arg(&wrong)
        .assert()
        .code(5);
    assert!(
        stderr(&out).contains("the passphrase does not open"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(&key) && stdout(&out).is_empty());
    assert_eq!(state(&d2, "alice"), pb::State::NotEnrolled);

    // A dry run changes nothing either.
    otpctl(d2.socket())
        .args(["--json", "import", "otpd-export", "--dry-run"])
        .arg(&file)
        .arg("--passphrase-file")
        .arg(&pass)
        .assert()
        .success()
        .stdout_eq("[{\"user\":\"alice\",\"file\":\"[..]alice.age\",\"result\":\"imported\",\"import\":{\"device\":\"default\",\"dry_run\":true,[..]}}]\n");
    assert_eq!(state(&d2, "alice"), pb::State::NotEnrolled);

    let out = otpctl(d2.socket())
        .args(["import", "otpd-export"])
        .arg(&file)
        .arg("--passphrase-file")
        .arg(&pass)
        .assert()
        .success();
    assert!(!stdout(&out).contains(&key) && !stderr(&out).contains(&key));
    assert!(stdout(&out).contains("alice: imported"), "{}", stdout(&out));
    // The code used on the first otpd stays used; the next one works.
    d2.clock.set(d.clock.now());
    assert_ne!(verify_decision(&d2, "alice", &used), pb::Decision::Accepted);
    d2.clock.advance(30);
    let next = code_at(&key, d2.clock.now());
    assert_eq!(verify_decision(&d2, "alice", &next), pb::Decision::Accepted);

    // Again: enrolled now, so skipped unless --replace; --user renames.
    otpctl(d2.socket())
        .args(["import", "otpd-export"])
        .arg(&file)
        .arg("--passphrase-file")
        .arg(&pass)
        .assert()
        .success()
        .stdout_eq("alice: skipped: already enrolled [..]\n0 imported, 1 skipped, 0 failed\n");
    otpctl(d2.socket())
        .args(["import", "otpd-export", "--user", "bob"])
        .arg(&file)
        .arg("--passphrase-file")
        .arg(&pass)
        .assert()
        .success();
    let code = code_at(&key, d2.clock.now());
    assert_eq!(verify_decision(&d2, "bob", &code), pb::Decision::Accepted);
}

#[test]
fn an_hotp_device_travels_with_its_counter() {
    let d = InProcess::start();
    let rt = runtime();
    let key = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    rt.block_on(async {
        let mut c = d.client().await;
        c.import_device(pb::ImportDeviceRequest {
            user: b"carol".to_vec().into(),
            device: "token".into(),
            secret: b"12345678901234567890".to_vec().into(),
            hotp: true,
            hotp_counter: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let out = otpctl(d.socket())
        .args([
            "export",
            "carol",
            "--device",
            "token",
            "--uri",
            "--plaintext-secret",
        ])
        .assert()
        .success();
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "otpauth://hotp/otpd-test:carol?secret={key}&issuer=otpd-test&algorithm=SHA1\
             &digits=6&counter=5"
        )
    );
    let dir = shared_tempdir();
    let pass = passphrase_file(dir.path(), "pass", STRONG);
    let file = dir.path().join("carol.age");
    otpctl(d.socket())
        .args(["export", "carol", "--encrypted"])
        .arg(&file)
        .arg("--passphrase-file")
        .arg(&pass)
        .assert()
        .success();
    let d2 = InProcess::start();
    otpctl(d2.socket())
        .args(["import", "otpd-export"])
        .arg(&file)
        .arg("--passphrase-file")
        .arg(&pass)
        .assert()
        .success();
    let code = oathtool(&["--hotp", "-b", "--counter=5", key]);
    assert_eq!(verify_decision(&d2, "carol", &code), pb::Decision::Accepted);
}

/// The fields of the audit lines of `event` in the daemon's log.
fn audit_lines<'a>(log: &'a str, event: &str) -> Vec<&'a str> {
    let tag = format!("event=\"{event}\"");
    log.lines()
        .filter(|l| l.contains(" otpd::audit: ") && l.contains(&tag))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_root_exports_and_the_audit_names_caller_user_and_device() {
    let dir = shared_tempdir();
    let daemon = Process::start(dir.path());
    let mut c = connect(&daemon.socket).await;
    let (app, _) = enroll(&mut c, "alice", unix_now()).await;
    let key = app.secret_base32();

    // As nobody (a copy of otpctl it may run): refused, nothing printed.
    let exe = dir.path().join("otpctl");
    std::fs::copy(built("otpctl"), &exe).unwrap();
    let out = Command::new(&exe)
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["export", "alice", "--uri", "--plaintext-secret"])
        .env_remove("OTPD_SOCKET")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("otpctl: error: permission denied: ")
            && err.contains("only root may export"),
        "{err}"
    );

    let out = otpctl(&daemon.socket)
        .args(["export", "alice", "--uri", "--plaintext-secret"])
        .assert()
        .success();
    assert!(stdout(&out).contains(&key));

    let log = daemon.stderr();
    let lines = audit_lines(&log, "export_device");
    assert_eq!(lines.len(), 2, "{log}");
    let refused = lines[0];
    for field in [
        "user=\"alice\"",
        "outcome=\"error\"",
        "peer_uid=65534",
        "only root may export",
    ] {
        assert!(refused.contains(field), "{field}: {refused}");
    }
    let done = lines[1];
    for field in [
        "user=\"alice\"",
        "device=\"default\"",
        "format=\"uri\"",
        "outcome=\"ok\"",
        "peer_uid=0",
        "peer_user=\"root\"",
    ] {
        assert!(done.contains(field), "{field}: {done}");
    }
    assert!(!log.contains(&key), "the key in the log:\n{log}");
    drop(c);
    assert!(daemon.stop().success());
}

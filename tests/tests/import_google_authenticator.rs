//! `otpctl import google-authenticator` with files written by the real
//! `google-authenticator` CLI (Debian's libpam-google-authenticator, which
//! CI installs), against the in-process daemon with a manual clock: the
//! imported key logs in, a scratch code works once as a backup code, the
//! file's used steps stay used, enrolled users are skipped unless
//! --replace, --dry-run writes nothing, a malformed file names its line,
//! HOTP files are skipped, --all-homes walks a passwd file and
//! --remove-originals leaves no key in the home.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use otpd::Clock;
use otpd::secret::TotpSecret;
use otpd::totp::{TotpParams, code_at_step};
use otpd_tests::*;
use serde_json::Value;
use snapbox::cmd::OutputAssert;

fn otpctl(socket: &Path) -> snapbox::cmd::Command {
    snapbox::cmd::Command::new(built("otpctl"))
        .arg("--socket")
        .arg(socket)
        .env_remove("OTPD_SOCKET")
        .stdin("")
}

fn json_of(out: &OutputAssert) -> Value {
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

/// A file written by the real CLI, and what it holds.
struct GaFile {
    path: PathBuf,
    secret: TotpSecret,
    step_size: u64,
    scratch: Vec<String>,
}

impl GaFile {
    /// The code of the file's key at Unix time `t`.
    fn code_at(&self, t: u64) -> String {
        let params = TotpParams {
            period: self.step_size,
            ..TotpParams::default()
        };
        code_at_step(&self.secret, params, t / self.step_size).to_string()
    }

    /// The same code from `oathtool`, a third implementation.
    fn oathtool_code_at(&self, t: u64) -> String {
        let out = Command::new("oathtool")
            .arg("--totp")
            .arg(format!("--time-step-size={}s", self.step_size))
            .arg(format!("--now=@{t}"))
            .arg("--base32")
            .arg(&*self.secret.to_base32())
            .output()
            .expect("oathtool (Debian package oathtool) must be installed");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

/// Runs `google-authenticator` non-interactively to write `path`.
fn google_authenticator(path: &Path, extra: &[&str]) -> GaFile {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap();
    }
    let out = Command::new("google-authenticator")
        .args([
            "-f", "-q", "-C", "-e", "5", "-w", "3", "-r", "3", "-R", "30",
        ])
        .args(extra)
        .arg("-s")
        .arg(path)
        .output()
        .expect(
            "the google-authenticator CLI (Debian package libpam-google-authenticator) \
             must be installed",
        );
    assert!(out.status.success(), "{out:?}");
    let text = fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    // Decoded independently of otpd's parser (totp-rs's base32).
    let key = totp_rs::Secret::Encoded(lines.next().unwrap().to_owned())
        .to_bytes()
        .unwrap();
    let step_size = text
        .lines()
        .find_map(|l| l.strip_prefix("\" STEP_SIZE "))
        .map_or(30, |s| s.parse().unwrap());
    let scratch = lines
        .filter(|l| l.len() == 8 && l.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    GaFile {
        path: path.to_owned(),
        secret: TotpSecret::from_bytes(key),
        step_size,
        scratch,
    }
}

fn totp_file(path: &Path) -> GaFile {
    google_authenticator(path, &["-t", "-d"])
}

fn verify(d: &InProcess, user: &str, code: &str) -> Value {
    let out = otpctl(d.socket())
        .args(["--json", "verify", user, code])
        .assert();
    json_of(&out)
}

fn import(d: &InProcess, args: &[&str]) -> snapbox::cmd::OutputAssert {
    otpctl(d.socket())
        .args(["import", "google-authenticator"])
        .args(args)
        .assert()
}

#[test]
fn imported_key_logs_in_scratch_code_once_used_steps_stay_used() {
    let d = InProcess::start();
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join(".google_authenticator");
    let ga = totp_file(&path);
    let now = d.clock.now();
    // The module saw the current step used: say so in the file as it does.
    let step = now / 30;
    let text = fs::read_to_string(&path).unwrap().replace(
        "\" DISALLOW_REUSE\n",
        &format!("\" DISALLOW_REUSE {step}\n"),
    );
    fs::write(&path, text).unwrap();

    let p = path.to_str().unwrap();
    import(&d, &["--user", "alice", p])
        .success()
        .stdout_eq(format!(
            "alice: imported {p} as device \"google-authenticator\" (30s steps, 5 backup codes)\n\
             1 imported, 0 skipped, 0 failed\n"
        ));
    // The file stays (no --remove-originals).
    assert!(path.exists());

    // The step the file lists as used is refused as replayed.
    let r = verify(&d, "alice", &ga.code_at(now));
    assert_eq!(r["accepted"], false, "{r}");
    assert_eq!(r["reason"], "replayed", "{r}");
    // The next step's code logs in (the code oathtool computes too).
    d.clock.advance(30);
    assert_eq!(ga.oathtool_code_at(now + 30), ga.code_at(now + 30));
    let r = verify(&d, "alice", &ga.code_at(now + 30));
    assert_eq!(r["accepted"], true, "{r}");

    // A scratch code works once, as a backup code.
    let scratch = &ga.scratch[0];
    let r = verify(&d, "alice", scratch);
    assert_eq!(
        (&r["accepted"], &r["method"]),
        (&Value::Bool(true), &Value::from("backup_code")),
        "{r}"
    );
    let r = verify(&d, "alice", scratch);
    assert_eq!(r["accepted"], false, "{r}");
}

#[test]
fn enrolled_users_are_skipped_unless_replace_and_dry_run_writes_nothing() {
    let d = InProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let first = totp_file(&dir.path().join("first"));
    let second = google_authenticator(&dir.path().join("second"), &["-t", "-d", "-S", "60"]);
    let (p1, p2) = (first.path.to_str().unwrap(), second.path.to_str().unwrap());

    // Dry run: the report, but nothing stored.
    let out = import(&d, &["--json", "--dry-run", "--user", "bob", p1]).success();
    let json = json_of(&out);
    assert_eq!(json[0]["result"], "imported", "{json}");
    assert_eq!(json[0]["import"]["dry_run"], true, "{json}");
    let now = d.clock.now();
    let r = verify(&d, "bob", &first.code_at(now));
    assert_eq!(r["accepted"], false, "{r}");

    import(&d, &["--user", "bob", p1]).success();
    // Re-running is harmless: skipped, exit 0.
    import(&d, &["--user", "bob", p2])
        .success()
        .stdout_eq(format!(
            "bob: skipped: already enrolled (--replace replaces their devices) ({p2})\n\
         0 imported, 1 skipped, 0 failed\n"
        ));
    let r = verify(&d, "bob", &first.code_at(now));
    assert_eq!(r["accepted"], true, "{r}");

    // --dry-run --replace changes nothing either.
    import(&d, &["--dry-run", "--replace", "--user", "bob", p2])
        .success()
        .stdout_eq(format!(
            "bob: would import {p2} as device \"google-authenticator\" (60s steps, 5 backup codes, replacing their devices)\n\
             1 imported, 0 skipped, 0 failed\n"
        ));
    d.clock.advance(60);
    let now = d.clock.now();
    let r = verify(&d, "bob", &second.code_at(now));
    assert_eq!(r["accepted"], false, "{r}");

    // --replace: the second key (60 s steps) replaces the first.
    import(&d, &["--replace", "--user", "bob", p2]).success();
    d.clock.advance(60);
    let now = d.clock.now();
    let r = verify(&d, "bob", &first.code_at(now));
    assert_eq!(r["accepted"], false, "{r}");
    assert_eq!(second.oathtool_code_at(now), second.code_at(now));
    let r = verify(&d, "bob", &second.code_at(now));
    assert_eq!(r["accepted"], true, "{r}");
    // The first file's scratch codes are gone with it.
    let r = verify(&d, "bob", &first.scratch[0]);
    assert_eq!(r["accepted"], false, "{r}");
}

#[test]
fn malformed_file_names_file_and_line_and_imports_nothing() {
    let d = InProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let ga = totp_file(&dir.path().join("bad"));
    let p = ga.path.to_str().unwrap();
    // A scratch code damaged on line 7 (the key is on line 1).
    let text = fs::read_to_string(p).unwrap();
    let damaged = text.replacen(&ga.scratch[1], "1234567x", 1);
    fs::write(p, &damaged).unwrap();
    let line = damaged.lines().position(|l| l == "1234567x").unwrap() + 1;
    let out = import(&d, &["--user", "carol", p]).code(5).stdout_eq(format!(
        "carol: failed: {p}: line {line}: neither an option (\" NAME) nor an 8-digit scratch code\n\
         0 imported, 0 skipped, 1 failed\n"
    ));
    // Neither the key nor a scratch code in the output.
    let shown = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(!shown.contains(text.lines().next().unwrap()));
    assert!(!shown.contains(&ga.scratch[0]));
    let r = verify(&d, "carol", &ga.code_at(d.clock.now()));
    assert_eq!(r["reason"], "not_enrolled", "{r}");

    // A file that does not exist, named explicitly: failed.
    import(
        &d,
        &["--user", "carol", "/nonexistent/.google_authenticator"],
    )
    .code(5)
    .stdout_eq(
        "carol: failed: /nonexistent/.google_authenticator: no such file\n\
         0 imported, 0 skipped, 1 failed\n",
    );
}

/// The HOTP code of `secret` at `counter`, from oathtool.
fn oathtool_hotp(secret: &TotpSecret, counter: u64) -> String {
    let out = Command::new("oathtool")
        .arg("--hotp")
        .arg(format!("--counter={counter}"))
        .arg("--base32")
        .arg(&*secret.to_base32())
        .output()
        .expect("oathtool (Debian package oathtool) must be installed");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn counter_based_file_imports_at_its_counter() {
    let d = InProcess::start();
    let dir = tempfile::tempdir().unwrap();
    // `-c`: HOTP; the CLI shows the code of counter 0 and writes
    // HOTP_COUNTER 1 (the next one it accepts).
    let hotp = google_authenticator(&dir.path().join("hotp"), &["-c"]);
    let h = hotp.path.to_str().unwrap();
    assert!(
        fs::read_to_string(h)
            .unwrap()
            .contains("\" HOTP_COUNTER 1\n")
    );
    import(&d, &["--user", "erin", h]).success().stdout_eq(format!(
        "erin: imported {h} as device \"google-authenticator\" (HOTP at counter 1, 5 backup codes)\n\
         1 imported, 0 skipped, 0 failed\n"
    ));
    // Counter 0 was used up under google-authenticator: refused.
    let r = verify(&d, "erin", &oathtool_hotp(&hotp.secret, 0));
    assert_eq!(r["accepted"], false, "{r}");
    let next = oathtool_hotp(&hotp.secret, 1);
    let r = verify(&d, "erin", &next);
    assert_eq!(r["accepted"], true, "{r}");
    let r = verify(&d, "erin", &next);
    assert_eq!(r["accepted"], false, "{r}");
    let r = verify(&d, "erin", &hotp.scratch[0]);
    assert_eq!(r["method"], "backup_code", "{r}");
}

#[test]
fn all_homes_walks_the_passwd_file_and_moves_the_originals_aside() {
    let d = InProcess::start();
    let root = tempfile::tempdir().unwrap();
    let homes = root.path().join("home");
    let (alice_home, bob_home) = (homes.join("alice"), homes.join("bob"));
    let alice = totp_file(&alice_home.join(".google_authenticator"));
    let bob = totp_file(&bob_home.join(".google_authenticator"));
    // mallory's file is not mallory's (the CLI ran as root): refused.
    let mallory_home = homes.join("mallory");
    totp_file(&mallory_home.join(".google_authenticator"));
    let passwd = root.path().join("passwd");
    fs::write(
        &passwd,
        format!(
            "alice:x:0:0::{}:/bin/sh\nnobody2:x:65534:65534::/nonexistent:/usr/sbin/nologin\n\
             bob:x:0:0::{}:/bin/sh\nmallory:x:4242:4242::{}:/bin/sh\n",
            alice_home.display(),
            bob_home.display(),
            mallory_home.display()
        ),
    )
    .unwrap();
    let passwd = passwd.to_str().unwrap();
    let originals = root.path().join("imported");
    let o = originals.to_str().unwrap();

    // Dry run with --remove-originals: nothing moved, nothing created.
    let args = [
        "--all-homes",
        "--passwd",
        passwd,
        "--remove-originals",
        "--originals-dir",
        o,
    ];
    let out = import(&d, &[&["--json", "--dry-run"][..], &args].concat()).code(5);
    let json = json_of(&out);
    let results: Vec<_> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["user"].as_str().unwrap(), o["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        results,
        [
            ("alice", "imported"),
            ("nobody2", "skipped"),
            ("bob", "imported"),
            ("mallory", "failed")
        ]
    );
    let reason = json[3]["reason"].as_str().unwrap();
    assert!(
        reason.ends_with("/mallory/.google_authenticator: owned by uid 0, not by the user"),
        "{reason}"
    );
    assert!(!originals.exists());
    assert!(alice.path.exists());

    // Bob is enrolled already: skipped, his file stays.
    let bob_app = totp_file(&root.path().join("bob-other"));
    import(&d, &["--user", "bob", bob_app.path.to_str().unwrap()]).success();

    let out = import(&d, &[&["--json"][..], &args].concat()).code(5);
    let json = json_of(&out);
    assert_eq!(json[0]["result"], "imported", "{json}");
    let moved = originals.join("alice.google_authenticator");
    assert_eq!(
        json[0]["import"]["moved_to"],
        moved.to_str().unwrap(),
        "{json}"
    );
    assert_eq!(json[1]["reason"], "no file", "{json}");
    assert_eq!(json[2]["result"], "skipped", "{json}");
    assert_eq!(json[3]["result"], "failed", "{json}");
    // No key left in alice's home; the moved copy is root's only.
    assert!(!alice.path.exists());
    assert_eq!(fs::read_dir(&alice_home).unwrap().count(), 0);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&moved).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(&originals).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(bob.path.exists());

    let now = d.clock.now();
    let r = verify(&d, "alice", &alice.code_at(now));
    assert_eq!(r["accepted"], true, "{r}");
    let r = verify(&d, "bob", &bob.code_at(now));
    assert_eq!(r["accepted"], false, "{r}");

    // Re-running is harmless: alice has no file any more, bob is enrolled.
    let out = import(&d, &[&["--json"][..], &args].concat()).code(5);
    let json = json_of(&out);
    assert_eq!(json[0]["reason"], "no file", "{json}");
    assert_eq!(json[2]["result"], "skipped", "{json}");
}

#[test]
fn path_template_finds_files_outside_the_homes() {
    let d = InProcess::start();
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("secrets");
    let dave = totp_file(&store.join("dave").join("ga"));
    let passwd = root.path().join("passwd");
    fs::write(&passwd, "dave:x:0:0::/nonexistent:/bin/sh\n").unwrap();
    let template = format!("{}/${{USER}}/ga", store.display());
    let out = import(
        &d,
        &[
            "--json",
            "--all-homes",
            "--passwd",
            passwd.to_str().unwrap(),
            "--path-template",
            &template,
        ],
    )
    .success();
    let json = json_of(&out);
    assert_eq!(json[0]["file"], dave.path.to_str().unwrap(), "{json}");
    assert_eq!(json[0]["result"], "imported", "{json}");
    let r = verify(&d, "dave", &dave.code_at(d.clock.now()));
    assert_eq!(r["accepted"], true, "{r}");
}

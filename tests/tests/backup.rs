//! Encrypted backups and restores through the real otpctl against the
//! in-process daemon with a manual clock: stock `age` opens a backup with
//! the identity otpctl derives from the passphrase, automatic backups
//! follow changes at most once per interval, a restore onto a fresh daemon
//! brings users back (codes from real `oathtool`, backup codes, app
//! passwords), an older backup never makes a used code valid again, a
//! wrong passphrase restores nothing, a new passphrase re-encrypts every
//! file, and only root may do any of it.
//!
//! Keys are derived with `--insecure-test-kdf` (64 KiB Argon2id): the
//! strong cost (256 MiB) is the same code with other numbers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use otpd::{Clock, ManualClock};
use otpd_proto::v1 as pb;
use otpd_tests::*;
use serde_json::Value;

const KEY_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const KEY_HEX: &str = "3132333435363738393031323334353637383930";
const PASS: &str = "mellow cabin ripple orbit fancy";
const NEW_PASS: &str = "sled wind otter clay march nine";

/// A daemon whose backups go to `<dir>/backups`, at most one automatic
/// backup per `interval` seconds.
fn daemon(interval: u64) -> InProcess {
    let dir = shared_tempdir();
    let mut config = config_in(dir.path());
    config.backup.directory = dir.path().join("backups");
    config.backup.interval_seconds = interval;
    InProcess::start_in(dir, config, Arc::new(ManualClock::new(T0)))
}

/// A passphrase file only its owner can read.
fn pass_file(dir: &Path, name: &str, pass: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{pass}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn init(d: &InProcess, pass: &Path) {
    otpctl(d.socket())
        .args(["backup", "init", "--insecure-test-kdf", "--passphrase-file"])
        .arg(pass)
        .assert()
        .success();
}

fn backup_now(d: &InProcess) -> PathBuf {
    let out = otpctl(d.socket())
        .args(["--json", "backup", "now"])
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    PathBuf::from(v["file"].as_str().unwrap())
}

fn files(d: &InProcess) -> Vec<PathBuf> {
    let mut f: Vec<PathBuf> = std::fs::read_dir(&d.config.backup.directory)
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    f.retain(|p| p.extension().is_some_and(|e| e == "age"));
    f.sort();
    f
}

/// Waits (bounded) for the scheduler to have written `n` files.
fn wait_for_files(d: &InProcess, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while files(d).len() < n {
        assert!(Instant::now() < deadline, "no backup {n} within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(d: &InProcess) -> Value {
    let out = otpctl(d.socket())
        .args(["--json", "backup", "status"])
        .assert()
        .success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

/// `otpctl backup identity` into a private file, for stock `age`.
fn identity(file: &Path, pass: &Path, out: &Path) -> snapbox::cmd::OutputAssert {
    let r = snapbox::cmd::Command::new(built("otpctl"))
        .args(["backup", "identity"])
        .arg(file)
        .arg("--passphrase-file")
        .arg(pass)
        .assert();
    std::fs::write(out, &r.get_output().stdout).unwrap();
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o600)).unwrap();
    r
}

/// The plaintext of `file` by stock `age -d -i`.
fn age_decrypt(file: &Path, id: &Path) -> std::process::Output {
    Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(id)
        .arg(file)
        .output()
        .expect("age (Debian package age)")
}

fn import_carol(d: &InProcess) {
    otpctl(d.socket())
        .args(["import", "otpauth", "--user", "carol", "-"])
        .stdin(format!("otpauth://totp/x?secret={KEY_B32}\n"))
        .assert()
        .success();
}

fn restore(d: &InProcess, file: &Path, pass: &Path) -> snapbox::cmd::OutputAssert {
    otpctl(d.socket())
        .args(["--json", "restore", "--yes", "--passphrase-file"])
        .arg(pass)
        .arg(file)
        .assert()
}

fn json(out: &snapbox::cmd::OutputAssert) -> Value {
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_weak_passphrase_is_refused_and_stock_age_opens_a_backup() {
    let d = daemon(900);
    let tmp = tempfile::tempdir().unwrap();
    let weak = pass_file(tmp.path(), "weak", "Summer2026!Summer2026!");
    let out = otpctl(d.socket())
        .args(["backup", "init", "--insecure-test-kdf", "--passphrase-file"])
        .arg(&weak)
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains("too easy to guess") && !err.contains("Summer"),
        "{err}"
    );
    assert_eq!(status(&d)["configured"], false);
    otpctl(d.socket())
        .args(["backup", "now"])
        .assert()
        .code(5)
        .stderr_eq("otpctl: error: failed precondition: backup key: no backup key is set; set one with `otpctl backup init`\n");

    let pass = pass_file(tmp.path(), "pass", PASS);
    init(&d, &pass);
    let mut c = d.client().await;
    let (app, _codes) = enroll(&mut c, "alice", d.clock.now()).await;
    let file = backup_now(&d);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let s = status(&d);
    assert_eq!(s["configured"], true);
    assert_eq!(s["last_backup_file"], file.display().to_string());
    assert!(s["recipient"].as_str().unwrap().starts_with("age1"));

    let id = tmp.path().join("identity.txt");
    let r = identity(&file, &pass, &id).success();
    let stderr = String::from_utf8_lossy(&r.get_output().stderr).to_string();
    assert!(
        stderr.contains("warning") && stderr.contains("secret key"),
        "{stderr}"
    );
    let opened = age_decrypt(&file, &id);
    assert!(opened.status.success(), "{opened:?}");
    let doc: Value = serde_json::from_slice(&opened.stdout).unwrap();
    assert_eq!(doc["format"], "otpd-backup");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["created"], T0);
    let users = doc["users"].as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["user"], "alice");
    let secret: Vec<u8> = users[0]["record"]["devices"][0]["secret"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(secret, app.secret());
    assert_eq!(
        users[0]["record"]["backup_codes"]["hashes"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    assert_eq!(users[0]["watermarks"]["devices"][0]["kind"], "totp");
    assert_eq!(
        users[0]["watermarks"]["devices"][0]["step"],
        T0 / 30,
        "the enrollment's code is spent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_are_backed_up_automatically_at_most_once_per_interval() {
    let d = daemon(600);
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path(), "pass", PASS);
    assert!(files(&d).is_empty(), "nothing before a key is set");
    init(&d, &pass);
    // The first backup follows the key at once.
    wait_for_files(&d, 1);
    import_carol(&d);
    // Within the interval (the clock has not moved) the change waits.
    assert_eq!(status(&d)["pending"], true);
    assert_eq!(files(&d).len(), 1);
    d.clock.advance(600);
    wait_for_files(&d, 2);
    // The file is renamed into place a moment before otpd notes it as the
    // backup of these changes: wait (bounded) for that too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(&d);
        if s["pending"] == false {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still pending 30 s after the file: {s}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(files(&d).len(), 2);
    let newest = files(&d).pop().unwrap();
    let id = tmp.path().join("id");
    identity(&newest, &pass, &id).success();
    let doc: Value = serde_json::from_slice(&age_decrypt(&newest, &id).stdout).unwrap();
    assert_eq!(doc["users"][0]["user"], "carol");
    assert_eq!(doc["created"], T0 + 600);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_on_a_fresh_daemon_brings_codes_backup_codes_and_app_passwords_back() {
    let a = daemon(900);
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path(), "pass", PASS);
    init(&a, &pass);
    import_carol(&a);
    let mut c = a.client().await;
    let (_app, codes) = enroll(&mut c, "alice", a.clock.now()).await;
    let password = c
        .add_app_password(pb::AddAppPasswordRequest {
            user: b"alice".to_vec().into(),
            service: "dovecot".into(),
            label: "laptop".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .password;
    let written = backup_now(&a);
    let file = tmp.path().join("copied.age");
    std::fs::copy(&written, &file).unwrap();
    drop(a);

    // Another machine: a fresh state directory, the file and the passphrase.
    let b = daemon(900);
    let dry = otpctl(b.socket())
        .args(["restore", "--dry-run", "--passphrase-file"])
        .arg(&pass)
        .arg(&file)
        .assert()
        .success();
    let text = String::from_utf8_lossy(&dry.get_output().stdout).to_string();
    assert!(
        text.contains("2 user(s), 2 device(s), 1 app password(s), 10 unused backup code(s)")
            && text.contains("would restore 2 user(s)"),
        "{text}"
    );
    let mut c = b.client().await;
    let listed = c
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.users.is_empty(), "a dry run writes nothing");
    // Without --yes and without a terminal: refused, nothing restored.
    otpctl(b.socket())
        .args(["restore", "--passphrase-file"])
        .arg(&pass)
        .arg(&file)
        .stdin("yes\n")
        .assert()
        .code(5);
    let out = restore(&b, &file, &pass).success();
    let v = json(&out);
    assert_eq!(v["restored"], 2, "{v}");
    assert_eq!(v["replaced"], 0, "{v}");
    assert_eq!(
        status(&b)["configured"],
        false,
        "a restore does not set a backup key"
    );
    assert_eq!(v["backup"]["devices"], 2);
    assert_eq!(v["backup"]["app_passwords"], 1);
    assert_eq!(v["backup"]["backup_codes"], 10);
    assert_eq!(v["host"].as_str().map(str::is_empty), Some(false));

    let t = b.clock.now() + 30;
    b.clock.set(t);
    let code = oathtool(&["--totp", &format!("--now=@{t}"), KEY_HEX]);
    let v = verify(&mut c, "carol", &code).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
    let v = verify(&mut c, "alice", &codes[0]).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
    let v = verify(&mut c, "alice", &codes[0]).await;
    assert_ne!(
        v.decision(),
        pb::Decision::Accepted,
        "a backup code works once"
    );
    let mut req = verify_req("alice", &password);
    req.service = "dovecot".into();
    req.allow_app_password = true;
    let v = c.verify(req).await.unwrap().into_inner();
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_backup_never_makes_a_used_code_valid_again() {
    let d = daemon(900);
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path(), "pass", PASS);
    init(&d, &pass);
    import_carol(&d);
    let mut c = d.client().await;
    let (_app, codes) = enroll(&mut c, "alice", d.clock.now()).await;
    let old = backup_now(&d);
    // After the backup: carol logs in with a code, alice with a backup code,
    // and dave is enrolled.
    let t = d.clock.now() + 60;
    d.clock.set(t);
    let code = oathtool(&["--totp", &format!("--now=@{t}"), KEY_HEX]);
    assert_eq!(
        verify(&mut c, "carol", &code).await.decision(),
        pb::Decision::Accepted
    );
    assert_eq!(
        verify(&mut c, "alice", &codes[1]).await.decision(),
        pb::Decision::Accepted
    );
    enroll(&mut c, "dave", t).await;

    let out = restore(&d, &old, &pass).success();
    let v = json(&out);
    assert_eq!(v["restored"], 2, "{v}");
    assert_eq!(v["watermarks_kept"], 1, "{v}");
    assert_eq!(v["backup_codes_kept_used"], 1, "{v}");
    assert_eq!(v["not_in_backup"], serde_json::json!(["dave"]));
    let out = otpctl(d.socket())
        .args(["restore", "--yes", "--passphrase-file"])
        .arg(&pass)
        .arg(&old)
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        text.contains("left alone (in otpd, not in the backup): dave"),
        "{text}"
    );

    let v = verify(&mut c, "carol", &code).await;
    assert_ne!(v.decision(), pb::Decision::Accepted, "replayed: {v:?}");
    let v = verify(&mut c, "alice", &codes[1]).await;
    assert_ne!(
        v.decision(),
        pb::Decision::Accepted,
        "used backup code: {v:?}"
    );
    let v = verify(&mut c, "alice", &codes[2]).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
    let next = oathtool(&["--totp", &format!("--now=@{}", t + 30), KEY_HEX]);
    d.clock.set(t + 30);
    assert_eq!(
        verify(&mut c, "carol", &next).await.decision(),
        pb::Decision::Accepted
    );
    assert_eq!(status(&d)["configured"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_passphrase_restores_nothing() {
    let a = daemon(900);
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path(), "pass", PASS);
    init(&a, &pass);
    import_carol(&a);
    let file = backup_now(&a);
    let b = daemon(900);
    let wrong = pass_file(tmp.path(), "wrong", NEW_PASS);
    let out = otpctl(b.socket())
        .args(["restore", "--yes", "--passphrase-file"])
        .arg(&wrong)
        .arg(&file)
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("the passphrase does not open"), "{err}");
    assert!(err.contains("nothing was restored"), "{err}");
    let mut c = b.client().await;
    let users = c
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(users.users.is_empty(), "{users:?}");
    identity(&file, &wrong, &tmp.path().join("id")).code(1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_passphrase_re_encrypts_every_backup() {
    let d = daemon(900);
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path(), "pass", PASS);
    let new = pass_file(tmp.path(), "new", NEW_PASS);
    init(&d, &pass);
    import_carol(&d);
    backup_now(&d);
    backup_now(&d);
    let before = files(&d);
    assert!(before.len() >= 2, "{before:?}");
    let before_key = status(&d)["recipient"].clone();

    // The wrong current passphrase changes nothing.
    otpctl(d.socket())
        .args(["backup", "change-passphrase", "--insecure-test-kdf"])
        .arg("--passphrase-file")
        .arg(&new)
        .arg("--new-passphrase-file")
        .arg(&pass)
        .assert()
        .code(1);
    assert_eq!(status(&d)["recipient"], before_key);

    let out = otpctl(d.socket())
        .args([
            "--json",
            "backup",
            "change-passphrase",
            "--insecure-test-kdf",
        ])
        .arg("--passphrase-file")
        .arg(&pass)
        .arg("--new-passphrase-file")
        .arg(&new)
        .assert()
        .success();
    let v = json(&out);
    assert_ne!(status(&d)["recipient"], before_key);
    let after = files(&d);
    let reencrypted = v["reencrypted"].as_u64().unwrap() as usize;
    let already_new = v["already_new"].as_u64().unwrap() as usize;
    assert_eq!(reencrypted, before.len(), "{v}");
    // Any file beyond those is otpd's first backup under the new key.
    assert!(reencrypted + already_new <= after.len(), "{v}");
    for file in &after {
        let id = tmp.path().join("id");
        identity(file, &pass, &id).code(1);
        identity(file, &new, &id).success();
        let opened = age_decrypt(file, &id);
        assert!(opened.status.success(), "{opened:?}");
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // otpd writes under the new key from now on.
    let next = backup_now(&d);
    identity(&next, &new, &tmp.path().join("id")).success();
}

#[tokio::test(flavor = "multi_thread")]
async fn only_root_may_back_up_or_restore() {
    let d = daemon(900);
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in [&["backup", "status"][..], &["backup", "now"]] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(built("otpctl"))
            .arg("--socket")
            .arg(d.socket())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("root only"), "{err}");
    }
}

/// The real cost (256 MiB, 3 passes; about a second per derivation), end
/// to end once: what `backup init` sets without the test-only option.
#[tokio::test(flavor = "multi_thread")]
async fn the_strong_key_derivation_end_to_end() {
    let d = daemon(900);
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path(), "pass", PASS);
    otpctl(d.socket())
        .args(["backup", "init", "--passphrase-file"])
        .arg(&pass)
        .assert()
        .success();
    let s = status(&d);
    assert_eq!(
        s["kdf"],
        serde_json::json!({"m_kib": 262144, "t": 3, "p": 1})
    );
    let file = backup_now(&d);
    let header = std::fs::read(&file).unwrap();
    let header = String::from_utf8_lossy(&header[..200]).to_string();
    assert!(
        header.contains("-> otpd-argon2id v1 m=262144 t=3 p=1 "),
        "{header}"
    );
    let id = tmp.path().join("id");
    identity(&file, &pass, &id).success();
    assert!(age_decrypt(&file, &id).status.success());
}

/// A backup that cannot be written (here the directory is a file) is an
/// error for `backup now`, shown by `backup status`, and logins go on.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_backup_is_reported_and_logins_go_on() {
    let d = daemon(900);
    std::fs::write(&d.config.backup.directory, b"not a directory").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path(), "pass", PASS);
    init(&d, &pass);
    let mut c = d.client().await;
    let (app, _) = enroll(&mut c, "alice", d.clock.now()).await;
    let out = otpctl(d.socket()).args(["backup", "now"]).assert().code(5);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("not a directory"), "{err}");
    let s = status(&d);
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("not a directory"),
        "{s}"
    );
    assert_eq!(s["pending"], true);
    let t = d.clock.now() + 30;
    d.clock.set(t);
    let v = verify(&mut c, "alice", &app.code_at(t)).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
    let text = otpctl(d.socket())
        .args(["backup", "status"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&text.get_output().stdout).to_string();
    assert!(
        text.contains("LAST ERROR:") && text.contains("not a directory"),
        "{text}"
    );
}

/// A restore sends its users in requests otpd accepts whatever the mix of
/// record sizes: small users first, then one with the most devices (long
/// keys). Before, otpctl guessed the next record's size (2 KiB) and could
/// send a request over otpd's 16 KiB limit, which ended the whole restore.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_fits_its_requests_to_otpd_whatever_the_record_sizes() {
    let a = daemon(900);
    let tmp = tempfile::tempdir().unwrap();
    let pass = pass_file(tmp.path(), "pass", PASS);
    init(&a, &pass);
    let short = "3132333435363738393031323334353637383930";
    let long = "ab".repeat(64);
    let mut oath = String::new();
    for i in 1..=16 {
        oath.push_str(&format!("HOTP/T30\tu{i:02}\t-\t{short}\n"));
    }
    for _ in 0..16 {
        oath.push_str(&format!("HOTP/T30\tzz-heavy\t-\t{long}\n"));
    }
    let users_oath = tmp.path().join("users.oath");
    std::fs::write(&users_oath, oath).unwrap();
    otpctl(a.socket())
        .args(["import", "pam-oath", "--quiet"])
        .arg(&users_oath)
        .assert()
        .success();
    let file = backup_now(&a);

    // The mix that broke it: the small records fill most of a request,
    // and the heavy one is more than the 2 KiB guessed for it.
    let id = tmp.path().join("id.txt");
    identity(&file, &pass, &id).success();
    let plain = age_decrypt(&file, &id);
    assert!(plain.status.success(), "{plain:?}");
    let doc: Value = serde_json::from_slice(&plain.stdout).unwrap();
    let sizes: Vec<(String, usize)> = doc["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let name = u["user"].as_str().unwrap().to_owned();
            (name, serde_json::to_vec(&u["record"]).unwrap().len())
        })
        .collect();
    let heavy = sizes.iter().find(|(u, _)| u == "zz-heavy").unwrap().1;
    let small: usize = sizes
        .iter()
        .filter(|(u, _)| u != "zz-heavy")
        .map(|s| s.1)
        .sum();
    assert!(heavy > 6 * 1024 && small > 6 * 1024, "{sizes:?}");

    let b = daemon(900);
    let out = restore(&b, &file, &pass).success();
    let v = json(&out);
    assert_eq!(v["restored"], 17, "{v}");
    assert_eq!(v["failed"], serde_json::json!([]), "{v}");
    let st = otpctl(b.socket())
        .args(["--json", "device", "list", "zz-heavy"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&st.get_output().stdout).to_string();
    assert!(text.contains("oath-token-16"), "{text}");
}

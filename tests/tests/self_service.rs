//! Self-service: the real `otpctl`, run as a real plain user (a fresh
//! account made with useradd), changing that user's own second factor
//! through the public socket. Every change but the first enrollment needs
//! a current code or a backup code in the same request, checked like a
//! login code (spent once, counted when wrong); other users' accounts and
//! the admin-only changes are refused; the audit trail names the caller.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use otpd::Clock;
use otpd_proto::v1 as pb;
use otpd_tests::*;

/// A local account made for one test and removed after it.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "otpss{}x{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        retry_locked(&["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", &name]);
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        Self { name, uid, gid }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        retry_locked(&["userdel", &self.name]);
    }
}

/// Runs a command that edits /etc/passwd, waiting while another test holds
/// its lock.
fn retry_locked(cmd: &[&str]) {
    for _ in 0..100 {
        let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("lock"), "{cmd:?} failed: {err}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{cmd:?}: /etc/passwd stayed locked");
}

/// The built otpctl where the test user can run it.
fn otpctl_in(dir: &Path) -> std::path::PathBuf {
    let exe = dir.join("otpctl");
    if !exe.exists() {
        std::fs::copy(built("otpctl"), &exe).unwrap();
    }
    exe
}

/// `otpctl --socket SOCKET ARGS...` as `user` (no supplementary groups).
fn otpctl_as(user: &TestUser, socket: &Path, args: &[&str]) -> Output {
    let exe = otpctl_in(socket.parent().unwrap());
    let out = Command::new("setpriv")
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--clear-groups")
        .arg(&exe)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("OTPD_SOCKET")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    eprintln!(
        "otpctl {args:?} -> {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn daemon_with(configure: impl FnOnce(&mut otpd::Config)) -> InProcess {
    let dir = shared_tempdir();
    let mut config = config_in(dir.path());
    configure(&mut config);
    InProcess::start_in(dir, config, Arc::new(otpd::ManualClock::new(T0)))
}

/// The user enrolls their first device themselves (no user argument) and
/// confirms it; returns the app and the backup codes.
fn self_enroll(d: &InProcess, user: &TestUser) -> (App, Vec<String>) {
    let out = otpctl_as(user, d.socket(), &["--json", "enroll"]);
    let started = json(&out);
    assert_eq!(started["user"], user.name.as_str());
    let app = App::from_uri(started["otpauth_uri"].as_str().unwrap());
    let code = app.code_at(d.clock.now());
    let out = otpctl_as(user, d.socket(), &["--json", "confirm", &user.name, &code]);
    let confirmed = json(&out);
    let codes = confirmed["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (app, codes)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_enrolls_themself_only_when_the_policy_allows_it() {
    let user = TestUser::new();
    let closed = daemon_with(|_| {});
    let out = otpctl_as(&user, closed.socket(), &["--json", "enroll"]);
    assert_eq!(out.status.code(), Some(4), "PERMISSION_DENIED");
    assert!(stderr(&out).contains("[self_service] enroll = false"));
    let mut root = closed.client().await;
    assert_eq!(
        status(&mut root, &user.name).await.state(),
        pb::State::NotEnrolled
    );

    let open = daemon_with(|c| c.self_service.enroll = true);
    let (app, codes) = self_enroll(&open, &user);
    assert_eq!(codes.len(), 10);
    let mut root = open.client().await;
    let s = status(&mut root, &user.name).await;
    assert_eq!(s.state(), pb::State::Active);
    // The secret was shown once: nothing the user can read shows it again.
    let out = otpctl_as(
        &user,
        open.socket(),
        &["--json", "device", "list", &user.name],
    );
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success());
    assert!(!listed.contains(&app.secret_base32()), "{listed}");
    // Enrolled now: enrolling again (replacing the device) needs a proof.
    let out = otpctl_as(&user, open.socket(), &["--json", "enroll"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("needs a current code"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn adding_a_device_needs_a_current_code_spent_once_and_a_wrong_one_counts() {
    let user = TestUser::new();
    let d = daemon_with(|c| c.self_service.enroll = true);
    let (app, _) = self_enroll(&d, &user);
    let mut root = d.client().await;
    d.clock.advance(30);

    // No proof (stdin is no terminal: otpctl cannot ask): refused, clear
    // message, exit 1, nothing pending.
    let out = otpctl_as(&user, d.socket(), &["--json", "device", "add", "spare"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("needs a current code"),
        "{}",
        stderr(&out)
    );
    assert_eq!(status(&mut root, &user.name).await.pending_device, "");

    // A wrong code: refused and counted as a failed login.
    let wrong = app.wrong_code_at(d.clock.now());
    let out = otpctl_as(
        &user,
        d.socket(),
        &["--json", "--code", &wrong, "device", "add", "spare"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("wrong"), "{}", stderr(&out));
    let s = status(&mut root, &user.name).await;
    assert_eq!(s.consecutive_failures, 1);
    assert_eq!(s.pending_device, "");

    // A current code: the device add starts (no user argument: their own).
    let code = app.code_at(d.clock.now());
    let out = otpctl_as(
        &user,
        d.socket(),
        &["--json", "--code", &code, "device", "add", "spare"],
    );
    let started = json(&out);
    assert_eq!(started["device"], "spare");
    let spare = App::from_uri(started["otpauth_uri"].as_str().unwrap());
    let s = status(&mut root, &user.name).await;
    assert_eq!(s.pending_device, "spare");
    assert_eq!(s.consecutive_failures, 0, "an accepted code is a success");

    // The same code again, for another change: a replay, refused.
    let out = otpctl_as(
        &user,
        d.socket(),
        &[
            "--json", "--code", &code, "device", "rename", &user.name, "spare", "tablet",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already used"), "{}", stderr(&out));
    // ... and for a login too.
    let r = verify(&mut root, &user.name, &code).await;
    assert_eq!(r.decision(), pb::Decision::Rejected);

    // The new device is confirmed with its own code; then rename with the
    // next code of either device.
    let out = otpctl_as(
        &user,
        d.socket(),
        &[
            "--json",
            "confirm",
            &user.name,
            &spare.code_at(d.clock.now()),
        ],
    );
    assert!(out.status.success());
    d.clock.advance(30);
    let out = otpctl_as(
        &user,
        d.socket(),
        &[
            "--json",
            "--code",
            &spare.code_at(d.clock.now()),
            "device",
            "rename",
            &user.name,
            "spare",
            "tablet",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = status(&mut root, &user.name)
        .await
        .devices
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["default", "tablet"]);
    // Listing needs no proof, and no user argument: their own.
    let out = otpctl_as(&user, d.socket(), &["--json", "device", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("\"tablet\"") && listed.contains("\"default\""),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_code_proves_once_and_new_codes_replace_it() {
    let user = TestUser::new();
    let d = daemon_with(|c| c.self_service.enroll = true);
    let (_app, codes) = self_enroll(&d, &user);
    let out = otpctl_as(
        &user,
        d.socket(),
        // No user argument: their own.
        &["--json", "--code", &codes[0], "backup-codes"],
    );
    let fresh = json(&out);
    let fresh: Vec<String> = fresh["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fresh.len(), 10);
    // The proof was used up, and the old set is gone with it.
    let out = otpctl_as(
        &user,
        d.socket(),
        &["--json", "--code", &codes[1], "backup-codes", &user.name],
    );
    assert_eq!(out.status.code(), Some(1));
    let mut root = d.client().await;
    let r = verify(&mut root, &user.name, &codes[0]).await;
    assert_eq!(r.decision(), pb::Decision::Rejected);
    let r = verify(&mut root, &user.name, &fresh[0]).await;
    assert_eq!(r.decision(), pb::Decision::Accepted);
}

#[tokio::test(flavor = "multi_thread")]
async fn app_passwords_are_added_listed_and_revoked_with_a_proof() {
    let user = TestUser::new();
    let d = daemon_with(|c| c.self_service.enroll = true);
    let (app, _) = self_enroll(&d, &user);
    d.clock.advance(30);
    let code = app.code_at(d.clock.now());
    let out = otpctl_as(
        &user,
        d.socket(),
        &[
            "--json",
            "--code",
            &code,
            "app-password",
            "add",
            "--service",
            "dovecot",
        ],
    );
    let added = json(&out);
    let id = added["app_password"]["id"]
        .as_str()
        .or_else(|| added["id"].as_str())
        .unwrap()
        .to_owned();
    let out = otpctl_as(
        &user,
        d.socket(),
        &["--json", "app-password", "list", &user.name],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    // Revoking without a proof is refused; with the next code it works.
    let out = otpctl_as(
        &user,
        d.socket(),
        &["--json", "app-password", "revoke", &id],
    );
    assert_eq!(out.status.code(), Some(1));
    d.clock.advance(30);
    let code = app.code_at(d.clock.now());
    let out = otpctl_as(
        &user,
        d.socket(),
        &["--json", "--code", &code, "app-password", "revoke", &id],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut root = d.client().await;
    assert_eq!(status(&mut root, &user.name).await.app_passwords, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_device_and_resetting_stay_admin_only_unless_configured() {
    let user = TestUser::new();
    let d = daemon_with(|c| c.self_service.enroll = true);
    let (app, _) = self_enroll(&d, &user);
    d.clock.advance(30);
    let code = app.code_at(d.clock.now());
    for args in [
        vec![
            "--code", &code, "device", "remove", &user.name, "default", "--force",
        ],
        vec!["--code", &code, "reset", &user.name],
    ] {
        let out = otpctl_as(&user, d.socket(), &args);
        assert_eq!(out.status.code(), Some(4), "{args:?}");
        assert!(stderr(&out).contains("[self_service]"), "{}", stderr(&out));
    }
    let mut root = d.client().await;
    assert_eq!(
        status(&mut root, &user.name).await.state(),
        pb::State::Active
    );
    // The code was not spent on a refused change: it still logs in.
    let r = verify(&mut root, &user.name, &code).await;
    assert_eq!(r.decision(), pb::Decision::Accepted);

    let allowed = daemon_with(|c| {
        c.self_service.enroll = true;
        c.self_service.remove_device = true;
    });
    let (app, _) = self_enroll(&allowed, &user);
    allowed.clock.advance(30);
    let code = app.code_at(allowed.clock.now());
    let out = otpctl_as(
        &user,
        allowed.socket(),
        &[
            "--code", &code, "device", "remove", &user.name, "default", "--force",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut root = allowed.client().await;
    assert_eq!(
        status(&mut root, &user.name).await.state(),
        pb::State::NotEnrolled
    );
}

/// The built daemon (its audit trail on stderr), real clock: a user's
/// change of their own account is audited with the caller, and acting on
/// another user's account is refused and audited.
#[tokio::test(flavor = "multi_thread")]
async fn other_users_accounts_are_refused_and_the_audit_names_the_caller() {
    let user = TestUser::new();
    let dir = shared_tempdir();
    let daemon = Process::start(dir.path());
    let mut root = connect(&daemon.socket).await;
    let (app, _) = enroll(&mut root, &user.name, unix_now()).await;
    let (_, _) = enroll(&mut root, "root", unix_now()).await;

    // Another user's account: refused (exit 4), nothing changed. (The
    // enrollment spent the current step: prove with the next one, inside
    // the window.)
    let code = app.code_at(unix_now() + 30);
    for args in [
        vec!["--code", &code, "device", "add", "root", "evil"],
        vec!["--code", &code, "backup-codes", "root"],
        vec!["app-password", "list", "root"],
    ] {
        let out = otpctl_as(&user, &daemon.socket, &args);
        assert_eq!(out.status.code(), Some(4), "{args:?}");
    }
    assert_eq!(status(&mut root, "root").await.pending_device, "");

    // Their own: accepted with a current code.
    let out = otpctl_as(
        &user,
        &daemon.socket,
        &["--code", &code, "device", "add", "spare"],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let log = daemon.stderr();
    let uid = format!("peer_uid={}", user.uid);
    let refused = log
        .lines()
        .filter(|l| {
            l.contains("user=\"root\"") && l.contains(&uid) && l.contains("outcome=\"error\"")
        })
        .count();
    assert!(refused >= 3, "{log}");
    let changed = log
        .lines()
        .find(|l| l.contains("event=\"enroll_start\"") && l.contains("self_service=true"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(changed.contains(&uid), "{changed}");
    assert!(
        changed.contains(&format!("peer_user=\"{}\"", user.name)),
        "{changed}"
    );
    assert!(changed.contains("proof=\"totp\""), "{changed}");
    assert!(!changed.contains(&code), "{changed}");
}

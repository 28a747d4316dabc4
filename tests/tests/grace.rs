//! Grace for sudo/su after a login, through the built pam_otpd with real
//! libpam (pam_wrapper + pamtester) against the in-process daemon and its
//! manual clock: a login with a code (service sshd-like, from a remote
//! host) lets a `grace` service of the same user from the same origin in
//! without a prompt, within `[grace] seconds` only; another origin, an
//! unlisted service or grace off still need a code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use otpd::ManualClock;
use otpd::config::GraceSection;
use otpd::grace::Match;
use otpd_tests::pam_env::*;
use otpd_tests::{App, InProcess, T0, config_in, shared_tempdir};

const RHOST: &str = "192.0.2.1";

fn daemon(seconds: u64, by: Match, services: &[&str]) -> InProcess {
    let dir = shared_tempdir();
    let mut config = config_in(dir.path());
    config.grace = GraceSection {
        seconds,
        by,
        services: services.iter().map(|s| (*s).to_owned()).collect(),
    };
    InProcess::start_in(dir, config, Arc::new(ManualClock::new(T0)))
}

/// Enrolls `user`; codes at the daemon's (manual) time.
fn enrolled(d: &InProcess, user: &str) -> App {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = d.client().await;
        let (app, _) = otpd_tests::enroll(&mut c, user, T0).await;
        app
    })
}

/// A login with a code at the daemon's time, from `rhost` on `tty`.
fn login_with_code(svc: &PamService, d: &InProcess, app: &App, user: &str, rhost: &str) {
    use otpd::Clock;
    let code = app.code_at(d.clock.now());
    svc.pamtester(user)
        .item("rhost", rhost)
        .item("tty", "pts/1")
        .answer(&code)
        .run()
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PROMPT);
}

/// The sudo-like service asked without any answer: it passes only if it
/// never prompts.
fn sudo_without_code(svc: &PamService, user: &str, rhost: &str, tty: &str) -> PamOutput {
    svc.pamtester(user)
        .item("rhost", rhost)
        .item("tty", tty)
        .run()
}

#[test]
fn sudo_right_after_a_login_needs_no_code_from_the_same_origin_within_the_grace() {
    require_root();
    let d = daemon(120, Match::RemoteHost, &["otpd-grace-sudo"]);
    let codes = enrolled(&d, "alice");
    let sshd = PamService::new("otpd-grace-sshd", &otpd_line(d.socket(), "grace"));
    let sudo = PamService::new("otpd-grace-sudo", &otpd_line(d.socket(), "grace debug"));

    // Before any login: sudo prompts (no answer given: refused).
    sudo_without_code(&sudo, "alice", RHOST, "pts/2").assert_failure(AUTH_ERR);

    d.clock.advance(30);
    login_with_code(&sshd, &d, &codes, "alice", RHOST);

    // Within the grace, same user, same remote host: no prompt at all.
    d.clock.advance(100);
    sudo_without_code(&sudo, "alice", RHOST, "pts/2")
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, "")
        .assert_logged(5, &["user alice: accepted without a code (otpd grace"]);
    // From another remote host: a code is needed.
    sudo_without_code(&sudo, "alice", "192.0.2.99", "pts/2").assert_failure(AUTH_ERR);
    // Another user: a code is needed.
    sudo_without_code(&sudo, "bob", RHOST, "pts/2").assert_failure(AUTH_ERR);
    // The login service itself is not listed: it always asks.
    sudo_without_code(&sshd, "alice", RHOST, "pts/1").assert_failure(AUTH_ERR);

    // After the grace (120 s after the code): a code is needed again.
    d.clock.advance(20);
    sudo_without_code(&sudo, "alice", RHOST, "pts/2").assert_failure(AUTH_ERR);
}

#[test]
fn a_tty_match_needs_the_same_tty() {
    require_root();
    let d = daemon(300, Match::Tty, &["otpd-gtty-sudo"]);
    let codes = enrolled(&d, "alice");
    let login = PamService::new("otpd-gtty-login", &otpd_line(d.socket(), ""));
    let sudo = PamService::new("otpd-gtty-sudo", &otpd_line(d.socket(), "grace"));
    d.clock.advance(30);
    login_with_code(&login, &d, &codes, "alice", "");
    sudo_without_code(&sudo, "alice", "", "pts/1").assert_success();
    sudo_without_code(&sudo, "alice", "", "pts/7").assert_failure(AUTH_ERR);
}

#[test]
fn with_grace_off_sudo_always_needs_a_code() {
    require_root();
    let d = daemon(0, Match::RemoteHost, &["otpd-goff-sudo"]);
    let codes = enrolled(&d, "alice");
    let sshd = PamService::new("otpd-goff-sshd", &otpd_line(d.socket(), ""));
    let sudo = PamService::new("otpd-goff-sudo", &otpd_line(d.socket(), "grace"));
    d.clock.advance(30);
    login_with_code(&sshd, &d, &codes, "alice", RHOST);
    d.clock.advance(5);
    sudo_without_code(&sudo, "alice", RHOST, "pts/2").assert_failure(AUTH_ERR);
}

/// The built otpd binary (real clock, its own config file): a grace is
/// audited as method "grace".
#[test]
fn a_grace_is_audited() {
    require_root();
    let d = RealDaemon::start_with_config(
        "[grace]\nseconds = 600\nmatch = \"both\"\nservices = [\"otpd-greal-sudo\"]\n",
    );
    let (mut codes, _) = d.enroll("alice");
    let sshd = PamService::new("otpd-greal-sshd", &otpd_line(&d.socket(), ""));
    let sudo = PamService::new("otpd-greal-sudo", &otpd_line(&d.socket(), "grace"));
    sshd.pamtester("alice")
        .item("rhost", RHOST)
        .item("tty", "pts/3")
        .answer(&codes.fresh())
        .run()
        .assert_success();
    sudo_without_code(&sudo, "alice", RHOST, "pts/3")
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, "");
    // "both": the same host on another tty is another origin.
    sudo_without_code(&sudo, "alice", RHOST, "pts/4").assert_failure(AUTH_ERR);
    let log = d.log();
    assert!(
        log.lines().any(|l| [
            "otpd::audit",
            "event=\"verify\"",
            "user=\"alice\"",
            "service=\"otpd-greal-sudo\"",
            "outcome=\"accepted\"",
            "method=\"grace\"",
        ]
        .iter()
        .all(|n| l.contains(n))),
        "{log}"
    );
}

/// Grants live in otpd's memory only: a restart ends every grace.
#[test]
fn a_restart_of_otpd_ends_the_grace() {
    require_root();
    let d = daemon(600, Match::RemoteHost, &["otpd-grst-sudo"]);
    let codes = enrolled(&d, "alice");
    let sshd = PamService::new("otpd-grst-sshd", &otpd_line(d.socket(), ""));
    let sudo = PamService::new("otpd-grst-sudo", &otpd_line(d.socket(), "grace"));
    d.clock.advance(30);
    login_with_code(&sshd, &d, &codes, "alice", RHOST);
    sudo_without_code(&sudo, "alice", RHOST, "pts/2").assert_success();
    let (dir, config, clock) = d.stop();
    // Same socket, same store, same time: only the memory is new.
    let _d = InProcess::start_in(dir, config, clock);
    sudo_without_code(&sudo, "alice", RHOST, "pts/2").assert_failure(AUTH_ERR);
}

/// `otpctl reset` (the Reset RPC) ends the user's grace at once.
#[test]
fn a_reset_ends_the_grace() {
    require_root();
    let d = daemon(600, Match::RemoteHost, &["otpd-grrs-sudo"]);
    let codes = enrolled(&d, "alice");
    let sshd = PamService::new("otpd-grrs-sshd", &otpd_line(d.socket(), ""));
    let sudo = PamService::new(
        "otpd-grrs-sudo",
        &format!(
            "{}\nauth optional pam_permit.so",
            otpd_line(d.socket(), "grace nullok")
        ),
    );
    d.clock.advance(30);
    login_with_code(&sshd, &d, &codes, "alice", RHOST);
    sudo_without_code(&sudo, "alice", RHOST, "pts/2")
        .assert_success()
        .assert_logged(5, &["accepted without a code"]);
    d.engine
        .reset(&otpd::record::UserName::test("alice"))
        .unwrap();
    // Enrolled again at once: the grace does not come back.
    let _codes = enrolled(&d, "alice");
    sudo_without_code(&sudo, "alice", RHOST, "pts/2").assert_failure(AUTH_ERR);
}

/// A new enrollment (a lost phone replaced, without a reset first) or a
/// removed device ends the user's grace at once: a grace opened by the old
/// phone's code must not outlive it.
#[test]
fn a_new_enrollment_or_a_removed_device_ends_the_grace() {
    require_root();
    let d = daemon(600, Match::RemoteHost, &["otpd-gren-sudo"]);
    let codes = enrolled(&d, "alice");
    let sshd = PamService::new("otpd-gren-sshd", &otpd_line(d.socket(), ""));
    let sudo = PamService::new("otpd-gren-sudo", &otpd_line(d.socket(), "grace"));
    d.clock.advance(30);
    login_with_code(&sshd, &d, &codes, "alice", RHOST);
    sudo_without_code(&sudo, "alice", RHOST, "pts/2").assert_success();
    let codes = enrolled(&d, "alice");
    sudo_without_code(&sudo, "alice", RHOST, "pts/2").assert_failure(AUTH_ERR);

    d.clock.advance(60);
    login_with_code(&sshd, &d, &codes, "alice", RHOST);
    sudo_without_code(&sudo, "alice", RHOST, "pts/2").assert_success();
    let alice = otpd::record::UserName::test("alice");
    let status = d.engine.status(&alice).unwrap();
    let device = status.devices.first().map(|dev| dev.name.clone()).unwrap();
    let device = otpd::device::DeviceName::parse(&device).unwrap();
    d.engine.remove_device(&alice, &device, true).unwrap();
    sudo_without_code(&sudo, "alice", RHOST, "pts/2").assert_failure(AUTH_ERR);
}

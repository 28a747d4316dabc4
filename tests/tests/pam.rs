//! The built `libpam_otpd.so` with real libpam, through pam_wrapper and
//! pamtester, against the real `otpd` binary (real clock). Each test pins
//! pamtester's exit status and what the user sees (stdout, and stderr
//! without pam_wrapper's lines), and checks the module's log lines, which
//! must never contain a code or a password.
//!
//! Runs as root: the module trusts only a root-owned socket served by root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;

use otpd_proto::v1 as pb;
use otpd_tests::pam_env::*;
use otpd_tests::shared_tempdir;
use pb::{Decision, Method, State};

const RHOST: &str = "192.0.2.1";
const UNAVAILABLE: &str =
    "The verification service is unavailable; please contact your administrator.";
const SYSTEM_ERR: &str = "System error";
const REPLAYED: &str = "This code has already been used; wait for the next one.";

/// What a user who logged in with a backup code is told besides the count.
fn re_enroll(user: &str) -> String {
    format!(
        "If you used a backup code because your device is lost or broken, have a new one \
         enrolled now: ask your administrator (otpctl enroll {user})."
    )
}

/// What a refused user sees: the prompt, then pamtester's failure line.
fn refused() -> String {
    format!("{PROMPT}pamtester: {AUTH_ERR}\n")
}

/// A stack of pam_otpd followed by `auth optional pam_permit.so`, so that
/// a `PAM_IGNORE` from pam_otpd lets the stack succeed.
fn then_permit(otpd: String) -> String {
    format!("{otpd}\nauth optional pam_permit.so")
}

#[test]
fn a_correct_code_is_accepted_and_recorded_with_service_and_remote_host() {
    require_root();
    let d = RealDaemon::start();
    let (mut codes, _) = d.enroll("alice");
    let svc = PamService::new("otpd-correct", &otpd_line(&d.socket(), "debug"));

    let code = codes.fresh();
    svc.pamtester("alice")
        .item("rhost", RHOST)
        .item("tty", "ssh")
        .answer(&code)
        .run()
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PROMPT)
        .assert_logged(6, &["user alice: code accepted"])
        .assert_logged(7, &["user alice: prompting (echo off)"])
        .assert_not_logged(&[&code]);

    let st = d.status("alice");
    let last = st.last_success.expect("last success recorded");
    assert_eq!(
        (
            last.service.as_str(),
            last.remote_host.as_str(),
            Method::try_from(last.method)
        ),
        ("otpd-correct", RHOST, Ok(Method::Totp))
    );
    assert_eq!(st.consecutive_failures, 0);
    // The audit trail has the tty too.
    let log = d.log();
    assert!(
        log.lines().any(|l| [
            "otpd::audit",
            "event=\"verify\"",
            "user=\"alice\"",
            "service=\"otpd-correct\"",
            "remote_host=\"192.0.2.1\"",
            "tty=\"ssh\"",
            "outcome=\"accepted\"",
        ]
        .iter()
        .all(|n| l.contains(n))),
        "{log}"
    );
}

#[test]
fn a_wrong_code_is_refused() {
    require_root();
    let d = RealDaemon::start();
    let (codes, _) = d.enroll("bob");
    let svc = PamService::new("otpd-wrong", &otpd_line(&d.socket(), "debug"));

    let wrong = codes.wrong();
    svc.pamtester("bob")
        .item("rhost", RHOST)
        .answer(&wrong)
        .run()
        .assert_failure(AUTH_ERR)
        .assert_user_sees("", &refused())
        .assert_logged(5, &["user bob: wrong code; refused"])
        .assert_not_logged(&[&wrong]);
    let st = d.status("bob");
    // From a host that never logged in as bob: the strangers' count.
    assert_eq!(
        (st.consecutive_failures, st.strangers_consecutive_failures),
        (0, 1)
    );
    assert!(st.last_success.is_none());
}

#[test]
fn a_used_code_is_refused_as_a_replay() {
    require_root();
    let d = RealDaemon::start();
    let (mut codes, _) = d.enroll("carol");
    let svc = PamService::new("otpd-replay", &otpd_line(&d.socket(), ""));

    let code = codes.fresh();
    svc.pamtester("carol").answer(&code).run().assert_success();
    svc.pamtester("carol")
        .answer(&code)
        .run()
        .assert_failure(AUTH_ERR)
        .assert_user_sees("", &format!("{PROMPT}{REPLAYED}\npamtester: {AUTH_ERR}\n"))
        .assert_logged(5, &["user carol: code already used; refused"])
        .assert_not_logged(&[&code]);
}

#[test]
fn a_backup_code_is_accepted_once_with_the_count_left() {
    require_root();
    let d = RealDaemon::start();
    let (_, backup) = d.enroll("dave");
    let svc = PamService::new("otpd-backup", &otpd_line(&d.socket(), "debug"));

    svc.pamtester("dave")
        .answer(&backup[0])
        .run()
        .assert_success()
        .assert_user_sees(
            &format!(
                "Backup code accepted; 9 left.\n{}\n{SUCCESS_LINE}",
                re_enroll("dave")
            ),
            PROMPT,
        )
        .assert_logged(6, &["user dave: backup code accepted, 9 left"])
        .assert_not_logged(&[&backup[0]]);
    // Second use: refused like any wrong code.
    svc.pamtester("dave")
        .answer(&backup[0])
        .run()
        .assert_failure(AUTH_ERR)
        .assert_user_sees("", &refused())
        .assert_logged(5, &["user dave: wrong code; refused"])
        .assert_not_logged(&[&backup[0]]);

    // Typed with spaces, as printed in groups.
    let spaced = format!(" {} {} ", &backup[1][..4], &backup[1][4..]);
    svc.pamtester("dave")
        .answer(&spaced)
        .run()
        .assert_success()
        .assert_user_sees(
            &format!(
                "Backup code accepted; 8 left.\n{}\n{SUCCESS_LINE}",
                re_enroll("dave")
            ),
            PROMPT,
        )
        .assert_not_logged(&[&backup[1], &backup[1][..4], &backup[1][4..]]);

    // PAM_SILENT: no message, same result.
    svc.pamtester("dave")
        .operation("authenticate(PAM_SILENT)")
        .answer(&backup[2])
        .run()
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PROMPT);

    // Few left: the user is told to ask for new ones.
    for code in &backup[3..6] {
        let r = d.verify("dave", code);
        assert_eq!(Decision::try_from(r.decision), Ok(Decision::Accepted));
    }
    svc.pamtester("dave")
        .answer(&backup[6])
        .run()
        .assert_success()
        .assert_user_sees(
            &format!(
                "Backup code accepted; 3 left.\n{}\nRunning low on backup codes: ask your \
                 administrator for new ones (otpctl backup-codes dave).\n{SUCCESS_LINE}",
                re_enroll("dave")
            ),
            PROMPT,
        );
    assert_eq!(d.status("dave").backup_codes_left, 3);
}

#[test]
fn a_locked_user_is_refused_even_with_the_right_code() {
    require_root();
    // The throttle (5 failures a minute by default) would stop the eight
    // failures short of the lockout without waiting; keep it out of the way.
    let d = RealDaemon::start_with_config("[rate_limit]\nmax_failures = 100\n");
    let (mut codes, _) = d.enroll("erin");
    let wrong = codes.wrong();
    for _ in 0..8 {
        let r = d.verify("erin", &wrong);
        assert_eq!(Decision::try_from(r.decision), Ok(Decision::Rejected));
    }
    // The failures came from 192.0.2.7 (`verify_req`), a host that never
    // logged in as erin: it is locked out, and so is the login from it.
    let st = d.status("erin");
    assert_eq!(State::try_from(st.state), Ok(State::Active));
    assert!(st.strangers_locked_until > 0);

    let svc = PamService::new("otpd-locked", &otpd_line(&d.socket(), ""));
    let code = codes.fresh();
    let out = svc
        .pamtester("erin")
        .item("rhost", "192.0.2.7")
        .answer(&code)
        .run();
    out.assert_failure(AUTH_ERR)
        .assert_logged(5, &["user erin: locked out (retry after "])
        .assert_not_logged(&[&code]);
    // 900 s (the default first lockout), rounded up to minutes.
    let seen = out.user_stderr();
    assert!(
        [15, 14].iter().any(|m| seen
            == format!(
                "{PROMPT}Locked after too many failed attempts; try again in {m} min, or ask \
                 your administrator to unlock.\npamtester: {AUTH_ERR}\n"
            )),
        "{out}"
    );
    assert_eq!(out.stdout, "");

    // The locked attempt was not checked, so the code is still unused.
    d.unlock("erin");
    svc.pamtester("erin").answer(&code).run().assert_success();
}

/// The throttle (seconds) and the lockout (minutes) say which it is and
/// how long to wait.
#[test]
fn a_throttled_user_is_told_to_wait_seconds_not_that_they_are_locked() {
    require_root();
    let d = RealDaemon::start_with_config("[rate_limit]\nmax_failures = 2\n");
    let (mut codes, _) = d.enroll("tess");
    let wrong = codes.wrong();
    for _ in 0..2 {
        let r = d.verify("tess", &wrong);
        assert_eq!(Decision::try_from(r.decision), Ok(Decision::Rejected));
    }
    let svc = PamService::new("otpd-throttled", &otpd_line(&d.socket(), ""));
    let code = codes.fresh();
    let out = svc
        .pamtester("tess")
        .item("rhost", "192.0.2.7")
        .answer(&code)
        .run();
    out.assert_failure(AUTH_ERR)
        .assert_logged(5, &["user tess: throttled (retry after "])
        .assert_not_logged(&[&code]);
    let seen = out.user_stderr();
    assert!(
        seen.starts_with(&format!("{PROMPT}Too many attempts in a short time; wait "))
            && seen.contains(", then try again.\n")
            && !seen.contains("Locked"),
        "{out}"
    );
}

/// Nothing is listening at `socket` (the log says `why`): fail_mode=closed
/// refuses with AUTHINFO_UNAVAIL, fail_mode=open steps aside (PAM_IGNORE);
/// both before asking for a code nobody could check (no prompt).
fn check_unreachable(label: &str, socket: &std::path::Path, why: &str) {
    let closed = PamService::new(
        &format!("otpd-down-closed-{label}"),
        &otpd_line(socket, "timeout_ms=500"),
    );
    let out = closed.pamtester("frank").answer("123456").run();
    out.assert_failure(AUTHINFO_UNAVAIL)
        .assert_user_sees(
            "",
            &format!("{UNAVAILABLE}\npamtester: {AUTHINFO_UNAVAIL}\n"),
        )
        .assert_logged(
            3,
            &[
                "user frank: ",
                why,
                "fail_mode=closed: refusing (PAM_AUTHINFO_UNAVAIL)",
            ],
        )
        .assert_not_logged(&["123456"]);
    assert!(out.elapsed.as_secs() < 10, "{label}: {out}");

    let open = PamService::new(
        &format!("otpd-down-open-{label}"),
        &then_permit(otpd_line(socket, "fail_mode=open timeout_ms=500")),
    );
    open.pamtester("frank")
        .answer("123456")
        .run()
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, "")
        .assert_logged(
            3,
            &[
                "user frank: ",
                why,
                "fail_mode=open: this module is ignored (PAM_IGNORE)",
            ],
        )
        .assert_not_logged(&["123456"]);
}

#[test]
fn an_unreachable_daemon_fails_closed_or_open_as_configured() {
    require_root();
    let tmp = shared_tempdir();

    // Nothing at the path.
    let missing = tmp.path().join("missing.sock");
    check_unreachable("missing", &missing, "No such file or directory");
    // Alone in the stack, fail_mode=open leaves only PAM_IGNORE: libpam
    // refuses.
    PamService::new(
        "otpd-down-open-alone",
        &otpd_line(&missing, "fail_mode=open"),
    )
    .pamtester("frank")
    .answer("123456")
    .run()
    .assert_failure(PERM_DENIED);

    // A socket file that nobody listens on any more.
    let stale = tmp.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    check_unreachable("stale", &stale, "Connection refused");

    // A daemon that was stopped.
    let mut d = RealDaemon::start();
    let socket = d.socket();
    assert!(d.stop().success());
    check_unreachable("stopped", &socket, "No such file or directory");

    // Listening but never answering: the timeout applies, and a daemon that
    // is there but does not answer is not an absent one. (This case used to
    // be checked with check_unreachable, i.e. PAM_IGNORE with
    // fail_mode=open: that was issue 6, defect 1.)
    let silent = tmp.path().join("silent.sock");
    let _listener = UnixListener::bind(&silent).unwrap();
    check_unavailable("silent", &silent, "otpd did not answer within 500 ms");
}

/// The daemon is there but does not answer at `socket` (the log says
/// `why`): refused with AUTHINFO_UNAVAIL whatever fail_mode says.
fn check_unavailable(label: &str, socket: &std::path::Path, why: &str) {
    for mode in ["closed", "open"] {
        let svc = PamService::new(
            &format!("otpd-busy-{mode}-{label}"),
            &then_permit(otpd_line(
                socket,
                &format!("fail_mode={mode} timeout_ms=500"),
            )),
        );
        let out = svc.pamtester("frank").answer("123456").run();
        out.assert_failure(AUTHINFO_UNAVAIL)
            .assert_user_sees(
                "",
                &format!("{PROMPT}{UNAVAILABLE}\npamtester: {AUTHINFO_UNAVAIL}\n"),
            )
            .assert_logged(
                3,
                &[
                    "user frank: ",
                    why,
                    "refusing (PAM_AUTHINFO_UNAVAIL) whatever fail_mode says",
                ],
            )
            .assert_not_logged(&["123456"]);
        assert!(out.elapsed.as_secs() < 10, "{label}: {out}");
    }
}

/// Without `socket=`, the module would use /run/otpd/pam.sock; the tests
/// cannot use fixed paths, so this checks the PAM socket itself: root-only,
/// and what the module talks to when pointed at it.
#[test]
fn the_pam_socket_is_root_only_and_serves_logins() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    require_root();
    let d = RealDaemon::start();
    let meta = std::fs::metadata(d.pam_socket()).unwrap();
    assert_eq!((meta.permissions().mode() & 0o777, meta.uid()), (0o600, 0));
    let public = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(public.permissions().mode() & 0o777, 0o666);
    // nobody cannot even connect to it.
    let out = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg("import socket,sys\ntry:\n socket.socket(socket.AF_UNIX).connect(sys.argv[1]); print('connected')\nexcept OSError as e: print(e.errno)")
        .arg(d.pam_socket())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        nix::libc::EACCES.to_string()
    );
    let (mut codes, _) = d.enroll("pamsock");
    PamService::new("otpd-pam-socket", &otpd_line(&d.pam_socket(), ""))
        .pamtester("pamsock")
        .answer(&codes.fresh())
        .run()
        .assert_success();
}

/// Flooders running as `nobody`: each opens and closes connections to
/// `socket` in a loop. Started and running when this returns.
struct Flood {
    children: Vec<std::process::Child>,
}

impl Flood {
    fn start(socket: &std::path::Path, processes: usize) -> Self {
        use std::io::BufRead;
        let script = r#"
import errno, socket, sys
path = sys.argv[1]
n = full = 0
print("flooding", flush=True)
while True:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    e = s.connect_ex(path)
    if e in (errno.EAGAIN, errno.EWOULDBLOCK):
        full += 1
    s.close()
    n += 1
    if n % 20000 == 0:
        print(n, full, flush=True)
"#;
        let children = (0..processes)
            .map(|_| {
                let mut child = std::process::Command::new("/usr/bin/python3")
                    .arg("-c")
                    .arg(script)
                    .arg(socket)
                    .uid(65534)
                    .gid(65534)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut first = String::new();
                std::io::BufReader::new(child.stdout.as_mut().unwrap())
                    .read_line(&mut first)
                    .unwrap();
                assert_eq!(first.trim(), "flooding");
                child
            })
            .collect();
        Self { children }
    }

    /// Stops the flooders; returns (connects, connects refused with EAGAIN
    /// because the queue was full), as last reported.
    fn stop(mut self) -> (u64, u64) {
        use std::io::Read;
        let mut total = (0, 0);
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
            let mut out = String::new();
            let _ = child.stdout.take().unwrap().read_to_string(&mut out);
            if let Some(last) = out.lines().rfind(|l| l.contains(' ')) {
                let mut it = last.split(' ').map(|n| n.parse::<u64>().unwrap_or(0));
                total.0 += it.next().unwrap_or(0);
                total.1 += it.next().unwrap_or(0);
            }
        }
        total
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Issue 6, defect 1: a local user flooding the public socket with
/// connections used to fill the queue the PAM module shared, so root's
/// connects failed with EAGAIN, which counted as "unreachable": with
/// fail_mode=open a wrong code got in, with fail_mode=closed a right one was
/// refused. The module now talks to the root-only PAM socket, retries a
/// full queue, and only "nothing listening" may fail open.
#[test]
fn a_local_user_flooding_the_public_socket_neither_gets_past_nor_denies_logins() {
    require_root();
    const RIGHT: usize = 8;
    const WRONG: usize = 20;
    let d = RealDaemon::start();
    let mut users: Vec<(String, Codes)> = (0..RIGHT)
        .map(|i| {
            let name = format!("flood{i}");
            let (codes, _) = d.enroll(&name);
            (name, codes)
        })
        .collect();
    let (victim, _) = d.enroll("victim");
    let wrong = victim.wrong();
    let socket = d.pam_socket();

    let flood = Flood::start(&d.socket(), 2);
    // fail_mode=open with a wrong code: always refused.
    let open = PamService::new(
        "otpd-flood-open",
        &then_permit(otpd_line(&socket, "fail_mode=open")),
    );
    let mut let_in = Vec::new();
    for i in 0..WRONG {
        let out = open.pamtester("victim").answer(&wrong).run();
        if out.code() != Some(1) {
            let_in.push((i, out));
        }
    }
    // fail_mode=closed with right codes: always accepted.
    let closed = PamService::new("otpd-flood-closed", &otpd_line(&socket, ""));
    let mut refused = Vec::new();
    for (name, codes) in &mut users {
        let out = closed.pamtester(name).answer(&codes.fresh()).run();
        if out.code() != Some(0) {
            refused.push((name.clone(), out));
        }
    }
    let (connects, full) = flood.stop();
    eprintln!("flood: {connects} connects, {full} with a full queue");
    assert!(
        let_in.is_empty(),
        "{} of {WRONG} logins with a wrong code and fail_mode=open got in; first: {}",
        let_in.len(),
        let_in[0].1
    );
    assert!(
        refused.is_empty(),
        "{} of {RIGHT} logins with a right code were refused; first: {}",
        refused.len(),
        refused[0].1
    );
    // The daemon logged the flood's refusals (if any) in summaries, not one
    // line per connection.
    let log = d.log();
    let refusals = log
        .lines()
        .filter(|l| l.contains("connection refused"))
        .count();
    assert!(refusals <= 2, "{refusals} refusal lines:\n{log}");
}

#[test]
fn nullok_skips_users_without_an_active_enrollment_without_a_prompt() {
    require_root();
    let d = RealDaemon::start();
    d.enroll_pending("pending");
    let (mut codes, _) = d.enroll("grace");
    let svc = PamService::new(
        "otpd-nullok",
        &then_permit(otpd_line(&d.socket(), "nullok")),
    );

    // No stdin: a prompt would read end of input and be refused.
    for user in ["stranger", "pending"] {
        svc.pamtester(user)
            .run()
            .assert_success()
            .assert_user_sees(SUCCESS_LINE, "")
            .assert_logged(6, &[&format!("user {user}: "), "nullok: ignored"]);
    }
    // Alone in the stack, the PAM_IGNORE leaves libpam nothing to go by.
    PamService::new("otpd-nullok-alone", &otpd_line(&d.socket(), "nullok"))
        .pamtester("stranger")
        .run()
        .assert_failure(PERM_DENIED)
        .assert_user_sees("", &format!("pamtester: {PERM_DENIED}\n"));

    // An enrolled user is asked, and a wrong code fails the stack.
    svc.pamtester("grace")
        .answer(&codes.wrong())
        .run()
        .assert_failure(AUTH_ERR)
        .assert_user_sees("", &refused());
    let code = codes.fresh();
    svc.pamtester("grace")
        .answer(&code)
        .run()
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PROMPT)
        .assert_not_logged(&[&code]);
}

#[test]
fn nullok_asks_about_the_account_not_the_name_typed() {
    require_root();
    let d = RealDaemon::start();
    // A real account, enrolled, and a second name for the same uid (as a
    // name service with aliases or case-insensitive names would give).
    let user = otpd_tests::sshd::User::create();
    let alias = user.alias();
    let (mut codes, _) = d.enroll(&user.name);
    let svc = PamService::new("otpd-alias", &then_permit(otpd_line(&d.socket(), "nullok")));
    // Logging in under the alias must still ask for the code: no answer,
    // no login.
    svc.pamtester(&alias.name).run().assert_failure(AUTH_ERR);
    let code = codes.fresh();
    svc.pamtester(&alias.name)
        .answer(&code)
        .run()
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PROMPT);
    let s = d.status(&user.name);
    assert_eq!(
        s.last_success.map(|l| l.service),
        Some("otpd-alias".to_string())
    );
}

#[test]
fn without_nullok_a_user_who_is_not_enrolled_is_prompted_then_refused() {
    require_root();
    let d = RealDaemon::start();
    d.enroll_pending("pending");
    let svc = PamService::new(
        "otpd-not-enrolled",
        &then_permit(otpd_line(&d.socket(), "")),
    );
    // Exactly what a wrong code looks like (see a_wrong_code_is_refused).
    for user in ["stranger", "pending"] {
        svc.pamtester(user)
            .item("rhost", RHOST)
            .answer("123456")
            .run()
            .assert_failure(AUTH_ERR)
            .assert_user_sees("", &refused())
            .assert_logged(
                5,
                &[&format!("user {user}: "), "no active enrollment; refused"],
            )
            .assert_not_logged(&["123456"]);
    }
}

#[test]
fn an_unknown_or_malformed_option_is_logged_and_ignored() {
    require_root();
    let d = RealDaemon::start();
    let (mut codes, _) = d.enroll("heidi");
    let svc = PamService::new(
        "otpd-options",
        &otpd_line(
            &d.socket(),
            "frobnicate fail_mode=sideways timeout_ms=0 nulok",
        ),
    );
    // At error level (syslog err): each one changes what the line does.
    let code = codes.fresh();
    svc.pamtester("heidi")
        .answer(&code)
        .run()
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PROMPT)
        .assert_logged(3, &["ignoring unknown option \"frobnicate\""])
        .assert_logged(3, &["ignoring option fail_mode=\"sideways\""])
        .assert_logged(3, &["ignoring option timeout_ms=\"0\""])
        .assert_logged(
            3,
            &["ignoring unknown option \"nulok\" (did you mean nullok?)"],
        )
        .assert_not_logged(&[&code]);

    // The malformed fail_mode left the default: closed.
    let tmp = shared_tempdir();
    PamService::new(
        "otpd-options-closed",
        &then_permit(otpd_line(
            &tmp.path().join("missing.sock"),
            "fail_mode=sideways",
        )),
    )
    .pamtester("heidi")
    .answer("123456")
    .run()
    .assert_failure(AUTHINFO_UNAVAIL)
    .assert_logged(3, &["ignoring option fail_mode=\"sideways\""]);

    // PAM's bracket syntax for a value with spaces.
    PamService::new(
        "otpd-options-prompt",
        &otpd_line(&d.socket(), "[prompt=One-time code: ]"),
    )
    .pamtester("heidi")
    .answer(&codes.wrong())
    .run()
    .assert_failure(AUTH_ERR)
    .assert_user_sees("", &format!("One-time code: pamtester: {AUTH_ERR}\n"));
}

#[test]
fn oversized_and_garbage_answers_are_refused_and_the_daemon_keeps_serving() {
    require_root();
    let d = RealDaemon::start();
    let (mut codes, _) = d.enroll("ivan");
    let svc = PamService::new("otpd-garbage", &otpd_line(&d.socket(), "debug"));

    let junk: Vec<u8> = (1..=255u8).filter(|&b| b != b'\n').collect();
    let line = |bytes: Vec<u8>| [bytes, vec![b'\n']].concat();
    // Refused by the module without asking otpd, or sent and refused by
    // otpd as malformed (INVALID_ARGUMENT; never fails open); all notice.
    const TOO_LONG: (u8, &str) = (5, "answer longer than 512 bytes; refused");
    const EMPTY: (u8, &str) = (5, "no code entered; refused");
    const MALFORMED: (u8, &str) = (5, "malformed code (invalid code: ");
    let cases: Vec<(&str, Vec<u8>, (u8, &str))> = vec![
        ("10 KB of digits", line(vec![b'1'; 10 * 1024]), TOO_LONG),
        ("10 KB of letters", line(vec![b'x'; 10 * 1024]), TOO_LONG),
        ("513 digits", line(vec![b'7'; 513]), TOO_LONG),
        ("letters", line(b"abcdef".to_vec()), MALFORMED),
        ("digits and letters", line(b"12x456".to_vec()), MALFORMED),
        (
            "too many digits",
            line(b"1234567890123".to_vec()),
            MALFORMED,
        ),
        ("binary junk", line(junk), MALFORMED),
        ("empty line", line(Vec::new()), EMPTY),
        ("only whitespace", line(b" \t  ".to_vec()), EMPTY),
        ("end of input", Vec::new(), EMPTY),
    ];
    // A malformed code gets a hint: the same text for an enrolled user and
    // for one who is not (otpd checks the shape before the user).
    let not_a_code = format!(
        "{PROMPT}That is not a code: enter the 6 or 8 digits your authenticator app shows \
         (spaces are fine), or an 8-digit backup code.\npamtester: {AUTH_ERR}\n"
    );
    for (what, input, (priority, logged)) in &cases {
        let sees = if *logged == MALFORMED.1 {
            not_a_code.clone()
        } else {
            refused()
        };
        let out = svc.pamtester("ivan").stdin_bytes(input).run();
        assert_eq!(out.code(), Some(1), "{what}: {out}");
        out.assert_failure(AUTH_ERR)
            .assert_user_sees("", &sees)
            .assert_logged(*priority, &["user ivan: ", logged]);
        svc.pamtester("walter-not-enrolled")
            .stdin_bytes(input)
            .run()
            .assert_failure(AUTH_ERR)
            .assert_user_sees("", &sees);
        let text = String::from_utf8_lossy(input);
        let text = text.trim();
        if text.len() >= 6 {
            out.assert_not_logged(&[text]);
        }
    }

    // The daemon is still there, and a good code still works.
    let code = codes.fresh();
    svc.pamtester("ivan")
        .answer(&code)
        .run()
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PROMPT);
}

/// What sshd's password method does: an earlier module read the password
/// (PAM_AUTHTOK), and the code prompt is answered with the same password.
/// pam_otpd refuses it without sending it to otpd, and says why in the log
/// (err); a code after the password works as always.
#[test]
fn the_password_given_at_the_code_prompt_is_refused_and_never_sent_to_otpd() {
    require_root();
    let d = RealDaemon::start();
    let (mut codes, _) = d.enroll("olga");
    // pam_exec's expose_authtok asks for the password and sets PAM_AUTHTOK,
    // as pam_unix does.
    let svc = PamService::new(
        "otpd-password-as-code",
        &format!(
            "auth required pam_exec.so quiet expose_authtok /bin/true\n{}",
            otpd_line(&d.socket(), "")
        ),
    );
    svc.pamtester("olga")
        .answer("hunter2 x")
        .answer("hunter2 x")
        .run()
        .assert_failure(AUTH_ERR)
        .assert_logged(
            3,
            &[
                "user olga: the answer to the code prompt is the password an earlier module \
                 read (PAM_AUTHTOK), not sent to otpd; refused",
                "PasswordAuthentication no",
            ],
        )
        .assert_not_logged(&["hunter2"]);
    assert!(
        !d.log()
            .lines()
            .any(|l| l.contains("event=\"verify\"") && l.contains("olga")),
        "the password reached otpd:\n{}",
        d.log()
    );
    let code = codes.fresh();
    svc.pamtester("olga")
        .answer("hunter2 x")
        .answer(&code)
        .run()
        .assert_success();
}

#[test]
fn forward_pass_hands_the_password_to_the_next_module() {
    require_root();
    let d = RealDaemon::start();
    let (mut judy, _) = d.enroll("judy");
    let (mut ken, ken_backup) = d.enroll("ken");
    let tmp = shared_tempdir();
    // pam_exec writes PAM_AUTHTOK to the script's stdin; the script keeps
    // it for the test and succeeds only for the expected password.
    let check = script(
        tmp.path(),
        "check-authtok",
        r#"cat > "$1"
[ "$(tr -d '\000' < "$1")" = "$2" ]"#,
    );
    let got = tmp.path().join("authtok");
    let received = || {
        let t = std::fs::read(&got).unwrap();
        std::fs::remove_file(&got).unwrap();
        String::from_utf8(t.into_iter().filter(|&b| b != 0).collect()).unwrap()
    };
    let svc = PamService::new(
        "otpd-forward-pass",
        &format!(
            "{}\nauth required pam_exec.so quiet expose_authtok {} {} hunter2",
            otpd_line(&d.socket(), "forward_pass debug"),
            check.display(),
            got.display()
        ),
    );

    // Password and code in one answer: one prompt, both modules agree.
    let code = judy.fresh();
    svc.pamtester("judy")
        .item("rhost", RHOST)
        .answer(&format!("hunter2{code}"))
        .run()
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, COMBINED_PROMPT)
        .assert_logged(6, &["user judy: code accepted"])
        .assert_not_logged(&["hunter2", &code]);
    assert_eq!(received(), "hunter2");

    // A wrong code: refused, and the password is handed on all the same.
    let wrong = judy.wrong();
    svc.pamtester("judy")
        .answer(&format!("hunter2{wrong}"))
        .run()
        .assert_failure(AUTH_ERR)
        .assert_user_sees("", &format!("{COMBINED_PROMPT}pamtester: {AUTH_ERR}\n"))
        .assert_not_logged(&["hunter2", &wrong]);
    assert_eq!(received(), "hunter2");

    // The right code with a wrong password: the next module refuses
    // (pam_exec turns a failed command into PAM_SYSTEM_ERR).
    let code = ken.fresh();
    svc.pamtester("ken")
        .answer(&format!("hunter3{code}"))
        .run()
        .assert_failure(SYSTEM_ERR)
        .assert_user_sees("", &format!("{COMBINED_PROMPT}pamtester: {SYSTEM_ERR}\n"))
        .assert_logged(6, &["user ken: code accepted"])
        .assert_not_logged(&["hunter3", &code]);
    assert_eq!(received(), "hunter3");

    // A backup code after the password (the trailing 6 digits are tried
    // first, then the trailing 8).
    svc.pamtester("ken")
        .answer(&format!("hunter2{}", ken_backup[0]))
        .run()
        .assert_success()
        .assert_user_sees(
            &format!(
                "Backup code accepted; 9 left.\n{}\n{SUCCESS_LINE}",
                re_enroll("ken")
            ),
            COMBINED_PROMPT,
        )
        .assert_not_logged(&["hunter2", &ken_backup[0], &ken_backup[0][2..]]);
    assert_eq!(received(), "hunter2");
}

#[test]
fn an_untrusted_socket_fails_closed_even_with_fail_mode_open() {
    require_root();
    let d = RealDaemon::start();
    let (mut codes, _) = d.enroll("mallory");
    let tmp = shared_tempdir();
    // Refused before anything is sent (and before the prompt: the socket
    // is checked when connecting), so one code serves every case and still
    // works at the end.
    let code = codes.fresh();
    let expect_refused = |label: &str, socket: &std::path::Path, why: &str| {
        let svc = PamService::new(
            &format!("otpd-untrusted-{label}"),
            &then_permit(otpd_line(socket, "fail_mode=open")),
        );
        svc.pamtester("mallory")
            .answer(&code)
            .run()
            .assert_failure(AUTHINFO_UNAVAIL)
            .assert_user_sees(
                "",
                &format!("{UNAVAILABLE}\npamtester: {AUTHINFO_UNAVAIL}\n"),
            )
            .assert_logged(
                3,
                &[
                    &format!("refusing socket {}: {why}", socket.display()),
                    "refusing (PAM_AUTHINFO_UNAVAIL) whatever fail_mode says",
                ],
            )
            .assert_not_logged(&[&code]);
    };

    // A socket a local user could have made: bound by root here, then
    // handed to nobody.
    let nobody_sock = tmp.path().join("nobody.sock");
    let _listener = UnixListener::bind(&nobody_sock).unwrap();
    nix::unistd::chown(
        &nobody_sock,
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    expect_refused("owner", &nobody_sock, "owned by uid 65534, not root");

    // A symbolic link to the real socket.
    let link = tmp.path().join("link.sock");
    std::os::unix::fs::symlink(d.socket(), &link).unwrap();
    expect_refused("symlink", &link, "it is a symbolic link, not a socket");

    // A regular file.
    let file = tmp.path().join("file.sock");
    std::fs::write(&file, "").unwrap();
    expect_refused("file", &file, "not a socket");

    // A root-owned socket served by a process that is not root.
    let foreign = ForeignDaemon::start(tmp.path(), 65534, 65534);
    nix::unistd::chown(
        &foreign.socket,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(nix::unistd::Gid::from_raw(0)),
    )
    .unwrap();
    expect_refused(
        "peer",
        &foreign.socket,
        "the process listening on it runs as uid 65534, not root",
    );
    drop(foreign);

    // The real socket: the code was never used.
    PamService::new("otpd-untrusted-control", &otpd_line(&d.socket(), ""))
        .pamtester("mallory")
        .answer(&code)
        .run()
        .assert_success();
}

#[test]
fn a_code_from_a_device_with_a_wrong_clock_gets_a_hint() {
    require_root();
    let d = RealDaemon::start();
    let (codes, _) = d.enroll("oscar");
    let svc = PamService::new("otpd-skew", &otpd_line(&d.socket(), ""));
    // Three steps ahead (two if the step changes before otpd checks it).
    let skewed = codes.skewed(3);
    let out = svc.pamtester("oscar").answer(&skewed).run();
    out.assert_failure(AUTH_ERR)
        .assert_logged(5, &["user oscar: clock skew; refused"])
        .assert_not_logged(&[&skewed]);
    let seen = out.user_stderr();
    assert!(
        [90, 60].iter().any(|s| seen
            == format!(
                "{PROMPT}Wrong code: your authenticator's clock seems off by about {s} seconds \
                 (ahead); check the time on the device.\npamtester: {AUTH_ERR}\n"
            )),
        "{out}"
    );
}

/// The in-process daemon (a clock the test sets) with a blocking gRPC
/// client, for PAM tests that need more codes of one user than the real
/// clock hands out.
struct ClockedDaemon {
    // Dropped first: the connection closes before the daemon stops.
    client: pb::otpd_client::OtpdClient<tonic::transport::Channel>,
    rt: tokio::runtime::Runtime,
    d: otpd_tests::InProcess,
}

impl ClockedDaemon {
    fn start() -> Self {
        let d = otpd_tests::InProcess::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(d.client());
        Self { client, rt, d }
    }

    fn now(&self) -> u64 {
        use otpd::Clock;
        self.d.clock.now()
    }

    /// Moves the clock one 30-second step on.
    fn next_step(&self) -> u64 {
        self.d.clock.advance(30);
        self.now()
    }

    /// Enrolls `user`'s first device, named `device`, with a code of now.
    fn enroll(&self, user: &str, device: &str) -> otpd_tests::App {
        self.start_enrollment(user, device, false)
    }

    /// Adds `device` beside `user`'s active devices (what `otpctl device
    /// add` does), confirmed with a code of the new device at now.
    fn add_device(&self, user: &str, device: &str) -> otpd_tests::App {
        self.start_enrollment(user, device, true)
    }

    fn start_enrollment(&self, user: &str, device: &str, add: bool) -> otpd_tests::App {
        let mut c = self.client.clone();
        let started = self
            .rt
            .block_on(c.enroll_start(pb::EnrollStartRequest {
                user: user.as_bytes().to_vec().into(),
                device: device.into(),
                add_device: add,
                ..Default::default()
            }))
            .unwrap()
            .into_inner();
        assert_eq!(started.device, device);
        let app = otpd_tests::App::from_uri(&started.otpauth_uri);
        let confirmed = self
            .rt
            .block_on(c.enroll_confirm(pb::EnrollConfirmRequest {
                user: user.as_bytes().to_vec().into(),
                code: app.code_at(self.now()).into_bytes().into(),
            }))
            .unwrap()
            .into_inner();
        assert_eq!(
            (confirmed.device.as_str(), confirmed.added_device),
            (device, add)
        );
        // Adding a device keeps the backup codes: none are handed out.
        assert_eq!(confirmed.backup_codes.is_empty(), add);
        app
    }

    fn remove_device(&self, user: &str, device: &str) -> u32 {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.remove_device(pb::RemoveDeviceRequest {
                user: user.as_bytes().to_vec().into(),
                name: device.into(),
                allow_last: false,
                ..Default::default()
            }))
            .unwrap()
            .into_inner()
            .devices_left
    }

    fn status(&self, user: &str) -> pb::UserStatus {
        let mut c = self.client.clone();
        self.rt.block_on(otpd_tests::status(&mut c, user))
    }

    /// The device of the last accepted code, and when it was accepted.
    fn last_device(&self, user: &str) -> (String, i64) {
        let last = self.status(user).last_success.expect("a success recorded");
        assert_eq!(Method::try_from(last.method), Ok(Method::Totp));
        (last.device, last.time)
    }

    /// The names of `user`'s active devices.
    fn devices(&self, user: &str) -> Vec<String> {
        self.status(user)
            .devices
            .into_iter()
            .map(|d| d.name)
            .collect()
    }
}

/// Two devices through the PAM module: a code of either logs in, a used
/// code is refused on the device it belongs to only, and a removed device's
/// codes stop working at once while the other's keep working.
#[test]
fn a_user_with_two_devices_logs_in_with_either_and_a_removed_one_stops_working() {
    require_root();
    let d = ClockedDaemon::start();
    let phone = d.enroll("ivy", "phone");
    d.next_step();
    let tablet = d.add_device("ivy", "tablet");
    assert_eq!(d.devices("ivy"), ["phone", "tablet"]);
    let svc = PamService::new("otpd-devices", &otpd_line(d.d.socket(), "debug"));
    let login = |code: &str| svc.pamtester("ivy").item("rhost", RHOST).answer(code).run();

    // A current code of either device logs in, and the daemon says which.
    let t = d.next_step();
    let (p, tb) = (phone.code_at(t), tablet.code_at(t));
    assert_ne!(
        p, tb,
        "the devices' codes coincide at {t}: pick another step"
    );
    login(&p)
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PROMPT)
        .assert_logged(6, &["user ivy: code accepted"])
        .assert_not_logged(&[&p]);
    assert_eq!(d.last_device("ivy"), ("phone".to_owned(), t as i64));
    login(&tb)
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PROMPT)
        .assert_not_logged(&[&tb]);
    assert_eq!(d.last_device("ivy"), ("tablet".to_owned(), t as i64));

    // A tablet code used once is a replay; the phone's code of the same
    // step is unused (each device has its own watermark) and logs in.
    let t = d.next_step();
    let (p, tb) = (phone.code_at(t), tablet.code_at(t));
    assert_ne!(
        p, tb,
        "the devices' codes coincide at {t}: pick another step"
    );
    login(&tb).assert_success();
    login(&tb)
        .assert_failure(AUTH_ERR)
        .assert_user_sees("", &format!("{PROMPT}{REPLAYED}\npamtester: {AUTH_ERR}\n"))
        .assert_logged(5, &["user ivy: code already used; refused"])
        .assert_not_logged(&[&tb]);
    assert_eq!(d.last_device("ivy"), ("tablet".to_owned(), t as i64));
    login(&p)
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PROMPT);
    assert_eq!(d.last_device("ivy"), ("phone".to_owned(), t as i64));

    // The phone is removed: its codes are wrong codes from now on; the
    // tablet keeps working.
    assert_eq!(d.remove_device("ivy", "phone"), 1);
    assert_eq!(d.devices("ivy"), ["tablet"]);
    let t = d.next_step();
    let (p, tb) = (phone.code_at(t), tablet.code_at(t));
    let tablet_near: Vec<String> = (t - 300..=t + 300)
        .step_by(30)
        .map(|s| tablet.code_at(s))
        .collect();
    assert!(
        !tablet_near.contains(&p),
        "the phone's code at {t} is also a tablet code: pick another step"
    );
    login(&p)
        .assert_failure(AUTH_ERR)
        .assert_user_sees("", &refused())
        .assert_logged(5, &["user ivy: wrong code; refused"])
        .assert_not_logged(&[&p]);
    login(&tb)
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PROMPT)
        .assert_not_logged(&[&tb]);
    assert_eq!(d.last_device("ivy"), ("tablet".to_owned(), t as i64));
    let st = d.status("ivy");
    assert_eq!(
        (st.consecutive_failures, st.strangers_consecutive_failures),
        (0, 0),
        "{st:?}"
    );
}

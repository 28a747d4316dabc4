//! App passwords through the built `libpam_otpd.so` with real libpam
//! (pam_wrapper + pamtester) against the real `otpd` binary, in the PAM
//! stacks the README documents (*App passwords in PAM stacks*):
//!
//! * `dovecot`: only an app password issued for `dovecot` logs in; the
//!   account password alone, a code alone, an app password of another
//!   service or a revoked one never do; wrong app passwords count toward
//!   the lockout.
//! * `su`: an app password issued for `su` replaces password and code; an
//!   interactive user keeps password + code.
//!
//! `pam_unix.so use_first_pass` is played by `pam_exec.so expose_authtok`
//! with a script that accepts exactly "hunter2" (the test users are not
//! system accounts).
//!
//! Runs as root: the module trusts only a root-owned socket served by root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use otpd_proto::v1 as pb;
use otpd_tests::pam_env::*;
use otpd_tests::{connect, shared_tempdir};
use pb::{Method, State};

/// The account password the stand-in for pam_unix accepts.
const ACCOUNT_PASSWORD: &str = "hunter2";
/// pam_otpd's prompt on an `app_passwords_only` line.
const PASSWORD_PROMPT: &str = "Password: ";
/// `pam_strerror(PAM_SYSTEM_ERR)`: pam_exec's answer when its command
/// fails (a wrong account password here).
const SYSTEM_ERR: &str = "System error";

/// The first line of the documented Dovecot and su stacks.
fn app_passwords_only_line(socket: &Path, options: &str) -> String {
    format!(
        "auth [success=done ignore=ignore default=die] {} socket={} app_passwords_only {options}",
        pam_module().display(),
        socket.display()
    )
    .trim_end()
    .to_owned()
}

/// `/etc/pam.d/dovecot` as the README documents it.
fn dovecot_stack(socket: &Path) -> String {
    format!(
        "{}\nauth requisite pam_deny.so",
        app_passwords_only_line(socket, "debug")
    )
}

/// A stand-in for `pam_unix.so use_first_pass`: succeeds only when
/// PAM_AUTHTOK is [`ACCOUNT_PASSWORD`].
struct AccountPassword {
    _dir: tempfile::TempDir,
    script: PathBuf,
    seen: PathBuf,
}

impl AccountPassword {
    fn new() -> Self {
        let dir = shared_tempdir();
        let script = script(
            dir.path(),
            "check-account-password",
            r#"cat > "$1"
[ "$(tr -d '\000' < "$1")" = "$2" ]"#,
        );
        let seen = dir.path().join("authtok");
        Self {
            _dir: dir,
            script,
            seen,
        }
    }

    fn line(&self) -> String {
        format!(
            "auth required pam_exec.so quiet expose_authtok {} {} {ACCOUNT_PASSWORD}",
            self.script.display(),
            self.seen.display()
        )
    }

    /// What the module handed on in PAM_AUTHTOK (None: the line did not
    /// run).
    fn received(&self) -> Option<String> {
        let t = std::fs::read(&self.seen).ok()?;
        std::fs::remove_file(&self.seen).unwrap();
        Some(String::from_utf8(t.into_iter().filter(|&b| b != 0).collect()).unwrap())
    }
}

/// `/etc/pam.d/su` as the README documents it (after pam_rootok, which
/// pamtester as root would otherwise satisfy).
fn su_stack(socket: &Path, account: &AccountPassword) -> String {
    format!(
        "{}\n{}\n{}",
        app_passwords_only_line(socket, "debug"),
        account.line(),
        otpd_line(socket, "nullok")
    )
}

/// The admin side (root): issues and revokes app passwords.
struct Admin {
    client: pb::otpd_client::OtpdClient<tonic::transport::Channel>,
    rt: tokio::runtime::Runtime,
}

impl Admin {
    fn new(d: &RealDaemon) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(connect(&d.socket()));
        Self { client, rt }
    }

    /// `AddAppPassword`: the password (shown once) and its id.
    fn add(&self, user: &str, service: &str) -> (String, String) {
        let request = pb::AddAppPasswordRequest {
            user: user.as_bytes().to_vec().into(),
            service: service.into(),
            label: "test client".into(),
            expires_in_seconds: 0,
            ..Default::default()
        };
        let mut c = self.client.clone();
        let reply = self
            .rt
            .block_on(c.add_app_password(request))
            .expect("AddAppPassword (needs otpd with app passwords)")
            .into_inner();
        let id = reply.app_password.expect("app_password in the reply").id;
        assert!(reply.password.starts_with(&id), "the id is the first group");
        (reply.password, id)
    }

    /// `RevokeAppPassword`.
    fn revoke(&self, user: &str, id: &str) {
        let request = pb::RevokeAppPasswordRequest {
            user: user.as_bytes().to_vec().into(),
            id: id.into(),
            ..Default::default()
        };
        let mut c = self.client.clone();
        self.rt
            .block_on(c.revoke_app_password(request))
            .expect("RevokeAppPassword");
    }
}

/// A well-formed app password that otpd never issued.
fn made_up(n: u32) -> String {
    let s = format!("{n:024}");
    s.as_bytes()
        .chunks(4)
        .map(|g| std::str::from_utf8(g).unwrap())
        .collect::<Vec<_>>()
        .join("-")
}

// ---------------------------------------------------------------------
// Runnable without app passwords in otpd: nothing shaped reaches otpd.
// ---------------------------------------------------------------------

#[test]
fn dovecot_refuses_the_account_password_and_a_code_without_asking_otpd() {
    require_root();
    let d = RealDaemon::start();
    let (mut codes, backup) = d.enroll("anna");
    let svc = PamService::new("dovecot", &dovecot_stack(&d.socket()));

    for (what, typed) in [
        ("account password", ACCOUNT_PASSWORD.to_owned()),
        ("code", codes.fresh()),
        ("backup code", backup[0].clone()),
        ("nothing", String::new()),
    ] {
        svc.pamtester("anna")
            .answer(&typed)
            .run()
            .assert_failure(AUTH_ERR)
            .assert_user_sees("", &format!("{PASSWORD_PROMPT}pamtester: {AUTH_ERR}\n"))
            .assert_logged(7, &["user anna: not an app password; app_passwords_only"]);
        let _ = what;
    }
    // Nothing was sent: no failure counted, the code and the backup code
    // are unused.
    let st = d.status("anna");
    assert_eq!(
        (st.consecutive_failures, st.strangers_consecutive_failures),
        (0, 0)
    );
    assert!(st.last_success.is_none());
    assert_eq!(st.backup_codes_left, 10);
}

#[test]
fn su_keeps_password_and_code_for_interactive_users() {
    require_root();
    let d = RealDaemon::start();
    let (mut codes, _) = d.enroll("bert");
    let account = AccountPassword::new();
    let svc = PamService::new("su", &su_stack(&d.socket(), &account));
    let both_prompts = format!("{PASSWORD_PROMPT}{PROMPT}");

    // Password, then code: in.
    let code = codes.fresh();
    svc.pamtester("bert")
        .answer(ACCOUNT_PASSWORD)
        .answer(&code)
        .run()
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, &both_prompts)
        .assert_logged(6, &["user bert: code accepted"])
        .assert_not_logged(&[ACCOUNT_PASSWORD, &code]);
    // The account password went on exactly as typed.
    assert_eq!(account.received().as_deref(), Some(ACCOUNT_PASSWORD));

    // The password alone: the code line refuses.
    let wrong = codes.wrong();
    svc.pamtester("bert")
        .answer(ACCOUNT_PASSWORD)
        .answer(&wrong)
        .run()
        .assert_failure(AUTH_ERR)
        .assert_user_sees("", &format!("{both_prompts}pamtester: {AUTH_ERR}\n"));
    assert_eq!(account.received().as_deref(), Some(ACCOUNT_PASSWORD));

    // A code alone at the password prompt is not sent to otpd there: the
    // account password check fails, and the code line still asks (and
    // refuses a wrong code). (Another user: two fresh codes per user.)
    let (mut bea, _) = d.enroll("bea");
    let code = bea.fresh();
    let wrong = bea.wrong();
    svc.pamtester("bea")
        .answer(&code)
        .answer(&wrong)
        .run()
        .assert_failure(SYSTEM_ERR)
        .assert_user_sees("", &format!("{both_prompts}pamtester: {SYSTEM_ERR}\n"))
        .assert_not_logged(&[&code]);
    assert_eq!(account.received().as_deref(), Some(code.as_str()));
    // The code typed at the password prompt was never used.
    assert!(d.status("bea").last_success.is_none());
    assert_eq!(d.status("bea").consecutive_failures, 1);

    // A user without enrollment (nullok on the code line): the account
    // password alone, as before.
    svc.pamtester("not-enrolled")
        .answer(ACCOUNT_PASSWORD)
        .run()
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PASSWORD_PROMPT);
}

#[test]
fn a_made_up_app_password_is_sent_whole_and_refused() {
    require_root();
    let d = RealDaemon::start();
    let (_codes, _) = d.enroll("cleo");
    let svc = PamService::new("dovecot", &dovecot_stack(&d.socket()));
    let fake = made_up(42);
    svc.pamtester("cleo")
        .answer(&fake)
        .run()
        .assert_failure(AUTH_ERR)
        .assert_user_sees("", &format!("{PASSWORD_PROMPT}pamtester: {AUTH_ERR}\n"))
        .assert_not_logged(&[&fake, &fake[5..]]);
}

// ---------------------------------------------------------------------
// Need otpd's AddAppPassword / RevokeAppPassword and app passwords in
// Verify.
// ---------------------------------------------------------------------

#[test]
fn dovecot_accepts_an_app_password_issued_for_dovecot_only() {
    require_root();
    let d = RealDaemon::start();
    let _ = d.enroll("dora");
    let admin = Admin::new(&d);
    let (password, id) = admin.add("dora", "dovecot");
    let dovecot = PamService::new("dovecot", &dovecot_stack(&d.socket()));

    // As printed, in upper case, with spaces, without separators.
    let compact: String = password.chars().filter(|c| *c != '-').collect();
    for typed in [
        password.clone(),
        password.to_uppercase(),
        password.replace('-', " "),
        compact.clone(),
    ] {
        dovecot
            .pamtester("dora")
            .item("rhost", "192.0.2.1")
            .answer(&typed)
            .run()
            .assert_success()
            .assert_user_sees(SUCCESS_LINE, PASSWORD_PROMPT)
            .assert_logged(6, &[&format!("user dora: app password {id} accepted")])
            .assert_not_logged(&[&password, &compact, &password[5..]]);
    }
    let st = d.status("dora");
    let last = st.last_success.expect("recorded");
    assert_eq!(
        (last.service.as_str(), Method::try_from(last.method)),
        ("dovecot", Ok(Method::AppPassword))
    );

    // The same password on another service, even one whose line allows
    // app passwords: refused.
    let sshd = PamService::new("sshd", &otpd_line(&d.socket(), "app_passwords"));
    sshd.pamtester("dora")
        .answer(&password)
        .run()
        .assert_failure(AUTH_ERR)
        .assert_not_logged(&[&password]);
    let sshd_only = PamService::new("sshd", &dovecot_stack(&d.socket()));
    sshd_only
        .pamtester("dora")
        .answer(&password)
        .run()
        .assert_failure(AUTH_ERR);

    // The dovecot service without the option: sent as a code, refused.
    let plain = PamService::new("dovecot", &otpd_line(&d.socket(), ""));
    plain
        .pamtester("dora")
        .answer(&password)
        .run()
        .assert_failure(AUTH_ERR)
        .assert_not_logged(&[&password]);

    // Still good on dovecot.
    dovecot
        .pamtester("dora")
        .answer(&password)
        .run()
        .assert_success();
}

#[test]
fn a_revoked_app_password_is_refused() {
    require_root();
    let d = RealDaemon::start();
    let _ = d.enroll("emil");
    let admin = Admin::new(&d);
    let (password, id) = admin.add("emil", "dovecot");
    let (other, _) = admin.add("emil", "dovecot");
    let svc = PamService::new("dovecot", &dovecot_stack(&d.socket()));
    svc.pamtester("emil")
        .answer(&password)
        .run()
        .assert_success();

    admin.revoke("emil", &id);
    svc.pamtester("emil")
        .answer(&password)
        .run()
        .assert_failure(AUTH_ERR)
        .assert_logged(5, &["user emil: wrong app password; refused"])
        .assert_not_logged(&[&password]);
    // The other one is untouched.
    svc.pamtester("emil").answer(&other).run().assert_success();
}

#[test]
fn su_from_a_script_with_an_app_password_for_su() {
    require_root();
    let d = RealDaemon::start();
    let _ = d.enroll("fred");
    let admin = Admin::new(&d);
    let (for_su, _) = admin.add("fred", "su");
    let (for_dovecot, _) = admin.add("fred", "dovecot");
    let account = AccountPassword::new();
    let svc = PamService::new("su", &su_stack(&d.socket(), &account));

    // One prompt; the account password line and the code line never run.
    svc.pamtester("fred")
        .answer(&for_su)
        .run()
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PASSWORD_PROMPT)
        .assert_not_logged(&[&for_su]);
    assert_eq!(account.received(), None);

    // An app password of another service ends the stack at once.
    svc.pamtester("fred")
        .answer(&for_dovecot)
        .run()
        .assert_failure(AUTH_ERR)
        .assert_user_sees("", &format!("{PASSWORD_PROMPT}pamtester: {AUTH_ERR}\n"));
    assert_eq!(account.received(), None);
}

#[test]
fn wrong_app_passwords_count_toward_the_lockout() {
    require_root();
    // Keep the throttle out of the way of the lockout (as in pam.rs).
    let d = RealDaemon::start_with_config("[rate_limit]\nmax_failures = 100\n");
    let _ = d.enroll("gina");
    let admin = Admin::new(&d);
    let (password, _) = admin.add("gina", "dovecot");
    let svc = PamService::new("dovecot", &dovecot_stack(&d.socket()));

    let mut failures = 0;
    while State::try_from(d.status("gina").state) != Ok(State::Locked) {
        failures += 1;
        assert!(
            failures <= 20,
            "no lockout after {failures} wrong app passwords"
        );
        svc.pamtester("gina")
            .answer(&made_up(failures))
            .run()
            .assert_failure(AUTH_ERR);
        assert_eq!(d.status("gina").consecutive_failures, failures);
    }
    // Locked: the right app password is not even checked.
    let out = svc.pamtester("gina").answer(&password).run();
    out.assert_failure(AUTH_ERR)
        .assert_logged(5, &["user gina: locked out (retry after "])
        .assert_not_logged(&[&password]);
    assert!(
        out.user_stderr()
            .contains("Locked after too many failed attempts; try again in"),
        "{out}"
    );
    d.unlock("gina");
    svc.pamtester("gina")
        .answer(&password)
        .run()
        .assert_success();
}

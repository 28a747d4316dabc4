//! Logins through a real sshd on 127.0.0.1 whose PAM service stacks
//! pam_otpd, against the built otpd binary, with a scripted
//! keyboard-interactive client (tests/ssh/client.py, paramiko).
//!
//! Each test has its own daemon, user, sshd and PAM service, all removed
//! afterwards. Real clock: a user gets at most two fresh TOTP codes at any
//! moment (see `Codes`), so no test needs more. Root only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use otpd_proto::v1 as pb;
use otpd_tests::sshd::{Codes, Login, Methods, Outcome, Sshd, Sudo, User};
use otpd_tests::*;
use pb::otpd_client::OtpdClient;
use tonic::transport::Channel;

/// A daemon, a user enrolled in it and an sshd for the user. Fields drop in
/// order: sshd first (no session left), then the user, then the daemon.
struct Rig {
    sshd: Sshd,
    user: User,
    daemon: Process,
    client: OtpdClient<Channel>,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// With the daemon's default configuration.
    async fn start(methods: Methods) -> (Self, Codes, Vec<String>) {
        Self::start_with(methods, "").await
    }

    /// With `otpd_toml` as the daemon's configuration.
    async fn start_with(methods: Methods, otpd_toml: &str) -> (Self, Codes, Vec<String>) {
        sshd::require_root_and_sshd();
        let dir = shared_tempdir();
        std::fs::write(dir.path().join("otpd.toml"), otpd_toml).unwrap();
        let daemon = Process::start(dir.path());
        let mut client = connect(&daemon.socket).await;
        let user = User::create();
        let (codes, backup) = Codes::enroll(&mut client, &user.name).await;
        // The PAM line uses the root-only PAM socket, as a real install does.
        let sshd = Sshd::start(methods, &daemon.pam_socket, &user);
        let rig = Self {
            sshd,
            user,
            daemon,
            client,
            _dir: dir,
        };
        (rig, codes, backup)
    }

    /// Logs the user in, answering the code prompt with `code`.
    fn login(&self, code: &str) -> Login {
        // The client is a process: don't hold up the runtime meanwhile.
        tokio::task::block_in_place(|| self.sshd.login(&self.user, code))
    }

    fn name(&self) -> &str {
        &self.user.name
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- otpd log ----\n{}---- end of otpd log ----",
                self.daemon.stderr()
            );
        }
    }
}

const PASSWORD_THEN_CODE: [&str; 2] = ["Password:", "Verification code:"];

/// The user logged in from 127.0.0.1 before; an attacker at 127.0.0.2
/// locks only itself out, and the user still logs in from 127.0.0.1.
#[tokio::test(flavor = "multi_thread")]
async fn an_attacker_from_another_host_locks_itself_out_not_the_user() {
    // Eight checked failures lock; keep the throttle out of the way.
    let (mut rig, mut codes, backup) = Rig::start_with(
        Methods::PasswordAndCode,
        "[rate_limit]\nmax_failures = 20\n",
    )
    .await;
    let name = rig.name().to_owned();
    let home = std::net::Ipv4Addr::new(127, 0, 0, 1);
    let attacker = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let from = |source, code: &str| {
        tokio::task::block_in_place(|| rig.sshd.login_from(source, &rig.user, code))
    };
    from(home, &backup[0]).expect(Outcome::LoggedIn);

    for _ in 0..8 {
        let login = from(attacker, &codes.wrong());
        login.expect(Outcome::AuthFailed);
        assert_eq!(login.prompts(), PASSWORD_THEN_CODE, "{login}");
    }
    // Locked: even the right code is refused from there, unchecked.
    let code = codes.fresh();
    let login = from(attacker, &code);
    login.expect(Outcome::AuthFailed);
    assert_eq!(
        login.messages(),
        [
            "Locked after too many failed attempts; try again in 15 min, or ask your administrator to unlock."
        ],
        "{login}"
    );
    let s = status(&mut rig.client, &name).await;
    assert_eq!(pb::State::try_from(s.state), Ok(pb::State::Active), "{s:?}");
    assert_eq!(
        (s.consecutive_failures, s.strangers_consecutive_failures),
        (0, 8),
        "{s:?}"
    );
    assert!(s.strangers_locked_until > 0, "{s:?}");

    // The user, from the host she logged in from before, gets in.
    let login = from(home, &code);
    login.expect(Outcome::LoggedIn);
    assert_eq!(login.output(), [name.as_str()], "{login}");
}

#[tokio::test(flavor = "multi_thread")]
async fn password_and_current_code_log_in_and_the_code_works_only_once() {
    let (rig, mut codes, _) = Rig::start(Methods::PasswordAndCode).await;
    let code = codes.fresh();

    let login = rig.login(&code);
    login.expect(Outcome::LoggedIn);
    assert_eq!(login.prompts(), PASSWORD_THEN_CODE, "{login}");
    assert_eq!(login.output(), [rig.name()], "{login}");
    assert_eq!(login.messages(), [] as [&str; 0], "{login}");

    let again = rig.login(&code);
    again.expect(Outcome::AuthFailed);
    assert_eq!(again.prompts(), PASSWORD_THEN_CODE, "{again}");
    assert_eq!(
        again.messages(),
        ["This code has already been used; wait for the next one."],
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_code_is_refused_and_so_is_a_right_code_after_a_wrong_password() {
    let (mut rig, mut codes, _) = Rig::start(Methods::PasswordAndCode).await;

    let login = rig.login(&codes.wrong());
    login.expect(Outcome::AuthFailed);
    assert_eq!(login.prompts(), PASSWORD_THEN_CODE, "{login}");
    assert_eq!(login.output(), [] as [&str; 0], "{login}");

    // pam_unix fails; pam_otpd still asks (`required`, not `requisite`, so
    // the prompts reveal nothing) and otpd accepts the code (the failure
    // count is back to 0), but the stack refuses.
    let code = codes.fresh();
    let login = tokio::task::block_in_place(|| {
        rig.sshd
            .login_with_password(&rig.user, "not-the-password", &code)
    });
    login.expect(Outcome::AuthFailed);
    assert_eq!(login.prompts(), PASSWORD_THEN_CODE, "{login}");
    assert_eq!(login.output(), [] as [&str; 0], "{login}");
    let name = rig.name().to_owned();
    let s = status(&mut rig.client, &name).await;
    assert_eq!(s.consecutive_failures, 0, "{s:?}");
    assert_eq!(s.strangers_consecutive_failures, 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_code_logs_in_once_and_tells_how_many_are_left() {
    let (rig, _, backup) = Rig::start(Methods::PasswordAndCode).await;

    let login = rig.login(&backup[0]);
    login.expect(Outcome::LoggedIn);
    assert_eq!(login.prompts(), PASSWORD_THEN_CODE, "{login}");
    assert_eq!(login.output(), [rig.name()], "{login}");
    assert_eq!(
        login.messages(),
        [
            "Backup code accepted; 9 left.".to_owned(),
            format!(
                "If you used a backup code because your device is lost or broken, have a new \
                 one enrolled now: ask your administrator (otpctl enroll {}).",
                rig.name()
            )
        ],
        "{login}"
    );

    // Used up: now just a wrong code.
    let again = rig.login(&backup[0]);
    again.expect(Outcome::AuthFailed);
    assert_eq!(again.prompts(), PASSWORD_THEN_CODE, "{again}");
    assert_eq!(again.messages(), [] as [&str; 0], "{again}");
    assert_eq!(again.output(), [] as [&str; 0], "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_user_is_refused_even_with_the_right_code() {
    // Eight failures in a row lock; the throttle (5 a minute by default)
    // would refuse the last three unchecked, so they would not count.
    let (mut rig, mut codes, _) = Rig::start_with(
        Methods::PasswordAndCode,
        "[rate_limit]\nmax_failures = 20\n",
    )
    .await;
    let name = rig.name().to_owned();
    for _ in 0..8 {
        let r = verify(&mut rig.client, &name, &codes.wrong()).await;
        assert_eq!(
            pb::Decision::try_from(r.decision),
            Ok(pb::Decision::Rejected)
        );
    }
    // (From a host that never logged in as the user, like 127.0.0.1 here.)
    let s = status(&mut rig.client, &name).await;
    assert!(
        s.strangers_consecutive_failures == 8 && s.strangers_locked_until > 0,
        "not locked: {s:?}"
    );

    let code = codes.fresh();
    let login = rig.login(&code);
    login.expect(Outcome::AuthFailed);
    assert_eq!(login.prompts(), PASSWORD_THEN_CODE, "{login}");
    assert_eq!(
        login.messages(),
        [
            "Locked after too many failed attempts; try again in 15 min, or ask your administrator to unlock."
        ],
        "{login}"
    );

    // The lock refused the code unchecked: it is still unused.
    rig.client
        .unlock(pb::UnlockRequest {
            user: name.as_bytes().to_vec().into(),
        })
        .await
        .unwrap();
    let login = rig.login(&code);
    login.expect(Outcome::LoggedIn);
    assert_eq!(login.output(), [name.as_str()], "{login}");
}

#[tokio::test(flavor = "multi_thread")]
async fn key_then_code_logs_in_and_a_wrong_code_fails() {
    let (rig, mut codes, _) = Rig::start(Methods::KeyAndCode).await;

    let login = rig.login(&codes.wrong());
    login.expect(Outcome::AuthFailed);
    assert_eq!(login.prompts(), ["Verification code:"], "{login}");

    let login = rig.login(&codes.fresh());
    login.expect(Outcome::LoggedIn);
    // Only the code: the key replaced the password.
    assert_eq!(login.prompts(), ["Verification code:"], "{login}");
    assert_eq!(login.output(), [rig.name()], "{login}");
}

/// A second device added after the first (`otpctl device add`: EnrollStart
/// with `add_device`, confirmed with a code of the new device) logs in
/// through sshd, and otpd records which device it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_code_from_a_second_device_logs_in_through_sshd() {
    let (mut rig, _, _) = Rig::start(Methods::PasswordAndCode).await;
    let name = rig.name().to_owned();
    let started = rig
        .client
        .enroll_start(pb::EnrollStartRequest {
            user: name.as_bytes().to_vec().into(),
            device: "tablet".into(),
            add_device: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // A device of its own: the tablet's step budget is its own too.
    let mut tablet = Codes::new(App::from_uri(&started.otpauth_uri));
    let confirmed = rig
        .client
        .enroll_confirm(pb::EnrollConfirmRequest {
            user: name.as_bytes().to_vec().into(),
            code: tablet.fresh().into_bytes().into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (confirmed.device.as_str(), confirmed.added_device),
        ("tablet", true)
    );
    let s = status(&mut rig.client, &name).await;
    let devices: Vec<&str> = s.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(devices, ["default", "tablet"], "{s:?}");

    let login = rig.login(&tablet.fresh());
    login.expect(Outcome::LoggedIn);
    assert_eq!(login.prompts(), PASSWORD_THEN_CODE, "{login}");
    assert_eq!(login.output(), [name.as_str()], "{login}");

    let last = status(&mut rig.client, &name)
        .await
        .last_success
        .expect("the login is recorded");
    assert_eq!(
        (pb::Method::try_from(last.method), last.device.as_str()),
        (Ok(pb::Method::Totp), "tablet"),
        "{last:?}"
    );
}

/// A user moved over from pam_oath (`otpctl import pam-oath` sends this
/// ImportDevice) logs in through sshd with the code `oathtool` shows for
/// the same key, and the old device is gone.
#[tokio::test(flavor = "multi_thread")]
async fn an_imported_device_logs_in_through_sshd_with_an_oathtool_code() {
    const KEY_HEX: &str = "3132333435363738393031323334353637383930";
    let (mut rig, _, _) = Rig::start(Methods::PasswordAndCode).await;
    let name = rig.name().to_owned();
    let r = rig
        .client
        .import_device(pb::ImportDeviceRequest {
            user: name.as_bytes().to_vec().into(),
            device: "oath-token".into(),
            secret: b"12345678901234567890".to_vec().into(),
            replace: true,
            source: "/etc/users.oath:2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.replaced, "{r:?}");
    // A code otpd accepts for at least 10 more seconds: this step's, or
    // the next one's near the end of a step (the window is ±1 step).
    let now = unix_now();
    let t = if now % 30 < 20 { now } else { now + 30 };
    let out = std::process::Command::new("oathtool")
        .args(["--totp", &format!("--now=@{t}"), KEY_HEX])
        .output()
        .expect("oathtool (Debian package oathtool) must be installed");
    assert!(out.status.success(), "{out:?}");
    let code = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let login = rig.login(&code);
    login.expect(Outcome::LoggedIn);
    assert_eq!(login.output(), [name.as_str()], "{login}");
    let s = status(&mut rig.client, &name).await;
    let devices: Vec<&str> = s.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(devices, ["oath-token"], "{s:?}");
}

/// `[grace]` bound to the login session (the default match): after an SSH
/// login with a code, `sudo` inside that SSH session passes without a
/// second code, while the same user's `sudo` outside it (another session
/// on the machine, same time) still needs one. sshd reports the client's
/// address and `ssh` at the login, sudo no remote host and its terminal:
/// only the process tree ties the two together.
#[tokio::test(flavor = "multi_thread")]
async fn sudo_inside_the_ssh_session_needs_no_second_code_and_outside_it_does() {
    let service = Sudo::service_name();
    let toml = format!("[grace]\nseconds = 300\nservices = [\"{service}\"]\n");
    let (rig, mut codes, _) = Rig::start_with(Methods::KeyAndCode, &toml).await;
    let sudo = Sudo::install(
        &service,
        &rig.user,
        &format!(
            "auth required {} socket={} grace",
            built("libpam_otpd.so").display(),
            rig.daemon.pam_socket.display()
        ),
    );
    // `sudo -n` fails at any prompt: it passes only without a code.
    let outside = || {
        std::process::Command::new("runuser")
            .args([
                "-u",
                rig.name(),
                "--",
                "/usr/bin/sudo",
                "-n",
                "/usr/bin/true",
            ])
            .output()
            .unwrap()
    };
    assert!(!outside().status.success(), "sudo before any login");

    let login = tokio::task::block_in_place(|| {
        rig.sshd.login_running(
            &rig.user,
            &codes.fresh(),
            "/usr/bin/sudo -n /usr/bin/true && echo sudo-ok; /usr/bin/sudo -n /usr/bin/true && echo again-ok",
        )
    });
    login.expect(Outcome::LoggedIn);
    assert_eq!(login.output(), ["sudo-ok", "again-ok"], "{login}");

    let out = outside();
    assert!(
        !out.status.success(),
        "sudo outside the SSH session passed without a code: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = rig.daemon.stderr();
    let graces = log
        .lines()
        .filter(|l| l.contains(&sudo.service) && l.contains("grace"))
        .count();
    assert!(graces >= 2, "two sudo runs accepted by grace:\n{log}");
}

/// The README's key + code stack with `nullok` (the rollout setup):
/// a user who has not enrolled logs in with the key alone; once enrolled,
/// a wrong code is refused and the right one logs in; with otpd stopped
/// (`fail_mode=closed`, the default), the key alone does not.
/// Before `pam_permit.so` was in the README's lines, pam_otpd's
/// `PAM_IGNORE` was the stack's only result and libpam refused the user
/// who had not enrolled.
#[tokio::test(flavor = "multi_thread")]
async fn key_and_code_with_nullok_lets_an_unenrolled_user_in_with_the_key() {
    sshd::require_root_and_sshd();
    let dir = shared_tempdir();
    std::fs::write(dir.path().join("otpd.toml"), "").unwrap();
    let daemon = Process::start(dir.path());
    let mut client = connect(&daemon.socket).await;
    let user = User::create();
    let sshd = Sshd::start_with_options(Methods::KeyAndCode, &daemon.pam_socket, &user, "nullok");
    let login = |code: &str| tokio::task::block_in_place(|| sshd.login(&user, code));

    let login_unenrolled = login("000000");
    login_unenrolled.expect(Outcome::LoggedInWithoutCode);
    assert_eq!(
        login_unenrolled.prompts(),
        [] as [&str; 0],
        "{login_unenrolled}"
    );
    assert_eq!(
        login_unenrolled.output(),
        [user.name.as_str()],
        "{login_unenrolled}"
    );

    let (mut codes, _) = Codes::enroll(&mut client, &user.name).await;
    let wrong = login(&codes.wrong());
    wrong.expect(Outcome::AuthFailed);
    assert_eq!(wrong.prompts(), ["Verification code:"], "{wrong}");
    assert_eq!(wrong.output(), [] as [&str; 0], "{wrong}");

    let right = login(&codes.fresh());
    right.expect(Outcome::LoggedIn);
    assert_eq!(right.prompts(), ["Verification code:"], "{right}");
    assert_eq!(right.output(), [user.name.as_str()], "{right}");

    // otpd stopped: fail_mode=closed refuses, the key alone is not enough.
    drop(client);
    daemon.stop();
    // (nullok asks otpd about the user before prompting: no prompt.)
    let down = login(&codes.wrong());
    down.expect(Outcome::NoCodePrompt);
    assert_eq!(down.output(), [] as [&str; 0], "{down}");
    drop(sshd);
}

/// The README's trap, reproduced: `PasswordAuthentication yes` without
/// `AuthenticationMethods` and the password + code stack. A client using
/// SSH's password method with the right password is refused ("Failed
/// password"), because sshd answers pam_otpd's code prompt with the
/// password too; and the password is not sent to otpd as a code.
#[tokio::test(flavor = "multi_thread")]
async fn the_password_method_runs_the_code_prompt_with_the_password_and_fails() {
    let (rig, _, _) = Rig::start(Methods::PasswordMethod).await;
    let login = rig.login("unused");
    login.expect(Outcome::NoCodePrompt);
    assert_eq!(login.output(), [] as [&str; 0], "{login}");
    let sshd_log = rig.sshd.log();
    assert!(
        sshd_log.contains(&format!("Failed password for {}", rig.name())),
        "{sshd_log}"
    );
    let otpd_log = rig.daemon.stderr();
    assert!(
        !otpd_log
            .lines()
            .any(|l| l.contains("event=\"verify\"") && l.contains(rig.name())),
        "the password reached otpd as a code:\n{otpd_log}"
    );
}

//! The enforcement policy (`[enforcement]` in otpd.toml): who must use a
//! second factor, decided by otpd from the user's groups in the name
//! service, not by the PAM line. Real groups and accounts (groupadd,
//! useradd, usermod; removed afterwards), the built `otpd` binary and
//! `libpam_otpd.so` through pam_wrapper and pamtester, `otpctl status`, and
//! the in-process daemon with a manual clock for the daily reminder.
//!
//! Runs as root (accounts are created).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use otpd::ManualClock;
use otpd::clock::Clock;
use otpd::config::EnforcementSection;
use otpd::enforcement::Require;
use otpd_tests::pam_env::*;
use otpd_tests::{InProcess, T0, built, config_in, shared_tempdir};

const CONTACT: &str = "the help desk (ext. 4242)";

/// A group and four accounts, unique to one test, removed on drop:
/// `member` (a supplementary member), `outsider`, `exempt` (a member listed
/// in exempt_users) and `robot` (a member of the exempt group too).
struct Accounts {
    group: String,
    robots: String,
    member: String,
    outsider: String,
    exempt: String,
    robot: String,
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Accounts {
    fn create(tag: &str) -> Self {
        let id = format!("{tag}{}", std::process::id() % 100_000);
        let a = Self {
            group: format!("oeg{id}"),
            robots: format!("oer{id}"),
            member: format!("oem{id}"),
            outsider: format!("oeo{id}"),
            exempt: format!("oex{id}"),
            robot: format!("oeb{id}"),
        };
        a.remove();
        run("groupadd", &[&a.group]);
        run("groupadd", &[&a.robots]);
        for user in [&a.member, &a.outsider, &a.exempt, &a.robot] {
            run("useradd", &["-M", "-N", "-s", "/bin/sh", user]);
        }
        for user in [&a.member, &a.exempt, &a.robot] {
            run("usermod", &["-a", "-G", &a.group, user]);
        }
        run("usermod", &["-a", "-G", &a.robots, &a.robot]);
        a
    }

    fn remove(&self) {
        for user in [&self.member, &self.outsider, &self.exempt, &self.robot] {
            let _ = Command::new("userdel").arg(user).output();
        }
        for group in [&self.group, &self.robots] {
            let _ = Command::new("groupdel").arg(group).output();
        }
    }

    /// The `[enforcement]` section for this group, with `deadline`.
    fn toml(&self, deadline: &str) -> String {
        format!(
            "[enforcement]\nrequire = \"groups\"\ngroups = [\"{}\"]\nexempt_users = [\"{}\"]\n\
             exempt_groups = [\"{}\"]\ndeadline = \"{deadline}\"\ncontact = \"{CONTACT}\"\n",
            self.group, self.exempt, self.robots
        )
    }

    fn section(&self, deadline: &str) -> EnforcementSection {
        EnforcementSection {
            require: Require::Groups,
            groups: vec![self.group.clone()],
            exempt_users: vec![self.exempt.clone()],
            exempt_groups: vec![self.robots.clone()],
            deadline: deadline.to_owned(),
            contact: CONTACT.to_owned(),
            recovery_nudge_hours: 24,
            ..EnforcementSection::default()
        }
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A stack of pam_otpd followed by `auth optional pam_permit.so`: a
/// `PAM_IGNORE` from pam_otpd lets the password alone log in.
fn then_permit(otpd: String) -> String {
    format!("{otpd}\nauth optional pam_permit.so")
}

fn due(date: &str) -> String {
    // Self-enrollment is off by default: the reminder names the contact.
    format!("Two-factor authentication is required from {date}. Ask {CONTACT} to enroll you.\n")
}

fn otpctl(socket: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(built("otpctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("OTPD_SOCKET")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn before_the_deadline_a_member_without_a_device_is_told_each_time_and_logs_in_with_nullok() {
    require_root();
    let a = Accounts::create("d");
    let d = RealDaemon::start_with_config(&a.toml("2099-01-01"));
    let svc = PamService::new(
        "otpd-enf-due",
        &then_permit(otpd_line(&d.socket(), "nullok")),
    );

    for _ in 0..2 {
        svc.pamtester(&a.member)
            .run()
            .assert_success()
            .assert_user_sees(&format!("{}{SUCCESS_LINE}", due("2099-01-01")), "");
    }
    // Not covered: the outsider, the exempt user, the exempt group's
    // member: as before, nothing said.
    for user in [&a.outsider, &a.exempt, &a.robot] {
        svc.pamtester(user)
            .run()
            .assert_success()
            .assert_user_sees(SUCCESS_LINE, "");
    }

    let st = d.status(&a.member);
    let e = st.enforcement.expect("enforcement in GetStatus");
    assert!(e.must_enroll && !e.refused);
    assert_eq!(e.deadline_date, "2099-01-01");
    assert!(!d.status(&a.outsider).enforcement.unwrap().must_enroll);

    // An enrolled member is asked for a code as always.
    let (mut codes, _) = d.enroll(&a.member);
    svc.pamtester(&a.member)
        .answer(&codes.fresh())
        .run()
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PROMPT);
}

#[test]
fn after_the_deadline_such_a_user_is_refused_with_what_to_do_even_with_nullok() {
    require_root();
    let a = Accounts::create("o");
    let d = RealDaemon::start_with_config(&a.toml("2020-01-01"));
    let refused = format!(
        "Login refused: two-factor authentication is required since 2020-01-01 and none \
         is set up for {0}. Ask {CONTACT} to enroll you (otpctl enroll {0}), then log in \
         with a code.\n",
        a.member
    );

    let nullok = PamService::new(
        "otpd-enf-nullok",
        &then_permit(otpd_line(&d.socket(), "nullok")),
    );
    nullok
        .pamtester(&a.member)
        .run()
        .assert_failure(AUTH_ERR)
        .assert_user_sees("", &format!("{refused}pamtester: {AUTH_ERR}\n"))
        .assert_logged(5, &["refused despite nullok"]);
    for user in [&a.outsider, &a.exempt, &a.robot] {
        nullok
            .pamtester(user)
            .run()
            .assert_success()
            .assert_user_sees(SUCCESS_LINE, "");
    }

    // Without nullok: asked, then refused with the same message.
    let strict = PamService::new("otpd-enf-strict", &otpd_line(&d.socket(), ""));
    strict
        .pamtester(&a.member)
        .answer("123456")
        .run()
        .assert_failure(AUTH_ERR)
        .assert_user_sees("", &format!("{PROMPT}{refused}pamtester: {AUTH_ERR}\n"));
    // The outsider is refused as before, without the message.
    strict
        .pamtester(&a.outsider)
        .answer("123456")
        .run()
        .assert_failure(AUTH_ERR)
        .assert_user_sees("", &format!("{PROMPT}pamtester: {AUTH_ERR}\n"));

    // Once enrolled, the member logs in with a code.
    let (mut codes, _) = d.enroll(&a.member);
    nullok
        .pamtester(&a.member)
        .answer(&codes.fresh())
        .run()
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PROMPT);
}

/// `require = "everyone"` after the deadline: regular accounts without a
/// device are refused, root and system accounts (uid below `min_uid`,
/// 1000 by default) are not covered, so `su` and `sudo` through a `nullok`
/// line keep working for them; `min_uid = 0` covers them too.
#[test]
fn everyone_leaves_root_and_system_accounts_out_unless_min_uid_is_zero() {
    require_root();
    let a = Accounts::create("e");
    let everyone = "[enforcement]\nrequire = \"everyone\"\ndeadline = \"2020-01-01\"\n";
    let d = RealDaemon::start_with_config(everyone);
    let nullok = PamService::new(
        "otpd-enf-everyone",
        &then_permit(otpd_line(&d.socket(), "nullok")),
    );
    nullok.pamtester(&a.member).run().assert_failure(AUTH_ERR);
    for system in ["root", "www-data", "nobody"] {
        nullok
            .pamtester(system)
            .run()
            .assert_success()
            .assert_user_sees(SUCCESS_LINE, "");
        assert!(
            !d.status(system).enforcement.unwrap().must_enroll,
            "{system}"
        );
    }
    drop(d);

    let d = RealDaemon::start_with_config(&format!("{everyone}min_uid = 0\n"));
    let nullok = PamService::new(
        "otpd-enf-everyone0",
        &then_permit(otpd_line(&d.socket(), "nullok")),
    );
    nullok.pamtester("root").run().assert_failure(AUTH_ERR);
    // nobody (the overflow uid) is never a person.
    nullok.pamtester("nobody").run().assert_success();
}

#[test]
fn status_lists_who_must_enroll_and_who_has_no_recovery_path() {
    require_root();
    let a = Accounts::create("s");
    let d = RealDaemon::start_with_config(&a.toml("2099-01-01"));
    let socket = d.socket();

    let (ok, out, err) = otpctl(&socket, &["status", "--must-enroll"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!(
            "Second factor required of members of {}, from 2099-01-01: until then, logins \
             are reminded.\nMust enroll and have not (1):\n  {}\n",
            a.group, a.member
        )
    );
    let (ok, out, err) = otpctl(&socket, &["--json", "status", "--must-enroll"]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "require": "groups",
            "groups": [a.group],
            "deadline": "2099-01-01",
            "deadline_passed": false,
            "users": [a.member],
        })
    );

    // The member enrolls, then spends every backup code but the last one
    // (the daemon's real cost), then the last one at a login: from then
    // on, one device and no backup code.
    let (mut codes, backup) = d.enroll(&a.member);
    let (ok, out, _) = otpctl(&socket, &["status", "--must-enroll"]);
    assert!(
        ok && out.ends_with("Every such user has an active device.\n"),
        "{out}"
    );
    let (ok, out, _) = otpctl(&socket, &["status", "--no-recovery"]);
    assert!(ok && !out.contains(&a.member), "{out}");
    for code in &backup[..backup.len() - 1] {
        assert!(d.verify(&a.member, code).backup_codes_left > 0);
    }
    let svc = PamService::new("otpd-enf-nudge", &otpd_line(&d.socket(), ""));
    let nudge = format!(
        "You have a single device and no backup codes left: if you lose it, you cannot log \
         in. Ask {CONTACT} for new backup codes (otpctl backup-codes {0}) or to add a spare \
         device (otpctl device add {0} NAME).\n",
        a.member
    );
    let last = backup.last().unwrap();
    let out = svc.pamtester(&a.member).answer(last).run();
    out.assert_success();
    assert!(
        out.stdout.contains(&nudge) && out.stdout.starts_with("Backup code accepted; 0 left.\n"),
        "{}",
        out.stdout
    );
    // The reminder comes at most once a day (the warning that none are
    // left stays, and says none, not "running low").
    let out = svc.pamtester(&a.member).answer(&codes.fresh()).run();
    out.assert_success();
    assert!(
        !out.stdout.contains("single device")
            && out.stdout.contains(&format!(
                "No backup codes left: without your device you cannot log in. Ask your \
                 administrator for new ones (otpctl backup-codes {}).",
                a.member
            ))
            && !out.stdout.contains("Running low"),
        "{}",
        out.stdout
    );

    let (ok, out, err) = otpctl(&socket, &["status", "--no-recovery"]);
    assert!(ok, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with(&a.member))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("active+no-recovery"), "{row}");
    assert_eq!(out.lines().count(), 2, "header and one user: {out}");
    let (ok, out, err) = otpctl(&socket, &["--json", "status", "--no-recovery"]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json[0]["user"], a.member.as_str());
    assert_eq!(json[0]["no_recovery_path"], true);
    let (ok, out, err) = otpctl(&socket, &["--json", "status", &a.member]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["no_recovery_path"], true);
    assert_eq!(
        json[0]["enforcement"],
        serde_json::json!({"must_enroll": true, "deadline": "2099-01-01", "refused": false})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_recovery_reminder_comes_at_most_once_a_day_and_the_deadline_follows_the_clock() {
    require_root();
    let a = Accounts::create("n");
    let dir = shared_tempdir();
    let mut config = config_in(dir.path());
    // 2027-01-15, two days after T0 (2027-01-15T08:00:00Z).
    config.enforcement = a.section("2027-01-17");
    let clock = Arc::new(ManualClock::new(T0));
    let d = InProcess::start_in(dir, config, clock.clone());
    let mut c = d.client().await;

    // Before the deadline: due; after it (clock moved on): refused.
    let st = otpd_tests::status(&mut c, &a.outsider).await;
    assert!(!st.enforcement.unwrap().must_enroll);
    let e = otpd_tests::status(&mut c, &a.member)
        .await
        .enforcement
        .unwrap();
    assert!(e.must_enroll && !e.refused, "{e:?}");
    clock.advance(2 * 86_400);
    let e = otpd_tests::status(&mut c, &a.member)
        .await
        .enforcement
        .unwrap();
    assert!(e.must_enroll && e.refused, "{e:?}");
    let v = otpd_tests::verify(&mut c, &a.member, "123456").await;
    assert_eq!(v.decision(), otpd_tests::Decision::NotEnrolled);
    assert!(v.enforcement.unwrap().refused);

    let (app, backup) = otpd_tests::enroll(&mut c, &a.member, clock.now()).await;
    let mut logins = Logins {
        app,
        step: clock.now() / 30,
        user: a.member.clone(),
    };
    // Ten backup codes: a recovery path, no reminder.
    let v = logins.next(&mut c, &clock).await;
    assert!(v.decision() == otpd_tests::Decision::Accepted && !v.recovery_nudge);
    for code in &backup[..9] {
        let v = otpd_tests::verify(&mut c, &a.member, code).await;
        assert!(!v.recovery_nudge);
    }
    let v = otpd_tests::verify(&mut c, &a.member, &backup[9]).await;
    assert!(v.recovery_nudge, "the last backup code leaves no path");
    assert_eq!(v.contact, CONTACT);
    for _ in 0..3 {
        assert!(!logins.next(&mut c, &clock).await.recovery_nudge);
    }
    clock.advance(86_400 - 5 * 30);
    assert!(
        !logins.next(&mut c, &clock).await.recovery_nudge,
        "not yet a day"
    );
    clock.advance(30);
    assert!(
        logins.next(&mut c, &clock).await.recovery_nudge,
        "a day later"
    );
    assert!(!logins.next(&mut c, &clock).await.recovery_nudge);
    drop(d);
}

/// TOTP logins of one user, one time step apart.
struct Logins {
    app: otpd_tests::App,
    step: u64,
    user: String,
}

impl Logins {
    async fn next(
        &mut self,
        c: &mut otpd_proto::v1::otpd_client::OtpdClient<tonic::transport::Channel>,
        clock: &ManualClock,
    ) -> otpd_proto::v1::VerifyResponse {
        clock.advance(30);
        self.step = clock.now() / 30;
        otpd_tests::verify(c, &self.user, &self.app.code_at(self.step * 30)).await
    }
}

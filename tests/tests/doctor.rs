//! `otpctl doctor` on real files: one sshd config per trap read through the
//! real `sshd -T`, PAM directories with the bad stacks, the README's
//! recommended setup (exit 0), and the state directory, sockets and users
//! of the real otpd binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use otpd_tests::*;
use serde_json::Value;

/// Debian's common-auth (comments left out): a `requisite pam_deny.so` on
/// line 3.
const COMMON_AUTH: &str = "\
auth\t[success=1 default=ignore]\tpam_unix.so nullok
auth\trequisite\t\t\tpam_deny.so
auth\trequired\t\t\tpam_permit.so
";

/// The README's key + code stack (Protect SSH, Key + code).
const SSHD_KEY_AND_CODE: &str =
    "# @include common-auth\nauth required pam_otpd.so\nauth required pam_permit.so\n";

/// The README's key + code sshd settings.
const SSHD_CLEAN: &str = "UsePAM yes\nKbdInteractiveAuthentication yes\n\
                          PubkeyAuthentication yes\n\
                          AuthenticationMethods publickey,keyboard-interactive\n";

/// A place for one doctor run: a PAM directory, an sshd config with its
/// own host key, and (optionally) a running otpd.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(sshd_config: &str, pam: &[(&str, &str)]) -> Self {
        let dir = shared_tempdir();
        let d = dir.path();
        let key = d.join("host_key");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // The settings first, so that their line numbers are those written.
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "{sshd_config}HostKey {}\nPidFile {}\n",
                key.display(),
                d.join("sshd.pid").display()
            ),
        )
        .unwrap();
        std::fs::create_dir(d.join("pam")).unwrap();
        for (name, text) in pam {
            std::fs::write(d.join("pam").join(name), text).unwrap();
        }
        std::fs::write(d.join("otpd.toml"), "").unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `otpctl --json doctor`; returns the exit code and the report.
    fn doctor(&self, extra: &[&str]) -> (i32, Value) {
        let socket = self.path("otpd.sock");
        let state = self.path("state");
        let mut args: Vec<&std::ffi::OsStr> = vec!["--socket".as_ref(), socket.as_os_str()];
        args.extend(["--state-dir".as_ref(), state.as_os_str()]);
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        self.doctor_with(&args)
    }

    /// Runs `otpctl --json doctor` on this place's files (PAM, sshd, otpd
    /// config) with `extra` options, nothing else: no `--socket`, no
    /// `OTPD_SOCKET`.
    fn doctor_with(&self, extra: &[&std::ffi::OsStr]) -> (i32, Value) {
        let out = Command::new(built("otpctl"))
            .env_remove("OTPD_SOCKET")
            .args(["--json", "doctor", "--sshd", "/usr/sbin/sshd"])
            .arg("--pam-dir")
            .arg(self.path("pam"))
            .arg("--sshd-config")
            .arg(self.path("sshd_config"))
            .arg("--config")
            .arg(self.path("otpd.toml"))
            .arg("--otpd")
            .arg(built("otpd"))
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "{stderr}");
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        (out.status.code().unwrap(), report)
    }
}

/// The findings of `id` in `report`, as (file, line).
fn found(report: &Value, id: &str) -> Vec<(String, Option<u64>)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == id)
        .map(|f| {
            assert!(
                f["fix"].as_str().unwrap().contains("README"),
                "the fix names the README section: {f}"
            );
            (f["file"].as_str().unwrap().to_owned(), f["line"].as_u64())
        })
        .collect()
}

fn ids(report: &Value) -> Vec<String> {
    let mut ids: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn pam_with(sshd: &str) -> Vec<(&'static str, String)> {
    vec![
        ("common-auth", COMMON_AUTH.to_owned()),
        ("sshd", sshd.to_owned()),
    ]
}

fn setup(sshd_config: &str, sshd_pam: &str) -> Setup {
    let pam = pam_with(sshd_pam);
    let pam: Vec<(&str, &str)> = pam.iter().map(|(n, t)| (*n, t.as_str())).collect();
    Setup::new(sshd_config, &pam)
}

/// The findings about the SSH and PAM files only (no daemon runs here).
fn file_ids(report: &Value) -> Vec<String> {
    let daemon = ["daemon-not-running", "state-dir-missing"];
    ids(report)
        .into_iter()
        .filter(|id| !daemon.contains(&id.as_str()))
        .collect()
}

#[test]
fn the_readme_setup_with_a_running_otpd_is_clean() {
    let s = setup(SSHD_CLEAN, SSHD_KEY_AND_CODE);
    let d = Process::start(s.dir.path());
    let (code, report) = s.doctor(&[]);
    assert_eq!(report["findings"], serde_json::json!([]), "{report}");
    assert_eq!(code, 0);
    assert_eq!(report["ok"], true);
    let checked = report["checked"].to_string();
    assert!(checked.contains("sshd -T -f"), "{checked}");
    assert!(checked.contains("0 users"), "{checked}");

    // The human output says so too.
    let out = Command::new(built("otpctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["doctor", "--pam-dir"])
        .arg(s.path("pam"))
        .arg("--sshd-config")
        .arg(s.path("sshd_config"))
        .arg("--config")
        .arg(s.path("otpd.toml"))
        .arg("--state-dir")
        .arg(&d.state_dir)
        .arg("--otpd")
        .arg(built("otpd"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.ends_with("no problems found\n"), "{stdout}");
    d.stop();
}

/// otpd's sockets moved by its config: doctor, given only `--config`,
/// asks the daemon on the config's socket, and a PAM line whose `socket=`
/// names the config's PAM socket (the module under cargo's name) is fine.
#[test]
fn the_configs_sockets_are_used_and_a_matching_socket_option_is_fine() {
    let s = setup(SSHD_CLEAN, SSHD_KEY_AND_CODE);
    std::fs::write(
        s.path("pam/sshd"),
        format!(
            "# @include common-auth\nauth required /opt/otpd/libpam_otpd.so socket={}\n",
            s.path("pam.sock").display()
        ),
    )
    .unwrap();
    std::fs::write(
        s.path("otpd.toml"),
        format!(
            "socket = \"{}\"\npam_socket = \"{}\"\nstate_dir = \"{}\"\n",
            s.path("otpd.sock").display(),
            s.path("pam.sock").display(),
            s.path("state").display()
        ),
    )
    .unwrap();
    let d = Process::start(s.dir.path());
    let (code, report) = s.doctor_with(&[]);
    assert_eq!(report["findings"], serde_json::json!([]), "{report}");
    assert_eq!(code, 0);
    d.stop();
}

#[test]
fn password_authentication_yes_lets_clients_skip_the_code() {
    let s = setup(
        "UsePAM yes\nKbdInteractiveAuthentication yes\nPasswordAuthentication yes\n",
        SSHD_KEY_AND_CODE,
    );
    let (code, report) = s.doctor(&[]);
    assert_eq!(code, 1);
    let config = s.path("sshd_config").display().to_string();
    assert_eq!(
        found(&report, "password-authentication"),
        [(config.clone(), Some(3))]
    );
    assert_eq!(found(&report, "authentication-methods"), [(config, None)]);
    assert_eq!(
        file_ids(&report),
        ["authentication-methods", "password-authentication"]
    );
}

#[test]
fn missing_authentication_methods_lets_a_key_alone_in() {
    let s = setup(
        "UsePAM yes\nKbdInteractiveAuthentication yes\nPasswordAuthentication no\n",
        SSHD_KEY_AND_CODE,
    );
    let (code, report) = s.doctor(&[]);
    assert_eq!(code, 1);
    assert_eq!(file_ids(&report), ["authentication-methods"]);
    // A list without keyboard-interactive is as bad as none.
    let s = setup(
        "UsePAM yes\nKbdInteractiveAuthentication yes\nPasswordAuthentication no\n\
         AuthenticationMethods publickey,keyboard-interactive publickey\n",
        SSHD_KEY_AND_CODE,
    );
    let (_, report) = s.doctor(&[]);
    let config = s.path("sshd_config").display().to_string();
    assert_eq!(
        found(&report, "authentication-methods"),
        [(config, Some(4))]
    );
}

#[test]
fn kbd_interactive_no_hides_the_code_prompt() {
    let s = setup(
        "UsePAM yes\nKbdInteractiveAuthentication no\nPasswordAuthentication no\n",
        SSHD_KEY_AND_CODE,
    );
    let (code, report) = s.doctor(&[]);
    assert_eq!(code, 1);
    let config = s.path("sshd_config").display().to_string();
    assert_eq!(found(&report, "kbd-interactive"), [(config, Some(2))]);
    assert_eq!(
        file_ids(&report),
        ["authentication-methods", "kbd-interactive"]
    );
    // With AuthenticationMethods asking for it, sshd refuses to start.
    let s = setup(
        "UsePAM yes\nKbdInteractiveAuthentication no\n\
         AuthenticationMethods publickey,keyboard-interactive\n",
        SSHD_KEY_AND_CODE,
    );
    let (_, report) = s.doctor(&[]);
    assert_eq!(file_ids(&report), ["sshd-config"]);
    let refused = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "sshd-config")
        .unwrap();
    let what = refused["what"].as_str().unwrap();
    assert!(what.contains("Disabled method"), "{what}");
}

#[test]
fn use_pam_no_never_runs_pam_otpd() {
    let s = setup(
        "UsePAM no\nKbdInteractiveAuthentication yes\n\
         AuthenticationMethods publickey,keyboard-interactive\n",
        SSHD_KEY_AND_CODE,
    );
    let (code, report) = s.doctor(&[]);
    assert_eq!(code, 1);
    let config = s.path("sshd_config").display().to_string();
    assert_eq!(found(&report, "use-pam"), [(config, Some(1))]);
    assert_eq!(file_ids(&report), ["use-pam"]);
}

#[test]
fn an_sshd_config_sshd_refuses_is_a_finding() {
    let s = setup("UsePAM maybe\n", SSHD_KEY_AND_CODE);
    let (code, report) = s.doctor(&[]);
    assert_eq!(code, 1);
    assert_eq!(file_ids(&report), ["sshd-config"]);
}

#[test]
fn requisite_before_pam_otpd_is_found_in_common_auth() {
    let s = setup(
        SSHD_CLEAN,
        "@include common-auth\nauth required pam_otpd.so\n",
    );
    let (code, report) = s.doctor(&[]);
    assert_eq!(code, 1);
    let common = s.path("pam/common-auth").display().to_string();
    assert_eq!(found(&report, "requisite"), [(common, Some(2))]);
    assert_eq!(file_ids(&report), ["requisite"]);
    // Accepted on purpose: exit 0 once the rest is clean.
    let d = Process::start(s.dir.path());
    let (code, report) = s.doctor(&["--ignore", "requisite"]);
    assert_eq!((code, ids(&report)), (0, Vec::<String>::new()), "{report}");
    d.stop();
}

#[test]
fn pam_otpd_in_common_auth_is_found() {
    let s = Setup::new(
        SSHD_CLEAN,
        &[
            (
                "common-auth",
                "auth required pam_unix.so\nauth required pam_otpd.so\n",
            ),
            ("sshd", "@include common-auth\n"),
            ("cron", "@include common-auth\n"),
        ],
    );
    let (_, report) = s.doctor(&[]);
    let common = s.path("pam/common-auth").display().to_string();
    assert_eq!(found(&report, "otpd-in-common-auth"), [(common, Some(2))]);
    assert_eq!(file_ids(&report), ["otpd-in-common-auth"]);
}

#[test]
fn fail_mode_open_and_a_sufficient_password_are_found() {
    let s = setup(
        SSHD_CLEAN,
        "auth sufficient pam_unix.so\nauth required pam_otpd.so fail_mode=open\n",
    );
    let (_, report) = s.doctor(&[]);
    let sshd = s.path("pam/sshd").display().to_string();
    assert_eq!(found(&report, "fail-open"), [(sshd.clone(), Some(2))]);
    assert_eq!(found(&report, "skips-otpd"), [(sshd, Some(1))]);
    assert_eq!(file_ids(&report), ["fail-open", "skips-otpd"]);
}

#[test]
fn pam_ignore_as_the_only_result_is_found() {
    let s = setup(
        SSHD_CLEAN,
        "# @include common-auth\nauth required pam_otpd.so nullok\n",
    );
    let (_, report) = s.doctor(&[]);
    let sshd = s.path("pam/sshd").display().to_string();
    assert_eq!(found(&report, "ignore-only"), [(sshd, Some(2))]);
    assert_eq!(file_ids(&report), ["ignore-only"]);

    // The README's key + code stack with nullok: pam_permit decides.
    let s = setup(
        SSHD_CLEAN,
        &SSHD_KEY_AND_CODE.replace("pam_otpd.so", "pam_otpd.so nullok"),
    );
    let (_, report) = s.doctor(&[]);
    assert_eq!(file_ids(&report), [] as [&str; 0], "{report}");
}

/// The key + code stack (pam_permit after pam_otpd) with nullok is safe
/// only when sshd asks for the key first: used for code only, a user who
/// has not enrolled logs in with nothing at all.
#[test]
fn the_key_and_code_stack_without_a_key_first_is_found() {
    let stack = SSHD_KEY_AND_CODE.replace("pam_otpd.so", "pam_otpd.so nullok");
    let code_only = "UsePAM yes\nKbdInteractiveAuthentication yes\n\
                     PasswordAuthentication no\n\
                     AuthenticationMethods keyboard-interactive\n";
    let s = setup(code_only, &stack);
    let (code, report) = s.doctor(&[]);
    assert_eq!(code, 1, "{report}");
    let sshd = s.path("pam/sshd").display().to_string();
    assert_eq!(found(&report, "permit-without-key"), [(sshd, Some(2))]);
    assert_eq!(file_ids(&report), ["permit-without-key"], "{report}");
    // Without nullok the same stack is fine for code only: pam_otpd decides.
    let s = setup(code_only, SSHD_KEY_AND_CODE);
    let (_, report) = s.doctor(&[]);
    assert_eq!(file_ids(&report), [] as [&str; 0], "{report}");
    // With the key first (the README's setup) it is fine with nullok.
    let s = setup(SSHD_CLEAN, &stack);
    let (_, report) = s.doctor(&[]);
    assert_eq!(file_ids(&report), [] as [&str; 0], "{report}");
}

#[test]
fn ssh_without_pam_otpd_is_found() {
    let s = setup(SSHD_CLEAN, "@include common-auth\n");
    let (_, report) = s.doctor(&[]);
    let sshd = s.path("pam/sshd").display().to_string();
    assert_eq!(found(&report, "ssh-without-otpd"), [(sshd, None)]);
    assert_eq!(file_ids(&report), ["ssh-without-otpd"]);
}

#[test]
fn a_broken_otpd_config_is_found_with_its_line() {
    let s = setup(SSHD_CLEAN, SSHD_KEY_AND_CODE);
    std::fs::write(s.path("otpd.toml"), "issuer = \"x\"\nsocket_mode = [\n").unwrap();
    let (_, report) = s.doctor(&[]);
    let config = s.path("otpd.toml").display().to_string();
    let f = found(&report, "otpd-config");
    assert_eq!(f.len(), 1, "{report}");
    assert_eq!(f[0].0, config);
    assert!(f[0].1.is_some_and(|l| l >= 2), "{f:?}");
    // Valid TOML with an unknown key: otpd's own check refuses it.
    std::fs::write(s.path("otpd.toml"), "issuer = \"x\"\nsokcet = \"/x\"\n").unwrap();
    let (_, report) = s.doctor(&[]);
    assert_eq!(found(&report, "otpd-config"), [(config, None)]);
}

#[test]
fn a_stopped_daemon_and_loose_modes_are_found() {
    let s = setup(SSHD_CLEAN, SSHD_KEY_AND_CODE);
    let d = Process::start(s.dir.path());
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod(&d.state_dir.join("master.key"), 0o644);
    chmod(&d.state_dir, 0o755);
    chmod(&d.pam_socket, 0o666);
    let (code, report) = s.doctor(&[]);
    assert_eq!(code, 1);
    let key = d.state_dir.join("master.key").display().to_string();
    assert_eq!(found(&report, "key-mode"), [(key, None)]);
    let state = d.state_dir.display().to_string();
    assert_eq!(found(&report, "state-dir-mode"), [(state, None)]);
    let pam = d.pam_socket.display().to_string();
    assert_eq!(found(&report, "pam-socket-mode"), [(pam, None)]);
    assert_eq!(
        ids(&report),
        ["key-mode", "pam-socket-mode", "state-dir-mode"]
    );
    chmod(&d.state_dir.join("master.key"), 0o600);
    chmod(&d.state_dir, 0o700);
    chmod(&d.pam_socket, 0o600);
    assert_eq!(s.doctor(&[]).0, 0);

    d.stop();
    let (code, report) = s.doctor(&[]);
    assert_eq!(code, 1);
    let socket = s.path("otpd.sock").display().to_string();
    assert_eq!(found(&report, "daemon-not-running"), [(socket, None)]);
}

#[test]
fn an_enrolled_user_without_an_account_is_found() {
    let s = setup(SSHD_CLEAN, SSHD_KEY_AND_CODE);
    let d = Process::start(s.dir.path());
    let user = "ghost-doctor-user";
    assert!(nix::unistd::User::from_name(user).unwrap().is_none());
    let out = Command::new(built("otpctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["--json", "enroll", user, "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, report) = s.doctor(&[]);
    assert_eq!(code, 1);
    assert_eq!(ids(&report), ["user-gone"], "{report}");
    let what = report["findings"][0]["what"].as_str().unwrap();
    assert!(what.starts_with("ghost-doctor-user has a record"), "{what}");
    assert!(
        report["findings"][0]["fix"]
            .as_str()
            .unwrap()
            .starts_with("otpctl reset ghost-doctor-user")
    );
    d.stop();
}

#[test]
fn after_the_deadline_users_who_must_enroll_and_nullok_are_found() {
    let s = setup(
        SSHD_CLEAN,
        "@include common-auth\nauth required pam_otpd.so nullok\n",
    );
    std::fs::write(
        s.path("otpd.toml"),
        "[enforcement]\nrequire = \"everyone\"\ndeadline = \"2020-01-01\"\n",
    )
    .unwrap();
    let d = Process::start(s.dir.path());
    // A user with a pending enrollment only: not enrolled yet. (An account
    // that does not exist is covered: the policy fails closed.)
    let user = "ghost-doctor-deadline";
    let out = Command::new(built("otpctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["--json", "enroll", user, "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, report) = s.doctor(&["--ignore", "requisite", "--ignore", "user-gone"]);
    assert_eq!(code, 1);
    let sshd = s.path("pam/sshd").display().to_string();
    assert_eq!(found(&report, "nullok-after-deadline"), [(sshd, Some(2))]);
    let ghost = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "must-enroll" && f["what"].as_str().unwrap().starts_with(user))
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(ghost["severity"], "error");
    let what = ghost["what"].as_str().unwrap();
    assert!(what.ends_with("logins are refused"), "{what}");
    assert!(what.contains("everyone policy, since "), "{what}");
    assert!(
        ghost["fix"]
            .as_str()
            .unwrap()
            .ends_with("(README: Roll out to everyone or a group)")
    );
    let checked = report["checked"].to_string();
    // The one stored user, counted in the singular (how many must enroll
    // depends on the machine's own accounts).
    assert!(checked.contains(": 1 user\""), "{checked}");
    assert!(
        ghost["fix"]
            .as_str()
            .unwrap()
            .starts_with("otpctl enroll ghost-doctor-deadline")
    );
    d.stop();

    // Before the deadline: a warning, and nullok is still the rollout's.
    let s = setup(
        SSHD_CLEAN,
        "@include common-auth\nauth required pam_otpd.so nullok\n",
    );
    std::fs::write(
        s.path("otpd.toml"),
        "[enforcement]\nrequire = \"everyone\"\ndeadline = \"2999-01-01\"\n",
    )
    .unwrap();
    let d = Process::start(s.dir.path());
    let out = Command::new(built("otpctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["--json", "enroll", user, "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (_, report) = s.doctor(&["--ignore", "requisite", "--ignore", "user-gone"]);
    assert!(
        found(&report, "nullok-after-deadline").is_empty(),
        "{report}"
    );
    let ghost = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "must-enroll" && f["what"].as_str().unwrap().starts_with(user))
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(ghost["severity"], "warning");
    let what = ghost["what"].as_str().unwrap();
    assert!(what.contains("everyone policy, from 2999-01-01"), "{what}");
    d.stop();
}

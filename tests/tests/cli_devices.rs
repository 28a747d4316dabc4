//! Golden tests of the `otpctl` commands for several devices per user, app
//! passwords and key rotation, run against the in-process daemon with a
//! manual clock (codes are computed at the daemon's time). `[..]` matches
//! the variable part of a line (random keys, passwords, ids), `...` whole
//! lines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use otpd::Clock;
use otpd_proto::v1 as pb;
use otpd_tests::*;
use serde_json::Value;
use snapbox::cmd::OutputAssert;

/// 1_800_000_000 (T0), as otpctl prints it.
const T0_TEXT: &str = "2027-01-15T08:00:00Z";

fn otpctl(socket: &Path) -> snapbox::cmd::Command {
    snapbox::cmd::Command::new(built("otpctl"))
        .arg("--socket")
        .arg(socket)
        .env_remove("OTPD_SOCKET")
        // Never a terminal: enroll and device add print the confirm hint.
        .stdin("")
}

fn json_of(out: &OutputAssert) -> Value {
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

/// The daemon's time now.
fn now(d: &InProcess) -> u64 {
    d.clock.now()
}

/// Starts an enrollment through the CLI (`enroll`, or `device add` with
/// `add`; `extra` options); returns the app of the new device.
fn start_with(d: &InProcess, user: &str, device: &str, add: bool, extra: &[&str]) -> App {
    let mut args: Vec<&str> = if add {
        vec!["--json", "device", "add", user, device]
    } else {
        vec!["--json", "enroll", user, "--force", "--device", device]
    };
    args.extend_from_slice(extra);
    let out = otpctl(d.socket()).args(&args).assert().success();
    let json = json_of(&out);
    assert_eq!(json["device"], device, "{json}");
    App::from_uri(json["otpauth_uri"].as_str().unwrap())
}

fn start(d: &InProcess, user: &str, device: &str, add: bool) -> App {
    start_with(d, user, device, add, &[])
}

/// Enrolls `user` with a first device `device`; returns its app.
fn enroll(d: &InProcess, user: &str, device: &str) -> App {
    let app = start(d, user, device, false);
    otpctl(d.socket())
        .args(["confirm", user, &app.code_at(now(d))])
        .assert()
        .success()
        .stdout_eq("Backup codes for [..] (shown only this once; each code works once):\n...\n");
    app
}

fn verify_ok(d: &InProcess, user: &str, code: &str) -> OutputAssert {
    otpctl(d.socket())
        .args(["verify", user, code])
        .assert()
        .success()
}

#[test]
fn device_add_confirm_list_rename_remove() {
    let d = InProcess::start();
    let s = d.socket();
    let phone = enroll(&d, "alice", "phone");

    // Adding a device before the first one: nothing to add it beside.
    otpctl(s)
        .args(["device", "add", "bob", "tablet"])
        .assert()
        .code(5)
        .stdout_eq("")
        .stderr_eq("otpctl: error: failed precondition: [..]\n");

    // device add: same flow as enroll, the new name shown.
    otpctl(s)
        .args([
            "device", "add", "alice", "tablet", "--issuer", "Example", "--digits", "8",
        ])
        .assert()
        .success()
        .stdout_eq(
            "...
Scan the QR code with an authenticator app, or type in the key by hand.

Account:    alice
Device:     tablet
Issuer:     Example
Algorithm:  SHA1
Digits:     8
Period:     30s
Key:        [..]
URI:        otpauth://totp/Example:alice?secret=[..]&digits=8&issuer=Example

Confirm with: otpctl confirm alice CODE
",
        );
    // Starting it again (as --json) replaces the pending key.
    let tablet = start_with(
        &d,
        "alice",
        "tablet",
        true,
        &["--issuer", "Example", "--digits", "8"],
    );
    // A name in use: exit 7, before any key is made.
    otpctl(s)
        .args(["device", "add", "alice", "phone"])
        .assert()
        .code(7)
        .stdout_eq("")
        .stderr_eq(
            "otpctl: error: alice already has a device named \"phone\"; choose another name\n",
        );

    // Pending: listed as such; logins unchanged.
    otpctl(s)
        .args(["device", "list", "alice"])
        .assert()
        .success()
        .stdout_eq(format!(
            "\
DEVICE  STATE    TOTP        ENROLLED              LAST-USED  SKEW
phone   active   sha1/6/30s  {T0_TEXT}  -          -
tablet  pending  -           -                     -          -
"
        ));
    otpctl(s)
        .args(["--json", "device", "list", "alice"])
        .assert()
        .success()
        .stdout_eq(format!(
            r#"{{"user":"alice","devices":[{{"name":"phone","algorithm":"sha1","digits":6,"period":30,"issuer":"otpd-test","enrolled_at":"{T0_TEXT}","last_used":null,"clock_skew_seconds":0}}],"pending_device":"tablet"}}
"#
        ));
    otpctl(s)
        .args(["status", "alice"])
        .assert()
        .success()
        .stdout_eq(format!(
            "\
USER   STATE[..]TOTP        BACKUP  FAILS  LOCKED-UNTIL  LAST-SUCCESS  ENROLLED              DEVICES
alice  active[..]sha1/6/30s  10      0      -             -             {T0_TEXT}  1 (+tablet pending, 15m left)
"
        ));

    // Confirm with a code from the new device: beside the phone, backup
    // codes unchanged.
    d.clock.advance(30);
    otpctl(s)
        .args(["confirm", "alice", &tablet.code_at(now(&d))])
        .assert()
        .success()
        .stdout_eq(
            "Device tablet of alice is active beside the other devices.
The backup codes are unchanged (new ones: otpctl backup-codes alice).
",
        );

    // Both devices log in, each once per step.
    d.clock.advance(30);
    let tablet_code = tablet.code_at(now(&d));
    verify_ok(&d, "alice", &tablet_code).stdout_eq("accepted (totp)\n");
    otpctl(s)
        .args(["verify", "alice", &tablet_code])
        .assert()
        .code(1)
        .stdout_eq("rejected: code already used\n");
    verify_ok(&d, "alice", &phone.code_at(now(&d))).stdout_eq("accepted (totp)\n");

    let used = "2027-01-15T08:01:00Z";
    otpctl(s)
        .args(["device", "list", "alice"])
        .assert()
        .success()
        .stdout_eq(format!(
            "\
DEVICE  STATE   TOTP        ENROLLED              LAST-USED             SKEW
phone   active  sha1/6/30s  {T0_TEXT}  {used}  0s
tablet  active  sha1/8/30s  2027-01-15T08:00:30Z  {used}  0s
"
        ));
    let out = otpctl(s)
        .args(["--json", "status", "alice"])
        .assert()
        .success();
    let json = json_of(&out);
    let names: Vec<&str> = json[0]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["phone", "tablet"], "{json}");
    assert_eq!(json[0]["devices"][1]["digits"], 8, "{json}");
    assert_eq!(json[0]["devices"][1]["issuer"], "Example", "{json}");
    assert_eq!(json[0]["devices"][1]["last_used"], used, "{json}");
    assert_eq!(json[0]["devices"][1]["clock_skew_seconds"], 0, "{json}");
    assert_eq!(json[0]["pending_device"], Value::Null, "{json}");
    assert_eq!(json[0]["backup_codes_left"], 10, "{json}");

    // Rename: the codes keep working under the new name.
    otpctl(s)
        .args(["device", "rename", "alice", "tablet", "ipad"])
        .assert()
        .success()
        .stdout_eq("renamed device tablet of alice to ipad\n");
    // With --json the error is a JSON object on stderr.
    let out = otpctl(s)
        .args(["--json", "device", "rename", "alice", "nope", "x"])
        .assert()
        .code(6)
        .stdout_eq("");
    assert_eq!(
        String::from_utf8_lossy(&out.get_output().stderr),
        "{\"error\":{\"code\":\"no_such_device\",\"message\":\"no device named \\\"nope\\\" for \
         alice; 'otpctl device list alice' shows the devices\",\"exit_code\":6}}\n"
    );
    otpctl(s)
        .args(["device", "rename", "alice", "ipad", "phone"])
        .assert()
        .code(7)
        .stderr_eq(
            "otpctl: error: alice already has a device named \"phone\"; choose another name\n",
        );
    d.clock.advance(30);
    verify_ok(&d, "alice", &tablet.code_at(now(&d)));

    // Remove: one of two goes at once; its codes stop working.
    otpctl(s)
        .args(["device", "remove", "alice", "nope"])
        .assert()
        .code(6)
        .stderr_eq("otpctl: error: no device named \"nope\" for alice; 'otpctl device list alice' shows the devices\n");
    otpctl(s)
        .args(["--json", "device", "remove", "alice", "ipad"])
        .assert()
        .success()
        .stdout_eq("{\"user\":\"alice\",\"ok\":true,\"device\":\"ipad\",\"devices_left\":1}\n")
        .stderr_eq("");
    d.clock.advance(30);
    otpctl(s)
        .args(["verify", "alice", &tablet.code_at(now(&d))])
        .assert()
        .code(1);

    // The last one: refused without --force, with what happens to logins.
    otpctl(s)
        .args(["device", "remove", "alice", "phone"])
        .assert()
        .code(5)
        .stdout_eq("")
        .stderr_eq(
            "otpctl: error: refusing to remove \"phone\", the last device of alice: alice would \
             no longer be enrolled, so PAM lines with 'nullok' would let alice in with the \
             password alone and lines without it would refuse alice; add a replacement first \
             with 'otpctl device add alice NAME', or remove it anyway with --force\n",
        );
    verify_ok(&d, "alice", &phone.code_at(now(&d)));
    otpctl(s)
        .args(["device", "remove", "alice", "phone", "--force"])
        .assert()
        .success()
        .stdout_eq("removed device phone of alice; 0 devices left\n")
        .stderr_eq(
            "otpctl: warning: alice has no device left and is no longer enrolled: PAM lines \
             with 'nullok' let alice in with the password alone, lines without it refuse \
             alice; enroll a device with 'otpctl enroll alice'\n",
        );
    otpctl(s)
        .args(["--json", "status", "alice"])
        .assert()
        .success()
        .stdout_eq("[{\"user\":\"alice\",\"state\":\"not_enrolled\",[..]\"devices\":[],\"pending_device\":null,\"app_passwords\":0}]\n");
}

#[test]
fn pending_device_can_be_removed_without_force() {
    let d = InProcess::start();
    let s = d.socket();
    let phone = enroll(&d, "carol", "phone");
    start(&d, "carol", "spare", true);
    otpctl(s)
        .args(["device", "remove", "carol", "spare"])
        .assert()
        .success();
    otpctl(s)
        .args(["--json", "device", "list", "carol"])
        .assert()
        .success()
        .stdout_eq("{\"user\":\"carol\",\"devices\":[{\"name\":\"phone\",[..]}],\"pending_device\":null}\n");
    d.clock.advance(30);
    verify_ok(&d, "carol", &phone.code_at(now(&d)));
}

#[test]
fn app_passwords_add_list_revoke() {
    let d = InProcess::start();
    let s = d.socket();
    enroll(&d, "alice", "default");

    otpctl(s)
        .args([
            "app-password", "add", "alice", "--service", "dovecot", "--label",
            "Thunderbird laptop", "--expires", "90d",
        ])
        .assert()
        .success()
        .stdout_eq(
            "\
App password for alice (shown only this once; otpd keeps only a hash of it):

    [..]-[..]-[..]-[..]-[..]-[..]

ID:        [..]
Service:   dovecot
Label:     Thunderbird laptop
Expires:   2027-04-15T08:00:00Z

It works only on the PAM service dovecot, where the pam_otpd line has the app_passwords option, typed in place of the password and code.
Revoke it with: otpctl app-password revoke alice [..]
",
        );
    let out = otpctl(s)
        .args(["--json", "app-password", "add", "alice", "--service", "su"])
        .assert()
        .success()
        .stdout_eq(format!(
            r#"{{"user":"alice","password":"[..]","id":"[..]","service":"su","label":"","created_at":"{T0_TEXT}","expires_at":null}}
"#
        ));
    let json = json_of(&out);
    let password = json["password"].as_str().unwrap().to_owned();
    let id = json["id"].as_str().unwrap().to_owned();

    // It works on its service, where the PAM line allows app passwords.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let check = |service: &str| {
        rt.block_on(async {
            let mut client = d.client().await;
            let mut request = verify_req("alice", &password);
            request.service = service.into();
            request.allow_app_password = true;
            client.verify(request).await.unwrap().into_inner()
        })
    };
    let accepted = check("su");
    assert_eq!(accepted.decision(), pb::Decision::Accepted, "{accepted:?}");
    assert_eq!(accepted.method(), pb::Method::AppPassword);
    assert_eq!(accepted.app_password_id, id);

    // The list: never a password.
    let out = otpctl(s)
        .args(["app-password", "list", "alice"])
        .assert()
        .success()
        .stdout_eq(format!(
            "\
ID[..]SERVICE  LABEL               CREATED               LAST-USED             EXPIRES
[..]dovecot  Thunderbird laptop  {T0_TEXT}  -                     2027-04-15T08:00:00Z
[..]su       -                   {T0_TEXT}  {T0_TEXT}  never
"
        ));
    assert!(!String::from_utf8_lossy(&out.get_output().stdout).contains(&password));
    let out = otpctl(s)
        .args(["--json", "app-password", "list", "alice"])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(!stdout.contains(&password), "{stdout}");
    let json = json_of(&out);
    let listed = json["app_passwords"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{json}");
    assert!(
        listed
            .iter()
            .any(|a| a["id"] == id.as_str() && a["expired"] == false)
    );
    otpctl(s)
        .args(["--json", "status", "alice"])
        .assert()
        .success()
        .stdout_eq("[{\"user\":\"alice\",[..]\"app_passwords\":2}]\n");

    // Revoke: gone at once; a second revoke finds nothing.
    otpctl(s)
        .args(["app-password", "revoke", "alice", &id])
        .assert()
        .success()
        .stdout_eq(format!("revoked app password {id} of alice\n"));
    let rejected = check("su");
    assert_ne!(rejected.decision(), pb::Decision::Accepted, "{rejected:?}");
    otpctl(s)
        .args(["app-password", "revoke", "alice", &id])
        .assert()
        .code(6)
        .stdout_eq("")
        .stderr_eq(format!(
            "otpctl: error: no app password with id \"{id}\" for alice; 'otpctl app-password \
             list alice' shows the ids\n"
        ));
    let out = otpctl(s)
        .args(["--json", "app-password", "list", "alice"])
        .assert()
        .success();
    assert_eq!(json_of(&out)["app_passwords"].as_array().unwrap().len(), 1);

    // A bad expiry never reaches the daemon.
    otpctl(s)
        .args([
            "app-password",
            "add",
            "alice",
            "--service",
            "su",
            "--expires",
            "0s",
        ])
        .assert()
        .code(2);
}

#[test]
fn status_lists_every_user_with_devices() {
    let d = InProcess::start();
    let s = d.socket();
    for user in ["carol", "alice", "bob"] {
        enroll(&d, user, "default");
    }
    start(&d, "dave", "first", false);
    otpctl(s).arg("status").assert().success().stdout_eq(format!(
        "\
USER   STATE    TOTP        BACKUP  FAILS  LOCKED-UNTIL  LAST-SUCCESS  ENROLLED              DEVICES
alice  active   sha1/6/30s  10      0      -             -             {T0_TEXT}  1
bob    active   sha1/6/30s  10      0      -             -             {T0_TEXT}  1
carol  active   sha1/6/30s  10      0      -             -             {T0_TEXT}  1
dave   pending  sha1/6/30s  0       0      -             -             -                     0 (+first pending, 15m left)
"
    ));
    let out = otpctl(s).args(["--json", "status"]).assert().success();
    let json = json_of(&out);
    let users: Vec<(&str, usize)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap(),
                u["devices"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(users, [("alice", 1), ("bob", 1), ("carol", 1), ("dave", 0)]);
    assert_eq!(json[3]["pending_device"], "first");
    assert_eq!(json[0]["devices"][0]["name"], "default");
}

#[test]
fn rekey_reseals_and_the_records_stay_readable() {
    let d = InProcess::start();
    let alice = enroll(&d, "alice", "default");
    enroll(&d, "bob", "default");

    otpctl(d.socket())
        .arg("rekey")
        .assert()
        .success()
        .stdout_eq(
            "re-sealed [..] records under the new master key; the old key is no longer used\n",
        );
    // Again (e.g. after an interruption): nothing lost.
    otpctl(d.socket())
        .args(["--json", "rekey"])
        .assert()
        .success()
        .stdout_eq("{\"ok\":true,\"records\":[..]}\n");
    d.clock.advance(30);
    verify_ok(&d, "alice", &alice.code_at(now(&d)));

    // And after a restart, under the new key.
    let (dir, config, clock) = d.stop();
    let d = InProcess::start_in(dir, config, clock);
    d.clock.advance(30);
    verify_ok(&d, "alice", &alice.code_at(now(&d)));
    otpctl(d.socket())
        .args(["--json", "status"])
        .assert()
        .success()
        .stdout_eq("[{\"user\":\"alice\",\"state\":\"active\",[..]},{\"user\":\"bob\",\"state\":\"active\",[..]}]\n");
}

/// Runs otpctl as `nobody` from a copy in the (world-traversable) test
/// directory.
fn as_nobody(d: &InProcess, args: &[&str]) -> OutputAssert {
    let exe = d.dir.path().join("otpctl");
    if !exe.exists() {
        std::fs::copy(built("otpctl"), &exe).unwrap();
    }
    let out = Command::new(&exe)
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .env_remove("OTPD_SOCKET")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    OutputAssert::new(out)
}

#[test]
fn non_root_callers_may_not_manage_devices_app_passwords_or_keys() {
    let d = InProcess::start();
    enroll(&d, "alice", "phone");
    for args in [
        &["device", "add", "alice", "x"][..],
        &["device", "list", "alice"],
        &["device", "rename", "alice", "phone", "x"],
        &["device", "remove", "alice", "phone", "--force"],
        &["app-password", "add", "alice", "--service", "su"],
        &["app-password", "list", "alice"],
        &["app-password", "revoke", "alice", "abcd"],
        &["rekey"],
    ] {
        as_nobody(&d, args)
            .code(4)
            .stdout_eq("")
            .stderr_eq("otpctl: error: permission denied: [..]\n");
    }
    // Nothing changed.
    otpctl(d.socket())
        .args(["--json", "device", "list", "alice"])
        .assert()
        .success()
        .stdout_eq("{\"user\":\"alice\",\"devices\":[{\"name\":\"phone\",[..]}],\"pending_device\":null}\n");
}

#[test]
fn status_of_every_user_pages_through_the_listing() {
    // One more user than otpctl asks for per page.
    const USERS: usize = 1001;
    let d = InProcess::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = d.client().await;
        for i in 0..USERS {
            client
                .enroll_start(pb::EnrollStartRequest {
                    user: format!("u{i:04}").into_bytes().into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    });
    let out = otpctl(d.socket())
        .args(["--json", "status"])
        .assert()
        .success();
    let json = json_of(&out);
    let users: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..USERS).map(|i| format!("u{i:04}")).collect();
    assert_eq!(users, expected);

    let out = otpctl(d.socket()).arg("status").assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        USERS + 1,
        "the header once, then one line per user"
    );
    assert!(lines[0].starts_with("USER "), "{}", lines[0]);
    assert!(
        lines[USERS].starts_with("u1000  pending  "),
        "{}",
        lines[USERS]
    );
}

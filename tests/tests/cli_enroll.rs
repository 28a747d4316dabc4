//! `otpctl enroll` as an admin uses it: at a terminal (a pseudo-terminal as
//! stdin), against the daemon library on its own socket with a clock the
//! test sets, so that the codes typed are exactly right or wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use otpd_tests::*;

/// The otpauth URI from the human output of `enroll`.
fn uri_of(out: &str) -> &str {
    out.lines()
        .find_map(|l| l.strip_prefix("URI:        "))
        .expect("a URI line")
}

/// A user that exists on every test machine (enroll refuses unknown
/// accounts).
const USER: &str = "root";

#[test]
fn a_wrong_code_at_the_prompt_can_be_typed_again() {
    let d = InProcess::start();
    let mut enroll = Interactive::start(d.socket(), &["enroll", USER]);
    let shown = enroll.read_until("Enter the code shown in the app to confirm: ");
    let app = App::from_uri(uri_of(&shown));
    enroll.type_line(&app.wrong_code_at(T0));
    enroll.read_until(
        "Code rejected: the code does not match the pending enrollment; check that the app \
         shows this account and that the device clock is right (2 tries left)\n\
         Enter the code shown in the app to confirm: ",
    );
    enroll.type_line(&app.code_at(T0));
    let (status, out, err) = enroll.finish();
    assert!(status.success(), "{status}: {err}");
    assert_eq!(err, "");
    assert!(
        out.starts_with("\nBackup codes for root (shown only this once; each code works once):\n"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 12, "{out}");
}

#[test]
fn after_three_wrong_codes_enroll_says_how_to_confirm_later() {
    let d = InProcess::start();
    let mut enroll = Interactive::start(d.socket(), &["enroll", USER]);
    let shown = enroll.read_until("Enter the code shown in the app to confirm: ");
    let app = App::from_uri(uri_of(&shown));
    let wrong = app.wrong_code_at(T0);
    for _ in 0..3 {
        enroll.type_line(&wrong);
    }
    let (status, out, err) = enroll.finish();
    assert_eq!(status.code(), Some(1), "{out}{err}");
    let why = "the code does not match the pending enrollment; check that the app shows this \
               account and that the device clock is right";
    assert_eq!(
        out,
        format!(
            "Code rejected: {why} (2 tries left)\n\
             Enter the code shown in the app to confirm: \
             Code rejected: {why} (1 try left)\n\
             Enter the code shown in the app to confirm: "
        )
    );
    // Pending for 15 minutes from T0 (2027-01-15T08:00:00Z).
    assert_eq!(
        err,
        format!(
            "otpctl: error: code rejected 3 times: {why}. The enrollment of root stays pending \
             until 2027-01-15T08:15:00Z: confirm it with 'otpctl confirm root CODE', or start \
             again with 'otpctl enroll root'\n"
        )
    );
    // And so it does.
    otpctl(d.socket())
        .args(["confirm", USER, &app.code_at(T0 + 30)])
        .assert()
        .success();
}

/// Enrolls and confirms `USER` with `args` (no terminal: confirmed with
/// `otpctl confirm`); returns the app.
fn enrolled(d: &InProcess, args: &[&str]) -> App {
    let out = otpctl(d.socket())
        .args(["--json", "enroll", USER])
        .args(args)
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let app = App::from_uri(json["otpauth_uri"].as_str().unwrap());
    otpctl(d.socket())
        .args(["confirm", USER, &app.code_at(T0)])
        .assert()
        .success();
    app
}

#[test]
fn re_enrolling_says_what_exists_and_keeps_its_parameters() {
    let d = InProcess::start();
    enrolled(
        &d,
        &[
            "--algorithm",
            "sha256",
            "--digits",
            "8",
            "--period",
            "60",
            "--issuer",
            "Example",
        ],
    );
    // A new phone, no parameters given: the old ones, and it says so.
    otpctl(d.socket())
        .args(["enroll", USER])
        .stdin("")
        .assert()
        .success()
        .stdout_eq(
            "...
Account:    root
Device:     default
Issuer:     Example
Algorithm:  SHA256
Digits:     8
Period:     60s
Key:        [..]
URI:        otpauth://totp/Example:root?secret=[..]&digits=8&algorithm=SHA256&issuer=Example&period=60

root is enrolled already: device default (sha256/8/60s). Once confirmed, the new device replaces it and new backup codes are issued; until then it and the backup codes keep working.
Kept from default: algorithm, digits, period, issuer (give --algorithm, --digits, --period, --issuer to change).

Confirm with: otpctl confirm root CODE
",
        );
    // Given explicitly, a parameter changes; the others are kept. The
    // pending enrollment started above is replaced, and it says so.
    otpctl(d.socket())
        .args(["--json", "enroll", USER, "--digits", "6"])
        .assert()
        .success()
        .stdout_eq(
            r#"{"user":"root","device":"default","issuer":"Example","secret":"[..]","otpauth_uri":"[..]","algorithm":"sha256","digits":6,"period":60,"replaces":["default"]}
"#,
        );
    otpctl(d.socket())
        .args(["enroll", USER, "--algorithm", "sha1", "--digits", "6", "--period", "30", "--issuer", "New"])
        .stdin("")
        .assert()
        .success()
        .stdout_eq(
            "...
Issuer:     New
Algorithm:  SHA1
Digits:     6
Period:     30s
...
root is enrolled already: device default (sha256/8/60s). Once confirmed, the new device replaces it and new backup codes are issued; until then it and the backup codes keep working.
The enrollment of device default that awaited confirmation was dropped.

Confirm with: otpctl confirm root CODE
",
        );
}

#[test]
fn a_first_enrollment_replaces_nothing() {
    let d = InProcess::start();
    otpctl(d.socket())
        .args(["--json", "enroll", USER])
        .assert()
        .success()
        .stdout_eq(
            r#"{"user":"root","device":"default","issuer":"otpd-test","secret":"[..]","otpauth_uri":"[..]","algorithm":"sha1","digits":6,"period":30,"replaces":[]}
"#,
        );
}

#[test]
fn an_unknown_account_is_refused_unless_forced_and_an_impossible_name_always() {
    let d = InProcess::start();
    otpctl(d.socket())
        .args(["enroll", "ghostuser-typo"])
        .stdin("")
        .assert()
        .code(2)
        .stdout_eq("")
        .stderr_eq(
            "otpctl: error: no account named \"ghostuser-typo\" on this machine (the name \
             service does not know it: a typo?); nothing was enrolled. To enroll an account \
             that does not exist yet, add --force\n",
        );
    // Nothing was left behind.
    otpctl(d.socket())
        .args(["--json", "status"])
        .assert()
        .success()
        .stdout_eq("[]\n");
    otpctl(d.socket())
        .args(["enroll", "ghostuser-typo", "--force"])
        .stdin("")
        .assert()
        .success()
        .stderr_eq(
            "otpctl: warning: the name service does not know \"ghostuser-typo\"; enrolling it \
             anyway (--force)\n",
        );
    for (name, why) in [
        ("ghost:user", "invalid user name: contains ':'"),
        ("../root", "contains '/'"),
        ("1000", "is all digits (a uid, not a name)"),
    ] {
        otpctl(d.socket())
            .args(["enroll", "--force", "--", name])
            .assert()
            .code(2)
            .stdout_eq("")
            .stderr_eq(format!(
                "otpctl: error: {name:?} cannot be the name of an account: {why}; nothing was \
                 enrolled\n"
            ));
    }
    otpctl(d.socket())
        .args(["--json", "status"])
        .assert()
        .success()
        .stdout_eq("[{\"user\":\"ghostuser-typo\",\"state\":\"pending\",[..]}]\n");
}

/// Compares stderr byte for byte (snapbox's own comparison turns `\` into `/`).
trait StderrRaw {
    fn stderr_eq_raw(self, expected: &str) -> Self;
}

impl StderrRaw for snapbox::cmd::OutputAssert {
    fn stderr_eq_raw(self, expected: &str) -> Self {
        assert_eq!(String::from_utf8_lossy(&self.get_output().stderr), expected);
        self
    }
}

#[test]
fn with_json_errors_and_warnings_are_json_objects_on_stderr() {
    let d = InProcess::start();
    otpctl(d.socket())
        .args(["--json", "confirm", USER, "123456"])
        .assert()
        .code(5)
        .stdout_eq("")
        .stderr_eq_raw(
            r#"{"error":{"code":"failed_precondition","message":"failed precondition: user \"root\" has no pending enrollment; start one with `otpctl enroll`","exit_code":5}}
"#,
        );
    otpctl(d.socket())
        .args(["--json", "enroll", "ghostuser-typo"])
        .assert()
        .code(2)
        .stdout_eq("")
        .stderr_eq_raw(
            r#"{"error":{"code":"unknown_account","message":"no account named \"ghostuser-typo\" on this machine (the name service does not know it: a typo?); nothing was enrolled. To enroll an account that does not exist yet, add --force","exit_code":2}}
"#,
        );
    otpctl(d.socket())
        .args(["--json", "enroll", "ghostuser-typo", "--force"])
        .assert()
        .success()
        .stderr_eq_raw(
            r#"{"warning":{"message":"the name service does not know \"ghostuser-typo\"; enrolling it anyway (--force)"}}
"#,
        );
}

#[test]
fn a_rejected_verify_does_not_claim_zero_backup_codes() {
    let d = InProcess::start();
    let app = enrolled(&d, &[]);
    // Root has 10 backup codes; otpd tells the count only with an accepted
    // code, so a rejected one leaves it out rather than saying 0.
    let out = otpctl(d.socket())
        .args(["--json", "verify", USER, &app.wrong_code_at(T0)])
        .assert()
        .code(1);
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(json["decision"], "rejected", "{json}");
    assert!(json.get("backup_codes_left").is_none(), "{json}");
    let out = otpctl(d.socket())
        .args(["--json", "verify", USER, &app.code_at(T0 + 30)])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(json["backup_codes_left"], 10, "{json}");
}

#[test]
fn a_device_add_given_up_at_the_prompt_is_started_over_with_device_add() {
    let d = InProcess::start();
    enrolled(&d, &[]);
    let mut add = Interactive::start(d.socket(), &["device", "add", USER, "tablet"]);
    let shown = add.read_until("Enter the code shown in the app to confirm: ");
    let app = App::from_uri(uri_of(&shown));
    for _ in 0..3 {
        add.type_line(&app.wrong_code_at(T0));
    }
    let (status, _, err) = add.finish();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.ends_with(
            "confirm it with 'otpctl confirm root CODE', or start again with 'otpctl device \
             add root tablet'\n"
        ),
        "{err}"
    );
}

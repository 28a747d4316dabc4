//! The login experience through otpctl and the in-process daemon (manual
//! clock): pending enrollments that expire, clock drift learned per device,
//! and grace for sudo/su after a login.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use otpd::Clock;
use otpd_tests::*;
use serde_json::Value;
use snapbox::cmd::OutputAssert;

fn otpctl(socket: &Path) -> snapbox::cmd::Command {
    snapbox::cmd::Command::new(built("otpctl"))
        .arg("--socket")
        .arg(socket)
        .env_remove("OTPD_SOCKET")
        .stdin("")
}

fn json_of(out: &OutputAssert) -> Value {
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

fn start(d: &InProcess, user: &str) -> App {
    let out = otpctl(d.socket())
        .args(["--json", "enroll", user, "--force"])
        .assert()
        .success();
    App::from_uri(json_of(&out)["otpauth_uri"].as_str().unwrap())
}

fn status_json(d: &InProcess, user: &str) -> Value {
    let out = otpctl(d.socket())
        .args(["--json", "status", user])
        .assert()
        .success();
    let json = json_of(&out);
    // One user's status: an object, or a one-element list.
    match json {
        Value::Array(mut users) => users.remove(0),
        v => v,
    }
}

fn status_text(d: &InProcess, user: &str) -> String {
    let out = otpctl(d.socket()).args(["status", user]).assert().success();
    String::from_utf8(out.get_output().stdout.clone()).unwrap()
}

#[test]
fn a_pending_enrollment_expires_after_fifteen_minutes() {
    let d = InProcess::start();
    let app = start(&d, "alice");
    let t = d.clock.now();

    let s = status_json(&d, "alice");
    assert_eq!(s["pending"], true, "{s}");
    assert_eq!(s["pending_seconds_left"], 900, "{s}");
    assert!(s["pending_expires_at"].is_string(), "{s}");
    assert!(
        status_text(&d, "alice").contains("(+default pending, 15m left)"),
        "{}",
        status_text(&d, "alice")
    );

    d.clock.advance(14 * 60 + 20);
    assert_eq!(status_json(&d, "alice")["pending_seconds_left"], 40);
    assert!(status_text(&d, "alice").contains("40s left"));

    d.clock.advance(40);
    assert_eq!(status_json(&d, "alice")["pending_seconds_left"], 0);
    assert!(status_text(&d, "alice").contains("(+default pending, expired)"));

    // A code of the pending key, valid now: refused, the enrollment expired.
    otpctl(d.socket())
        .args(["confirm", "alice", &app.code_at(d.clock.now())])
        .assert()
        .failure()
        .stderr_eq(
            "otpctl: error: failed precondition: the enrollment of user \"alice\" expired; start again with otpctl enroll\n",
        );
    assert_eq!(d.clock.now(), t + 900);

    // Starting again gives a fresh key and 15 minutes; the old key is gone.
    let again = start(&d, "alice");
    assert_eq!(status_json(&d, "alice")["pending_seconds_left"], 900);
    otpctl(d.socket())
        .args(["confirm", "alice", &again.code_at(d.clock.now())])
        .assert()
        .success();
    let s = status_json(&d, "alice");
    assert_eq!(s["state"], "active", "{s}");
    assert!(s.get("pending_seconds_left").is_none(), "{s}");
}

#[test]
fn an_expired_pending_device_is_dropped_at_the_next_write() {
    let d = InProcess::start();
    let first = start(&d, "alice");
    otpctl(d.socket())
        .args(["confirm", "alice", &first.code_at(d.clock.now())])
        .assert()
        .success();
    d.clock.advance(30);
    otpctl(d.socket())
        .args(["device", "add", "alice", "tablet"])
        .assert()
        .success();
    d.clock.advance(901);
    // Still listed (expired) until the record is written again.
    let s = status_json(&d, "alice");
    assert_eq!(s["pending_device"], "tablet", "{s}");
    assert_eq!(s["pending_seconds_left"], 0, "{s}");
    // A login writes the record: the expired pending device is dropped.
    otpctl(d.socket())
        .args(["verify", "alice", &first.code_at(d.clock.now())])
        .assert()
        .success();
    let s = status_json(&d, "alice");
    assert_eq!(s["pending"], false, "{s}");
    assert_eq!(s["pending_device"], Value::Null, "{s}");
}

/// A phone whose clock runs late: otpd learns its offset from the codes it
/// accepts, `status --json` and `device list --json` show it, and the
/// phone keeps working once it is 70 s late.
#[test]
fn the_learned_clock_offset_is_shown_and_keeps_a_late_phone_working() {
    let d = InProcess::start();
    let app = start(&d, "alice");
    otpctl(d.socket())
        .args(["confirm", "alice", &app.code_at(d.clock.now())])
        .assert()
        .success();
    let s = status_json(&d, "alice");
    assert!(s["devices"][0].get("drift_steps").is_none(), "{s}");

    // The phone falls behind: 30 s, then 60 s (logins at :15 of a step;
    // three at each, as the offset moves on the third off-centre code).
    let mut t = d.clock.now() - d.clock.now() % 30 + 600 + 15;
    for late in [30, 30, 30, 60, 60, 60] {
        d.clock.set(t);
        otpctl(d.socket())
            .args(["verify", "alice", &app.code_at(t - late)])
            .assert()
            .success();
        t += 600;
    }
    let s = status_json(&d, "alice");
    assert_eq!(s["devices"][0]["drift_steps"], -2, "{s}");
    let out = otpctl(d.socket())
        .args(["--json", "device", "list", "alice"])
        .assert()
        .success();
    assert_eq!(json_of(&out)["devices"][0]["drift_steps"], -2);

    // 70 s late at the start of a step: 3 steps behind, accepted.
    d.clock.set(t - 15);
    otpctl(d.socket())
        .args(["verify", "alice", &app.code_at(t - 15 - 70)])
        .assert()
        .success();
    // A replay of that code is refused.
    otpctl(d.socket())
        .args(["verify", "alice", &app.code_at(t - 15 - 70)])
        .assert()
        .failure();
}

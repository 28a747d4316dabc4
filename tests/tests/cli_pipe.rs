//! otpctl writing into a pipe whose reader is gone (`otpctl ... | head`
//! once head has its lines): it ends quietly, with the exit status of the
//! work, which is done.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

use otpd_tests::*;

/// Runs otpctl with stdout a pipe whose read end is already closed; returns
/// its exit code and stderr.
fn into_closed_pipe(socket: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(built("otpctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("OTPD_SOCKET")
        .stdin(Stdio::null())
        .stdout(writer)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let d = InProcess::start();
    let s = d.socket();
    // The enrollment starts, though nobody reads the QR code.
    assert_eq!(
        into_closed_pipe(s, &["enroll", "root"]),
        (Some(0), String::new())
    );
    assert_eq!(status(&d, "root"), "pending", "the enrollment was started");
    assert_eq!(
        into_closed_pipe(s, &["--json", "enroll", "root"]),
        (Some(0), String::new())
    );
    for args in [
        &["status"][..],
        &["--json", "status"],
        &["status", "root"],
        &["device", "list", "root"],
        &["--json", "device", "list", "root"],
    ] {
        assert_eq!(
            into_closed_pipe(s, args),
            (Some(0), String::new()),
            "{args:?}"
        );
    }
    // The exit status stays the work's: a rejected code is 1.
    assert_eq!(
        into_closed_pipe(s, &["verify", "root", "000000"]),
        (Some(1), String::new())
    );
    // An error still says what went wrong, on stderr.
    let (code, err) = into_closed_pipe(s, &["reset", "ghostuser-typo"]);
    assert_eq!(code, Some(5));
    assert!(err.starts_with("otpctl: error: not found: "), "{err}");
}

/// The state of `user` by `otpctl --json status USER`.
fn status(d: &InProcess, user: &str) -> String {
    let out = otpctl(d.socket())
        .args(["--json", "status", user])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    json[0]["state"].as_str().unwrap().to_owned()
}

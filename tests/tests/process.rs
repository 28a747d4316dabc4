//! The built `otpd` binary: start with flags only, crash durability, the
//! audit trail, key and socket permissions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use otpd_proto::v1 as pb;
use otpd_tests::*;
use pb::{Decision, Reason};

#[tokio::test(flavor = "multi_thread")]
async fn a_used_code_stays_used_and_failures_stay_counted_after_a_crash() {
    let dir = shared_tempdir();
    let d = Process::start(dir.path());
    let mut c = connect(&d.socket).await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let (app, backup) = enroll(&mut c, "alice", now()).await;
    // The step after the confirmation code's.
    let code = app.code_at(now() + 30);
    let r = verify(&mut c, "alice", &code).await;
    assert_eq!(Decision::try_from(r.decision), Ok(Decision::Accepted));
    let r = verify(&mut c, "alice", &backup[0]).await;
    assert_eq!(Decision::try_from(r.decision), Ok(Decision::Accepted));
    for _ in 0..3 {
        verify(&mut c, "alice", &app.wrong_code_at(now())).await;
    }
    // SIGKILL right after the replies: nothing gets a chance to flush.
    drop(c);
    d.crash();

    let d = Process::start(dir.path());
    let mut c = connect(&d.socket).await;
    let s = status(&mut c, "alice").await;
    assert_eq!((s.consecutive_failures, s.backup_codes_left), (3, 9));
    let r = verify(&mut c, "alice", &code).await;
    assert_eq!(
        (Decision::try_from(r.decision), Reason::try_from(r.reason)),
        (Ok(Decision::Rejected), Ok(Reason::Replayed))
    );
    let r = verify(&mut c, "alice", &backup[0]).await;
    assert_eq!(Decision::try_from(r.decision), Ok(Decision::Rejected));
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_events_name_the_decision_and_never_the_code_or_secret() {
    let dir = shared_tempdir();
    let d = Process::start(dir.path());
    let mut c = connect(&d.socket).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (app, backup) = enroll(&mut c, "alice", now).await;
    let code = app.code_at(now + 30);
    let wrong = app.wrong_code_at(now);
    verify(&mut c, "alice", &code).await;
    verify(&mut c, "alice", &wrong).await;
    verify(&mut c, "alice", &backup[1]).await;
    let _ = c.verify(verify_req("alice", "12x456")).await;
    drop(c);
    let status = d.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let log = std::fs::read_to_string(
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .unwrap(),
    )
    .unwrap();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("otpd::audit")).collect();
    let find = |needles: &[&str]| audit.iter().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(
        find(&["event=\"enroll_confirm\"", "user=\"alice\"", "peer_uid=0"]),
        "{log}"
    );
    assert!(
        find(&[
            "event=\"verify\"",
            "user=\"alice\"",
            "service=\"test\"",
            "remote_host=\"192.0.2.7\"",
            "tty=\"ssh\"",
            "outcome=\"accepted\"",
            "method=\"totp\""
        ]),
        "{log}"
    );
    assert!(
        find(&[
            "event=\"verify\"",
            "outcome=\"rejected\"",
            "reason=\"wrong_code\""
        ]),
        "{log}"
    );
    assert!(
        find(&[
            "event=\"verify\"",
            "outcome=\"accepted\"",
            "method=\"backup_code\"",
            "backup_codes_left=9"
        ]),
        "{log}"
    );
    assert!(
        find(&["event=\"verify\"", "outcome=\"error\"", "invalid code"]),
        "{log}"
    );
    for secret in [
        code.as_str(),
        wrong.as_str(),
        backup[1].as_str(),
        &app.secret_base32(),
    ] {
        assert!(!log.contains(secret), "log contains a code or the secret");
    }
    assert!(!log.contains("12x456"));
}

#[test]
fn flags_alone_start_the_daemon_with_an_explicit_socket_mode() {
    let dir = shared_tempdir();
    let d = Process::start(dir.path());
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o666);
    let key = std::fs::metadata(d.state_dir.join("master.key")).unwrap();
    assert_eq!((key.permissions().mode() & 0o777, key.len()), (0o600, 32));
    let state = std::fs::metadata(&d.state_dir).unwrap();
    assert_eq!(state.permissions().mode() & 0o777, 0o700);
    let socket = d.socket.clone();
    assert!(d.stop().success());
    assert!(!socket.exists(), "socket removed on shutdown");
}

#[test]
fn unsafe_key_file_or_config_stops_the_start_with_a_clear_message() {
    let dir = shared_tempdir();
    drop(Process::start(dir.path()));
    let key = dir.path().join("state/master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, stderr) = Process::try_start(dir.path()).err().unwrap();
    assert!(status.contains("78"), "{status}");
    assert!(
        stderr.contains("master.key") && stderr.contains("chmod 600"),
        "{stderr}"
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.path().join("otpd.toml"), "[lockout]\nthreshhold = 3\n").unwrap();
    let (status, stderr) = Process::try_start(dir.path()).err().unwrap();
    assert!(status.contains("78"), "{status}");
    assert!(stderr.contains("unknown field `threshhold`"), "{stderr}");
}

#[test]
fn an_idle_client_cannot_hold_a_stop() {
    let dir = shared_tempdir();
    let d = Process::start(dir.path());
    // Any local user can connect and then say nothing.
    let idle = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    let limit = otpd::server::SHUTDOWN_GRACE + std::time::Duration::from_secs(5);
    let status = d.stop_within(limit);
    assert!(
        status.is_some_and(|s| s.success()),
        "otpd did not exit within {limit:?} of SIGTERM: {status:?}"
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_user_cannot_hold_enough_connections_to_lock_out_everyone() {
    use std::os::unix::process::CommandExt;
    let dir = shared_tempdir();
    let d = Process::start(dir.path());
    // As nobody: open 40 connections and hold them; report how many the
    // daemon kept open (a dropped one reads EOF at once).
    let script = r#"
import select, socket, sys, time
held = [socket.socket(socket.AF_UNIX) for _ in range(40)]
for s in held:
    s.connect(sys.argv[1])
closed, alive = set(), set()
def poll(timeout):
    waiting = [s for s in held if s not in closed and s not in alive]
    readable, _, _ = select.select(waiting, [], [], timeout) if waiting else ([], [], [])
    for s in readable:
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        (alive if data else closed).add(s)
# Wait (bounded) until the refused ones are closed, then a moment more in
# case the daemon closes too many.
deadline = time.time() + 20
while time.time() < deadline and len(closed) < len(held) - int(sys.argv[2]):
    poll(0.2)
poll(0.3)
print(len(held) - len(closed), flush=True)
sys.stdin.read()
"#;
    let mut child = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(&d.socket)
        .arg(otpd::connections::MAX_PER_UID.to_string())
        .uid(65534)
        .gid(65534)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), otpd::connections::MAX_PER_UID.to_string());
    // While nobody holds its 32, root (every login) is still served.
    let mut c = connect(&d.socket).await;
    let s = status(&mut c, "alice").await;
    assert_eq!(pb::State::try_from(s.state), Ok(pb::State::NotEnrolled));
    drop(child.stdin.take());
    child.wait().unwrap();
}

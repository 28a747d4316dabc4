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

/// `otpd --check-config` refuses a group that does not exist and a socket
/// mode that is not one of 0o666, 0o660 or 0o600, naming the key (exit 78,
/// as for any bad config); the same file with real groups is fine.
#[test]
fn check_config_refuses_a_missing_group_and_a_meaningless_socket_mode() {
    let dir = shared_tempdir();
    let config = dir.path().join("otpd.toml");
    let check = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let out = std::process::Command::new(built("otpd"))
            .arg("--config")
            .arg(&config)
            .arg("--check-config")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = check("admin_group = \"root\"\nsocket_mode = 0o660\n");
    assert_eq!((code, stdout.as_str()), (Some(0), "configuration OK\n"));

    let (code, _, stderr) = check("admin_group = \"otpd-no-such-group\"\n");
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("admin_group: group \"otpd-no-such-group\" does not exist"),
        "{stderr}"
    );
    let (code, _, stderr) =
        check("[enforcement]\nrequire = \"groups\"\ngroups = [\"otpd-no-such-group\"]\n");
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("enforcement.groups: group"), "{stderr}");

    let (code, _, stderr) = check("socket_mode = 0o777\n");
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("socket_mode = 0o777 is not one of 0o666"),
        "{stderr}"
    );
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
    // Eight refusals, one line (issue 6, defect 6: there was one line per
    // refused connection, 62k lines/s under a flood); the rest go into one
    // summary a minute.
    let log = d.stderr();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection refused") && l.contains("peer_uid=65534"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("too many connections from this uid")
            && lines[0].contains("summarised once a minute"),
        "{log}"
    );
}

/// Every entry under `dir` with its mode.
fn tree_modes(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                pending.push(e.path());
            }
            out.push((e.path(), meta.permissions().mode() & 0o7777));
        }
    }
    out
}

/// Issue 6, defect 10: a FIFO at master.key made otpd block in open()
/// before it bound its socket.
#[test]
fn a_fifo_in_place_of_the_key_is_refused_at_once() {
    let dir = shared_tempdir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::mkfifo(
        &state.join("master.key"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let launch = Launch {
        deadline: Some(std::time::Duration::from_secs(15)),
        ..Launch::default()
    };
    let (status, stderr) = Process::try_start_with(dir.path(), launch).err().unwrap();
    assert!(status.contains("78"), "{status}: {stderr}");
    assert!(
        stderr.contains("master.key") && stderr.contains("not a regular file (a FIFO)"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}

/// Issue 6, defect 10: a state directory others can read or search was
/// accepted (only write access was refused).
#[test]
fn a_state_directory_open_to_others_is_refused_with_the_fix() {
    let dir = shared_tempdir();
    let state = dir.path().join("state");
    for mode in [0o755, 0o750, 0o701] {
        let _ = std::fs::create_dir(&state);
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(mode)).unwrap();
        let (status, stderr) = Process::try_start(dir.path()).err().unwrap();
        assert!(status.contains("78"), "{mode:o}: {status}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(
            errors,
            vec![format!(
                "otpd: error: state directory {0}: mode {mode:04o} lets group or others in; \
                 run `chmod 700 {0}`",
                state.display()
            )],
            "{stderr}"
        );
    }
    // After the chmod it starts.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(Process::start(dir.path()).stop().success());
}

/// Issue 6, defect 10: under umask 022 the store files came out 0644.
#[tokio::test(flavor = "multi_thread")]
async fn under_umask_022_nothing_in_the_state_directory_is_open_to_others() {
    let dir = shared_tempdir();
    let launch = Launch {
        umask: Some(0o022),
        ..Launch::default()
    };
    let d = Process::try_start_with(dir.path(), launch).unwrap();
    let mut c = connect(&d.socket).await;
    let (app, _) = enroll(&mut c, "alice", unix_now()).await;
    verify(&mut c, "alice", &app.code_at(unix_now() + 30)).await;
    drop(c);
    // Sockets keep the modes they are meant to have.
    let socket_mode =
        |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(socket_mode(&d.socket), 0o666);
    assert_eq!(socket_mode(&d.pam_socket), 0o600);

    let state = d.state_dir.clone();
    assert!(d.stop().success());
    let modes = tree_modes(&state);
    assert!(modes.len() > 3, "{modes:?}");
    let open: Vec<_> = modes.iter().filter(|(_, m)| m & 0o077 != 0).collect();
    assert!(open.is_empty(), "open to group or others: {open:?}");
    assert_eq!(socket_mode(&state), 0o700);
}

/// Descriptors the process holds, from /proc.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (fields 14 and 15 of
/// /proc/<pid>/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may contain spaces: count fields after its ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Issue 6, defect 9: out of descriptors, tonic's accept loop retried at
/// once and spun a core. Now accepting pauses (up to 500 ms), and the
/// daemon serves again as soon as descriptors are free.
///
/// The bound is 10% of one core over 3 s of exhaustion: the fixed daemon
/// uses well under 1%; the old one spun (100% of a core on an idle
/// machine, still over 30% on a loaded 2-core one).
#[tokio::test(flavor = "multi_thread")]
async fn out_of_descriptors_the_daemon_idles_and_recovers() {
    const NOFILE: u64 = 64;
    const MEASURE: std::time::Duration = std::time::Duration::from_secs(3);
    let dir = shared_tempdir();
    let launch = Launch {
        nofile: Some(NOFILE),
        ..Launch::default()
    };
    let d = Process::try_start_with(dir.path(), launch).unwrap();
    let pid = d.child.id();
    // root is not capped: hold more connections than the daemon has
    // descriptors (they queue; the listen queue is deep).
    let held: Vec<std::os::unix::net::UnixStream> = (0..NOFILE + 40)
        .map(|_| std::os::unix::net::UnixStream::connect(&d.socket).unwrap())
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while open_descriptors(pid) < NOFILE as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never ran out of descriptors: {} open",
            open_descriptors(pid)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // CPU time over a period of exhaustion (clock ticks are 1/100 s).
    let ticks_per_second = 100.0;
    let before = cpu_ticks(pid);
    let wall = std::time::Instant::now();
    std::thread::sleep(MEASURE);
    let used = (cpu_ticks(pid) - before) as f64 / ticks_per_second;
    let share = used / wall.elapsed().as_secs_f64();
    assert!(
        open_descriptors(pid) >= NOFILE as usize - 2,
        "exhaustion did not last"
    );
    assert!(
        share < 0.1,
        "otpd used {:.0}% of a core while out of descriptors",
        share * 100.0
    );
    // Connections close: root's verifications work again.
    drop(held);
    // The daemon notices the closed connections one by one (and accepts
    // the ones still queued behind them); until their descriptors are back
    // it sheds new connections at once, so a client tries again.
    let served = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let Ok(mut c) = try_connect(&d.socket).await
                && let Ok(reply) = c
                    .get_status(pb::GetStatusRequest {
                        user: b"alice".to_vec().into(),
                    })
                    .await
            {
                break reply.into_inner();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("served again within 10 s of the connections closing");
    assert_eq!(
        pb::State::try_from(served.state),
        Ok(pb::State::NotEnrolled)
    );
    let log = d.stderr();
    assert!(log.contains("cannot accept connections; pausing"), "{log}");
    assert!(log.contains("accepting connections again"), "{log}");
    eprintln!(
        "otpd used {:.1}% of a core while out of descriptors",
        share * 100.0
    );
}

/// A missing key file beside sealed records is restored, never replaced:
/// a new key would make every record unreadable and lock every user out.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_key_beside_sealed_records_stops_the_start_instead_of_a_new_key() {
    let dir = shared_tempdir();
    let d = Process::start(dir.path());
    let mut c = connect(&d.socket).await;
    enroll(&mut c, "alice", unix_now()).await;
    drop(c);
    drop(d);

    let key = dir.path().join("state/master.key");
    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let (exit, stderr) = Process::try_start(dir.path()).err().unwrap();
    assert!(exit.contains("78"), "{exit}");
    assert!(
        stderr.contains("master.key") && stderr.contains("restore master.key"),
        "{stderr}"
    );
    assert!(
        !key.exists(),
        "otpd created a new key beside sealed records"
    );

    // With the key back, alice is still enrolled.
    std::fs::write(&key, &saved).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let d = Process::start(dir.path());
    let mut c = connect(&d.socket).await;
    let s = status(&mut c, "alice").await;
    assert_eq!(pb::State::try_from(s.state), Ok(pb::State::Active));
}

/// `otpctl rekey` interrupted anywhere loses nothing: with the new key
/// written beside the old one (the rotation's first step) otpd opens
/// records sealed under either key and seals new writes under the new one;
/// a crash with the records half re-sealed changes nothing; a new Rekey
/// finishes the job, the key file is replaced and the old key is gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotation_interrupted_anywhere_loses_nothing() {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = shared_tempdir();
    let key = dir.path().join("state/master.key");
    let next = dir.path().join("state/master.key.new");
    let d = Process::start(dir.path());
    let mut c = connect(&d.socket).await;
    let (mut alice, _) = Codes::enroll(&mut c, "alice").await;
    let (mut bob, _) = Codes::enroll(&mut c, "bob").await;
    let (_carol, carol_backup) = Codes::enroll(&mut c, "carol").await;
    drop(c);
    d.stop();
    let old_key = std::fs::read(&key).unwrap();

    // The rotation's first step, then a crash: the new key beside the old.
    let new_key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    assert_ne!(new_key, old_key);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&next)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &new_key))
        .unwrap();
    let d = Process::start(dir.path());
    let mut c = connect(&d.socket).await;
    // alice's record is rewritten (sealed under the new key); bob's and
    // carol's stay sealed under the old one.
    let alice_code = alice.fresh();
    let v = verify(&mut c, "alice", &alice_code).await;
    assert_eq!(v.decision(), Decision::Accepted, "{v:?}");
    drop(c);
    d.crash();

    // Half re-sealed, after a crash: every user still opens.
    let d = Process::start(dir.path());
    let mut c = connect(&d.socket).await;
    for user in ["alice", "bob", "carol"] {
        let s = status(&mut c, user).await;
        assert_eq!(
            pb::State::try_from(s.state),
            Ok(pb::State::Active),
            "{user}"
        );
    }
    let v = verify(&mut c, "alice", &alice_code).await;
    assert_eq!(v.reason(), Reason::Replayed, "a used code came back: {v:?}");

    // A new Rekey finishes the rotation with the key already written.
    let r = c.rekey(pb::RekeyRequest {}).await.unwrap().into_inner();
    assert_eq!(r.records, 2, "bob's and carol's records were re-sealed");
    assert!(!next.exists(), "master.key.new is gone");
    assert_eq!(
        std::fs::read(&key).unwrap(),
        new_key,
        "the key file is the new key"
    );
    drop(c);
    d.crash();

    // Only the new key left: everything opens, used codes stay used.
    let d = Process::start(dir.path());
    let mut c = connect(&d.socket).await;
    let v = verify(&mut c, "alice", &alice_code).await;
    assert_eq!(v.reason(), Reason::Replayed, "{v:?}");
    let v = verify(&mut c, "bob", &bob.fresh()).await;
    assert_eq!(v.decision(), Decision::Accepted, "{v:?}");
    let v = verify(&mut c, "carol", &carol_backup[0]).await;
    assert_eq!(v.decision(), Decision::Accepted, "{v:?}");
    assert_eq!(v.backup_codes_left, 9);
    let v = verify(&mut c, "carol", &carol_backup[0]).await;
    assert_eq!(
        v.decision(),
        Decision::Rejected,
        "a backup code worked twice"
    );
}

//! The audit trail of the built `otpd` binary under hostile callers: one
//! unambiguous line per event in both log formats, a bounded volume of
//! refusals, log rotation for installs without journald; and who counts as
//! an admin (the groups the calling process really has).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use otpd_proto::v1 as pb;
use otpd_tests::*;

/// The uid and gid of `nobody` and `nogroup` on Debian.
const NOBODY: u32 = 65534;

/// Values a caller controls (PAM passes whatever the application set as
/// PAM_SERVICE, PAM_RHOST and PAM_TTY), crafted to forge fields and lines.
const FORGED_SERVICE: &str = r#"x outcome="accepted" peer_uid=0"#;
const FORGED_HOST: &str =
    "192.0.2.1\u{2028}2026-01-01T00:00:00Z  INFO otpd::audit: outcome=\"accepted\"";
const FORGED_TTY: &str = "\u{202e}0=diu_reep \\\" \n\r\t\u{2066}\u{200f}\u{feff}";

/// A relay socket served by a process running as `nobody`: every
/// connection made to it reaches the daemon as a connection of `nobody`
/// (the daemon sees the credentials of the process that connected to it).
struct NobodyRelay {
    child: Child,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NobodyRelay {
    fn start(daemon_socket: &Path) -> Self {
        let dir = shared_tempdir();
        std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        let path = dir.path().join("relay.sock");
        let script = r#"
import os, socket, sys, threading
target, path = sys.argv[1], sys.argv[2]
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(64)
print(os.getuid(), flush=True)
def pump(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
while True:
    client, _ = srv.accept()
    upstream = socket.socket(socket.AF_UNIX)
    upstream.connect(target)
    threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
    threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
"#;
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .arg(daemon_socket)
            .arg(&path)
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Ready once it prints its uid (the socket is listening by then).
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), NOBODY.to_string(), "relay did not start");
        Self {
            child,
            path,
            _dir: dir,
        }
    }
}

impl Drop for NobodyRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The log the daemon wrote (its stderr).
fn log_of(dir: &Path) -> String {
    let path = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    std::fs::read_to_string(path).unwrap()
}

/// Undoes Rust's `{:?}` escapes of a string (what the text format writes
/// for `&str` values), from just after the opening quote; returns the
/// value and the rest after the closing quote.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                '0' => out.push('\0'),
                c @ ('\\' | '"' | '\'') => out.push(c),
                'u' => {
                    let rest = &s[chars.next()?.0 + 1..];
                    let end = rest.find('}')?;
                    out.push(char::from_u32(u32::from_str_radix(&rest[..end], 16).ok()?)?);
                    for _ in 0..=end {
                        chars.next();
                    }
                }
                _ => return None,
            },
            c => out.push(c),
        }
    }
    None
}

/// The fields of one text-format audit line, in order:
/// `<time>  <LEVEL> otpd::audit: key=value key="quoted value" ...`.
/// `None` if the line is not exactly that.
fn parse_text(line: &str) -> Option<Vec<(String, String)>> {
    let (_, mut rest) = line.split_once(" otpd::audit: ")?;
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            unquote(quoted)?
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        fields.push((key.to_owned(), value));
        rest = match after.strip_prefix(' ') {
            Some(r) => r,
            None if after.is_empty() => after,
            None => return None,
        };
    }
    Some(fields)
}

/// A Verify request with the forged context.
fn forged(user: &str, code: &str) -> pb::VerifyRequest {
    pb::VerifyRequest {
        user: user.as_bytes().to_vec().into(),
        code: code.as_bytes().to_vec().into(),
        service: FORGED_SERVICE.into(),
        remote_host: FORGED_HOST.into(),
        tty: FORGED_TTY.into(),
        local_requester: None,
        allow_app_password: false,
        grace_only: false,
    }
}

/// Starts the binary in `dir` with `config`, enrolls `nobody` as root and
/// sends one forged Verify as root and one as nobody (both checked wrong
/// codes); returns the log.
async fn forged_verifies(dir: &Path, config: &str) -> String {
    std::fs::write(dir.join("otpd.toml"), config).unwrap();
    let d = Process::start(dir);
    let mut root = connect(&d.socket).await;
    let (app, _) = enroll(&mut root, "nobody", unix_now()).await;
    let wrong = app.wrong_code_at(unix_now());
    let r = root.verify(forged("nobody", &wrong)).await.unwrap();
    assert_eq!(r.into_inner().decision, pb::Decision::Rejected as i32);
    let relay = NobodyRelay::start(&d.socket);
    let mut nobody = connect(&relay.path).await;
    let r = nobody.verify(forged("nobody", &wrong)).await.unwrap();
    assert_eq!(r.into_inner().decision, pb::Decision::Rejected as i32);
    drop(nobody);
    drop(root);
    assert!(d.stop().success());
    log_of(dir)
}

fn assert_no_raw_invisible(log: &str) {
    for c in [
        '\u{2028}', '\u{2029}', '\u{202e}', '\u{2066}', '\u{200f}', '\u{feff}', '\r',
    ] {
        assert!(
            !log.contains(c),
            "raw U+{:04X} in the log:\n{log}",
            c as u32
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_context_stays_inside_its_quoted_fields_in_the_text_log() {
    let dir = shared_tempdir();
    let log = forged_verifies(dir.path(), "").await;
    assert_no_raw_invisible(&log);
    // Every line is a whole event: it starts with the timestamp.
    for line in log.lines() {
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()),
            "a line that is not an event: {line:?}\n{log}"
        );
    }
    let verifies: Vec<Vec<(String, String)>> = log
        .lines()
        .filter(|l| l.contains(" otpd::audit: ") && l.contains("event=\"verify\""))
        .map(|l| parse_text(l).unwrap_or_else(|| panic!("unparsable audit line: {l:?}")))
        .collect();
    assert_eq!(verifies.len(), 2, "{log}");
    for (fields, uid) in verifies.iter().zip(["0", "65534"]) {
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "event",
                "user",
                "service",
                "remote_host",
                "tty",
                "outcome",
                "reason",
                "method",
                "backup_codes_left",
                "retry_after",
                "clock_skew_seconds",
                "peer_uid",
                "peer_pid"
            ],
            "{log}"
        );
        let map: BTreeMap<&str, &str> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(map["event"], "verify");
        assert_eq!(map["user"], "nobody");
        assert_eq!(map["service"], FORGED_SERVICE);
        assert_eq!(map["remote_host"], FORGED_HOST);
        assert_eq!(map["tty"], FORGED_TTY);
        assert_eq!(map["outcome"], "rejected");
        assert_eq!(map["reason"], "wrong_code");
        assert_eq!(map["peer_uid"], uid);
    }
}

/// Every audit line of the text format is `key=value` pairs only, values
/// with spaces quoted: a Verify from a remote host with a space in its
/// name, and an import whose source has spaces (its line used to end in an
/// unquoted free-text message, "device imported", that no key=value
/// reader could take apart).
#[tokio::test(flavor = "multi_thread")]
async fn every_text_audit_line_is_key_value_pairs_with_spaces_quoted() {
    const HOST: &str = "build host 7";
    const SOURCE: &str = "/etc/my users.oath:2";
    let dir = shared_tempdir();
    std::fs::write(dir.path().join("otpd.toml"), "").unwrap();
    let d = Process::start(dir.path());
    let mut root = connect(&d.socket).await;
    let (app, _) = enroll(&mut root, "alice", unix_now()).await;
    let mut req = verify_req("alice", &app.wrong_code_at(unix_now()));
    req.remote_host = HOST.into();
    root.verify(req).await.unwrap();
    root.import_device(pb::ImportDeviceRequest {
        user: b"bob".to_vec().into(),
        device: "token".into(),
        secret: b"12345678901234567890".to_vec().into(),
        replace: true,
        source: SOURCE.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    drop(root);
    assert!(d.stop().success());
    let log = log_of(dir.path());

    let audit: Vec<BTreeMap<String, String>> = log
        .lines()
        .filter(|l| l.contains(" otpd::audit: "))
        .map(|l| {
            parse_text(l)
                .unwrap_or_else(|| panic!("not key=value pairs: {l:?}\n{log}"))
                .into_iter()
                .collect()
        })
        .collect();
    let event = |name: &str| {
        audit
            .iter()
            .find(|f| f["event"] == name)
            .unwrap_or_else(|| panic!("no {name} event:\n{log}"))
    };
    assert_eq!(event("verify")["remote_host"], HOST);
    assert_eq!(event("import")["source"], SOURCE);
    assert_eq!(event("import")["user"], "bob");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_context_is_one_exact_json_value_per_field() {
    let dir = shared_tempdir();
    let log = forged_verifies(dir.path(), "log_format = \"json\"\n").await;
    assert_no_raw_invisible(&log);
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let verifies: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["target"] == "otpd::audit" && e["event"] == "verify")
        .collect();
    assert_eq!(verifies.len(), 2, "{log}");
    for (e, uid) in verifies.iter().zip([0, NOBODY]) {
        assert_eq!(e["service"], FORGED_SERVICE);
        assert_eq!(e["remote_host"], FORGED_HOST);
        assert_eq!(e["tty"], FORGED_TTY);
        assert_eq!(e["outcome"], "rejected");
        assert_eq!(e["peer_uid"], uid);
    }
}

/// Sends `n` requests that are refused before any decision (a status of
/// another account: PERMISSION_DENIED), `tasks` at a time.
async fn refused_requests(socket: &Path, n: usize, tasks: usize) {
    let client = connect(socket).await;
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let mut c = client.clone();
        let count = n / tasks + usize::from(t < n % tasks);
        set.spawn(async move {
            for _ in 0..count {
                let e = c
                    .get_status(pb::GetStatusRequest {
                        user: b"root".to_vec().into(),
                    })
                    .await
                    .unwrap_err();
                assert_eq!(e.code(), tonic::Code::PermissionDenied);
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_refused_requests_is_logged_in_bounded_lines_with_a_true_summary() {
    const FLOOD: u64 = 10_000;
    let dir = shared_tempdir();
    let d = Process::start(dir.path());
    let mut root = connect(&d.socket).await;
    let (app, _) = enroll(&mut root, "nobody", unix_now()).await;
    let relay = NobodyRelay::start(&d.socket);
    let started = std::time::Instant::now();
    refused_requests(&relay.path, FLOOD as usize, 8).await;
    // Checked decisions of the same uid are never dropped, flood or not.
    let mut nobody = connect(&relay.path).await;
    for _ in 0..3 {
        let r = nobody
            .verify(verify_req("nobody", &app.wrong_code_at(unix_now())))
            .await
            .unwrap();
        assert_eq!(r.into_inner().decision, pb::Decision::Rejected as i32);
    }
    // Nor is anything root does.
    for _ in 0..20 {
        let e = root
            .get_status(pb::GetStatusRequest {
                user: b"bad:name".to_vec().into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
    let minutes = started.elapsed().as_secs() / 60;
    drop((nobody, root));
    assert!(d.stop().success());
    let log = log_of(dir.path());

    let events: Vec<BTreeMap<String, String>> = log
        .lines()
        .filter(|l| l.contains(" otpd::audit: "))
        .map(|l| {
            parse_text(l)
                .unwrap_or_else(|| panic!("unparsable: {l:?}"))
                .into_iter()
                .collect()
        })
        .collect();
    let of = |uid: &str, event: &str| -> Vec<&BTreeMap<String, String>> {
        events
            .iter()
            .filter(|e| e.get("peer_uid").map(String::as_str) == Some(uid))
            .filter(|e| e.get("event").map(String::as_str) == Some(event))
            .collect()
    };
    let one_by_one = of("65534", "status").len() as u64;
    let summaries = of("65534", "refused_summary");
    let summarised: u64 = summaries
        .iter()
        .map(|e| e["refused"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(one_by_one, u64::from(otpd::audit::REFUSALS_LOGGED), "{log}");
    assert_eq!(one_by_one + summarised, FLOOD, "{log}");
    // One summary per minute at most (plus the one at shutdown).
    assert!(
        (1..=minutes + 2).contains(&(summaries.len() as u64)),
        "{} summaries in {minutes} min",
        summaries.len()
    );
    assert!(
        summaries[0]["summary"].contains(" requests refused from uid 65534 in the last "),
        "{:?}",
        summaries[0]
    );
    assert_eq!(of("65534", "verify").len(), 3, "{log}");
    assert_eq!(of("0", "status").len(), 20, "{log}");
    // The whole log stays small: bounded, not one line per request.
    assert!(log.lines().count() < 100, "{} lines", log.lines().count());
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn logrotate(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let out = Command::new("logrotate").args(args).output();
    let out = out.expect("logrotate is missing: apt-get install logrotate (.ci/run does)");
    assert!(
        out.status.success(),
        "logrotate {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_shipped_logrotate_file_is_valid_and_rotates_a_log_held_open_for_append() {
    let conf = repo_file("dist/otpd.logrotate");
    let dir = shared_tempdir();
    let state = dir.path().join("state");
    // As installed: parses, and names /var/log/otpd.log.
    let out = logrotate(&[
        "--debug".as_ref(),
        "--state".as_ref(),
        state.as_os_str(),
        conf.as_os_str(),
    ]);
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("/var/log/otpd.log"), "{said}");
    assert!(!said.to_lowercase().contains("error"), "{said}");

    // The same rules on a log in a temporary directory, held open with
    // O_APPEND as the shell's `>>` holds /var/log/otpd.log.
    let log = dir.path().join("otpd.log");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("copytruncate"));
    let local = dir.path().join("otpd.logrotate");
    std::fs::write(
        &local,
        text.replace("/var/log/otpd.log", log.to_str().unwrap()),
    )
    .unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut held = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    std::io::Write::write_all(&mut held, b"before rotation\n").unwrap();
    logrotate(&[
        "--force".as_ref(),
        "--state".as_ref(),
        state.as_os_str(),
        local.as_os_str(),
    ]);
    let rotated = dir.path().join("otpd.log.1");
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap(),
        "before rotation\n"
    );
    std::io::Write::write_all(&mut held, b"after\n").unwrap();
    // Truncated in place; the daemon's writes go on at the start, no hole.
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "after\n");
}

#[test]
fn make_install_puts_the_logrotate_file_in_place_and_uninstall_removes_it() {
    let make = |target: &str| {
        let out = Command::new("make")
            .args(["-n", "-C"])
            .arg(repo_file(""))
            .arg(target)
            .arg("DESTDIR=/nonexistent-destdir")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let install = make("install");
    assert!(
        install.contains(
            "install -m 0644 dist/otpd.logrotate /nonexistent-destdir/etc/logrotate.d/otpd"
        ),
        "{install}"
    );
    let uninstall = make("uninstall");
    assert!(
        uninstall.contains("rm -f /nonexistent-destdir/etc/logrotate.d/otpd"),
        "{uninstall}"
    );
}

/// A throwaway group (`otpdg` + random digits), removed on drop.
struct TempGroup {
    name: String,
    gid: u32,
}

impl TempGroup {
    /// `groupadd [--users MEMBERS] NAME`, retrying while another process
    /// holds the lock on /etc/group.
    fn create(members: &[&str]) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("otpdg{:08x}", nanos ^ std::process::id());
        let mut cmd = Command::new("groupadd");
        if !members.is_empty() {
            cmd.arg("--users").arg(members.join(","));
        }
        cmd.arg(&name);
        retry_locked(&mut cmd);
        let gid = nix::unistd::Group::from_name(&name)
            .unwrap()
            .expect("the new group exists")
            .gid
            .as_raw();
        Self { name, gid }
    }
}

impl Drop for TempGroup {
    fn drop(&mut self) {
        retry_locked(Command::new("groupdel").arg(&self.name));
    }
}

fn retry_locked(cmd: &mut Command) {
    for _ in 0..50 {
        let out = cmd.output().unwrap();
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("lock"), "{cmd:?} failed: {err}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{cmd:?}: /etc/group stayed locked");
}

/// `otpctl --socket SOCKET status --locked` (a listing: admins only) run as
/// nobody:nogroup with exactly the supplementary `groups`; its exit code.
fn list_as_nobody_with_groups(socket: &Path, groups: &[u32]) -> i32 {
    let dir = socket.parent().unwrap();
    let exe = dir.join("otpctl");
    if !exe.exists() {
        std::fs::copy(built("otpctl"), &exe).unwrap();
    }
    let groups = if groups.is_empty() {
        "--clear-groups".to_owned()
    } else {
        format!(
            "--groups={}",
            groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", &groups])
        .arg(&exe)
        .arg("--socket")
        .arg(socket)
        // A listing only admins get (plain `status` shows a plain user
        // their own account).
        .args(["status", "--locked"])
        .env_remove("OTPD_SOCKET")
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out.status.code().unwrap()
}

fn in_process_with_admin_group(group: &str) -> InProcess {
    let dir = shared_tempdir();
    let mut config = config_in(dir.path());
    config.admin_group = Some(group.to_owned());
    InProcess::start_in(dir, config, std::sync::Arc::new(otpd::ManualClock::new(T0)))
}

#[test]
fn admin_rights_come_from_the_groups_the_calling_process_has() {
    // A group nobody is not listed in: a process that carries it is admin.
    let carried = TempGroup::create(&[]);
    let d = in_process_with_admin_group(&carried.name);
    assert_eq!(list_as_nobody_with_groups(d.socket(), &[carried.gid]), 0);
    assert_eq!(list_as_nobody_with_groups(d.socket(), &[]), 4);
    drop(d);

    // A group /etc/group lists nobody in: a process without it is not
    // admin (it dropped the group, or was started before it was added).
    let listed = TempGroup::create(&["nobody"]);
    let d = in_process_with_admin_group(&listed.name);
    assert_eq!(list_as_nobody_with_groups(d.socket(), &[]), 4);
    assert_eq!(list_as_nobody_with_groups(d.socket(), &[listed.gid]), 0);
}

/// The local requester pam_otpd reports is audited as a number when root
/// sends it, and left out when another caller does (it is not believed).
#[tokio::test(flavor = "multi_thread")]
async fn the_local_requester_uid_is_audited_from_root_only() {
    let dir = shared_tempdir();
    std::fs::write(dir.path().join("otpd.toml"), "log_format = \"json\"\n").unwrap();
    let d = Process::start(dir.path());
    let mut root = connect(&d.socket).await;
    let (app, _) = enroll(&mut root, "nobody", unix_now()).await;
    let request = || pb::VerifyRequest {
        remote_host: String::new(),
        local_requester: Some(pb::LocalRequester {
            uid: 4242,
            is_target_user: false,
        }),
        ..verify_req("nobody", &app.wrong_code_at(unix_now()))
    };
    root.verify(request()).await.unwrap();
    let relay = NobodyRelay::start(&d.socket);
    let mut nobody = connect(&relay.path).await;
    nobody.verify(request()).await.unwrap();
    drop(nobody);
    drop(root);
    assert!(d.stop().success());
    let log = log_of(dir.path());
    let requesters: Vec<(serde_json::Value, serde_json::Value)> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["target"] == "otpd::audit" && e["event"] == "verify")
        .map(|e| (e["peer_uid"].clone(), e["requester_uid"].clone()))
        .collect();
    assert_eq!(
        requesters,
        [
            (0.into(), 4242.into()),
            (NOBODY.into(), serde_json::Value::Null)
        ],
        "{log}"
    );
}

//! Helpers for running the built pam_otpd under pam_wrapper + pamtester.
//!
//! * [`PamService`]: a temporary `PAM_WRAPPER_SERVICE_DIR` holding one
//!   service file (pam_wrapper copies the directory, so only regular files go
//!   in it, never the daemon's socket).
//! * [`Pamtester`]: runs `pamtester` under `LD_PRELOAD=libpam_wrapper.so`,
//!   feeds the answers on stdin (one line per prompt, as libpam_misc's
//!   `misc_conv` reads them) and captures a [`PamOutput`]: exit status,
//!   stdout (`PAM_TEXT_INFO`, the success line), stderr (prompts,
//!   `PAM_ERROR_MSG`, the failure line, and the module's log lines, which
//!   pam_wrapper prints as `PWRAP_* ... SYSLOG(n): ...`).
//! * [`RealDaemon`]: the built `otpd` binary (real clock) with a blocking
//!   gRPC client, and [`Codes`]: fresh TOTP codes under the real clock.
//!
//! The module trusts only a root-owned socket served by root, so these
//! helpers must run as root ([`require_root`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use otpd_proto::v1 as pb;
use pb::otpd_client::OtpdClient;
use tonic::transport::Channel;

use crate::{App, Process, connect, shared_tempdir};

/// `pam_strerror(PAM_AUTH_ERR)`.
pub const AUTH_ERR: &str = "Authentication failure";
/// `pam_strerror(PAM_AUTHINFO_UNAVAIL)`.
pub const AUTHINFO_UNAVAIL: &str = "Authentication service cannot retrieve authentication info";
/// `pam_strerror(PAM_PERM_DENIED)`: every module of the stack ignored the
/// request.
pub const PERM_DENIED: &str = "Permission denied";
/// What pamtester prints on stdout on success.
pub const SUCCESS_LINE: &str = "pamtester: successfully authenticated\n";
/// pam_otpd's default prompt.
pub const PROMPT: &str = "Verification code: ";
/// pam_otpd's prompt with `forward_pass`.
pub const COMBINED_PROMPT: &str = "Password & verification code: ";

/// How long one pamtester run may take before it is killed.
const PAMTESTER_TIMEOUT: Duration = Duration::from_secs(60);

/// Panics with a clear message unless the process runs as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the PAM tests must run as root: pam_otpd trusts only a root-owned \
         socket served by a root process"
    );
}

/// The built module under test (`target/<profile>/libpam_otpd.so`).
pub fn pam_module() -> PathBuf {
    crate::built("libpam_otpd.so")
}

/// Where `libpam_wrapper.so` is installed. `PAM_WRAPPER_LIB` overrides the
/// search of the usual (multiarch) library directories.
pub fn pam_wrapper_library() -> &'static Path {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND.get_or_init(find_pam_wrapper_library)
}

fn find_pam_wrapper_library() -> PathBuf {
    if let Some(path) = std::env::var_os("PAM_WRAPPER_LIB") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "PAM_WRAPPER_LIB={} is not a file",
            path.display()
        );
        return path;
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for base in ["/usr/lib", "/lib", "/usr/local/lib"] {
        // Multiarch directories first (x86_64-linux-gnu, aarch64-linux-gnu, ...).
        if let Ok(entries) = std::fs::read_dir(base) {
            let mut multiarch: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.contains("-linux-"))
                })
                .collect();
            multiarch.sort();
            // This machine's triple before any other.
            multiarch.sort_by_key(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(std::env::consts::ARCH))
            });
            dirs.extend(multiarch);
        }
        dirs.push(PathBuf::from(base));
    }
    dirs.extend(["/usr/lib64", "/lib64", "/usr/local/lib64"].map(PathBuf::from));
    for dir in &dirs {
        for name in ["libpam_wrapper.so", "libpam_wrapper.so.0"] {
            let path = dir.join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!(
        "libpam_wrapper.so not found in any of {}: install pam_wrapper \
         (Debian/Ubuntu: apt-get install libpam-wrapper; Fedora: dnf install \
         pam_wrapper) or set PAM_WRAPPER_LIB=/path/to/libpam_wrapper.so",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// The `pamtester` executable.
pub fn pamtester_path() -> &'static Path {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND.get_or_init(find_pamtester)
}

fn find_pamtester() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join("pamtester"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "pamtester not found in PATH: install it (Debian/Ubuntu: apt-get install pamtester)"
            )
        })
}

/// The `auth required <module> socket=<socket> <options>` line for the
/// module under test.
pub fn otpd_line(socket: &Path, options: &str) -> String {
    format!(
        "auth required {} socket={} {options}",
        pam_module().display(),
        socket.display()
    )
    .trim_end()
    .to_owned()
}

/// A PAM service for pam_wrapper: a temporary directory holding one service
/// file. Removed on drop.
pub struct PamService {
    dir: tempfile::TempDir,
    name: String,
}

impl PamService {
    /// A service called `name` with `stack` (lines of a pam.d file) as its
    /// configuration.
    pub fn new(name: &str, stack: &str) -> Self {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "bad service name {name:?}"
        );
        let dir = tempfile::Builder::new()
            .prefix("otpd-pam-service-")
            .tempdir()
            .unwrap();
        let mut text = stack.trim_end().to_owned();
        text.push('\n');
        std::fs::write(dir.path().join(name), text).unwrap();
        Self {
            dir,
            name: name.to_owned(),
        }
    }

    /// The service name (`PAM_SERVICE`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory to pass as `PAM_WRAPPER_SERVICE_DIR`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The service file's content.
    pub fn stack(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(&self.name)).unwrap()
    }

    /// A pamtester run of `authenticate` for `user`.
    pub fn pamtester(&self, user: &str) -> Pamtester<'_> {
        Pamtester {
            service: self,
            user: user.to_owned(),
            items: Vec::new(),
            stdin: Vec::new(),
            operation: "authenticate".to_owned(),
        }
    }
}

/// One pamtester invocation, built up and then [`run`](Self::run).
pub struct Pamtester<'a> {
    service: &'a PamService,
    user: String,
    items: Vec<(String, String)>,
    stdin: Vec<u8>,
    operation: String,
}

/// pam_wrapper picks its copy of the service directory (`/tmp/pam.X`, one
/// character chosen per process) without an atomic claim, so two pamtester
/// processes started at the same moment can share one. One at a time, then.
static PAMTESTER: Mutex<()> = Mutex::new(());

impl Pamtester<'_> {
    /// Sets a PAM item (`pamtester -I name=value`): `rhost`, `tty`, `ruser`.
    pub fn item(mut self, name: &str, value: &str) -> Self {
        self.items.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds one answer: `line` and a newline.
    pub fn answer(mut self, line: &str) -> Self {
        self.stdin.extend_from_slice(line.as_bytes());
        self.stdin.push(b'\n');
        self
    }

    /// Adds raw bytes to stdin (nothing appended).
    pub fn stdin_bytes(mut self, bytes: &[u8]) -> Self {
        self.stdin.extend_from_slice(bytes);
        self
    }

    /// The operation, e.g. `authenticate(PAM_SILENT)`; default
    /// `authenticate`.
    pub fn operation(mut self, op: &str) -> Self {
        op.clone_into(&mut self.operation);
        self
    }

    /// Runs pamtester under pam_wrapper and waits for it (killed after a
    /// minute).
    pub fn run(self) -> PamOutput {
        let mut cmd = Command::new(pamtester_path());
        for (name, value) in &self.items {
            cmd.arg("-I").arg(format!("{name}={value}"));
        }
        cmd.arg(self.service.name())
            .arg(&self.user)
            .arg(&self.operation)
            // A known environment: C locale for pam_strerror's texts, no
            // inherited LD_PRELOAD or PAM_WRAPPER_* settings.
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .env("LD_PRELOAD", pam_wrapper_library())
            .env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", self.service.dir())
            // 2: every syslog priority of the module shows up on stderr.
            .env("PAM_WRAPPER_DEBUGLEVEL", "2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command = self
            .items
            .iter()
            .map(|(n, v)| format!("-I {n}={v}"))
            .chain([self.service.name(), &self.user, &self.operation].map(str::to_owned))
            .collect::<Vec<_>>()
            .join(" ");

        let stack = self.service.stack();
        let _one_at_a_time = PAMTESTER.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn pamtester");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let mut stdin = child.stdin.take().unwrap();
        let input = self.stdin;
        // pamtester may exit before reading everything (EPIPE): ignored.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(PAMTESTER_TIMEOUT) {
            Ok(output) => output.expect("wait for pamtester"),
            Err(_) => {
                // Not reaped yet, so the pid is still this child's.
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let output = rx.recv().unwrap().unwrap();
                panic!(
                    "pamtester did not finish within {PAMTESTER_TIMEOUT:?}\n{}",
                    PamOutput::from_output(command, stack, output, started.elapsed())
                );
            }
        };
        let elapsed = started.elapsed();
        writer.join().unwrap();
        waiter.join().unwrap();
        PamOutput::from_output(command, stack, output, elapsed)
    }
}

/// One line the module (or libpam) logged, as pam_wrapper shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// The syslog priority (3 err, 4 warning, 5 notice, 6 info, 7 debug).
    pub priority: u8,
    /// The message.
    pub message: String,
}

/// What a pamtester run printed and how it ended.
pub struct PamOutput {
    /// The arguments, for messages.
    pub command: String,
    /// The service file, for messages.
    pub stack: String,
    /// The exit status.
    pub status: ExitStatus,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr, pam_wrapper's lines included.
    pub stderr: String,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl PamOutput {
    fn from_output(
        command: String,
        stack: String,
        output: std::process::Output,
        elapsed: Duration,
    ) -> Self {
        Self {
            command,
            stack,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed,
        }
    }

    /// stderr as the user sees it: pam_wrapper's lines removed. Prompts
    /// (which end without a newline) and error messages stay.
    pub fn user_stderr(&self) -> String {
        let mut out = String::new();
        let mut after_pwrap = false;
        for line in self.stderr.split_inclusive('\n') {
            if let Some(i) = line.find("PWRAP_") {
                out.push_str(&line[..i]);
                after_pwrap = true;
            } else if line == "\n" && after_pwrap {
                // A pam_wrapper message that itself ended in a newline.
            } else {
                out.push_str(line);
                after_pwrap = false;
            }
        }
        out
    }

    /// The `SYSLOG(n): message` lines, in order.
    pub fn syslog(&self) -> Vec<LogLine> {
        self.stderr
            .lines()
            .filter_map(|line| {
                let rest = &line[line.find("PWRAP_")?..];
                let rest = &rest[rest.find("SYSLOG(")? + "SYSLOG(".len()..];
                let (priority, message) = rest.split_once("): ")?;
                Some(LogLine {
                    priority: priority.parse().ok()?,
                    message: message.to_owned(),
                })
            })
            .collect()
    }

    /// The exit code (None: killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts success: exit 0 and the success line as the last line of
    /// stdout.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.code() == Some(0) && self.stdout.ends_with(SUCCESS_LINE),
            "expected success\n{self}"
        );
        self
    }

    /// Asserts failure with `pamtester: <strerror>` as the last line of
    /// stderr and exit 1.
    #[track_caller]
    pub fn assert_failure(&self, strerror: &str) -> &Self {
        assert!(
            self.code() == Some(1)
                && self
                    .user_stderr()
                    .ends_with(&format!("pamtester: {strerror}\n")),
            "expected failure {strerror:?}\n{self}"
        );
        self
    }

    /// Asserts exactly what the user saw: stdout and stderr without
    /// pam_wrapper's lines.
    #[track_caller]
    pub fn assert_user_sees(&self, stdout: &str, stderr: &str) -> &Self {
        assert!(
            self.stdout == stdout && self.user_stderr() == stderr,
            "expected stdout {stdout:?} and stderr {stderr:?}\n{self}"
        );
        self
    }

    /// Asserts that a log line of `priority` contains every needle.
    #[track_caller]
    pub fn assert_logged(&self, priority: u8, needles: &[&str]) -> &Self {
        assert!(
            self.syslog()
                .iter()
                .any(|l| l.priority == priority && needles.iter().all(|n| l.message.contains(n))),
            "expected a log line of priority {priority} containing {needles:?}\n{self}"
        );
        self
    }

    /// Asserts that no log line contains any of `secrets` (codes,
    /// passwords).
    #[track_caller]
    pub fn assert_not_logged(&self, secrets: &[&str]) -> &Self {
        for secret in secrets {
            assert!(!secret.is_empty());
            for line in self.syslog() {
                assert!(
                    !line.message.contains(secret),
                    "a log line contains a secret: {line:?}\n{self}"
                );
            }
        }
        self
    }
}

impl fmt::Display for PamOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pamtester {} ({:?}): {}",
            self.command, self.elapsed, self.status
        )?;
        writeln!(f, "--- service ---\n{}", self.stack)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        writeln!(f, "--- stderr ---\n{}", self.stderr)?;
        write!(f, "--- user-visible stderr ---\n{:?}", self.user_stderr())
    }
}

impl fmt::Debug for PamOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

pub use crate::{Codes, unix_now};

/// The built `otpd` binary on a fresh temporary directory (real clock),
/// with a blocking gRPC client. Stopped (SIGTERM) and removed on drop.
pub struct RealDaemon {
    // Dropped in this order: the client and its runtime (which closes the
    // connection), then the daemon, then the directory.
    client: Option<(OtpdClient<Channel>, tokio::runtime::Runtime)>,
    process: Option<Process>,
    /// Held for its removal on drop.
    _dir: tempfile::TempDir,
}

impl RealDaemon {
    /// Starts otpd with the default configuration.
    pub fn start() -> Self {
        Self::start_with_config("")
    }

    /// Starts otpd with `toml` as its configuration file (socket and state
    /// directory come from flags).
    pub fn start_with_config(toml: &str) -> Self {
        let dir = shared_tempdir();
        std::fs::write(dir.path().join("otpd.toml"), toml).unwrap();
        let process = Process::start(dir.path());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(connect(&process.socket));
        Self {
            client: Some((client, rt)),
            process: Some(process),
            _dir: dir,
        }
    }

    /// Runs one call on the client.
    fn call<T, F, Fut>(&self, rpc: F) -> T
    where
        F: FnOnce(OtpdClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (client, rt) = self.client.as_ref().expect("otpd was stopped");
        rt.block_on(rpc(client.clone())).unwrap().into_inner()
    }

    fn process(&self) -> &Process {
        self.process.as_ref().expect("otpd was stopped")
    }

    /// The daemon's public socket.
    pub fn socket(&self) -> PathBuf {
        self.process().socket.clone()
    }

    /// The daemon's root-only PAM socket.
    pub fn pam_socket(&self) -> PathBuf {
        self.process().pam_socket.clone()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.process().child.id()
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        self.process().stderr()
    }

    /// Stops the daemon (SIGTERM) and waits for it; the directory stays
    /// until drop.
    pub fn stop(&mut self) -> ExitStatus {
        // An open connection would hold up the daemon's graceful shutdown.
        self.client = None;
        self.process.take().expect("otpd was stopped").stop()
    }

    /// Starts an enrollment and leaves it pending.
    pub fn enroll_pending(&self, user: &str) -> App {
        let request = pb::EnrollStartRequest {
            user: user.as_bytes().to_vec().into(),
            ..Default::default()
        };
        let started = self.call(|mut c| async move { c.enroll_start(request).await });
        App::from_uri(&started.otpauth_uri)
    }

    /// Enrolls and confirms `user` (using one code); returns the codes and
    /// the backup codes.
    pub fn enroll(&self, user: &str) -> (Codes, Vec<String>) {
        let mut codes = Codes::new(self.enroll_pending(user));
        let request = pb::EnrollConfirmRequest {
            user: user.as_bytes().to_vec().into(),
            code: codes.fresh().into_bytes().into(),
        };
        let confirmed = self.call(|mut c| async move { c.enroll_confirm(request).await });
        (codes, confirmed.backup_codes)
    }

    /// `Verify` over gRPC (service "test").
    pub fn verify(&self, user: &str, code: &str) -> pb::VerifyResponse {
        let request = crate::verify_req(user, code);
        self.call(|mut c| async move { c.verify(request).await })
    }

    /// `GetStatus`.
    pub fn status(&self, user: &str) -> pb::UserStatus {
        let request = pb::GetStatusRequest {
            user: user.as_bytes().to_vec().into(),
        };
        self.call(|mut c| async move { c.get_status(request).await })
    }

    /// `Unlock`.
    pub fn unlock(&self, user: &str) {
        let request = pb::UnlockRequest {
            user: user.as_bytes().to_vec().into(),
        };
        self.call(|mut c| async move { c.unlock(request).await });
    }
}

/// A root-owned executable shell script in `dir` (for `pam_exec.so`).
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("#!/bin/sh\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n{body}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A process serving a Unix socket as another user, for the peer-credential
/// check: the built `otpd` run as `uid`/`gid` on a directory it owns. Killed
/// on drop.
pub struct ForeignDaemon {
    child: std::process::Child,
    /// The socket (owned by `uid` until the test changes that).
    pub socket: PathBuf,
}

impl ForeignDaemon {
    /// Starts `otpd` as `uid:gid` in a new directory under `parent` (which
    /// that user must be able to traverse); waits for its readiness
    /// notification.
    pub fn start(parent: &Path, uid: u32, gid: u32) -> Self {
        use std::os::unix::process::CommandExt;
        let dir = parent.join(format!("foreign-{uid}"));
        std::fs::create_dir(&dir).unwrap();
        nix::unistd::chown(
            &dir,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .unwrap();
        let config = parent.join(format!("foreign-{uid}.toml"));
        std::fs::write(&config, "").unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        let notify_path = parent.join(format!("foreign-{uid}-notify.sock"));
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
        std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o666)).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let log = parent.join(format!("foreign-{uid}.log"));
        let socket = dir.join("otpd.sock");
        let mut child = Command::new(crate::built("otpd"))
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .arg("--pam-socket")
            .arg(dir.join("pam.sock"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("NOTIFY_SOCKET", &notify_path)
            .env("RUST_LOG", "info")
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let ready = crate::wait_ready(&notify, &mut child, Duration::from_secs(60));
        let _ = std::fs::remove_file(&notify_path);
        if !ready {
            let _ = child.kill();
            let status = child.wait().unwrap();
            panic!(
                "otpd as uid {uid} did not start ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Self { child, socket }
    }
}

impl Drop for ForeignDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

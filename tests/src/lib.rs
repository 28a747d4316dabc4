//! Test harness: the real daemon on a socket in its own temporary
//! directory, in-process (with a clock the test sets) or as the built
//! `otpd` binary (with the real clock), and gRPC clients for it.
//!
//! The binaries are found next to the test executable's directory
//! (`target/<profile>/`); `make test` builds them first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use otpd::config::Config;
use otpd::engine::EngineConfig;
use otpd::kdf::KdfParams;
use otpd::{Daemon, ManualClock};
use otpd_proto::v1 as pb;
use pb::otpd_client::OtpdClient;
use tonic::transport::{Channel, Endpoint};

pub use pb::Decision;

/// A start time for manual clocks: a step boundary, so that `advance(30)`
/// moves exactly one step.
pub const T0: u64 = 1_800_000_000;
const _: () = assert!(T0.is_multiple_of(30));

/// Path of a workspace binary or library built by cargo.
pub fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`make test` does)",
        path.display()
    );
    path
}

/// Waits until the `otpd` in `child` says `READY=1` on `notify` (its
/// NOTIFY_SOCKET, with a short read timeout so that an exit is noticed at
/// once): `false` when it exits first or `within` passes.
pub fn wait_ready(notify: &UnixDatagram, child: &mut Child, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    let mut buf = [0u8; 256];
    loop {
        match notify.recv(&mut buf) {
            Ok(n) if buf[..n].windows(7).any(|w| w == b"READY=1") => return true,
            Ok(_) => {}
            Err(_) if std::time::Instant::now() > deadline => return false,
            Err(_) => {
                if !matches!(child.try_wait(), Ok(None)) {
                    return false;
                }
            }
        }
    }
}

/// Builds `packages` (or brings them up to date) with cargo in the profile
/// of the running bench (`target/release` for `cargo bench`): `cargo bench
/// -p otpd-tests` builds neither the pam_otpd cdylib nor the binaries of
/// other packages. Returns the profile's directory.
pub fn build_this_profile(packages: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<bench> → target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned();
    let mut args = vec!["build", "--locked"];
    if dir.file_name().is_some_and(|n| n == "release") {
        args.push("--release");
    }
    for p in packages {
        args.extend(["-p", p]);
    }
    println!("building what the bench runs: cargo {}", args.join(" "));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(&args)
        .current_dir(workspace)
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "cargo {} failed: {status}",
        args.join(" ")
    );
    dir
}

/// Imports a pam_oath users file of `lines` lines into the daemon on
/// `socket` with the built otpctl (`import pam-oath --quiet`, the bulk
/// path the benches fill their stores with); panics unless every line was
/// imported. Returns how long otpctl took.
pub fn import_pam_oath(socket: &Path, file: &Path, lines: usize) -> Duration {
    let start = std::time::Instant::now();
    let out = Command::new(built("otpctl"))
        .arg("--socket")
        .arg(socket)
        .args(["import", "pam-oath", "--quiet"])
        .arg(file)
        .env_remove("OTPD_SOCKET")
        .output()
        .unwrap();
    let wall = start.elapsed();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "import failed ({}): {report}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        report.trim_end(),
        format!("{lines} imported, 0 skipped, 0 failed"),
        "{report}"
    );
    wall
}

/// The built otpctl, talking to the daemon on `socket` (whatever
/// `OTPD_SOCKET` the test runner has).
pub fn otpctl(socket: &Path) -> snapbox::cmd::Command {
    snapbox::cmd::Command::new(built("otpctl"))
        .arg("--socket")
        .arg(socket)
        .env_remove("OTPD_SOCKET")
}

/// The built otpctl with a terminal as its stdin (a pseudo-terminal, as
/// when an admin types at the prompts) and pipes as stdout and stderr.
pub struct Interactive {
    child: Child,
    terminal: std::fs::File,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    seen: Vec<u8>,
}

impl Interactive {
    /// Starts `otpctl --socket SOCKET ARGS...`.
    pub fn start(socket: &Path, args: &[&str]) -> Self {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let mut child = Command::new(built("otpctl"))
            .arg("--socket")
            .arg(socket)
            .args(args)
            .env_remove("OTPD_SOCKET")
            .stdin(Stdio::from(pty.slave))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            terminal: std::fs::File::from(pty.master),
            stdout,
            seen: Vec::new(),
        }
    }

    /// Reads stdout until it holds `text` (panics at its end); returns what
    /// was read up to and including `text` since the last call.
    pub fn read_until(&mut self, text: &str) -> String {
        use std::io::BufRead;
        let find = |seen: &[u8]| seen.windows(text.len()).position(|w| w == text.as_bytes());
        while find(&self.seen).is_none() {
            let buf = self.stdout.fill_buf().unwrap();
            assert!(
                !buf.is_empty(),
                "otpctl's stdout ended without {text:?}: {}",
                String::from_utf8_lossy(&self.seen)
            );
            let n = buf.len();
            self.seen.extend_from_slice(buf);
            self.stdout.consume(n);
        }
        let end = find(&self.seen).unwrap() + text.len();
        let read: Vec<u8> = self.seen.drain(..end).collect();
        String::from_utf8(read).unwrap()
    }

    /// Types `line` and Enter at the terminal.
    pub fn type_line(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.terminal, "{line}").unwrap();
    }

    /// Waits for otpctl to exit: its status, the rest of stdout, stderr.
    pub fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        let mut rest = std::mem::take(&mut self.seen);
        self.stdout.read_to_end(&mut rest).unwrap();
        let rest = String::from_utf8(rest).unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (self.child.wait().unwrap(), rest, err)
    }
}

/// What the real `oathtool` (Debian package oathtool) prints for `args`,
/// trimmed; it must succeed.
pub fn oathtool(args: &[&str]) -> String {
    let out = std::process::Command::new("oathtool")
        .args(args)
        .output()
        .expect("oathtool (Debian package oathtool)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .expect("oathtool prints ASCII")
        .trim()
        .to_owned()
}

/// A temporary directory that other users can traverse (for the tests
/// that run a client as `nobody`).
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("otpd-test-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A configuration with everything inside `dir`.
pub fn config_in(dir: &Path) -> Config {
    Config {
        socket: dir.join("otpd.sock"),
        pam_socket: Some(dir.join("pam.sock")),
        state_dir: dir.join("state"),
        issuer: Some("otpd-test".into()),
        ..Config::default()
    }
}

/// Engine settings for in-process tests: the defaults, with a cheaper
/// backup-code hash (the cost is not what these tests are about).
pub fn test_engine_config(config: &Config) -> EngineConfig {
    EngineConfig {
        kdf: KdfParams {
            m_kib: 1024,
            t: 1,
            p: 1,
        },
        ..config.engine_config()
    }
}

/// Engine settings for benchmarks: the production costs (Argon2id for
/// backup codes included), with throttle and lockout limits too high to
/// trigger, so that a series of wrong codes measures the check.
pub fn bench_engine_config(config: &Config) -> EngineConfig {
    let engine = config.engine_config();
    EngineConfig {
        policy: otpd::policy::Policy {
            max_failures: 1_000_000,
            lock_threshold: 1_000_000,
            ..engine.policy
        },
        ..engine
    }
}

/// The `p` quantile (0..=1, nearest rank) of sorted samples.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Connects a client to a socket.
pub async fn connect(socket: &Path) -> OtpdClient<Channel> {
    try_connect(socket).await.expect("connect to the daemon")
}

/// Connects a client to a socket; the error if the daemon refuses or drops
/// the connection.
pub async fn try_connect(socket: &Path) -> Result<OtpdClient<Channel>, tonic::transport::Error> {
    let path = socket.to_owned();
    let channel = Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await?;
    Ok(OtpdClient::new(channel))
}

/// The daemon library serving in a thread of its own, with a manual clock.
pub struct InProcess {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub clock: Arc<ManualClock>,
    /// The daemon's engine (for test hooks such as its KDF permits).
    pub engine: Arc<otpd::engine::Engine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    /// Starts on a fresh directory.
    pub fn start() -> Self {
        let dir = shared_tempdir();
        let config = config_in(dir.path());
        Self::start_in(dir, config, Arc::new(ManualClock::new(T0)))
    }

    /// Starts with a given directory, configuration and clock.
    pub fn start_in(dir: tempfile::TempDir, config: Config, clock: Arc<ManualClock>) -> Self {
        let engine = test_engine_config(&config);
        Self::start_with_engine(dir, config, clock, engine)
    }

    /// Starts with explicit engine settings.
    pub fn start_with_engine(
        dir: tempfile::TempDir,
        config: Config,
        clock: Arc<ManualClock>,
        engine: EngineConfig,
    ) -> Self {
        // Bound before the thread starts: clients can connect at once.
        let daemon = Daemon::open_with(&config, engine, clock.clone()).expect("open");
        let engine = daemon.engine();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(daemon.serve(async {
                let _ = rx.await;
            }))
            .unwrap();
        });
        Self {
            dir,
            config,
            clock,
            engine,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.config.socket
    }

    /// The PAM socket.
    pub fn pam_socket(&self) -> PathBuf {
        self.config.pam_socket()
    }

    /// A client.
    pub async fn client(&self) -> OtpdClient<Channel> {
        connect(self.socket()).await
    }

    /// Stops the daemon (the store is closed when this returns) and hands
    /// back the directory and clock for a restart.
    pub fn stop(mut self) -> (tempfile::TempDir, Config, Arc<ManualClock>) {
        self.shutdown();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.config.clone(), self.clock.clone())
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The built `otpd` binary, started with `--socket`, `--pam-socket` and
/// `--state-dir` only.
pub struct Process {
    pub child: Child,
    pub socket: PathBuf,
    pub pam_socket: PathBuf,
    pub state_dir: PathBuf,
    stderr_path: PathBuf,
}

/// How to start the built `otpd` beyond the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Launch {
    /// Start it under this umask (through `sh -c 'umask ...; exec ...'`).
    pub umask: Option<u32>,
    /// Start it with this descriptor limit, soft and hard (through
    /// util-linux `prlimit --nofile=N:N`).
    pub nofile: Option<u64>,
    /// Give up waiting for readiness after this long (default 60 s).
    pub deadline: Option<Duration>,
}

impl Process {
    /// Starts `otpd` in `dir` and waits for its readiness notification.
    pub fn start(dir: &Path) -> Self {
        Self::try_start(dir)
            .unwrap_or_else(|(status, stderr)| panic!("otpd did not start ({status}): {stderr}"))
    }

    /// Starts `otpd`; on failure returns its exit status and stderr.
    pub fn try_start(dir: &Path) -> Result<Self, (String, String)> {
        Self::try_start_with(dir, Launch::default())
    }

    /// Starts `otpd` as `launch` says; on failure (an exit, or no readiness
    /// within the deadline: then it is killed) returns its exit status and
    /// stderr.
    pub fn try_start_with(dir: &Path, launch: Launch) -> Result<Self, (String, String)> {
        let socket = dir.join("otpd.sock");
        let pam_socket = dir.join("pam.sock");
        let state_dir = dir.join("state");
        let notify_path = dir.join(format!("notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        // Short reads, so that a daemon that exits instead of becoming ready
        // is noticed at once.
        notify
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stderr_path = dir.join(format!("otpd-{}.log", nanos()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        // An empty config file: the test must not pick up /etc/otpd/otpd.toml.
        let config = dir.join("otpd.toml");
        if !config.exists() {
            std::fs::write(&config, "").unwrap();
        }
        let mut command = match (launch.umask, launch.nofile) {
            (None, None) => Command::new(built("otpd")),
            (umask, nofile) => {
                let mut c = Command::new("/bin/sh");
                let umask = umask.map_or(String::new(), |m| format!("umask {m:03o} && "));
                let prlimit =
                    nofile.map_or(String::new(), |n| format!("prlimit --nofile={n}:{n} -- "));
                c.arg("-c")
                    .arg(format!("{umask}exec {prlimit}\"$0\" \"$@\""))
                    .arg(built("otpd"));
                c
            }
        };
        let mut child = command
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .arg("--pam-socket")
            .arg(&pam_socket)
            .arg("--state-dir")
            .arg(&state_dir)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let ready = wait_ready(
            &notify,
            &mut child,
            launch.deadline.unwrap_or(Duration::from_secs(60)),
        );
        let _ = std::fs::remove_file(&notify_path);
        if !ready {
            let _ = child.kill();
            let status = child.wait().unwrap();
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            return Err((status.to_string(), log));
        }
        Ok(Self {
            child,
            socket,
            pam_socket,
            state_dir,
            stderr_path,
        })
    }

    /// What the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        let mut s = String::new();
        std::fs::File::open(&self.stderr_path)
            .and_then(|mut f| f.read_to_string(&mut s))
            .unwrap();
        s
    }

    /// SIGKILL: no chance to flush anything.
    pub fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    /// SIGTERM; `None` (and SIGKILL) if it has not exited within `limit`.
    pub fn stop_within(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// An authenticator app: computes codes from an otpauth URI, with an
/// independent parser (totp-rs's).
pub struct App(totp_rs::TOTP);

impl App {
    /// From the otpauth URI the daemon gave.
    pub fn from_uri(uri: &str) -> Self {
        Self(totp_rs::TOTP::from_url_unchecked(uri).expect("valid otpauth URI"))
    }

    /// The code at Unix time `t`.
    pub fn code_at(&self, t: u64) -> String {
        self.0.generate(t)
    }

    /// The code now (real clock).
    pub fn code_now(&self) -> String {
        self.0.generate_current().unwrap()
    }

    /// A code that is certainly wrong at `t` (and its neighbours).
    pub fn wrong_code_at(&self, t: u64) -> String {
        let period = self.0.step;
        let valid: Vec<String> = (0..5)
            .map(|i| self.code_at((t + i * period).saturating_sub(2 * period)))
            .collect();
        (0..1000u32)
            .map(|i| format!("{:0width$}", 123_456 + i, width = self.0.digits))
            .find(|c| !valid.contains(c))
            .unwrap()
    }

    /// The secret, base32.
    pub fn secret_base32(&self) -> String {
        self.0.get_secret_base32()
    }

    /// The raw secret.
    pub fn secret(&self) -> Vec<u8> {
        self.0.secret.clone()
    }
}

/// Enrolls and confirms `user` at the clock's time; returns the app and the
/// backup codes.
pub async fn enroll(client: &mut OtpdClient<Channel>, user: &str, now: u64) -> (App, Vec<String>) {
    let started = client
        .enroll_start(pb::EnrollStartRequest {
            user: user.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let app = App::from_uri(&started.otpauth_uri);
    let codes = client
        .enroll_confirm(pb::EnrollConfirmRequest {
            user: user.as_bytes().to_vec().into(),
            code: app.code_at(now).into_bytes().into(),
        })
        .await
        .unwrap()
        .into_inner()
        .backup_codes;
    (app, codes)
}

/// A Verify request.
pub fn verify_req(user: &str, code: &str) -> pb::VerifyRequest {
    pb::VerifyRequest {
        user: user.as_bytes().to_vec().into(),
        code: code.as_bytes().to_vec().into(),
        service: "test".into(),
        remote_host: "192.0.2.7".into(),
        tty: "ssh".into(),
        local_requester: None,
        allow_app_password: false,
        grace_only: false,
    }
}

/// Verifies and returns the reply.
pub async fn verify(
    client: &mut OtpdClient<Channel>,
    user: &str,
    code: &str,
) -> pb::VerifyResponse {
    client
        .verify(verify_req(user, code))
        .await
        .unwrap()
        .into_inner()
}

/// The status of a user.
pub async fn status(client: &mut OtpdClient<Channel>, user: &str) -> pb::UserStatus {
    client
        .get_status(pb::GetStatusRequest {
            user: user.as_bytes().to_vec().into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Unix time now (real clock).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// TOTP codes under the real clock, for a user enrolled with the default
/// 30-second period and otpd's default window of ±1 step.
///
/// Used steps never come back, so one user gets at most three codes per
/// 30 s (the previous, current and next step). The previous step is only
/// handed out while at least [`Codes::MARGIN`] seconds of the current step
/// are left: a code of the previous step would be refused if the step
/// changed before otpd checks it. So count on two codes per user (one to
/// confirm the enrollment, one to log in): use one user per scenario.
pub struct Codes {
    /// The authenticator app.
    pub app: App,
    last: u64,
}

impl Codes {
    /// Seconds.
    pub const PERIOD: u64 = 30;
    /// Seconds a code must stay valid after it is handed out.
    pub const MARGIN: u64 = 10;

    /// Codes from `app`; no step used yet.
    pub fn new(app: App) -> Self {
        Self { app, last: 0 }
    }

    /// The earliest step after `last` that otpd accepts for at least
    /// [`Self::MARGIN`] more seconds.
    fn next_step(last: u64) -> u64 {
        let now = unix_now();
        let current = now / Self::PERIOD;
        let earliest = if now % Self::PERIOD < Self::PERIOD - Self::MARGIN {
            current - 1
        } else {
            current
        };
        let step = earliest.max(last + 1);
        assert!(
            step <= current + 1,
            "no fresh code left for this user in this time step: use one \
             user per scenario"
        );
        step
    }

    /// A code for a step after every step handed out so far, that otpd
    /// accepts for at least [`Self::MARGIN`] seconds.
    pub fn fresh(&mut self) -> String {
        let step = Self::next_step(self.last);
        self.last = step;
        self.app.code_at(step * Self::PERIOD)
    }

    /// Enrolls and confirms `user` (with a code from these steps); returns
    /// the codes and the backup codes.
    pub async fn enroll(client: &mut OtpdClient<Channel>, user: &str) -> (Self, Vec<String>) {
        let step = Self::next_step(0);
        let (app, backup) = crate::enroll(client, user, step * Self::PERIOD).await;
        (Self { app, last: step }, backup)
    }

    /// A code `steps` time steps away from now (a device with a wrong
    /// clock).
    pub fn skewed(&self, steps: i64) -> String {
        let step = (unix_now() / Self::PERIOD).saturating_add_signed(steps);
        self.app.code_at(step * Self::PERIOD)
    }

    /// A 6-digit code that is valid at no step near now, not even as clock
    /// skew (otpd probes 10 steps either way).
    pub fn wrong(&self) -> String {
        let current = unix_now() / Self::PERIOD;
        let near: Vec<String> = (current - 12..=current + 12)
            .map(|s| self.app.code_at(s * Self::PERIOD))
            .collect();
        (0..1000u32)
            .map(|i| format!("{:06}", 123_456 + i))
            .find(|c| !near.contains(c))
            .unwrap()
    }
}

pub mod bench_users;
pub mod pam_env;
pub mod sshd;
pub mod system_pam;

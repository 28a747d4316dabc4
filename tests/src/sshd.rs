//! Helpers for a private sshd on 127.0.0.1 with a PAM stack using pam_otpd.
//!
//! * [`User`]: a throwaway local account with a random name and password.
//! * [`Sshd`]: OpenSSH's sshd on a free loopback port, with its own config,
//!   host key and PAM service. sshd takes the PAM service name from the name
//!   it was started under, so it runs through a symlink with a unique name
//!   and its stack is `/etc/pam.d/<that name>`; `/etc/pam.d/sshd` and the
//!   system's sshd are never touched. Only the throwaway user may log in.
//! * [`Sshd::login`]: the scripted keyboard-interactive client
//!   (`tests/ssh/client.py`, paramiko) and its [`Login`] report.
//! * [`Codes`]: TOTP codes for the real clock, never a step twice.
//!
//! Everything is removed when dropped, also when the test panics: the sshd
//! and its connections, the PAM service file, the user and its home, the
//! temporary directory. A panicking test prints sshd's log.
//!
//! Root only: the tests create users and PAM services.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::built;

/// OpenSSH's server.
pub const SSHD: &str = "/usr/sbin/sshd";
/// sshd's privilege separation directory (created if missing).
const PRIVSEP_DIR: &str = "/run/sshd";
/// The Python that has paramiko (Debian's python3-paramiko); override with
/// `OTPD_TEST_PYTHON`.
pub const PYTHON: &str = "/usr/bin/python3";
/// How long the client may take, all steps together, before it is killed.
const CLIENT_DEADLINE: Duration = Duration::from_secs(120);
/// How long sshd may take to listen.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// Panics with a clear message unless the test can do what it must: run as
/// root, with OpenSSH's sshd installed.
pub fn require_root_and_sshd() {
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(
        uid, 0,
        "the SSH tests must run as root: they create a user, a PAM service in /etc/pam.d and an sshd"
    );
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} is missing: install openssh-server"
    );
}

/// The scripted client.
pub fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ssh/client.py")
}

/// `2 * n` random hex digits.
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a command to completion; panics with its output if it fails.
fn run(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `run`, panicking unless the command succeeds.
fn run_ok(cmd: &mut Command, stdin: &str) -> Output {
    let out = run(cmd, stdin);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One account change at a time in this process: useradd, chpasswd and
/// userdel lock /etc/passwd and /etc/shadow and fail (not wait) when
/// another holds the lock.
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// Runs a shadow-utils command under [`ACCOUNTS`], retrying briefly while
/// another process holds the lock files.
fn account_command(program: &str, args: &[&str], stdin: &str) -> Output {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut tries = 0;
    loop {
        let out = run(Command::new(program).args(args), stdin);
        let busy = String::from_utf8_lossy(&out.stderr).contains("lock");
        if out.status.success() || !busy || tries == 50 {
            return out;
        }
        tries += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `useradd ARGS`; panics with its output if it fails.
fn add_account(args: &[&str], name: &str) {
    let out = account_command("useradd", args, "");
    assert!(
        out.status.success(),
        "useradd {name} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `userdel ARGS`, from a drop: a failure is a warning, not a panic.
fn remove_account(args: &[&str], name: &str) {
    let out = account_command("userdel", args, "");
    if !out.status.success() {
        eprintln!(
            "warning: userdel {name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A throwaway local user (`otpdt` + random hex) with a home directory, the
/// shell `/bin/sh` and a random password. Removed with its home on drop.
pub struct User {
    pub name: String,
    pub password: String,
    pub home: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    /// Creates the user and sets its password.
    pub fn create() -> Self {
        require_root_and_sshd();
        let name = format!("otpdt{}", random_hex(4));
        add_account(
            &[
                "--create-home",
                "--shell",
                "/bin/sh",
                "--comment",
                "otpd test user",
                &name,
            ],
            &name,
        );
        // From here on, drop removes the user, also if the rest fails.
        let mut user = Self {
            password: random_hex(12),
            home: PathBuf::new(),
            uid: 0,
            gid: 0,
            name,
        };
        let entry = nix::unistd::User::from_name(&user.name)
            .unwrap()
            .expect("the new user is in the passwd database");
        (user.home, user.uid, user.gid) = (entry.dir, entry.uid.as_raw(), entry.gid.as_raw());
        let out = account_command(
            "chpasswd",
            &[],
            &format!("{}:{}\n", user.name, user.password),
        );
        assert!(
            out.status.success(),
            "chpasswd failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(user.home.is_dir(), "{} has no home", user.name);
        user
    }

    /// Puts a public key in `~/.ssh/authorized_keys` (owned by the user,
    /// modes 700 and 600, as sshd's StrictModes wants them).
    pub fn authorize_key(&self, public_key: &Path) {
        let (uid, gid) = (self.uid, self.gid);
        let ssh = self.home.join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&ssh, Some(uid), Some(gid)).unwrap();
        let keys = ssh.join("authorized_keys");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&keys)
            .and_then(|mut f| f.write_all(&std::fs::read(public_key)?))
            .unwrap();
        std::os::unix::fs::chown(&keys, Some(uid), Some(gid)).unwrap();
    }
}

/// A second passwd entry with the uid of a [`User`] (an alias that the
/// system resolves to the same account). Removed on drop, home untouched.
#[derive(Debug)]
pub struct Alias {
    pub name: String,
}

impl User {
    /// Adds an alias of this user.
    pub fn alias(&self) -> Alias {
        let name = format!("otpda{}", random_hex(4));
        let (uid, gid) = (self.uid.to_string(), self.gid.to_string());
        add_account(
            &[
                "--non-unique",
                "--uid",
                &uid,
                "--gid",
                &gid,
                "--no-user-group",
                "--no-create-home",
                "--home-dir",
                &self.home.display().to_string(),
                "--shell",
                "/bin/sh",
                &name,
            ],
            &name,
        );
        Alias { name }
    }
}

impl Drop for Alias {
    fn drop(&mut self) {
        // No --remove: the home is the real user's.
        remove_account(&[&self.name], &self.name);
    }
}

impl Drop for User {
    fn drop(&mut self) {
        // --force: also if a session of the user has not quite ended.
        remove_account(&["--force", "--remove", &self.name], &self.name);
    }
}

/// How a user logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Methods {
    /// `AuthenticationMethods keyboard-interactive`; PAM asks for the
    /// password (pam_unix), then the code (pam_otpd).
    PasswordAndCode,
    /// `AuthenticationMethods publickey,keyboard-interactive`; PAM asks
    /// only for the code.
    KeyAndCode,
    /// The README's trap: `PasswordAuthentication yes` and no
    /// `AuthenticationMethods`, the password + code stack; the client uses
    /// SSH's password method, in which sshd answers every PAM prompt
    /// (the code prompt too) with the password.
    PasswordMethod,
}

impl Methods {
    fn sshd_config(self) -> &'static str {
        match self {
            Self::PasswordAndCode => {
                "PasswordAuthentication no\nPubkeyAuthentication no\n\
                 AuthenticationMethods keyboard-interactive\n"
            }
            Self::KeyAndCode => {
                "PasswordAuthentication no\nPubkeyAuthentication yes\n\
                 AuthenticationMethods publickey,keyboard-interactive\n"
            }
            Self::PasswordMethod => "PasswordAuthentication yes\nPubkeyAuthentication no\n",
        }
    }

    /// The auth part of the stack; `options` go on the pam_otpd line
    /// (e.g. `nullok`).
    fn pam_auth(self, module: &Path, socket: &Path, options: &str) -> String {
        let otpd = format!("{} socket={} {options}", module.display(), socket.display());
        match self {
            // nodelay: no 2 s pause after each failure (pam_unix's default).
            Self::PasswordAndCode | Self::PasswordMethod => format!(
                "auth     required  pam_unix.so nodelay\nauth     required  {}\n",
                otpd.trim_end()
            ),
            // Exactly the README's lines, pam_otpd.so replaced by the
            // built module and its options.
            Self::KeyAndCode => readme_auth_lines("Key + code (recommended)")
                .iter()
                .map(|l| format!("{}\n", l.replace("pam_otpd.so", otpd.trim_end())))
                .collect(),
        }
    }
}

/// The `auth` lines of the `/etc/pam.d/sshd` snippet (the first code block
/// that names pam_otpd.so) in the README's section `### {heading}`:
/// the tests run the stack the README tells admins to write.
pub fn readme_auth_lines(heading: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let title = format!("### {heading}");
    let mut lines = readme.lines().skip_while(|l| *l != title);
    assert!(lines.next().is_some(), "README.md has no section {title:?}");
    // The code blocks of the section, up to the next heading outside one.
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    let mut in_code = false;
    for line in lines {
        if line.starts_with("```") {
            in_code = !in_code;
            if in_code {
                blocks.push(Vec::new());
            }
        } else if in_code {
            blocks.last_mut().unwrap().push(line);
        } else if line.starts_with('#') {
            break;
        }
    }
    let block = blocks
        .iter()
        .find(|b| b.iter().any(|l| l.contains("pam_otpd.so")))
        .unwrap_or_else(|| panic!("README.md {title:?} has no pam_otpd.so snippet"));
    block
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("auth"))
        .map(|l| l.split('#').next().unwrap_or("").trim_end().to_owned())
        .collect()
}

/// A private sshd on 127.0.0.1, for one user.
pub struct Sshd {
    pub port: u16,
    pub methods: Methods,
    /// The PAM service name, also the name sshd runs under.
    pub service: String,
    child: Option<Child>,
    pam_file: PathBuf,
    pam_file_written: bool,
    host_key_pub: PathBuf,
    client_key: Option<PathBuf>,
    log: PathBuf,
    clients: AtomicUsize,
    dir: tempfile::TempDir,
}

impl Sshd {
    /// Starts sshd for `user` with a PAM stack that asks otpd at
    /// `otpd_socket`; returns once it accepts connections. With
    /// [`Methods::KeyAndCode`] it also makes a client key and authorizes it.
    pub fn start(methods: Methods, otpd_socket: &Path, user: &User) -> Self {
        Self::start_with_options(methods, otpd_socket, user, "")
    }

    /// [`Sshd::start`] with `options` on the pam_otpd line (e.g. `nullok`).
    pub fn start_with_options(
        methods: Methods,
        otpd_socket: &Path,
        user: &User,
        options: &str,
    ) -> Self {
        require_root_and_sshd();
        if !Path::new(PRIVSEP_DIR).is_dir() {
            std::fs::create_dir_all(PRIVSEP_DIR).unwrap();
            std::fs::set_permissions(PRIVSEP_DIR, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let dir = tempfile::Builder::new()
            .prefix("otpd-test-sshd-")
            .tempdir()
            .unwrap();
        let service = format!("otpd-test-sshd-{}", random_hex(4));
        let mut sshd = Self {
            port: 0,
            methods,
            pam_file: Path::new("/etc/pam.d").join(&service),
            pam_file_written: false,
            service,
            child: None,
            host_key_pub: dir.path().join("host_ed25519.pub"),
            client_key: None,
            log: dir.path().join("sshd.log"),
            clients: AtomicUsize::new(0),
            dir,
        };
        // A link named after the service; run by absolute path, as sshd
        // re-executes itself for each connection.
        std::os::unix::fs::symlink(SSHD, sshd.exe()).unwrap();
        keygen(&sshd.dir.path().join("host_ed25519"), "otpd-test-host");
        if methods == Methods::KeyAndCode {
            let key = sshd.dir.path().join("client_ed25519");
            keygen(&key, "otpd-test-client");
            user.authorize_key(&key.with_extension("pub"));
            sshd.client_key = Some(key);
        }
        let stack = format!(
            "# {} test service (tests/src/sshd.rs); removed after the test.\n{}\
             account  required  pam_unix.so\n\
             session  required  pam_unix.so\n",
            sshd.service,
            methods.pam_auth(&built("libpam_otpd.so"), otpd_socket, options),
        );
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&sshd.pam_file)
            .and_then(|mut f| f.write_all(stack.as_bytes()))
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", sshd.pam_file.display()));
        sshd.pam_file_written = true;

        // The port is free when picked; another process could take it before
        // sshd binds it, so a lost race means another port.
        for _ in 0..5 {
            sshd.port = free_port();
            std::fs::write(sshd.config_path(), sshd.config(user)).unwrap();
            match sshd.spawn() {
                Start::Listening => return sshd,
                Start::PortTaken => continue,
                Start::Failed(why) => panic!("sshd did not start: {why}\n{}", sshd.log()),
            }
        }
        panic!("sshd found no free port\n{}", sshd.log());
    }

    fn exe(&self) -> PathBuf {
        self.dir.path().join(&self.service)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    fn config(&self, user: &User) -> String {
        let d = self.dir.path();
        format!(
            "# Private sshd for the otpd tests; PAM service {service}.\n\
             ListenAddress 127.0.0.1\n\
             Port {port}\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             UsePAM yes\n\
             KbdInteractiveAuthentication yes\n\
             {methods}\
             AuthorizedKeysFile .ssh/authorized_keys\n\
             AllowUsers {user}\n\
             PermitRootLogin no\n\
             StrictModes yes\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             UseDNS no\n\
             X11Forwarding no\n\
             AllowTcpForwarding no\n\
             AllowAgentForwarding no\n\
             LoginGraceTime 60\n\
             LogLevel DEBUG\n",
            service = self.service,
            port = self.port,
            host_key = d.join("host_ed25519").display(),
            pid = d.join("sshd.pid").display(),
            methods = self.methods.sshd_config(),
            user = user.name,
        )
    }

    /// Starts the process and waits until it listens.
    fn spawn(&mut self) -> Start {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(self.exe())
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let child = self.child.insert(child);
        let listening = format!("Server listening on 127.0.0.1 port {}.", self.port);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return if log.contains("Address already in use") {
                    Start::PortTaken
                } else {
                    Start::Failed(format!("sshd exited: {status}"))
                };
            }
            // The log line says it is our sshd that bound the port.
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(&listening)
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                return Start::Listening;
            }
            if Instant::now() > deadline {
                return Start::Failed(format!("not listening after {START_DEADLINE:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What sshd logged so far (LogLevel DEBUG, all connections).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Logs `user` in with the scripted client, answering the code prompt
    /// with `code`: with the password ([`Methods::PasswordAndCode`]) or the
    /// authorized key ([`Methods::KeyAndCode`]). Runs `id -un`.
    pub fn login(&self, user: &User, code: &str) -> Login {
        self.login_with_password(user, &user.password, code)
    }

    /// [`Sshd::login`], answering the password prompt with `password`.
    pub fn login_with_password(&self, user: &User, password: &str, code: &str) -> Login {
        self.login_as(user, password, code, None)
    }

    /// [`Sshd::login`] from another loopback address (e.g. 127.0.0.2): the
    /// client binds its socket to `source` before connecting, so sshd sees
    /// (and PAM_RHOST names) that address.
    pub fn login_from(&self, source: Ipv4Addr, user: &User, code: &str) -> Login {
        self.login_as(user, &user.password, code, Some(source))
    }

    /// [`Sshd::login`], then runs `command` (through the user's shell,
    /// without a pty) in that session instead of `id -un`.
    pub fn login_running(&self, user: &User, code: &str, command: &str) -> Login {
        self.login_full(user, &user.password, code, None, command)
    }

    fn login_as(&self, user: &User, password: &str, code: &str, source: Option<Ipv4Addr>) -> Login {
        self.login_full(user, password, code, source, "id -un")
    }

    fn login_full(
        &self,
        user: &User,
        password: &str,
        code: &str,
        source: Option<Ipv4Addr>,
        command: &str,
    ) -> Login {
        let n = self.clients.fetch_add(1, Ordering::Relaxed);
        let out_path = self.dir.path().join(format!("client-{n}.out"));
        let err_path = self.dir.path().join(format!("client-{n}.err"));
        let python = std::env::var_os("OTPD_TEST_PYTHON").unwrap_or_else(|| PYTHON.into());
        let mut cmd = Command::new(&python);
        cmd.arg(client_script())
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--user")
            .arg(&user.name)
            .arg("--code")
            .arg(code)
            .arg("--host-key")
            .arg(&self.host_key_pub)
            .arg("--command")
            .arg(command);
        if let Some(source) = source {
            cmd.arg("--source").arg(source.to_string());
        }
        // The password in the environment: other users can read a command
        // line in /proc, not the environment.
        cmd.env_remove("OTPD_TEST_PASSWORD");
        match &self.client_key {
            Some(key) => cmd.arg("--key").arg(key),
            None => cmd.env("OTPD_TEST_PASSWORD", password),
        };
        if self.methods == Methods::PasswordMethod {
            cmd.arg("--password-method");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&python).display()));
        let deadline = Instant::now() + CLIENT_DEADLINE;
        let (status, killed) = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break (status, false);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break (child.wait().unwrap(), true);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap();
        let mut stderr = std::fs::read_to_string(&err_path).unwrap();
        if killed {
            stderr.push_str(&format!("(client killed after {CLIENT_DEADLINE:?})\n"));
        }
        Login::new(status.code(), stdout, stderr)
    }
}

/// sudo for one [`User`], through its own PAM service: a sudoers drop-in
/// (`/etc/sudoers.d/<service>`) lets the user run `/usr/bin/true` as root
/// with `pam_service=<service>`, no sudo ticket (timestamp_timeout=0, so
/// each sudo authenticates) and PAM allowed without a terminal
/// (noninteractive_auth: `sudo -n` fails at any prompt). Both files are
/// removed on drop.
pub struct Sudo {
    /// The PAM service name.
    pub service: String,
    files: Vec<PathBuf>,
}

/// Where sudo is.
pub const SUDO: &str = "/usr/bin/sudo";

impl Sudo {
    /// A fresh PAM service name for [`Sudo::install`].
    pub fn service_name() -> String {
        format!("otpd-test-sudo-{}", random_hex(4))
    }

    /// For `user`, as PAM service `service`, with `auth` as the whole
    /// auth part of its PAM stack.
    pub fn install(service: &str, user: &User, auth: &str) -> Self {
        assert!(Path::new(SUDO).exists(), "{SUDO} is missing: install sudo");
        let mut sudo = Self {
            service: service.to_owned(),
            files: Vec::new(),
        };
        let pam = Path::new("/etc/pam.d").join(&sudo.service);
        let stack = format!(
            "# {} test service (tests/src/sshd.rs); removed after the test.\n{auth}\n\
             account  required  pam_unix.so\n\
             session  required  pam_permit.so\n",
            sudo.service
        );
        write_new(&pam, &stack, 0o644);
        sudo.files.push(pam);
        // No dot in the name: sudo skips such files in sudoers.d.
        let rules = Path::new("/etc/sudoers.d").join(&sudo.service);
        let rule = format!(
            "Defaults:{u} pam_service={s}, timestamp_timeout=0, noninteractive_auth, !lecture\n\
             {u} ALL=(root) /usr/bin/true\n",
            u = user.name,
            s = sudo.service
        );
        write_new(&rules, &rule, 0o440);
        sudo.files.push(rules);
        sudo
    }
}

impl Drop for Sudo {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn write_new(path: &Path, text: &str, mode: u32) {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
}

/// How a start attempt ended.
enum Start {
    Listening,
    PortTaken,
    Failed(String),
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An ed25519 key pair without passphrase: `path` and `path.pub`.
fn keygen(path: &Path, comment: &str) {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
        "",
    );
}

/// The processes whose parent is `pid` (sshd's connections).
fn children_of(pid: u32) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&child| {
            // "pid (comm) state ppid ...": comm may contain anything but ')'.
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .map(Pid::from_raw)
        .collect()
}

/// Polls until `done` or the deadline; whether it got done.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- sshd log ({}, PAM service {}) ----\n{}---- end of sshd log ----",
                self.log.display(),
                self.service,
                self.log()
            );
        }
        if let Some(mut child) = self.child.take() {
            let listener = child.id();
            // Connections end by themselves once their client is gone; then
            // the listener reaps them. Those still there get SIGTERM, then
            // SIGKILL, while the listener is alive to reap them.
            if !wait_until(Duration::from_secs(3), || children_of(listener).is_empty()) {
                for signal in [Signal::SIGTERM, Signal::SIGKILL] {
                    for pid in children_of(listener) {
                        let _ = kill(pid, signal);
                    }
                    if wait_until(Duration::from_secs(3), || children_of(listener).is_empty()) {
                        break;
                    }
                }
            }
            let _ = kill(Pid::from_raw(listener as i32), Signal::SIGTERM);
            if !wait_until(Duration::from_secs(5), || {
                matches!(child.try_wait(), Ok(Some(_)))
            }) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if self.pam_file_written
            && let Err(e) = std::fs::remove_file(&self.pam_file)
        {
            eprintln!("warning: cannot remove {}: {e}", self.pam_file.display());
        }
        // The temporary directory (link, keys, config, logs) goes with `dir`.
    }
}

/// How the client's login ended (its exit status, checked against the
/// `result:` line it prints last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Asked for the code, logged in, ran the command.
    LoggedIn,
    /// Asked for the code, then refused.
    AuthFailed,
    /// Never asked for a code, and refused.
    NoCodePrompt,
    /// Never asked for a code, and let in (the command ran).
    LoggedInWithoutCode,
    /// Anything else: connection, host key, timeout, a crashed client.
    Error,
}

/// What the client reported.
pub struct Login {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Login {
    fn new(exit_code: Option<i32>, stdout: String, stderr: String) -> Self {
        let said = stdout
            .lines()
            .last()
            .and_then(|l| l.strip_prefix("result: "));
        // A Python traceback also exits with 1: only an exit status that
        // matches the client's own last line counts.
        let outcome = match (exit_code, said) {
            (Some(0), Some("logged-in")) => Outcome::LoggedIn,
            (Some(1), Some("auth-failed")) => Outcome::AuthFailed,
            (Some(2), Some("no-code-prompt")) => Outcome::NoCodePrompt,
            (Some(4), Some("logged-in-without-code")) => Outcome::LoggedInWithoutCode,
            _ => Outcome::Error,
        };
        Self {
            outcome,
            exit_code,
            stdout,
            stderr,
        }
    }

    fn lines(&self, kind: &str) -> Vec<&str> {
        let prefix = format!("{kind}: ");
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .collect()
    }

    /// The prompts the server sent, in order.
    pub fn prompts(&self) -> Vec<&str> {
        self.lines("prompt")
    }

    /// The messages the server relayed (PAM_TEXT_INFO/PAM_ERROR_MSG), in
    /// order: in keyboard-interactive requests, or after a successful login.
    pub fn messages(&self) -> Vec<&str> {
        self.lines("message")
    }

    /// The command's standard output.
    pub fn output(&self) -> Vec<&str> {
        self.lines("output")
    }

    /// Asserts the outcome; the panic shows everything the client said.
    #[track_caller]
    pub fn expect(&self, outcome: Outcome) -> &Self {
        assert_eq!(self.outcome, outcome, "unexpected login outcome\n{self}");
        self
    }
}

impl fmt::Display for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client exit code {:?} ({:?})\n-- stdout --\n{}-- stderr --\n{}",
            self.exit_code, self.outcome, self.stdout, self.stderr
        )
    }
}

pub use crate::{Codes, unix_now};

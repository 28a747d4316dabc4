//! `otpctl doctor`: reads the PAM files, sshd's effective settings
//! (`sshd -T`, or the config file when sshd is absent), the otpd config, the
//! state directory and the sockets, asks the daemon about its users, and
//! reports each trap of the README with the file, the line and the fix.
//!
//! The judging is otpd-core's (`otpd_core::doctor`, pure and fuzzed); this
//! module only gathers the texts and the file modes.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use otpd_core::doctor::{Finding, Severity, pam, sshd};
use otpd_proto::v1::{ListMustEnrollRequest, ListUsersRequest};
use serde::Serialize;
use tonic::Code;

use crate::cli::DoctorArgs;
use crate::client;
use crate::error::Error;
use crate::output::Printer;

/// otpd's config file unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/otpd/otpd.toml";
/// otpd's state directory unless the config or `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/otpd";
/// The size of otpd's master key.
const KEY_LEN: u64 = 32;
/// Users asked for per ListUsers call.
const PAGE: u32 = 1000;
/// Where sshd and otpd are looked for beside `$PATH`.
const SBIN: &[&str] = &["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// What doctor found, and what it looked at or could not.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub checked: Vec<String>,
    pub skipped: Vec<String>,
}

impl Report {
    fn error(&mut self, id: &'static str, file: &Path, line: Option<u32>, what: String, fix: &str) {
        let file = file.display().to_string();
        self.findings
            .push(Finding::error(id, &file, line, what, fix.to_owned()));
    }

    fn warning(
        &mut self,
        id: &'static str,
        file: &Path,
        line: Option<u32>,
        what: String,
        fix: &str,
    ) {
        let file = file.display().to_string();
        self.findings
            .push(Finding::warning(id, &file, line, what, fix.to_owned()));
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

/// The settings of the otpd config that doctor needs.
#[derive(Debug)]
struct OtpdConfig {
    path: PathBuf,
    state_dir: Option<PathBuf>,
    pam_socket: Option<PathBuf>,
    /// The public socket, if the config moves it.
    socket: Option<PathBuf>,
    socket_mode: u32,
}

/// Where otpd's root-only PAM socket is unless its config says otherwise.
const DEFAULT_PAM_SOCKET: &str = "/run/otpd/pam.sock";

pub async fn run(socket: &Path, p: &mut Printer<'_>, args: DoctorArgs) -> Result<ExitCode, Error> {
    let mut r = Report::default();
    let config = otpd_config(&args, &mut r);
    // The config's socket, unless --socket or OTPD_SOCKET named another.
    let socket = match &config.socket {
        Some(s) if socket == Path::new(crate::cli::DEFAULT_SOCKET) => s.clone(),
        _ => socket.to_owned(),
    };
    let socket = socket.as_path();
    let files = pam_files(&args.pam_dir, &mut r)?;
    let dir = args.pam_dir.display().to_string();
    let pam_socket = config
        .pam_socket
        .as_deref()
        .unwrap_or(Path::new(DEFAULT_PAM_SOCKET))
        .display()
        .to_string();
    r.findings.extend(pam::check(&files, &dir, &pam_socket));
    r.checked
        .push(format!("PAM: {} files in {dir}", files.len()));
    ssh(&args, &files, &mut r);
    state(&args, &config, socket, &mut r);
    daemon(socket, &files, &dir, &config, &mut r).await;
    r.findings
        .retain(|f| !args.ignore.iter().any(|id| id == f.id));
    r.findings.sort_by(|a, b| {
        (a.severity, &a.file, a.line, a.id).cmp(&(b.severity, &b.file, b.line, b.id))
    });
    p.doctor(&r)?;
    Ok(if r.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FINDINGS)
    })
}

/// The exit code when there are findings (errors or warnings).
pub const FINDINGS: u8 = 1;

/// Every regular file of the PAM directory, parsed.
fn pam_files(dir: &Path, r: &mut Report) -> Result<pam::Files, Error> {
    let read = |source| Error::DoctorRead {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(read)? {
        let entry = entry.map_err(read)?;
        let path = entry.path();
        // Symbolic links are followed, as libpam does.
        if !fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        match fs::read(&path) {
            Ok(bytes) => {
                let name = entry.file_name().to_string_lossy().into_owned();
                files.insert(name, pam::parse(&String::from_utf8_lossy(&bytes)));
            }
            Err(e) => r.warning(
                "pam-unreadable",
                &path,
                None,
                format!("cannot read it: {e}"),
                "run otpctl doctor as root",
            ),
        }
    }
    Ok(files)
}

/// `name` itself when it has a `/`, else the first match in `$PATH` and
/// the sbin directories.
fn find_program(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn otpd_config(args: &DoctorArgs, r: &mut Report) -> OtpdConfig {
    let (path, explicit) = match &args.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let mut config = OtpdConfig {
        path: path.clone(),
        state_dir: None,
        pam_socket: None,
        socket: None,
        socket_mode: 0o666,
    };
    let fix = "fix the file; `otpd --config FILE --check-config` checks it (README: \
               Configuration)";
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !explicit => {
            r.checked
                .push(format!("otpd config: no {}, the defaults", path.display()));
            return config;
        }
        Err(e) => {
            r.error(
                "otpd-config",
                &path,
                None,
                format!("cannot read otpd's config: {e}"),
                fix,
            );
            return config;
        }
    };
    let table = match text.parse::<toml::Table>() {
        Ok(table) => table,
        Err(e) => {
            let line = e.span().map(|span| line_of(&text, span.start));
            let what = format!("not valid TOML: {}", e.message());
            r.error("otpd-config", &path, line, what, fix);
            return config;
        }
    };
    let string = |key: &str| table.get(key).and_then(|v| v.as_str()).map(PathBuf::from);
    config.state_dir = string("state_dir");
    config.pam_socket = string("pam_socket");
    config.socket = string("socket");
    if let Some(mode) = table
        .get("socket_mode")
        .and_then(toml::Value::as_integer)
        .and_then(|m| u32::try_from(m).ok())
    {
        config.socket_mode = mode;
    }
    r.checked.push(format!("otpd config: {}", path.display()));
    // The daemon's own check knows every key and value.
    let Some(otpd) = find_program(&args.otpd) else {
        r.skipped.push(format!(
            "otpd --check-config: no {} found",
            args.otpd.display()
        ));
        return config;
    };
    match Command::new(&otpd)
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let reason = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no reason given");
            r.error(
                "otpd-config",
                &path,
                None,
                format!("otpd refuses it: {}", reason.trim()),
                fix,
            );
        }
        Err(e) => r
            .skipped
            .push(format!("{} --check-config: {e}", otpd.display())),
    }
    config
}

/// The line (from 1) of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> u32 {
    let before = text.get(..offset).unwrap_or(text);
    u32::try_from(before.matches('\n').count())
        .unwrap_or(u32::MAX)
        .saturating_add(1)
}

fn ssh(args: &DoctorArgs, files: &pam::Files, r: &mut Report) {
    let sshd_bin = find_program(&args.sshd);
    let config = &args.sshd_config;
    if sshd_bin.is_none() && !config.exists() {
        r.skipped.push(format!(
            "SSH: neither {} nor {} found",
            args.sshd.display(),
            config.display()
        ));
        return;
    }
    if !pam::reaches_otpd(files, "sshd") {
        r.warning(
            "ssh-without-otpd",
            &args.pam_dir.join("sshd"),
            None,
            "sshd's PAM stack does not run pam_otpd: SSH logins do not ask for a code".into(),
            "add `auth required pam_otpd.so` to /etc/pam.d/sshd (README: Protect SSH)",
        );
        return;
    }
    let text = fs::read_to_string(config).ok();
    let from_file = text.as_deref().map(sshd::parse_config).unwrap_or_default();
    let settings = match sshd_bin {
        Some(bin) => match Command::new(&bin).arg("-T").arg("-f").arg(config).output() {
            Ok(out) if out.status.success() => {
                r.checked.push(format!(
                    "SSH: {} -T -f {} (global settings; Match blocks: sshd -T -C \
                     user=...,host=...,addr=...)",
                    bin.display(),
                    config.display()
                ));
                sshd::parse_dump(&String::from_utf8_lossy(&out.stdout)).with_lines_from(&from_file)
            }
            Ok(out) if !nix::unistd::geteuid().is_root() => {
                // Host keys and the config are root's: not a finding.
                let stderr = String::from_utf8_lossy(&out.stderr);
                let reason = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                r.skipped.push(format!(
                    "SSH: `sshd -T` needs root ({}); run otpctl doctor as root",
                    reason.trim()
                ));
                return;
            }
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let reason = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                r.error(
                    "sshd-config",
                    config,
                    None,
                    format!("`sshd -T` refuses the configuration: {}", reason.trim()),
                    "fix the file (`sshd -t` checks it): sshd does not start with it",
                );
                return;
            }
            Err(e) => {
                r.skipped.push(format!("{} -T: {e}", bin.display()));
                return;
            }
        },
        None => {
            r.checked.push(format!(
                "SSH: {} (global settings; no sshd to run `sshd -T`, Include files not \
                 followed)",
                config.display()
            ));
            from_file
        }
    };
    r.findings
        .extend(sshd::check(&settings, &config.display().to_string()));
    // The key + code stack (pam_permit after pam_otpd) is safe only when
    // sshd asks for the key first.
    let methods = settings.get("authenticationmethods");
    let without_key = sshd::lists_without_key(&methods.value);
    if let (Some(rule), false) = (
        pam::permits_without_a_secret(files, "sshd"),
        without_key.is_empty(),
    ) {
        r.error(
            "permit-without-key",
            &args.pam_dir.join(rule.file),
            Some(rule.line),
            format!(
                "with nullok (or fail_mode=open) pam_otpd steps aside for users who have not \
                 enrolled (or while otpd is down), and then only pam_permit.so decides; \
                 AuthenticationMethods lets clients reach PAM without a key ({}): such users \
                 log in with nothing at all",
                without_key.join(" or ")
            ),
            "set `AuthenticationMethods publickey,keyboard-interactive` (key + code), or \
             remove nullok and fail_mode=open from the line (README: Protect SSH, Key + \
             code, Code only)",
        );
    }
}

fn state(args: &DoctorArgs, config: &OtpdConfig, socket: &Path, r: &mut Report) {
    let dir = args
        .state_dir
        .clone()
        .or_else(|| config.state_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let meta = match fs::symlink_metadata(&dir) {
        Ok(meta) => meta,
        Err(e) => {
            r.warning(
                "state-dir-missing",
                &dir,
                None,
                format!("cannot look at otpd's state directory: {e}"),
                "start otpd (README: Run the daemon), or point --state-dir or the config's \
                 state_dir at the right directory",
            );
            return;
        }
    };
    r.checked
        .push(format!("state directory: {}", dir.display()));
    let owner = meta.uid();
    if !meta.is_dir() {
        r.error(
            "state-dir-mode",
            &dir,
            None,
            "otpd's state directory is not a directory".into(),
            "point state_dir at a directory (README: Run the daemon)",
        );
        return;
    }
    if meta.mode() & 0o077 != 0 {
        r.error(
            "state-dir-mode",
            &dir,
            None,
            format!(
                "mode {:04o} lets group or others in (otpd refuses to start)",
                meta.mode() & 0o7777
            ),
            &format!("chmod 700 {} (README: Run the daemon)", dir.display()),
        );
    }
    if owner != 0 {
        r.error(
            "state-dir-owner",
            &dir,
            None,
            format!("owned by uid {owner}, not root"),
            &format!("chown root: {} (README: Run the daemon)", dir.display()),
        );
    }
    let key = dir.join("master.key");
    match fs::symlink_metadata(&key) {
        Ok(m) if !m.is_file() => r.error(
            "key-file",
            &key,
            None,
            "the master key is not a regular file (otpd refuses to start)".into(),
            "restore master.key from your backup (README: Recovery)",
        ),
        Ok(m) => {
            if m.mode() & 0o077 != 0 {
                r.error(
                    "key-mode",
                    &key,
                    None,
                    format!(
                        "mode {:04o}: group or others may read the key that opens every \
                         secret",
                        m.mode() & 0o7777
                    ),
                    &format!(
                        "chmod 600 {}; whoever read it can open every record: rekey \
                         (`otpctl rekey`) (README: Run the daemon; Devices and app \
                         passwords, The master key and its rotation)",
                        key.display()
                    ),
                );
            }
            if m.uid() != owner {
                r.error(
                    "key-owner",
                    &key,
                    None,
                    format!("owned by uid {}, not the daemon's user", m.uid()),
                    &format!("chown root: {} (README: Run the daemon)", key.display()),
                );
            }
            if m.len() != KEY_LEN {
                r.error(
                    "key-size",
                    &key,
                    None,
                    format!("{} bytes, not {KEY_LEN} (otpd refuses to start)", m.len()),
                    "restore master.key from your backup (README: Recovery)",
                );
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if dir.join("store").exists() {
                r.error(
                    "key-file",
                    &key,
                    None,
                    "the master key is missing beside the store (otpd refuses to start)".into(),
                    "restore master.key from your backup (README: Recovery)",
                );
            }
        }
        Err(e) => r.skipped.push(format!("{}: {e}", key.display())),
    }
    for name in ["store", "watermarks"] {
        let path = dir.join(name);
        if let Ok(m) = fs::symlink_metadata(&path)
            && m.mode() & 0o077 != 0
        {
            r.error(
                "state-mode",
                &path,
                None,
                format!("mode {:04o} lets group or others in", m.mode() & 0o7777),
                &format!("chmod -R go= {} (README: Run the daemon)", path.display()),
            );
        }
    }
    sockets(config, socket, r);
}

fn sockets(config: &OtpdConfig, socket: &Path, r: &mut Report) {
    let public = fs::symlink_metadata(socket);
    if let Ok(m) = &public {
        if !m.file_type().is_socket() {
            r.error(
                "socket-mode",
                socket,
                None,
                "not a socket".into(),
                "remove it and restart otpd (README: Run the daemon)",
            );
        } else if m.mode() & 0o777 != config.socket_mode {
            r.warning(
                "socket-mode",
                socket,
                None,
                format!(
                    "mode {:04o}, but otpd's config says {:04o}",
                    m.mode() & 0o777,
                    config.socket_mode
                ),
                "restart otpd, which sets the mode; check that nothing else changes it \
                 (README: Configuration, socket_mode)",
            );
        }
    }
    let pam_socket = config
        .pam_socket
        .clone()
        .unwrap_or_else(|| socket.with_file_name("pam.sock"));
    match fs::symlink_metadata(&pam_socket) {
        Ok(m) => {
            if !m.file_type().is_socket() || m.uid() != 0 || m.mode() & 0o777 != 0o600 {
                r.error(
                    "pam-socket-mode",
                    &pam_socket,
                    None,
                    format!(
                        "the PAM socket is {}, mode {:04o}, owner uid {}: it must be a \
                         socket of mode 0600 owned by root, else pam_otpd refuses it or \
                         local users can fill the queue logins wait in",
                        if m.file_type().is_socket() {
                            "a socket"
                        } else {
                            "not a socket"
                        },
                        m.mode() & 0o777,
                        m.uid()
                    ),
                    "restart otpd, which creates it so; check that nothing else changes it \
                     (README: Run the daemon; Security model, Availability)",
                );
            }
        }
        Err(_) if public.is_ok() => r.warning(
            "pam-socket-missing",
            &pam_socket,
            None,
            "no PAM socket beside the public one: pam_otpd falls back to the public \
             socket, which any local user can fill"
                .into(),
            "update and restart otpd (it listens on both), or set pam_socket (README: Run \
             the daemon)",
        ),
        Err(_) => {}
    }
}

async fn daemon(socket: &Path, files: &pam::Files, dir: &str, config: &OtpdConfig, r: &mut Report) {
    let mut client = match client::connect(socket).await {
        Ok(client) => client,
        Err(e @ Error::SocketPermission { .. }) => {
            r.skipped.push(format!("the daemon: {e}"));
            return;
        }
        Err(_) => {
            r.error(
                "daemon-not-running",
                socket,
                None,
                "otpd does not answer on its socket: with fail_mode=closed (the default) \
                 every login through pam_otpd fails"
                    .into(),
                "start it: `systemctl start otpd` (`journalctl -u otpd` says why it \
                 stopped) (README: Run the daemon)",
            );
            return;
        }
    };
    let mut after = String::new();
    let mut users = 0_usize;
    loop {
        let request = ListUsersRequest {
            after: after.clone(),
            limit: PAGE,
            ..ListUsersRequest::default()
        };
        let page = match client.list_users(request).await {
            Ok(page) => page.into_inner(),
            Err(status) => {
                r.skipped
                    .push(format!("enrolled users: {}", Error::Status(status)));
                break;
            }
        };
        for user in &page.users {
            users += 1;
            match nix::unistd::User::from_name(&user.user) {
                Ok(Some(_)) => {}
                Ok(None) => r.warning(
                    "user-gone",
                    socket,
                    None,
                    format!(
                        "{} has a record in otpd but no account (passwd, SSSD, LDAP): a new \
                         account of that name would inherit its devices and codes",
                        user.user
                    ),
                    &format!("otpctl reset {} (README: Recovery)", user.user),
                ),
                Err(e) => r.skipped.push(format!("looking up {}: {e}", user.user)),
            }
        }
        for name in &page.unreadable {
            r.warning(
                "unreadable-record",
                socket,
                None,
                format!("the record of {name} cannot be opened: {name} fails closed"),
                &format!("otpctl reset {name}, then enroll again (README: Recovery)"),
            );
        }
        if page.next_after.is_empty() || page.next_after <= after {
            break;
        }
        after = page.next_after;
    }
    r.checked.push(format!(
        "otpd at {}: {}",
        socket.display(),
        count(users, "user")
    ));
    match client.list_must_enroll(ListMustEnrollRequest {}).await {
        Ok(answer) => {
            let m = answer.into_inner();
            let when = match (m.deadline_date.as_str(), m.deadline_passed) {
                ("", _) => "now".to_owned(),
                (date, true) => format!("since {date}"),
                (date, false) => format!("from {date}"),
            };
            for user in &m.users {
                let what = format!(
                    "{user} must use a second factor ({} policy, {when}) and has no active \
                     device{}",
                    m.require,
                    if m.deadline_passed {
                        ": logins are refused"
                    } else {
                        ""
                    }
                );
                let fix = format!(
                    "otpctl enroll {user}, or exempt the account in [enforcement] \
                     exempt_users (README: Roll out to everyone or a group)"
                );
                if m.deadline_passed {
                    r.error("must-enroll", &config.path, None, what, &fix);
                } else {
                    r.warning("must-enroll", &config.path, None, what, &fix);
                }
            }
            if m.deadline_passed && m.require == "everyone" {
                r.findings
                    .extend(pam::nullok_after_deadline(files, dir, &m.deadline_date));
            }
            r.checked.push(format!(
                "enforcement: {} ({} must still enroll)",
                m.require,
                count(m.users.len(), "user")
            ));
        }
        Err(status) if status.code() == Code::Unimplemented => r
            .skipped
            .push("users who must enroll: this otpd has no enforcement policy".into()),
        Err(status) => r
            .skipped
            .push(format!("users who must enroll: {}", Error::Status(status))),
    }
}

/// `n` and `noun`, plural unless `n` is 1.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

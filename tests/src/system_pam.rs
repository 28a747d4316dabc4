//! Logins through the system's own PAM (service files in /etc/pam.d, the
//! modules Debian installs), for the benches that compare whole logins:
//! `compare` and `e2e`. Needs root.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian's PAM modules live.
const PAM_DIRS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/security",
    "/lib/x86_64-linux-gnu/security",
    "/usr/lib/security",
];

/// The path of Debian's module `name`, if installed.
pub fn find_module(name: &str) -> Option<PathBuf> {
    PAM_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// Service files in /etc/pam.d, removed on drop.
#[derive(Debug, Default)]
pub struct Services(Vec<PathBuf>);

impl Services {
    /// Writes /etc/pam.d/`name` with `stack`; returns the name.
    pub fn add(&mut self, name: &str, stack: &str) -> String {
        let path = Path::new("/etc/pam.d").join(name);
        std::fs::write(
            &path,
            format!("# otpd bench (tests/benches/compare.rs)\n{stack}\n"),
        )
        .unwrap();
        self.0.push(path);
        name.to_owned()
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A syslog listener on /dev/log for the run (unless one answers already),
/// draining what the modules log; removed on drop.
#[derive(Debug)]
pub struct Syslog {
    path: Option<PathBuf>,
}

impl Syslog {
    /// Listens on /dev/log unless something answers there already.
    pub fn ensure() -> Self {
        let dev_log = Path::new("/dev/log");
        let answering = UnixDatagram::unbound()
            .and_then(|s| s.connect(dev_log))
            .is_ok();
        if answering {
            println!("syslog: a listener answers on /dev/log already");
            return Self { path: None };
        }
        let _ = std::fs::remove_file(dev_log);
        let socket = UnixDatagram::bind(dev_log).expect("bind /dev/log");
        std::fs::set_permissions(dev_log, std::fs::Permissions::from_mode(0o666)).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while socket.recv(&mut buf).is_ok() {}
        });
        println!("syslog: listening on /dev/log for the run (messages dropped)");
        Self {
            path: Some(dev_log.to_owned()),
        }
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// One whole `pamtester SERVICE USER authenticate` process typing
/// `answer`; whether it authenticated.
pub fn pamtester_login(service: &str, user: &str, answer: &str) -> bool {
    let mut child = Command::new("pamtester")
        .args([service, user, "authenticate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run pamtester (apt install pamtester)");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(format!("{answer}\n").as_bytes());
    }
    child.wait().is_ok_and(|s| s.success())
}

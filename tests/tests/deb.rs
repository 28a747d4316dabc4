//! The Debian package (`make deb`, dist/deb/build-deb), built from the
//! binaries this test run already has (no second, release build) and
//! installed with dpkg on this machine: files and modes, man pages and
//! completions, the daemon started from the installed config, a login
//! through pam_wrapper + pamtester with the installed pam_otpd.so, then
//! `dpkg -r` (what stays, the warning about PAM files that still use the
//! module, the daemon stopped) and `dpkg --purge` (refused while a PAM file
//! uses the module, a clean system after).
//!
//! It changes the real system: /usr/sbin, /etc/otpd, /var/lib/otpd,
//! /run/otpd, /etc/pam.d/otpd-deb-test and dpkg's database. So all of it is
//! one test, and it starts only on a machine without otpd (installed by
//! `make install` or the package): purging would delete that
//! installation's secrets. There it fails in CI (CI=true), which must prove
//! the package, and elsewhere steps aside with a message. No other test
//! uses these paths. A guard puts everything back even when an assertion
//! fails. Runs as root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use otpd_tests::pam_env::{AUTH_ERR, PROMPT, PamService, SUCCESS_LINE, require_root};
use otpd_tests::{App, Codes, built};

const SBIN_OTPD: &str = "/usr/sbin/otpd";
const SBIN_OTPCTL: &str = "/usr/sbin/otpctl";
const PAM_FILE: &str = "/etc/pam.d/otpd-deb-test";
/// An account every Debian system has (enroll may check that the account
/// exists); its record lives only in the store this test purges.
const USER: &str = "daemon";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

#[track_caller]
fn ok(program: &str, args: &[&str]) -> Output {
    let out = run(program, args);
    assert!(out.status.success(), "{program} {args:?}: {}", show(&out));
    out
}

fn show(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn multiarch() -> String {
    let out = ok("dpkg-architecture", &["-qDEB_HOST_MULTIARCH"]);
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn pam_module_path() -> PathBuf {
    PathBuf::from(format!("/usr/lib/{}/security/pam_otpd.so", multiarch()))
}

/// dpkg's status of otpd ("install ok installed", "deinstall ok
/// config-files"); `None` when dpkg does not know it.
fn dpkg_status() -> Option<String> {
    let out = run("dpkg-query", &["-W", "-f=${Status}", "otpd"]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty() && s != "unknown ok not-installed")
}

/// What an otpd installation leaves on a machine.
fn existing_installation() -> Vec<String> {
    let mut found: Vec<String> = [
        "/etc/otpd",
        "/var/lib/otpd",
        "/run/otpd",
        SBIN_OTPD,
        SBIN_OTPCTL,
        "/usr/local/sbin/otpd",
        PAM_FILE,
    ]
    .iter()
    .map(PathBuf::from)
    .chain([pam_module_path()])
    .filter(|p| p.symlink_metadata().is_ok())
    .map(|p| p.display().to_string())
    .collect();
    if let Some(status) = dpkg_status() {
        found.push(format!("dpkg: otpd {status}"));
    }
    found
}

fn mode(path: &str) -> (u32, u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

fn exists(path: &str) -> bool {
    Path::new(path).symlink_metadata().is_ok()
}

/// The installed otpd, started as the admin would without systemd.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Self {
        let notify_path = dir.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let log = dir.join("otpd.log");
        let mut child = Command::new(SBIN_OTPD)
            .args(["--config", "/etc/otpd/otpd.toml"])
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let ready = otpd_tests::wait_ready(&notify, &mut child, Duration::from_secs(60));
        let daemon = Self { child, log };
        assert!(ready, "the installed otpd did not start: {}", daemon.log());
        daemon
    }

    fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// Waits for an exit someone else caused (the package's prerm).
    fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Puts the machine back as it was: no otpd package, no state, no PAM file.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(PAM_FILE);
        if dpkg_status().is_some() && !purge().status.success() {
            // Still refused after a minute (a PAM file this test did not
            // write): the test has failed already; leave no package behind
            // all the same, without the script that refuses.
            let _ = std::fs::remove_file("/var/lib/dpkg/info/otpd.postrm");
            let _ = run("dpkg", &["--purge", "--force-all", "otpd"]);
        }
        for dir in ["/etc/otpd", "/var/lib/otpd", "/run/otpd"] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `dpkg --purge otpd`. The postrm refuses while any /etc/pam.d file uses
/// pam_otpd, and the SSH tests (another test binary, maybe of another
/// `make test` on this machine) write such files for the length of a test:
/// a refusal is retried for up to a minute.
fn purge() -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = run("dpkg", &["--purge", "otpd"]);
        if out.status.success()
            || Instant::now() > deadline
            || !stderr(&out).contains("refusing to purge")
        {
            return out;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Builds the package from the binaries of this test run.
fn build_package(out: &Path) -> PathBuf {
    let bindir = built("otpd").parent().unwrap().to_owned();
    let script = repo_file("dist/deb/build-deb");
    let built = Command::new("sh")
        .arg(&script)
        .arg(&bindir)
        .arg(out)
        // gzip: xz takes most of a minute on the debug binaries; lintian
        // refuses an uncompressed package.
        .env("DEB_COMPRESS", "gzip")
        .output()
        .unwrap();
    assert!(built.status.success(), "build-deb: {}", show(&built));
    let deb = PathBuf::from(String::from_utf8(built.stdout).unwrap().trim());
    assert!(deb.is_file(), "{}", deb.display());
    deb
}

#[test]
fn the_package_installs_serves_a_login_and_is_removed_then_purged() {
    require_root();
    let found = existing_installation();
    if !found.is_empty() {
        let why = format!(
            "this machine has otpd installed ({}); the package test would overwrite it and \
             purge its secrets. Run it on a machine without otpd (CI does), or remove that \
             installation first (make uninstall, then /etc/otpd and /var/lib/otpd)",
            found.join(", ")
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    let _cleanup = Cleanup;
    let dir = otpd_tests::shared_tempdir();
    let deb = build_package(dir.path());

    // The control file: Depends computed by dpkg-shlibdeps.
    let info = String::from_utf8(ok("dpkg-deb", &["-f", deb.to_str().unwrap()]).stdout).unwrap();
    let depends = info
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends: {info}"));
    for lib in ["libc6 (>=", "libpam0g (>="] {
        assert!(depends.contains(lib), "{depends}");
    }

    lintian_is_clean(&deb);

    // Install. No systemd runs here: the unit is enabled, nothing started.
    let installed = ok("dpkg", &["-i", deb.to_str().unwrap()]);
    assert_eq!(dpkg_status().as_deref(), Some("install ok installed"));
    if !Path::new("/run/systemd/system").exists() {
        assert!(
            stderr(&installed).contains("systemd is not running here, so otpd was not started"),
            "{}",
            show(&installed)
        );
    }
    files_in_place();
    man_pages_render_without_warnings();
    bash_completes_the_commands();

    // The daemon from the installed config, on the default sockets.
    let mut daemon = Daemon::start(dir.path());
    assert_eq!(mode("/run/otpd/pam.sock").0 & 0o777, 0o600);
    assert_eq!(mode("/var/lib/otpd/master.key"), (0o600, 0, 0));

    // Enroll with the installed otpctl, log in with the installed module:
    // `pam_otpd.so` by name, found where libpam looks, no socket= option.
    let enrolled = ok(SBIN_OTPCTL, &["--json", "enroll", USER]);
    let uri = serde_json::from_slice::<serde_json::Value>(&enrolled.stdout).unwrap()["otpauth_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut codes = Codes::new(App::from_uri(&uri));
    ok(SBIN_OTPCTL, &["confirm", USER, &codes.fresh()]);
    let svc = PamService::new("otpd-deb", "auth required pam_otpd.so");
    svc.pamtester(USER)
        .answer(&codes.wrong())
        .run()
        .assert_failure(AUTH_ERR);
    svc.pamtester(USER)
        .answer(&codes.fresh())
        .run()
        .assert_success()
        .assert_user_sees(SUCCESS_LINE, PROMPT);
    assert!(
        daemon.log().contains("outcome=\"accepted\""),
        "{}",
        daemon.log()
    );

    // Upgrade (the same package again): the admin's edit of the conffile
    // and the master key stay; without systemd the running otpd is left
    // alone, and the postinst says that it still runs the old version.
    let key = std::fs::read("/var/lib/otpd/master.key").unwrap();
    let mut config = std::fs::read_to_string("/etc/otpd/otpd.toml").unwrap();
    config.push_str("\n# edited by the admin\nissuer = \"deb-test\"\n");
    std::fs::write("/etc/otpd/otpd.toml", &config).unwrap();
    let upgraded = ok("dpkg", &["-i", deb.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string("/etc/otpd/otpd.toml").unwrap(),
        config
    );
    assert!(
        std::fs::read("/var/lib/otpd/master.key").unwrap() == key,
        "the upgrade changed master.key"
    );
    if !Path::new("/run/systemd/system").exists() {
        assert!(
            stderr(&upgraded).contains("still runs the old version"),
            "{}",
            show(&upgraded)
        );
    }
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the upgrade stopped otpd: {}",
        daemon.log()
    );

    // Remove while a PAM file still uses the module: allowed, with a loud
    // warning naming the file and line; the daemon is stopped.
    std::fs::write(PAM_FILE, "auth required pam_otpd.so nullok\n").unwrap();
    let removed = ok("dpkg", &["-r", "otpd"]);
    let warning = stderr(&removed);
    assert!(
        warning.contains("WARNING: these PAM files still use pam_otpd")
            && warning.contains(&format!("{PAM_FILE}:1:auth required pam_otpd.so nullok")),
        "{}",
        show(&removed)
    );
    let stopped = daemon.wait_for_exit(Duration::from_secs(20));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "prerm did not stop otpd cleanly: {stopped:?}\n{}",
        daemon.log()
    );
    assert_eq!(dpkg_status().as_deref(), Some("deinstall ok config-files"));
    for gone in [SBIN_OTPD, SBIN_OTPCTL, "/usr/share/man/man8/otpctl.8.gz"] {
        assert!(!exists(gone), "{gone} is left after dpkg -r");
    }
    assert!(!pam_module_path().exists());
    for kept in [
        "/etc/otpd/otpd.toml",
        "/etc/logrotate.d/otpd",
        "/var/lib/otpd/master.key",
    ] {
        assert!(exists(kept), "{kept} is gone after dpkg -r");
    }

    // Purge is refused while a PAM file uses the module; the secrets stay.
    let refused = run("dpkg", &["--purge", "otpd"]);
    assert!(!refused.status.success(), "{}", show(&refused));
    assert!(
        stderr(&refused).contains("refusing to purge")
            && stderr(&refused).contains(&format!("{PAM_FILE}:1:")),
        "{}",
        show(&refused)
    );
    assert!(exists("/var/lib/otpd/master.key"));
    assert!(
        dpkg_status().is_some(),
        "dpkg forgot otpd after a refused purge"
    );

    // A commented-out line, or a module of another build (not in a
    // security/ directory), does not load this package's module: purge
    // removes everything.
    std::fs::write(
        PAM_FILE,
        "# auth required pam_otpd.so\nauth optional /opt/otpd-build/pam_otpd.so\n",
    )
    .unwrap();
    let purged = purge();
    assert!(purged.status.success(), "dpkg --purge: {}", show(&purged));
    assert_eq!(dpkg_status(), None);
    for gone in [
        "/etc/otpd",
        "/var/lib/otpd",
        "/run/otpd",
        "/etc/logrotate.d/otpd",
        "/etc/systemd/system/multi-user.target.wants/otpd.service",
        // No mask left (postrm masks on remove, unmasks on purge), and no
        // state of deb-systemd-helper.
        "/etc/systemd/system/otpd.service",
        "/var/lib/systemd/deb-systemd-helper-enabled/otpd.service.dsh-also",
        "/var/lib/systemd/deb-systemd-helper-masked/otpd.service",
    ] {
        assert!(!exists(gone), "{gone} is left after dpkg --purge");
    }
}

/// Every file the package ships, with its mode and owner.
fn files_in_place() {
    let module = pam_module_path();
    let module = module.to_str().unwrap();
    let root = |m| (m, 0, 0);
    for (path, want) in [
        (SBIN_OTPD, root(0o755)),
        (SBIN_OTPCTL, root(0o755)),
        (module, root(0o644)),
        ("/etc/otpd/otpd.toml", root(0o644)),
        ("/etc/logrotate.d/otpd", root(0o644)),
        ("/lib/systemd/system/otpd.service", root(0o644)),
        ("/var/lib/otpd", root(0o700)),
        ("/usr/share/man/man8/otpd.8.gz", root(0o644)),
        ("/usr/share/man/man8/otpctl.8.gz", root(0o644)),
        ("/usr/share/man/man8/otpctl-enroll.8.gz", root(0o644)),
        ("/usr/share/man/man8/otpctl-device-add.8.gz", root(0o644)),
        ("/usr/share/man/man8/pam_otpd.8.gz", root(0o644)),
        ("/usr/share/man/man5/otpd.toml.5.gz", root(0o644)),
        ("/usr/share/bash-completion/completions/otpctl", root(0o644)),
        ("/usr/share/zsh/vendor-completions/_otpctl", root(0o644)),
        (
            "/usr/share/fish/vendor_completions.d/otpctl.fish",
            root(0o644),
        ),
        ("/usr/share/doc/otpd/copyright", root(0o644)),
        ("/usr/share/doc/otpd/README.md.gz", root(0o644)),
        ("/usr/share/doc/otpd/changelog.gz", root(0o644)),
    ] {
        assert_eq!(mode(path), want, "{path}");
    }
    // The hidden generator is in no page and no completion.
    assert!(!exists("/usr/share/man/man8/otpctl-generate.8.gz"));
    let bash = std::fs::read_to_string("/usr/share/bash-completion/completions/otpctl").unwrap();
    assert!(!bash.contains("generate"), "{bash}");

    assert_eq!(
        std::fs::read("/etc/otpd/otpd.toml").unwrap(),
        std::fs::read(repo_file("otpd.toml.example")).unwrap()
    );
    let unit = std::fs::read_to_string("/lib/systemd/system/otpd.service").unwrap();
    assert!(
        unit.contains("\nExecStart=/usr/sbin/otpd --config /etc/otpd/otpd.toml\n")
            && unit.contains("\nDocumentation=man:otpd(8)")
            && !unit.contains("@SBINDIR@"),
        "{unit}"
    );
    // Enabled the way deb-systemd-helper does it, systemd running or not.
    let wants = "/etc/systemd/system/multi-user.target.wants/otpd.service";
    assert_eq!(
        std::fs::read_link(wants).unwrap(),
        Path::new("/lib/systemd/system/otpd.service")
    );
    let conffiles =
        String::from_utf8(ok("dpkg-query", &["-W", "-f=${Conffiles}", "otpd"]).stdout).unwrap();
    for f in ["/etc/otpd/otpd.toml", "/etc/logrotate.d/otpd"] {
        assert!(conffiles.contains(f), "{conffiles}");
    }
    // The packaged binaries answer.
    let version = ok(SBIN_OTPCTL, &["--version"]);
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("otpctl "));
    ok(
        SBIN_OTPD,
        &["--config", "/etc/otpd/otpd.toml", "--check-config"],
    );
}

/// `man` finds the installed pages and groff has nothing to warn about;
/// each says what a reader looks for.
fn man_pages_render_without_warnings() {
    let dir = Path::new("/usr/share/man");
    let mut pages: Vec<PathBuf> = ["man5", "man8"]
        .iter()
        .flat_map(|s| std::fs::read_dir(dir.join(s)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("otp") || n.starts_with("pam_otpd"))
        })
        .collect();
    pages.sort();
    assert!(pages.len() > 10, "{pages:?}");
    for page in &pages {
        let out = Command::new("man")
            .args(["--warnings=w", "-l"])
            .arg(page)
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .env("MAN_KEEP_STDERR", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty() && !out.stdout.is_empty(),
            "man -l {}: {}",
            page.display(),
            show(&out)
        );
    }
    let page =
        |section: &str, name: &str| String::from_utf8(ok("man", &[section, name]).stdout).unwrap();
    let otpctl = page("8", "otpctl");
    for want in ["otpctl-enroll(8)", "--socket", "EXIT STATUS"] {
        assert!(otpctl.contains(want), "otpctl(8) lacks {want:?}:\n{otpctl}");
    }
    let otpd = page("8", "otpd");
    for want in ["--check-config", "--state-dir", "78", "/var/lib/otpd"] {
        assert!(otpd.contains(want), "otpd(8) lacks {want:?}:\n{otpd}");
    }
    assert!(page("8", "pam_otpd").contains("fail_mode"));
    assert!(page("5", "otpd.toml").contains("max_drift_steps"));
}

/// bash-completion's loader finds the installed script and it offers
/// otpctl's commands.
fn bash_completes_the_commands() {
    let out = ok(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/otpctl && \
             COMP_WORDS=(otpctl en) COMP_CWORD=1 COMP_LINE='otpctl en' COMP_POINT=9 && \
             _otpctl otpctl en otpctl && printf '%s\\n' \"${COMPREPLY[@]}\"",
        ],
    );
    let words = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(words.trim(), "enroll", "{}", show(&out));
}

/// lintian, with the informational, pedantic and experimental tags too,
/// finds nothing that dist/deb/lintian-overrides does not explain.
fn lintian_is_clean(deb: &Path) {
    let out = Command::new("lintian")
        .args(["-I", "-E", "--pedantic"])
        .arg(deb)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("lintian is missing: apt-get install lintian (.ci/run does)");
    assert!(out.status.success(), "lintian: {}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tags: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("N: "))
        // The spelling overrides are for strings of the release build,
        // which this debug build does not have.
        .filter(|l| !l.contains("unused-override spelling-error-in-binary"))
        .collect();
    assert!(tags.is_empty(), "lintian: {}", tags.join("\n"));
}

//! pam_otpd side by side with the modules admins compare it with, measured
//! as a new user would try them: one whole `pamtester SERVICE USER
//! authenticate` process per login (spawn, libpam, the stack, one valid
//! code typed, exit), through the real libpam and a service file in
//! /etc/pam.d, with a syslog listener on /dev/log so that no module pays
//! for console logging.
//!
//! * `pam_permit`: `auth required pam_permit.so` (the baseline);
//! * `google-authenticator`: libpam-google-authenticator with its
//!   recommended options (`DISALLOW_REUSE`, `RATE_LIMIT 3 30`, window 3),
//!   one secret file per user (`secret=.../${USER} user=root`);
//! * `pam_oath`: libpam-oath, `usersfile=` with a TOTP line per user,
//!   `window=3` (it refuses a code it has seen, and rewrites the file);
//! * `pam_otpd`: the release build of this tree against the release otpd
//!   (its production defaults: every accepted code durable before the
//!   reply), on its root-only PAM socket;
//! * with `OTPD_COMPARE_BEFORE=/path/to/libpam_otpd.so`, that module too
//!   (e.g. an older build), against the same otpd.
//!
//! Every login uses a fresh valid code: each round uses another user (all
//! with the same secret, imported into otpd from the pam_oath users file),
//! so no module sees a code twice; the older pam_otpd has users of its own,
//! as it talks to the same otpd. The users are real accounts (created for
//! the run, removed afterwards), as a module's name lookups differ for
//! names the system does not know. The series are interleaved in rotating
//! order, so drift hits all alike. Per login it also records the child's
//! CPU time and minor page faults (getrusage of the waited child).
//!
//! Needs root, pamtester, libpam-google-authenticator and libpam-oath
//! (`make bench-compare` installs them). Run: `make bench-compare`, or
//! `cargo bench -p otpd-tests --bench compare`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use otpd_tests::system_pam::{Services, Syslog, find_module, pamtester_login};
use otpd_tests::*;

/// Logins per series.
const N: usize = 300;
/// Unmeasured logins per series first.
const WARM_UP: usize = 20;
/// The shared 20-byte secret, hex.
const SECRET_HEX: &str = "3132333435363738393031323334353637383930";

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0);
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Accounts created for the run (no home, no login shell), removed on
/// drop.
struct Accounts(Vec<String>);

impl Accounts {
    fn create(names: &[String]) -> Self {
        let mut made = Self(Vec::new());
        for name in names {
            let out = Command::new("useradd")
                .args([
                    "--no-create-home",
                    "--no-user-group",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(name)
                .output()
                .expect("run useradd");
            assert!(
                out.status.success(),
                "useradd {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            made.0.push(name.clone());
        }
        made
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("userdel").arg(name).output();
        }
    }
}

/// One login: wall time, CPU time and minor faults of the pamtester child.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    minflt: i64,
}

fn children() -> (Duration, i64) {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    (
        tv(u.user_time()) + tv(u.system_time()),
        u.minor_page_faults(),
    )
}

fn login(service: &str, user: &str, answer: &str) -> (bool, Sample) {
    let (cpu0, flt0) = children();
    let started = Instant::now();
    let ok = pamtester_login(service, user, answer);
    let wall = started.elapsed();
    let (cpu1, flt1) = children();
    (
        ok,
        Sample {
            wall,
            cpu: cpu1.saturating_sub(cpu0),
            minflt: flt1 - flt0,
        },
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    pam_env::require_root();
    let ga = find_module("pam_google_authenticator.so")
        .expect("pam_google_authenticator.so missing: apt install libpam-google-authenticator");
    let oath = find_module("pam_oath.so").expect("pam_oath.so missing: apt install libpam-oath");
    let permit = find_module("pam_permit.so").expect("pam_permit.so missing");
    let dir = build_this_profile(&["otpd", "otpctl", "pam_otpd"]);
    let otpd_so = dir.join("libpam_otpd.so");
    let before = std::env::var_os("OTPD_COMPARE_BEFORE").map(PathBuf::from);
    let _syslog = Syslog::ensure();

    let tmp = tempfile::Builder::new()
        .prefix("otpd-compare-")
        .tempdir()
        .unwrap();
    let tag = format!("{:05}", std::process::id() % 100_000);
    let users: Vec<String> = (0..N + WARM_UP).map(|i| format!("c{tag}n{i:04}")).collect();
    // The older module's users (it talks to the same otpd).
    let users_before: Vec<String> = if before.is_some() {
        (0..N + WARM_UP).map(|i| format!("c{tag}b{i:04}")).collect()
    } else {
        Vec::new()
    };
    println!(
        "creating {} accounts for the run",
        users.len() + users_before.len()
    );
    let _accounts = Accounts::create(&[users.clone(), users_before.clone()].concat());
    // pam_oath's users file; also what otpd imports.
    let oath_file = tmp.path().join("users.oath");
    let mut text = String::new();
    for u in users.iter().chain(&users_before) {
        writeln!(text, "HOTP/T30\t{u}\t-\t{SECRET_HEX}").unwrap();
    }
    std::fs::write(&oath_file, &text).unwrap();
    std::fs::set_permissions(&oath_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // google-authenticator: one file per user, its recommended options.
    let ga_dir = tmp.path().join("ga");
    std::fs::create_dir(&ga_dir).unwrap();
    let secret32 = base32(&unhex(SECRET_HEX));
    for u in &users {
        let f = ga_dir.join(u);
        std::fs::write(
            &f,
            format!(
                "{secret32}\n\" RATE_LIMIT 3 30\n\" WINDOW_SIZE 3\n\" DISALLOW_REUSE\n\" TOTP_AUTH\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o400)).unwrap();
    }

    let otpd_dir = tmp.path().join("otpd");
    std::fs::create_dir(&otpd_dir).unwrap();
    let daemon = Process::start(&otpd_dir);
    import_pam_oath(&daemon.socket, &oath_file, users.len() + users_before.len());

    let tag = format!("otpd-cmp-{tag}");
    let mut services = Services::default();
    let mut series: Vec<(String, String)> = vec![
        (
            "pam_permit".into(),
            services.add(
                &format!("{tag}-permit"),
                &format!("auth required {}", permit.display()),
            ),
        ),
        (
            "google-authenticator".into(),
            services.add(
                &format!("{tag}-ga"),
                &format!(
                    "auth required {} secret={}/${{USER}} user=root",
                    ga.display(),
                    ga_dir.display()
                ),
            ),
        ),
        (
            "pam_oath".into(),
            services.add(
                &format!("{tag}-oath"),
                &format!(
                    "auth required {} usersfile={} window=3 digits=6",
                    oath.display(),
                    oath_file.display()
                ),
            ),
        ),
        (
            "pam_otpd".into(),
            services.add(
                &format!("{tag}-otpd"),
                &format!(
                    "auth required {} socket={}",
                    otpd_so.display(),
                    daemon.pam_socket.display()
                ),
            ),
        ),
    ];
    if let Some(before) = &before {
        series.push((
            "pam_otpd (OTPD_COMPARE_BEFORE)".into(),
            services.add(
                &format!("{tag}-before"),
                &format!(
                    "auth required {} socket={}",
                    before.display(),
                    daemon.pam_socket.display()
                ),
            ),
        ));
    }

    let app = App::from_uri(&format!(
        "otpauth://totp/bench:x?secret={secret32}&issuer=bench&algorithm=SHA1&digits=6&period=30"
    ));
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); series.len()];
    let mut failures = vec![0usize; series.len()];
    println!(
        "{} logins per series after {WARM_UP} unmeasured, interleaved; one pamtester process each",
        N
    );
    for (round, user) in users.iter().enumerate() {
        for k in 0..series.len() {
            let s = (round + k) % series.len();
            let code = app.code_now();
            let who = if series[s].0.contains("BEFORE") {
                &users_before[round]
            } else {
                user
            };
            let (ok, sample) = login(&series[s].1, who, &code);
            if !ok {
                failures[s] += 1;
            }
            if round >= WARM_UP {
                samples[s].push(sample);
            }
        }
    }

    let median_of = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (percentile(v, 0.5), percentile(v, 0.9))
    };
    let mut base = 0.0;
    println!();
    println!(
        "| module | median | p90 | added to pam_permit (median) | CPU per login (median) | minor faults per login (median) | failed logins |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (i, (name, _)) in series.iter().enumerate() {
        let mut wall: Vec<f64> = samples[i].iter().map(|s| ms(s.wall)).collect();
        let mut cpu: Vec<f64> = samples[i].iter().map(|s| ms(s.cpu)).collect();
        let mut flt: Vec<f64> = samples[i].iter().map(|s| s.minflt as f64).collect();
        let (med, p90) = median_of(&mut wall);
        let (cpu_med, _) = median_of(&mut cpu);
        let (flt_med, _) = median_of(&mut flt);
        if i == 0 {
            base = med;
        }
        let added = if i == 0 {
            "—".to_owned()
        } else {
            format!("{:+.2} ms", med - base)
        };
        println!(
            "| {name} | {med:.2} ms | {p90:.2} ms | {added} | {cpu_med:.2} ms | {flt_med:.0} | {} |",
            failures[i]
        );
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!();
    println!(
        "module files: pam_permit {} B, pam_google_authenticator {} B, pam_oath {} B, pam_otpd {} B{}",
        size(&permit),
        size(&ga),
        size(&oath),
        size(&otpd_so),
        before
            .as_ref()
            .map(|b| format!(", before {} B", size(b)))
            .unwrap_or_default()
    );
    drop(services);
    let total: usize = failures.iter().sum();
    assert_eq!(total, 0, "some logins failed: the figures are not valid");
}

//! End to end: whole PAM logins per second, with `OTPD_E2E_LOOPS` (4)
//! parallel loops of `pamtester SERVICE USER authenticate`, each process
//! typing one valid code, for `OTPD_E2E_SECONDS` (10, after 1 s
//! unmeasured); first with a stack of only `pam_permit.so` (what the
//! machine can do at all: the processes, libpam, the dynamic loader), then
//! with `pam_otpd.so` against the release `otpd` with its defaults (every
//! accepted code durable before its reply). Service files in /etc/pam.d,
//! a syslog listener on /dev/log unless one answers.
//!
//! Each loop logs in its own user, a counter-based (HOTP) token imported
//! from a pam_oath file, counter after counter, so that every login types
//! a fresh valid code however fast the loop goes. Prints logins per
//! second, failures, p50/p99 of a login, and the CPU the loops and otpd
//! used per login.
//!
//! Run (as root): `make bench-e2e`, or `cargo bench -p otpd-tests --bench
//! e2e`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use otpd_tests::pam_env::require_root;
use otpd_tests::system_pam::{Services, Syslog, find_module, pamtester_login};
use otpd_tests::*;

/// The shared 20-byte secret, hex (RFC 4226's test secret).
const SECRET: &[u8; 20] = b"12345678901234567890";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.replace('_', "").parse().expect("a number"))
        .unwrap_or(default)
}

fn hotp(counter: u64) -> String {
    totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        1,
        SECRET.to_vec(),
        None,
        "bench".into(),
    )
    .generate(counter)
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// CPU seconds the children of this process (the pamtester runs) used.
fn children_cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    s(u.user_time()) + s(u.system_time())
}

struct Series {
    logins: usize,
    failed: usize,
    seconds: f64,
    latencies: Vec<Duration>,
    cpu_loops: f64,
    cpu_otpd: f64,
}

/// `loops` threads log in back to back through `service` for `seconds`
/// (after one unmeasured second); `answer(loop, n)` is what login `n` of
/// a loop types.
fn run(
    service: &str,
    loops: usize,
    seconds: usize,
    otpd_pid: u32,
    answer: Arc<dyn Fn(usize, u64) -> String + Send + Sync>,
) -> Series {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..loops)
        .map(|l| {
            let (service, answer) = (service.to_owned(), Arc::clone(&answer));
            let (measuring, stop) = (Arc::clone(&measuring), Arc::clone(&stop));
            std::thread::spawn(move || {
                let user = format!("e2e{l}");
                let (mut ok, mut failed, mut latencies) = (0usize, 0usize, Vec::new());
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let typed = answer(l, n);
                    n += 1;
                    let started = Instant::now();
                    let success = pamtester_login(&service, &user, &typed);
                    if measuring.load(Ordering::Relaxed) {
                        latencies.push(started.elapsed());
                        if success {
                            ok += 1;
                        } else {
                            failed += 1;
                        }
                    }
                }
                (ok, failed, latencies)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, otpd0) = (children_cpu(), cpu_of(otpd_pid));
    let started = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(seconds as u64));
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut s = Series {
        logins: 0,
        failed: 0,
        seconds: elapsed,
        latencies: Vec::new(),
        cpu_loops: 0.0,
        cpu_otpd: 0.0,
    };
    for t in threads {
        let (ok, failed, latencies) = t.join().unwrap();
        s.logins += ok;
        s.failed += failed;
        s.latencies.extend(latencies);
    }
    // (The loops' last logins finish after the window; their CPU is
    // counted, a few per loop among thousands.)
    s.cpu_loops = children_cpu() - cpu0;
    s.cpu_otpd = cpu_of(otpd_pid) - otpd0;
    s.latencies.sort();
    s
}

fn main() {
    require_root();
    let loops = env_number("OTPD_E2E_LOOPS", 4);
    let seconds = env_number("OTPD_E2E_SECONDS", 10);
    let permit = find_module("pam_permit.so").expect("pam_permit.so missing");
    let dir = build_this_profile(&["otpd", "otpctl", "pam_otpd"]);
    let so = dir.join("libpam_otpd.so");
    let _syslog = Syslog::ensure();
    let tmp = shared_tempdir();
    let otpd_dir = tmp.path().join("otpd");
    std::fs::create_dir(&otpd_dir).unwrap();
    let daemon = Process::start(&otpd_dir);
    let otpd_pid = daemon.child.id();
    let mut users = String::new();
    let hex: String = SECRET.iter().map(|b| format!("{b:02x}")).collect();
    for l in 0..loops {
        writeln!(users, "HOTP\te2e{l}\t-\t{hex}\t0").unwrap();
    }
    let file = tmp.path().join("users.oath");
    std::fs::write(&file, users).unwrap();
    import_pam_oath(&daemon.socket, &file, loops);

    let tag = std::process::id();
    let mut services = Services::default();
    let permit_service = services.add(
        &format!("otpd-e2e-permit-{tag}"),
        &format!("auth required {}", permit.display()),
    );
    let otpd_service = services.add(
        &format!("otpd-e2e-otpd-{tag}"),
        &format!(
            "auth required {} socket={}",
            so.display(),
            daemon.pam_socket.display()
        ),
    );
    println!(
        "{loops} parallel pamtester loops, {seconds} s measured each (after 1 s unmeasured); \
         {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("module: {}", so.display());
    println!("| stack | logins/s | failed | login p50 / p99 | CPU per login: pamtester / otpd |");
    println!("|---|---|---|---|---|");
    let report = |name: &str, s: &Series| {
        let n = s.latencies.len().max(1);
        let per = |cpu: f64| cpu * 1e3 / n as f64;
        println!(
            "| {name} | {:.0} | {} | {:.2} / {:.2} ms | {:.2} / {:.2} ms |",
            s.logins as f64 / s.seconds,
            s.failed,
            percentile(&s.latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&s.latencies, 0.99).as_secs_f64() * 1e3,
            per(s.cpu_loops),
            per(s.cpu_otpd),
        );
    };
    let s = run(
        &permit_service,
        loops,
        seconds,
        otpd_pid,
        Arc::new(|_, _| "-".to_owned()),
    );
    report("pam_permit", &s);
    // Counters 0, 1, 2, ... per user: each login's code is the next one.
    let s = run(
        &otpd_service,
        loops,
        seconds,
        otpd_pid,
        Arc::new(|_, n| hotp(n)),
    );
    report("pam_otpd (accepted codes)", &s);
    assert_eq!(s.failed, 0, "logins with a valid code failed");
}

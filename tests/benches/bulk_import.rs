//! Bulk import: `otpctl import pam-oath` of one `users.oath` with
//! `OTPD_BENCH_USERS` users (default 1,000,000: how the scale benchmark
//! fills the store), into the built `otpd` binary on a fresh state
//! directory, both release builds, with the real clock and fsyncs.
//!
//! The file mixes pam_oath's lines: time tokens (`HOTP/T30`, some with 8
//! digits), counter tokens (`HOTP` at a counter) and every 50th user with
//! a second token. Prints the wall time, users per second, the state
//! directory's size on disk per user, and the peak RSS of otpd and otpctl;
//! then one Verify of an imported user must be accepted.
//!
//! Run: `make bench-import` (builds otpd and otpctl first), or
//! `OTPD_BENCH_USERS=10000 make bench-import` for a quick look.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use otpd_proto::v1::Decision;
use otpd_tests::bench_users::{disk_usage, key, users_file};
use otpd_tests::*;

/// Peak resident memory of a running process (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Peak resident memory of the largest waited-for child, in MiB.
fn children_peak_rss_mib() -> f64 {
    let usage =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    usage.max_rss() as f64 / 1024.0
}

fn main() {
    let n: usize = std::env::var("OTPD_BENCH_USERS")
        .ok()
        .map(|v| {
            v.replace('_', "")
                .parse()
                .expect("OTPD_BENCH_USERS: a number")
        })
        .unwrap_or(1_000_000);
    let dir = shared_tempdir();
    let file = dir.path().join("users.oath");
    let (text, lines) = users_file(n);
    std::fs::write(&file, text).unwrap();
    let daemon = Process::start(dir.path());

    let wall = import_pam_oath(&daemon.socket, &file, lines);
    let otpctl_rss = children_peak_rss_mib();
    let otpd_rss = peak_rss_mib(daemon.child.id());
    let state = disk_usage(&daemon.state_dir);

    // An imported time-token user logs in with the current code.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Users 2, 6, 10... have one 6-digit time token: the first and the last.
    let probes = [
        2,
        (0..n)
            .rev()
            .find(|i| i % 4 == 2 && i % 50 != 49)
            .unwrap_or(2),
    ];
    let verified = rt.block_on(async {
        let mut c = connect(&daemon.socket).await;
        let mut all = true;
        for probe in probes.into_iter().filter(|&p| p < n) {
            let hex = key(probe, 0);
            let secret: Vec<u8> = (0..20)
                .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap())
                .collect();
            let totp = totp_rs::TOTP::new_unchecked(
                totp_rs::Algorithm::SHA1,
                6,
                1,
                30,
                secret,
                None,
                "bench".into(),
            );
            let code = totp.generate_current().unwrap();
            let v = verify(&mut c, &format!("user{probe}"), &code).await;
            all &= Decision::try_from(v.decision) == Ok(Decision::Accepted);
        }
        all
    });
    assert!(verified, "an imported user's code was refused");

    println!(
        "bulk import of {n} users (pam_oath users.oath, {lines} lines): {:.1} s, {:.0} users/s",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64()
    );
    println!(
        "state directory: {:.1} MiB, {} bytes per user (store + replay watermarks)",
        state as f64 / 1048576.0,
        state / n.max(1) as u64
    );
    println!("peak RSS: otpd {otpd_rss:.0} MiB, otpctl {otpctl_rss:.0} MiB");
    println!("verify after the import: accepted");
    drop(daemon);
}

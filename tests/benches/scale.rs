//! Scale: the same measurements at 1, 10,000 and 1,000,000 enrolled users
//! (`OTPD_BENCH_SCALE=1,10000,1000000`, the default), each on a fresh
//! state directory filled by `otpctl import pam-oath` (batched ImportUsers,
//! one sync per batch: never a million RPCs), against the built release
//! `otpd` with its default configuration, real clock and fsyncs:
//!
//! - the store's size on disk per user;
//! - otpd's resident memory at rest (restarted on the filled store, idle),
//!   after the load below, and its peak (VmHWM) since that restart;
//! - Verify of an accepted code, p50/p99: HOTP codes of counter-token users
//!   picked at random (at 1 user: the same user, counter after counter),
//!   and TOTP codes of distinct time-token users picked at random (none at
//!   1 user); GetStatus of random users;
//! - listing: the first ListUsers page (1000 users); `otpctl status` until
//!   its first line (the table's header and first page), `otpctl --json
//!   status` until its first byte past the `[`, both until the end, and
//!   otpctl's peak RSS (GNU time); a filter that matches nobody
//!   (`locked`) paged to the end: calls, slowest call, total.
//!
//! At the largest size, a storm: 1,000 concurrent wrong backup codes
//! (Argon2id, 19 MiB each) for 40 enrolled users, and otpd's peak RSS
//! during it.
//!
//! Run: `make bench-scale` (builds otpd and otpctl first). A million users
//! take about five minutes on 2 cores, most of it the import.
//! `OTPD_BENCH_KEEP=1` keeps each state directory (and prints where).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use otpd_proto::v1 as pb;
use otpd_tests::bench_users::{self, Token, disk_usage, key_bytes, proc_mib, token, users_file};
use otpd_tests::*;

/// Samples per latency series.
const SAMPLES: usize = 2000;

/// A small deterministic generator (xorshift64*), for picking users.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50 and p99 in ms ("-" without samples).
fn p50_p99(mut samples: Vec<Duration>) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    samples.sort();
    format!(
        "{:.3} / {:.3}",
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99))
    )
}

fn code(secret: Vec<u8>, digits: usize, step: u64, at: u64) -> String {
    totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        digits,
        1,
        step,
        secret,
        None,
        "bench".into(),
    )
    .generate(at)
}

/// `otpctl ARGS` under GNU time: until the first line (or, with `json`,
/// the first byte after `[`), until the end, output lines, peak RSS (MiB).
fn otpctl_listing(
    socket: &std::path::Path,
    args: &[&str],
    json: bool,
) -> (Duration, Duration, usize, f64) {
    let start = Instant::now();
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(built("otpctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("OTPD_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let first = if json {
        let mut two = [0u8; 2];
        out.read_exact(&mut two).unwrap();
        start.elapsed()
    } else {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        start.elapsed()
    };
    let mut lines = 1;
    let mut buf = Vec::new();
    while out.read_until(b'\n', &mut buf).unwrap() > 0 {
        lines += 1;
        buf.clear();
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{args:?}: {err}");
    let total = start.elapsed();
    let kib: f64 = err.lines().last().unwrap().trim().parse().unwrap();
    (first, total, lines, kib / 1024.0)
}

fn import(daemon: &Process, dir: &std::path::Path, n: usize) -> Duration {
    let file = dir.join("users.oath");
    let (text, lines) = users_file(n);
    std::fs::write(&file, text).unwrap();
    let wall = import_pam_oath(&daemon.socket, &file, lines);
    std::fs::remove_file(&file).unwrap();
    wall
}

fn measure(rt: &tokio::runtime::Runtime, n: usize, storm: bool) {
    let dir = shared_tempdir();
    let daemon = Process::start(dir.path());
    let import_time = import(&daemon, dir.path(), n);
    daemon.stop();
    let disk = disk_usage(&dir.path().join("state"));

    // At rest: restarted on the filled store, idle.
    let daemon = Process::start(dir.path());
    let pid = daemon.child.id();
    std::thread::sleep(Duration::from_secs(2));
    let rest = proc_mib(pid, "VmRSS");
    let start_peak = proc_mib(pid, "VmHWM");

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
    let (hotp, totp, status, first_page, none) = rt.block_on(async {
        let mut c = connect(&daemon.socket).await;

        // The first page, as otpctl asks for it.
        let mut first_page = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let page = c
                .list_users(pb::ListUsersRequest {
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            first_page.push(t.elapsed());
            // Fewer when 1000 do not fit in one reply.
            assert!((1..=n.min(1000)).contains(&page.users.len()));
        }

        // HOTP: counter-token users at random, each from its next counter.
        let counter_users: Vec<usize> = (0..n.min(4000))
            .map(|_| {
                let i = rng.below(n.div_ceil(4)) * 4;
                i.min((n - 1) / 4 * 4)
            })
            .collect();
        let mut next: std::collections::HashMap<usize, u64> = Default::default();
        let mut hotp = Vec::with_capacity(SAMPLES);
        for k in 0..SAMPLES {
            let i = counter_users[k % counter_users.len()];
            let Token::Counter(first) = token(i, 0) else {
                unreachable!("user{i} has a counter token")
            };
            let counter = next.entry(i).or_insert(first);
            let code = code(key_bytes(i, 0), 6, 1, *counter);
            *counter += 1;
            let t = Instant::now();
            let r = verify(&mut c, &bench_users::name(i), &code).await;
            hotp.push(t.elapsed());
            assert_eq!(
                pb::Decision::try_from(r.decision),
                Ok(pb::Decision::Accepted)
            );
        }

        // TOTP: distinct 6-digit time-token users at random.
        let mut time_users: Vec<usize> = (0..n).filter(|&i| token(i, 0) == Token::Time6).collect();
        let mut totp = Vec::new();
        for k in 0..SAMPLES.min(time_users.len()) {
            let j = k + rng.below(time_users.len() - k);
            time_users.swap(k, j);
            let i = time_users[k];
            let code = code(key_bytes(i, 0), 6, 30, unix_now());
            let t = Instant::now();
            let r = verify(&mut c, &bench_users::name(i), &code).await;
            totp.push(t.elapsed());
            assert_eq!(
                pb::Decision::try_from(r.decision),
                Ok(pb::Decision::Accepted)
            );
        }

        let mut status = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let user = bench_users::name(rng.below(n));
            let t = Instant::now();
            otpd_tests::status(&mut c, &user).await;
            status.push(t.elapsed());
        }

        // A filter that matches nobody, paged to the end.
        let (mut calls, mut slowest, started) = (0, Duration::ZERO, Instant::now());
        let mut after = String::new();
        loop {
            let t = Instant::now();
            let page = c
                .list_users(pb::ListUsersRequest {
                    after: after.clone(),
                    limit: 1000,
                    locked: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            slowest = slowest.max(t.elapsed());
            calls += 1;
            assert!(page.users.is_empty());
            if page.next_after.is_empty() {
                break;
            }
            after = page.next_after;
        }
        (
            hotp,
            totp,
            status,
            first_page,
            (calls, slowest, started.elapsed()),
        )
    });

    let (text_first, text_total, text_lines, text_rss) =
        otpctl_listing(&daemon.socket, &["status"], false);
    assert_eq!(text_lines, n + 1);
    let (json_first, json_total, _, json_rss) =
        otpctl_listing(&daemon.socket, &["--json", "status"], true);
    let after_load = proc_mib(pid, "VmRSS");
    let peak = proc_mib(pid, "VmHWM");

    let mut first_page = first_page;
    first_page.sort();
    println!("== {n} users");
    println!(
        "import {:.1} s; store on disk {:.1} MiB, {} bytes per user",
        import_time.as_secs_f64(),
        disk as f64 / 1048576.0,
        disk / n as u64
    );
    println!(
        "otpd RSS: at rest {rest:.1} MiB (peak at start {start_peak:.1}), after the load {after_load:.1} MiB, peak {peak:.1} MiB"
    );
    println!("Verify HOTP accepted p50/p99 ms: {}", p50_p99(hotp));
    println!("Verify TOTP accepted p50/p99 ms: {}", p50_p99(totp));
    println!("GetStatus p50/p99 ms: {}", p50_p99(status));
    println!(
        "ListUsers first page (1000): p50 {:.1} ms, max {:.1} ms",
        ms(percentile(&first_page, 0.5)),
        ms(first_page[first_page.len() - 1])
    );
    println!(
        "otpctl status: first line {:.1} ms, all {} lines {:.2} s, peak RSS {text_rss:.1} MiB",
        ms(text_first),
        text_lines,
        text_total.as_secs_f64()
    );
    println!(
        "otpctl --json status: first user {:.1} ms, all {:.2} s, peak RSS {json_rss:.1} MiB",
        ms(json_first),
        json_total.as_secs_f64()
    );
    println!(
        "ListUsers locked (matches nobody): {} calls, slowest {:.1} ms, total {:.2} s",
        none.0,
        ms(none.1),
        none.2.as_secs_f64()
    );
    if storm {
        backup_code_storm(rt, &daemon);
    }
    drop(daemon);
    if std::env::var_os("OTPD_BENCH_KEEP").is_some() {
        println!("kept: {}", dir.keep().display());
    }
}

/// 1,000 concurrent wrong backup codes for 40 users over 25 connections.
fn backup_code_storm(rt: &tokio::runtime::Runtime, daemon: &Process) {
    const USERS: usize = 40;
    const ATTEMPTS: usize = 1000;
    const CONNECTIONS: usize = 25;
    let pid = daemon.child.id();
    rt.block_on(async {
        let mut c = connect(&daemon.socket).await;
        let users: Vec<String> = (0..USERS).map(|i| format!("storm{i:02}")).collect();
        for user in &users {
            enroll(&mut c, user, unix_now()).await;
        }
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
        let before = proc_mib(pid, "VmRSS");
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(connect(&daemon.socket).await);
        }
        let started = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..ATTEMPTS {
            let mut c = clients[i % CONNECTIONS].clone();
            let user = users[i % USERS].clone();
            let code = format!("{:08}", 10_000_000 + i);
            tasks.push(tokio::spawn(async move {
                c.verify(verify_req(&user, &code)).await.map(|r| r.into_inner().decision)
            }));
        }
        let mut checked = 0;
        for t in tasks {
            if t.await.unwrap().ok() == Some(pb::Decision::Rejected as i32) {
                checked += 1;
            }
        }
        let took = started.elapsed();
        let peak = proc_mib(pid, "VmHWM");
        drop(clients);
        tokio::time::sleep(Duration::from_secs(15)).await;
        let after = proc_mib(pid, "VmRSS");
        println!(
            "backup-code storm ({ATTEMPTS} concurrent wrong codes, {USERS} users, {} hashes at once): \
             {checked} checked in {:.1} s; otpd RSS before {before:.1} MiB, peak {peak:.1} MiB, \
             15 s after {after:.1} MiB",
            otpd::engine::default_kdf_parallelism(),
            took.as_secs_f64()
        );
    });
}

fn main() {
    let sizes: Vec<usize> = std::env::var("OTPD_BENCH_SCALE")
        .unwrap_or_else(|_| "1,10000,1000000".into())
        .split(',')
        .map(|v| {
            v.trim()
                .replace('_', "")
                .parse()
                .expect("OTPD_BENCH_SCALE: numbers, comma-separated")
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    for &n in &sizes {
        measure(&rt, n.max(1), n == largest);
    }
}

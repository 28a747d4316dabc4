//! The daemon under load: how many Verify decisions per second the release
//! `otpd` makes on this machine over its Unix socket, with many callers on
//! persistent connections, and at what latency.
//!
//! Users (`OTPD_LOAD_USERS`, default 100,000, one shared secret) are
//! imported in bulk (`otpctl import pam-oath`), then `OTPD_LOAD_CALLERS`
//! (default 64) callers, each on its own connection, send back to back for
//! `OTPD_LOAD_SECONDS` (default 10, after 1 s unmeasured) a mix of
//! requests: 4 in 10 a valid code of a user who has not used one yet (so
//! accepted, with its durable write), 4 in 10 a wrong code for a random
//! user (refused, the failure counted durably), 2 in 10 a status read.
//! The daemon keeps its production settings: every decision's write is on
//! disk before its reply. Callers and daemon share the machine's cores.
//!
//! Prints decisions per second, p50/p99/p999 per kind and overall, how
//! many codes meant to be accepted were not, and otpd's resident memory.
//!
//! Run: `make bench-load` or `cargo bench -p otpd-tests --bench verify_load`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use otpd_proto::v1 as pb;
use otpd_tests::*;

const SECRET_HEX: &str = "3132333435363738393031323334353637383930";
const SECRET_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.replace('_', "").parse().expect("a number"))
        .unwrap_or(default)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Accepted,
    Wrong,
    Status,
}

const KINDS: [Kind; 3] = [Kind::Accepted, Kind::Wrong, Kind::Status];

fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let users = env_number("OTPD_LOAD_USERS", 100_000);
    let callers = env_number("OTPD_LOAD_CALLERS", 64);
    let seconds = env_number("OTPD_LOAD_SECONDS", 10);
    build_this_profile(&["otpd", "otpctl"]);
    let tmp = shared_tempdir();
    let file = tmp.path().join("users.oath");
    let mut text = String::with_capacity(users * 64);
    for i in 0..users {
        writeln!(text, "HOTP/T30\tload{i}\t-\t{SECRET_HEX}").unwrap();
    }
    std::fs::write(&file, text).unwrap();
    let otpd_dir = tmp.path().join("otpd");
    std::fs::create_dir(&otpd_dir).unwrap();
    let daemon = Process::start(&otpd_dir);
    let pid = daemon.child.id();
    let took = import_pam_oath(&daemon.socket, &file, users);
    println!(
        "{users} users imported in {:.1} s; otpd RSS {:.1} MiB",
        took.as_secs_f64(),
        rss_mib(pid, "VmRSS:")
    );

    let app = Arc::new(App::from_uri(&format!(
        "otpauth://totp/load:x?secret={SECRET_B32}&issuer=load&algorithm=SHA1&digits=6&period=30"
    )));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let next_user = Arc::new(AtomicUsize::new(0));
    let ops = Arc::new(AtomicUsize::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let socket = daemon.socket.clone();
    let results = rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..callers {
            let mut client = connect(&socket).await;
            let (app, next_user, ops, measuring, stop) = (
                app.clone(),
                next_user.clone(),
                ops.clone(),
                measuring.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut samples: Vec<(Kind, Duration)> = Vec::with_capacity(1 << 16);
                // Why valid codes were not accepted: (decision, reason).
                let mut not_accepted: Vec<(i32, i32)> = Vec::new();
                let mut seed = (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                while !stop.load(Ordering::Relaxed) {
                    let i = ops.fetch_add(1, Ordering::Relaxed);
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let random_user = format!("load{}", seed % users as u64);
                    let mut kind = match i % 10 {
                        0..=3 => Kind::Accepted,
                        4..=7 => Kind::Wrong,
                        _ => Kind::Status,
                    };
                    let fresh = if kind == Kind::Accepted {
                        let u = next_user.fetch_add(1, Ordering::Relaxed);
                        if u < users {
                            Some(format!("load{u}"))
                        } else {
                            kind = Kind::Wrong;
                            None
                        }
                    } else {
                        None
                    };
                    let t = Instant::now();
                    match kind {
                        Kind::Accepted => {
                            let r = verify(&mut client, fresh.as_deref().unwrap(), &app.code_now())
                                .await;
                            if r.decision() != pb::Decision::Accepted {
                                not_accepted.push((r.decision, r.reason));
                            }
                        }
                        Kind::Wrong => {
                            let now = unix_now();
                            let r =
                                verify(&mut client, &random_user, &app.wrong_code_at(now)).await;
                            assert_ne!(r.decision(), pb::Decision::Accepted);
                        }
                        Kind::Status => {
                            client
                                .get_status(pb::GetStatusRequest {
                                    user: random_user.into_bytes().into(),
                                })
                                .await
                                .unwrap();
                        }
                    }
                    if measuring.load(Ordering::Relaxed) {
                        samples.push((kind, t.elapsed()));
                    }
                }
                (samples, not_accepted)
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        measuring.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds as u64)).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.unwrap());
        }
        (all, elapsed)
    });
    let (per_caller, elapsed) = results;
    let mut samples: Vec<(Kind, Duration)> = Vec::new();
    let mut not_accepted: Vec<(i32, i32)> = Vec::new();
    for (s, n) in per_caller {
        samples.extend(s);
        not_accepted.extend(n);
    }
    let total = samples.len();
    println!(
        "{callers} callers, {seconds} s measured: {total} requests, {:.0} per second \
         (decisions: {:.0} per second)",
        total as f64 / elapsed.as_secs_f64(),
        samples.iter().filter(|(k, _)| *k != Kind::Status).count() as f64 / elapsed.as_secs_f64()
    );
    let line = |name: &str, mut v: Vec<Duration>| {
        v.sort();
        if v.is_empty() {
            return;
        }
        println!(
            "  {name:<16} n={:<8} p50={:>7.3} ms  p99={:>7.3} ms  p999={:>7.3} ms",
            v.len(),
            ms(percentile(&v, 0.5)),
            ms(percentile(&v, 0.99)),
            ms(percentile(&v, 0.999)),
        );
    };
    for kind in KINDS {
        line(
            &format!("{kind:?}"),
            samples
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, d)| *d)
                .collect(),
        );
    }
    line("all", samples.iter().map(|(_, d)| *d).collect());
    // Random wrong codes for random users can throttle a user just before
    // its one valid code (the throttle counts failures from origins the
    // user never logged in from): those are refused by design, and said.
    let mut why = std::collections::BTreeMap::<String, usize>::new();
    for (d, r) in &not_accepted {
        let d = pb::Decision::try_from(*d).map_or_else(|_| d.to_string(), |d| format!("{d:?}"));
        let r = pb::Reason::try_from(*r).map_or_else(|_| r.to_string(), |r| format!("{r:?}"));
        *why.entry(format!("{d}/{r}")).or_default() += 1;
    }
    println!(
        "  valid codes not accepted: {} {:?}",
        not_accepted.len(),
        why
    );
    println!(
        "otpd RSS after the run {:.1} MiB, peak {:.1} MiB",
        rss_mib(pid, "VmRSS:"),
        rss_mib(pid, "VmHWM:")
    );
    drop(daemon);
}

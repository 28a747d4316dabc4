//! TOTP Verify latency while a storm of wrong backup codes (production
//! Argon2id, 19 MiB) hits the same daemon: 200 concurrent guessers over 40
//! users and 20 connections, each sending its next guess as soon as the
//! last one is answered (after the `retry_after` of a refusal, as a login
//! that is refused ends and a new one starts); throttle and lockout are
//! off so every guess that gets a hash slot is checked. The TOTP logins of
//! another user are timed.
//!
//! Run: `cargo bench -p otpd-tests --bench totp_during_storm`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use otpd::{Clock, ManualClock};
use otpd_proto::v1::Decision;
use otpd_tests::*;

const USERS: usize = 40;
const GUESSERS: usize = 200;
const CONNECTIONS: usize = 20;
const LOGINS: usize = 500;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = shared_tempdir();
    let config = config_in(dir.path());
    let engine = bench_engine_config(&config);
    let daemon = InProcess::start_with_engine(dir, config, Arc::new(ManualClock::new(T0)), engine);
    let clock = daemon.clock.clone();
    println!(
        "backup-code hashes at once: {}",
        daemon.engine.kdf_parallelism()
    );

    rt.block_on(async {
        let mut c = daemon.client().await;
        let (app, _) = enroll(&mut c, "login", T0).await;
        for i in 0..USERS {
            enroll(&mut c, &format!("storm{i:02}"), T0).await;
        }

        let stop = Arc::new(AtomicBool::new(false));
        let checked = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let mut conns = Vec::new();
        for _ in 0..CONNECTIONS {
            conns.push(daemon.client().await);
        }
        let mut guessers = Vec::new();
        for g in 0..GUESSERS {
            let mut c = conns[g % CONNECTIONS].clone();
            let user = format!("storm{:02}", g % USERS);
            let (stop, checked, refused) = (stop.clone(), checked.clone(), refused.clone());
            guessers.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let code = format!("{:08}", 30_000_000 + (g as u64) * 100_000 + n % 100_000);
                    let r = verify(&mut c, &user, &code).await;
                    if Decision::try_from(r.decision) == Ok(Decision::Rejected) {
                        checked.fetch_add(1, Ordering::Relaxed);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_secs(r.retry_after_seconds)).await;
                    }
                }
            }));
        }
        // Let the storm build up.
        tokio::time::sleep(Duration::from_secs(2)).await;

        let started = Instant::now();
        let mut samples = Vec::with_capacity(LOGINS);
        for _ in 0..LOGINS {
            clock.advance(30);
            let code = app.code_at(clock.now());
            let start = Instant::now();
            let r = verify(&mut c, "login", &code).await;
            samples.push(start.elapsed());
            assert_eq!(Decision::try_from(r.decision), Ok(Decision::Accepted));
        }
        let elapsed = started.elapsed() + Duration::from_secs(2);
        stop.store(true, Ordering::Relaxed);
        for g in guessers {
            g.await.unwrap();
        }

        samples.sort();
        println!(
            "verify TOTP during the storm   n={LOGINS:<5} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
            percentile(&samples, 0.50).as_secs_f64() * 1e3,
            percentile(&samples, 0.99).as_secs_f64() * 1e3,
            samples[samples.len() - 1].as_secs_f64() * 1e3,
        );
        let secs = elapsed.as_secs_f64();
        println!(
            "storm: {:.0} checked backup-code guesses/s, {:.0} refused unchecked/s",
            checked.load(Ordering::Relaxed) as f64 / secs,
            refused.load(Ordering::Relaxed) as f64 / secs,
        );
    });
    drop(daemon);
}

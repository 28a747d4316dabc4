//! Verify latency over the Unix socket, end to end: gRPC client → daemon →
//! decision → durable write (fsync) → reply. The daemon is the real
//! library on a sled store in a temporary directory, with the production
//! backup-code hash; a manual clock moves one step per accepted code so
//! every accepted TOTP code is fresh.
//!
//! Run: `cargo bench -p otpd-tests --bench verify_latency` (or `make bench`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use otpd::ManualClock;
use otpd_proto::v1::Decision;
use otpd_tests::*;

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{name:<38} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms  mean={:>8.3} ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
    );
}

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

    rt.block_on(async {
        let mut c = daemon.client().await;
        let (app, backup) = enroll(&mut c, "bench", T0).await;
        let n = 2000;

        // Warm-up.
        for _ in 0..50 {
            clock.advance(30);
            let t = {
                use otpd::Clock;
                clock.now()
            };
            verify(&mut c, "bench", &app.code_at(t)).await;
        }

        let mut accepted = Vec::with_capacity(n);
        for _ in 0..n {
            clock.advance(30);
            let code = app.code_at({
                use otpd::Clock;
                clock.now()
            });
            let start = Instant::now();
            let r = verify(&mut c, "bench", &code).await;
            accepted.push(start.elapsed());
            assert_eq!(Decision::try_from(r.decision), Ok(Decision::Accepted));
        }
        report("verify TOTP, accepted", accepted);

        let mut rejected = Vec::with_capacity(n);
        let wrong = app.wrong_code_at({
            use otpd::Clock;
            clock.now()
        });
        for _ in 0..n {
            let start = Instant::now();
            let r = verify(&mut c, "bench", &wrong).await;
            rejected.push(start.elapsed());
            assert_eq!(Decision::try_from(r.decision), Ok(Decision::Rejected));
        }
        report("verify TOTP, wrong code", rejected);

        let mut backups = Vec::new();
        for code in &backup {
            let start = Instant::now();
            let r = verify(&mut c, "bench", code).await;
            backups.push(start.elapsed());
            assert_eq!(Decision::try_from(r.decision), Ok(Decision::Accepted));
        }
        report("verify backup code (Argon2id 19 MiB)", backups);

        let mut status = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            otpd_tests::status(&mut c, "bench").await;
            status.push(start.elapsed());
        }
        report("status (read only)", status);
    });
    drop(daemon);
}

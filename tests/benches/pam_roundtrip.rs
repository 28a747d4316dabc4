//! What pam_otpd adds to a login, measured from the outside: whole
//! `pamtester ... authenticate` processes under pam_wrapper (spawn, load
//! libpam and the stack, answer the prompt, exit), with
//!
//! * (a) a stack of only `auth required pam_permit.so` (the baseline: the
//!   process, libpam, pam_wrapper);
//! * (b) `auth required /abs/libpam_otpd.so socket=...`, answering a valid
//!   code: connect, check the socket and peer, `Verify`, durable write,
//!   reply;
//! * (c) the same stack answering a wrong code.
//!
//! The daemon is the real library in this process, with the production
//! settings (except throttle and lockout limits of 1 000 000, so that the
//! wrong-code series measures the check, not the lockout) and a manual clock
//! that moves one step before every accepted code, so every code is fresh.
//! The series are interleaved, in rotating order, to cancel drift.
//!
//! The module under test is the release build, `target/release/
//! libpam_otpd.so`. `cargo bench -p otpd-tests` does not build it (nothing
//! here depends on the pam_otpd crate), so this bench runs `cargo build
//! --release -p pam_otpd` first and says so.
//!
//! Run (as root): `cargo bench -p otpd-tests --bench pam_roundtrip`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use otpd::{Clock, ManualClock};
use otpd_tests::pam_env::{PamService, require_root};
use otpd_tests::*;

/// Round trips per series.
const N: usize = 200;
/// Unmeasured round trips per series first.
const WARM_UP: usize = 10;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Prints one series; returns its median.
fn report(name: &str, samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let median = percentile(&sorted, 0.5);
    println!(
        "{name:<44} n={:<4} median={:>7.2} ms  p90={:>7.2} ms  min={:>7.2} ms  max={:>7.2} ms",
        sorted.len(),
        ms(median),
        ms(percentile(&sorted, 0.9)),
        ms(sorted[0]),
        ms(sorted[sorted.len() - 1]),
    );
    median
}

/// Median and p90 of the per-iteration differences `b[i] - a[i]` (signed,
/// in ms).
fn paired(a: &[Duration], b: &[Duration]) -> (f64, f64) {
    let mut d: Vec<f64> = a.iter().zip(b).map(|(a, b)| ms(*b) - ms(*a)).collect();
    d.sort_by(f64::total_cmp);
    (percentile(&d, 0.5), percentile(&d, 0.9))
}

fn main() {
    require_root();
    let so = build_this_profile(&["pam_otpd"]).join("libpam_otpd.so");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = shared_tempdir();
    let config = config_in(dir.path());
    let engine = bench_engine_config(&config);
    let daemon = InProcess::start_with_engine(dir, config, Arc::new(ManualClock::new(T0)), engine);
    let clock = daemon.clock.clone();
    let app = rt.block_on(async {
        let mut c = daemon.client().await;
        enroll(&mut c, "bench", T0).await.0
    });

    let permit = PamService::new("bench-permit", "auth required pam_permit.so");
    let otpd = PamService::new(
        "bench-otpd",
        &format!(
            "auth required {} socket={}",
            so.display(),
            daemon.socket().display()
        ),
    );

    let run_permit = || {
        let out = permit.pamtester("bench").run();
        out.assert_success();
        out.elapsed
    };
    let run_accepted = || {
        clock.advance(30);
        let code = app.code_at(clock.now());
        let out = otpd.pamtester("bench").answer(&code).run();
        out.assert_success();
        out.elapsed
    };
    let run_wrong = || {
        let wrong = app.wrong_code_at(clock.now());
        let out = otpd.pamtester("bench").answer(&wrong).run();
        out.assert_failure(otpd_tests::pam_env::AUTH_ERR);
        out.elapsed
    };

    println!(
        "pamtester round trips under pam_wrapper, {N} per series (after {WARM_UP} \
         unmeasured), interleaved"
    );
    println!("module: {}", so.display());
    for _ in 0..WARM_UP {
        run_permit();
        run_accepted();
        run_wrong();
    }
    let mut permit_t = Vec::with_capacity(N);
    let mut accepted_t = Vec::with_capacity(N);
    let mut wrong_t = Vec::with_capacity(N);
    let started = Instant::now();
    for i in 0..N {
        // Rotate the order so that no series always runs first.
        for k in 0..3 {
            match (i + k) % 3 {
                0 => permit_t.push(run_permit()),
                1 => accepted_t.push(run_accepted()),
                _ => wrong_t.push(run_wrong()),
            }
        }
    }
    let total = started.elapsed();

    let a = report("(a) pam_permit.so only", &permit_t);
    let b = report("(b) pam_otpd.so, code accepted", &accepted_t);
    let c = report("(c) pam_otpd.so, wrong code", &wrong_t);
    let (pb50, pb90) = paired(&permit_t, &accepted_t);
    let (pc50, pc90) = paired(&permit_t, &wrong_t);
    println!(
        "pam_otpd adds (accepted): {:>6.2} ms (difference of medians); paired \
         differences: median {pb50:.2} ms, p90 {pb90:.2} ms",
        ms(b) - ms(a)
    );
    println!(
        "pam_otpd adds (wrong):    {:>6.2} ms (difference of medians); paired \
         differences: median {pc50:.2} ms, p90 {pc90:.2} ms",
        ms(c) - ms(a)
    );
    println!("{} round trips in {total:.2?}", 3 * N);

    drop(daemon);
}

//! Backup-code guesses in bulk: the Argon2id work is bounded (memory, one
//! check per user at a time, a few at once), and TOTP logins never wait
//! behind it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use otpd_proto::v1 as pb;
use otpd_tests::*;
use pb::{Decision, Reason};

/// The tests of this file one at a time: each measures what its daemon does
/// under a storm of slow hashes on a 2-core machine, and a storm of
/// another test at the same time would take the cores its KDF needs (a
/// check that finds no permit within its deadline is refused unchecked).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn decision(r: &pb::VerifyResponse) -> Decision {
    Decision::try_from(r.decision).unwrap()
}

/// A `/proc/<pid>/status` field in KiB (VmRSS, VmHWM).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const MIB: u64 = 1024;

/// The built daemon at production cost (Argon2id 19 MiB, t=2): 1,000
/// concurrent wrong backup codes for 40 users, over 25 connections.
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_concurrent_backup_code_guesses_stay_within_256_mib() {
    let _serial = SERIAL.lock().await;
    const USERS: usize = 40;
    const ATTEMPTS: usize = 1000;
    const CONNECTIONS: usize = 25;
    let dir = shared_tempdir();
    let d = Process::start(dir.path());
    let pid = d.child.id();
    let users: Vec<String> = (0..USERS).map(|i| format!("storm{i:02}")).collect();

    // Enroll through the admin RPCs, a few at a time.
    let mut enrolled = Vec::new();
    for batch in users.chunks(8) {
        let mut tasks = Vec::new();
        for user in batch {
            let socket = d.socket.clone();
            let user = user.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = connect(&socket).await;
                enroll(&mut c, &user, unix_now()).await
            }));
        }
        for t in tasks {
            enrolled.push(t.await.unwrap());
        }
    }
    assert!(enrolled.iter().all(|(_, codes)| codes.len() == 10));

    // Measure the storm, not the enrollments: reset the peak (as root).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = proc_kib(pid, "VmHWM");

    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(connect(&d.socket).await);
    }
    let mut tasks = Vec::new();
    for i in 0..ATTEMPTS {
        let mut c = clients[i % CONNECTIONS].clone();
        let user = users[i % USERS].clone();
        // 8 digits, never one of the user's codes (those were printed).
        let code = format!("{:08}", 10_000_000 + i);
        tasks.push(tokio::spawn(async move {
            c.verify(verify_req(&user, &code)).await
        }));
    }
    let mut by_decision = std::collections::BTreeMap::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                *by_decision
                    .entry(format!("{:?}", decision(r.get_ref())))
                    .or_insert(0) += 1
            }
            Err(status) => {
                *by_decision
                    .entry(format!("{:?}", status.code()))
                    .or_insert(0) += 1
            }
        }
    }
    let peak = proc_kib(pid, "VmHWM");
    eprintln!(
        "replies {by_decision:?}; peak RSS {} MiB (before the storm {} MiB)",
        peak / MIB,
        before / MIB
    );
    assert!(
        by_decision
            .keys()
            .all(|k| k == "Rejected" || k == "Throttled"),
        "every attempt answered with a verdict: {by_decision:?}"
    );
    // The documented ceiling: what otpd held before, plus one Argon2id
    // working memory (19 MiB) per hash that may run at once (one per core,
    // at most 4: 76 MiB), plus 32 MiB for the requests, connections and
    // allocator slack of the storm.
    let kdf = otpd::engine::kdf_memory_ceiling(
        &otpd::kdf::KdfParams::default(),
        otpd::engine::default_kdf_parallelism(),
    ) / 1024;
    let ceiling = before + kdf + 32 * MIB;
    assert!(
        peak < ceiling && peak < 256 * MIB,
        "peak RSS {} MiB under {ATTEMPTS} concurrent backup-code guesses, over the \
         ceiling {} MiB (before {} MiB + KDF {} MiB + 32 MiB)",
        peak / MIB,
        ceiling / MIB,
        before / MIB,
        kdf / MIB
    );
    // Nothing was accepted, and the throttle bounded the checked guesses.
    // (A user may have had none checked: an attempt that found no hashing
    // slot within its deadline is refused unchecked, by design.)
    let mut c = connect(&d.socket).await;
    let mut checked = 0;
    for user in &users {
        let s = status(&mut c, user).await;
        assert_eq!(s.consecutive_failures, 0);
        assert!(s.strangers_consecutive_failures <= 5, "{s:?}");
        checked += s.strangers_consecutive_failures;
    }
    assert!(
        checked >= USERS as u32 / 2,
        "only {checked} guesses were checked"
    );

    // And the memory comes back down (polled, within a minute).
    drop(clients);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rss = proc_kib(pid, "VmRSS");
        if rss < 64 * MIB {
            eprintln!("idle RSS {} MiB", rss / MIB);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "RSS still {} MiB a minute after the storm",
            rss / MIB
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (polling, with a deadline) until the daemon has `n` backup-code
/// attempts waiting for or doing their hash.
/// Takes every permit of the daemon's KDF gate (backup-code checks queue).
async fn hold_every_kdf_permit(d: &InProcess) -> tokio::sync::OwnedSemaphorePermit {
    let all = d.engine.kdf_parallelism() as u32;
    d.engine
        .kdf_permits()
        .clone()
        .acquire_many_owned(all)
        .await
        .unwrap()
}

async fn until_in_flight(d: &InProcess, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while d.engine.backup_codes_in_flight() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "attempts never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn totp_logins_complete_while_every_kdf_permit_is_held() {
    let _serial = SERIAL.lock().await;
    let d = InProcess::start();
    let mut c = d.client().await;
    let mut users = Vec::new();
    for i in 0..8 {
        let user = format!("held{i}");
        let (app, backup) = enroll(&mut c, &user, T0).await;
        users.push((user, app, backup));
    }
    d.clock.advance(30);
    let held = hold_every_kdf_permit(&d).await;

    // Backup codes of users 1..8 queue up for a permit.
    let mut waiting = Vec::new();
    for (user, _, backup) in &users[1..] {
        let mut c = connect(d.socket()).await;
        let (user, code) = (user.clone(), backup[0].clone());
        waiting.push(tokio::spawn(
            async move { verify(&mut c, &user, &code).await },
        ));
    }
    until_in_flight(&d, users.len() - 1).await;

    // A TOTP login of another user, and of one whose backup code waits.
    for (user, app, _) in [&users[0], &users[1]] {
        let r = verify(&mut c, user, &app.code_at(T0 + 30)).await;
        assert_eq!(decision(&r), Decision::Accepted, "{user}");
    }
    // A second backup code of a user already in flight is not queued.
    let r = verify(&mut c, &users[2].0, &users[2].2[1]).await;
    assert_eq!(
        (decision(&r), r.retry_after_seconds),
        (Decision::Throttled, 1)
    );
    assert!(waiting.iter().all(|t| !t.is_finished()));

    drop(held);
    for t in waiting {
        assert_eq!(decision(&t.await.unwrap()), Decision::Accepted);
    }
    let s = status(&mut c, &users[2].0).await;
    assert_eq!((s.consecutive_failures, s.backup_codes_left), (0, 9));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_permit_within_the_callers_deadline_refuses_unchecked() {
    let _serial = SERIAL.lock().await;
    let d = InProcess::start();
    let mut c = d.client().await;
    let (_, backup) = enroll(&mut c, "late", T0).await;
    let held = hold_every_kdf_permit(&d).await;
    let mut req = tonic::Request::new(verify_req("late", &backup[0]));
    req.set_timeout(Duration::from_millis(800));
    let r = c.verify(req).await.unwrap().into_inner();
    assert_eq!(
        (
            decision(&r),
            Reason::try_from(r.reason).unwrap(),
            r.retry_after_seconds
        ),
        (Decision::Throttled, Reason::Throttled, 1)
    );
    drop(held);
    let s = status(&mut c, "late").await;
    assert_eq!(
        (s.consecutive_failures, s.backup_codes_left),
        (0, 10),
        "not checked, not counted"
    );
    let r = verify(&mut c, "late", &backup[0]).await;
    assert_eq!(decision(&r), Decision::Accepted);
}

/// 200 parallel guessers of one user's backup codes: the throttle still
/// bounds the checked guesses (5 per minute), and the rest are refused
/// unchecked.
#[tokio::test(flavor = "multi_thread")]
async fn parallel_backup_code_guessers_get_five_checked_guesses_per_minute() {
    let _serial = SERIAL.lock().await;
    let d = InProcess::start();
    let mut c = d.client().await;
    let (_, backup) = enroll(&mut c, "many", T0).await;
    let mut total = 0;
    for round in 0..3u64 {
        let mut tasks = Vec::new();
        for i in 0..200 {
            let mut c = connect(d.socket()).await;
            let code = format!("{:08}", 20_000_000 + round * 1000 + i);
            assert!(!backup.contains(&code));
            tasks.push(tokio::spawn(
                async move { verify(&mut c, "many", &code).await },
            ));
        }
        let mut checked = 0;
        for t in tasks {
            let r = t.await.unwrap();
            match decision(&r) {
                Decision::Rejected => checked += 1,
                Decision::Throttled | Decision::Locked => {}
                other => panic!("{other:?}"),
            }
        }
        total += checked;
        assert!(checked <= 5, "round {round}: {checked} checked guesses");
        if round == 0 {
            assert!(checked >= 1, "nothing checked");
        }
        // (From 192.0.2.7, a host that never logged in as the user.)
        assert_eq!(
            status(&mut c, "many").await.strangers_consecutive_failures,
            total
        );
        d.clock.advance(60);
    }
}

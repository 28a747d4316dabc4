//! The real daemon library on a temporary socket and store, driven over
//! gRPC, with a clock the test sets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use otpd_proto::v1 as pb;
use otpd_tests::*;
use pb::{Decision, Method, Reason, State};
use tonic::Code;

fn decision(r: &pb::VerifyResponse) -> Decision {
    Decision::try_from(r.decision).unwrap()
}

fn reason(r: &pb::VerifyResponse) -> Reason {
    Reason::try_from(r.reason).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn enroll_confirm_verify_and_replay_is_refused() {
    let d = InProcess::start();
    let mut c = d.client().await;

    // Pending: nothing changes for logins yet.
    let started = c
        .enroll_start(pb::EnrollStartRequest {
            user: "alice".as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        started
            .otpauth_uri
            .starts_with("otpauth://totp/otpd-test:alice?secret=")
    );
    assert_eq!(started.secret_base32.len(), 32, "160-bit secret");
    assert_eq!(started.issuer, "otpd-test");
    let app = App::from_uri(&started.otpauth_uri);
    assert_eq!(app.secret_base32(), started.secret_base32);
    assert_eq!(
        State::try_from(status(&mut c, "alice").await.state),
        Ok(State::Pending)
    );
    let r = verify(&mut c, "alice", &app.code_at(T0)).await;
    assert_eq!(decision(&r), Decision::NotEnrolled);

    // A wrong confirmation code changes nothing.
    let err = c
        .enroll_confirm(pb::EnrollConfirmRequest {
            user: "alice".as_bytes().to_vec().into(),
            code: app.wrong_code_at(T0).into_bytes().into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let codes = c
        .enroll_confirm(pb::EnrollConfirmRequest {
            user: "alice".as_bytes().to_vec().into(),
            code: app.code_at(T0).into_bytes().into(),
        })
        .await
        .unwrap()
        .into_inner()
        .backup_codes;
    assert_eq!(codes.len(), 10);
    let s = status(&mut c, "alice").await;
    assert_eq!(State::try_from(s.state), Ok(State::Active));
    assert_eq!((s.digits, s.period, s.backup_codes_left), (6, 30, 10));
    assert_eq!(s.enrolled_at, T0 as i64);

    // The confirmation code itself is used up.
    let r = verify(&mut c, "alice", &app.code_at(T0)).await;
    assert_eq!(
        (decision(&r), reason(&r)),
        (Decision::Rejected, Reason::Replayed)
    );

    // Next step: accepted once, then a replay.
    d.clock.advance(30);
    let code = app.code_at(T0 + 30);
    let r = verify(&mut c, "alice", &code).await;
    assert_eq!(decision(&r), Decision::Accepted);
    assert_eq!(Method::try_from(r.method), Ok(Method::Totp));
    let r = verify(&mut c, "alice", &code).await;
    assert_eq!(
        (decision(&r), reason(&r)),
        (Decision::Rejected, Reason::Replayed)
    );

    let s = status(&mut c, "alice").await;
    let last = s.last_success.unwrap();
    assert_eq!(
        (last.time, last.service.as_str(), last.remote_host.as_str()),
        ((T0 + 30) as i64, "test", "192.0.2.7")
    );
    assert_eq!(s.consecutive_failures, 1, "the replay counted as a failure");
}

#[tokio::test(flavor = "multi_thread")]
async fn window_tolerates_one_step_of_skew_and_reports_more() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let (app, _) = enroll(&mut c, "alice", T0).await;
    d.clock.set(T0 + 300);
    let r = verify(&mut c, "alice", &app.code_at(T0 + 300 - 30)).await;
    assert_eq!(decision(&r), Decision::Accepted);
    assert_eq!(status(&mut c, "alice").await.clock_skew_seconds, -30);
    // A device 3 minutes ahead: refused, with the cause.
    let r = verify(&mut c, "alice", &app.code_at(T0 + 300 + 180)).await;
    assert_eq!(
        (decision(&r), reason(&r)),
        (Decision::Rejected, Reason::ClockSkew)
    );
    assert_eq!(r.clock_skew_seconds, 180);
    // The hint told when that code would be valid: it must be spent, or a
    // guesser could just wait and send it again.
    d.clock.set(T0 + 300 + 180);
    let r = verify(&mut c, "alice", &app.code_at(T0 + 300 + 180)).await;
    assert_eq!(
        (decision(&r), reason(&r)),
        (Decision::Rejected, Reason::Replayed)
    );
    // The next step is fine.
    d.clock.advance(30);
    let r = verify(&mut c, "alice", &app.code_at(T0 + 300 + 210)).await;
    assert_eq!(decision(&r), Decision::Accepted);
    // A clock that runs behind: the matched step is in the past for good,
    // nothing to spend, and the current code works.
    d.clock.advance(30);
    let r = verify(&mut c, "alice", &app.code_at(T0 + 300 + 240 - 150)).await;
    assert_eq!(
        (reason(&r), r.clock_skew_seconds),
        (Reason::ClockSkew, -150)
    );
    let r = verify(&mut c, "alice", &app.code_at(T0 + 300 + 240)).await;
    assert_eq!(decision(&r), Decision::Accepted);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clock_hint_spends_only_the_revealed_step() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let (app, _) = enroll(&mut c, "abby", T0).await;
    d.clock.set(T0 + 60);
    // A phone 5 minutes ahead: the hint, and that one step is spent.
    let ahead = T0 + 60 + 300;
    let r = verify(&mut c, "abby", &app.code_at(ahead)).await;
    assert_eq!(
        (decision(&r), reason(&r), r.clock_skew_seconds),
        (Decision::Rejected, Reason::ClockSkew, 300)
    );
    // The user fixes the clock: the correct code works at once, and every
    // step until the revealed one does too.
    let r = verify(&mut c, "abby", &app.code_at(T0 + 60)).await;
    assert_eq!((decision(&r), reason(&r)), (Decision::Accepted, Reason::Ok));
    for t in (T0 + 90..ahead).step_by(30) {
        d.clock.set(t);
        let r = verify(&mut c, "abby", &app.code_at(t)).await;
        assert_eq!(decision(&r), Decision::Accepted, "at {}", t - T0);
    }
    // The revealed code is refused when its time comes, before and after
    // the codes around it are used.
    d.clock.set(ahead);
    let r = verify(&mut c, "abby", &app.code_at(ahead)).await;
    assert_eq!(
        (decision(&r), reason(&r)),
        (Decision::Rejected, Reason::Replayed)
    );
    let r = verify(&mut c, "abby", &app.code_at(ahead + 30)).await;
    assert_eq!(decision(&r), Decision::Accepted);
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_codes_work_once_in_any_order_and_regeneration_invalidates() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let (app, codes) = enroll(&mut c, "bob", T0).await;
    for (i, code) in codes.iter().rev().take(8).enumerate() {
        let r = verify(&mut c, "bob", code).await;
        assert_eq!(decision(&r), Decision::Accepted, "code #{i}");
        assert_eq!(Method::try_from(r.method), Ok(Method::BackupCode));
        assert_eq!(r.backup_codes_left, 9 - i as u32);
        assert_eq!(r.backup_codes_low, 9 - i <= 3);
        let again = verify(&mut c, "bob", code).await;
        assert_eq!(
            decision(&again),
            Decision::Rejected,
            "backup code worked twice"
        );
        // A success in between keeps the failure counters from locking.
        d.clock.advance(30);
        let ok = verify(&mut c, "bob", &app.code_at(d_now(&d))).await;
        assert_eq!(decision(&ok), Decision::Accepted);
    }
    assert_eq!(status(&mut c, "bob").await.backup_codes_left, 2);

    let fresh = c
        .regenerate_backup_codes(pb::RegenerateBackupCodesRequest {
            user: "bob".as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .backup_codes;
    assert_eq!(fresh.len(), 10);
    assert_eq!(status(&mut c, "bob").await.backup_codes_left, 10);
    // The two unused old codes are dead now.
    for old in &codes[..2] {
        if fresh.contains(old) {
            continue; // 1 in 10^7 chance of a repeat; not a failure
        }
        let r = verify(&mut c, "bob", old).await;
        assert_eq!(decision(&r), Decision::Rejected);
    }
    let r = verify(&mut c, "bob", &fresh[5]).await;
    assert_eq!((decision(&r), r.backup_codes_left), (Decision::Accepted, 9));
}

fn d_now(d: &InProcess) -> u64 {
    use otpd::Clock;
    d.clock.now()
}

/// A login from the host `verify_req` names, so that the failures that
/// follow come from a known origin (the user's own lockout, not the
/// strangers'). At T0 the step after the enrollment's is within the window.
async fn log_in_once(
    c: &mut pb::otpd_client::OtpdClient<tonic::transport::Channel>,
    user: &str,
    app: &App,
) {
    let r = verify(c, user, &app.code_at(T0 + 30)).await;
    assert_eq!(decision(&r), Decision::Accepted);
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_failures_lock_correct_code_refused_until_unlock() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let (app, codes) = enroll(&mut c, "carol", T0).await;
    log_in_once(&mut c, "carol", &app).await;
    for i in 1..=8u32 {
        // 13 s apart: the throttle (5 per 60 s) never triggers.
        d.clock.advance(13);
        let r = verify(&mut c, "carol", &app.wrong_code_at(d_now(&d))).await;
        assert_eq!(decision(&r), Decision::Rejected, "failure {i}");
        assert_eq!(status(&mut c, "carol").await.consecutive_failures, i);
    }
    let now = d_now(&d);
    let s = status(&mut c, "carol").await;
    assert_eq!(State::try_from(s.state), Ok(State::Locked));
    assert_eq!(s.locked_until, (now + 900) as i64);

    // Correct TOTP and backup codes are refused while locked, unchecked.
    d.clock.advance(30);
    for code in [app.code_at(d_now(&d)), codes[0].clone()] {
        let r = verify(&mut c, "carol", &code).await;
        assert_eq!(decision(&r), Decision::Locked);
        assert_eq!(r.retry_after_seconds, 870);
    }
    assert_eq!(
        status(&mut c, "carol").await.backup_codes_left,
        10,
        "not consumed"
    );

    c.unlock(pb::UnlockRequest {
        user: "carol".as_bytes().to_vec().into(),
    })
    .await
    .unwrap();
    let s = status(&mut c, "carol").await;
    assert_eq!(
        (State::try_from(s.state), s.consecutive_failures),
        (Ok(State::Active), 0)
    );
    let r = verify(&mut c, "carol", &app.code_at(d_now(&d))).await;
    assert_eq!(decision(&r), Decision::Accepted);
}

fn from(user: &str, code: &str, host: &str) -> pb::VerifyRequest {
    pb::VerifyRequest {
        remote_host: host.into(),
        ..verify_req(user, code)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn strangers_lock_themselves_out_not_the_user() {
    const HOME: &str = "198.51.100.1";
    let d = InProcess::start();
    let mut c = d.client().await;
    let (app, _) = enroll(&mut c, "ivy", T0).await;
    let asker = c.clone();
    let ask = async |code: String, host: &str| {
        asker
            .clone()
            .verify(from("ivy", &code, host))
            .await
            .unwrap()
            .into_inner()
    };
    // Ivy logs in from home once: home becomes a known origin.
    d.clock.advance(30);
    assert_eq!(
        decision(&ask(app.code_at(T0 + 30), HOME).await),
        Decision::Accepted
    );

    // Two attacker hosts share one budget: 8 failures lock them both.
    for i in 0..8u64 {
        d.clock.advance(13);
        let host = if i % 2 == 0 {
            "203.0.113.1"
        } else {
            "203.0.113.2"
        };
        let r = ask(app.wrong_code_at(d_now(&d)), host).await;
        assert_eq!(decision(&r), Decision::Rejected, "failure {i}");
    }
    let r = ask(app.wrong_code_at(d_now(&d)), "203.0.113.3").await;
    assert_eq!(
        (decision(&r), r.retry_after_seconds),
        (Decision::Locked, 900)
    );
    let s = status(&mut c, "ivy").await;
    assert_eq!(State::try_from(s.state), Ok(State::Active));
    assert_eq!((s.consecutive_failures, s.locked_until), (0, 0));
    assert_eq!(s.strangers_consecutive_failures, 8);
    assert_eq!(s.strangers_locked_until, (d_now(&d) + 900) as i64);

    // Ivy still logs in, from home and from the console.
    d.clock.advance(30);
    let r = ask(app.code_at(d_now(&d)), HOME).await;
    assert_eq!(decision(&r), Decision::Accepted);
    d.clock.advance(30);
    let r = ask(app.code_at(d_now(&d)), "").await;
    assert_eq!(decision(&r), Decision::Accepted);
    // Her success does not lift the strangers' lockout...
    let r = ask(app.code_at(d_now(&d) + 30), "203.0.113.1").await;
    assert_eq!(decision(&r), Decision::Locked);
    // ...an unlock does.
    c.unlock(pb::UnlockRequest {
        user: "ivy".as_bytes().to_vec().into(),
    })
    .await
    .unwrap();
    let s = status(&mut c, "ivy").await;
    assert_eq!(
        (s.strangers_consecutive_failures, s.strangers_locked_until),
        (0, 0)
    );
    // A correct code from a new host makes it known.
    let r = ask(app.code_at(d_now(&d) + 30), "203.0.113.9").await;
    assert_eq!(decision(&r), Decision::Accepted);
    d.clock.advance(30);
    let r = ask(app.wrong_code_at(d_now(&d)), "203.0.113.9").await;
    assert_eq!(decision(&r), Decision::Rejected);
    let s = status(&mut c, "ivy").await;
    assert_eq!(
        (s.consecutive_failures, s.strangers_consecutive_failures),
        (1, 0)
    );
}

/// A Verify from this machine (empty remote host), with the local
/// requester the PAM module reports: (real uid, is it the user's uid).
fn local(user: &str, code: &str, requester: Option<(u32, bool)>) -> pb::VerifyRequest {
    pb::VerifyRequest {
        local_requester: requester.map(|(uid, is_target_user)| pb::LocalRequester {
            uid,
            is_target_user,
        }),
        ..from(user, code, "")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_local_user_driving_su_locks_only_the_strangers() {
    const BOB: Option<(u32, bool)> = Some((1001, false));
    let d = InProcess::start();
    let mut c = d.client().await;
    let (app, _) = enroll(&mut c, "jude", T0).await;
    let asker = c.clone();
    let ask = async |code: String, requester: Option<(u32, bool)>| {
        asker
            .clone()
            .verify(local("jude", &code, requester))
            .await
            .unwrap()
            .into_inner()
    };

    // Bob runs `su jude` (setuid root, so the PAM socket, empty remote
    // host) and types 8 wrong codes: they count among the strangers'.
    for i in 0..8 {
        d.clock.advance(13);
        let r = ask(app.wrong_code_at(d_now(&d)), BOB).await;
        assert_eq!(decision(&r), Decision::Rejected, "failure {i}");
    }
    let r = ask(app.wrong_code_at(d_now(&d)), BOB).await;
    assert_eq!(
        (decision(&r), r.retry_after_seconds),
        (Decision::Locked, 900)
    );
    let s = status(&mut c, "jude").await;
    assert_eq!(State::try_from(s.state), Ok(State::Active));
    assert_eq!((s.consecutive_failures, s.locked_until), (0, 0));
    assert_eq!(s.strangers_consecutive_failures, 8);
    assert_eq!(s.strangers_locked_until, (d_now(&d) + 900) as i64);

    // Jude still logs in on the console (login runs as root), through
    // sudo (her own uid), and through an old module that does not say.
    for requester in [Some((0, false)), Some((1000, true)), None] {
        d.clock.advance(30);
        let r = ask(app.code_at(d_now(&d)), requester).await;
        assert_eq!(decision(&r), Decision::Accepted, "{requester:?}");
    }
    // Bob stays locked out, even with the right code.
    let r = ask(app.code_at(d_now(&d) + 30), BOB).await;
    assert_eq!(decision(&r), Decision::Locked);
    let s = status(&mut c, "jude").await;
    assert_eq!(
        (s.consecutive_failures, s.strangers_consecutive_failures),
        (0, 8)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_local_requester_the_console_counts_as_before() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let (app, _) = enroll(&mut c, "kim", T0).await;
    // Old clients (field absent) and root: the user's own counters.
    for (i, requester) in [None, Some((0, false))]
        .into_iter()
        .cycle()
        .take(8)
        .enumerate()
    {
        d.clock.advance(13);
        let r = c
            .verify(local("kim", &app.wrong_code_at(d_now(&d)), requester))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(decision(&r), Decision::Rejected, "failure {i}");
    }
    let s = status(&mut c, "kim").await;
    assert_eq!(State::try_from(s.state), Ok(State::Locked));
    assert_eq!(
        (s.consecutive_failures, s.strangers_consecutive_failures),
        (8, 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lockout_expires_and_the_next_one_doubles() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let (app, _) = enroll(&mut c, "dave", T0).await;
    log_in_once(&mut c, "dave", &app).await;
    let fail = |n| {
        let mut c = c.clone();
        let clock = d.clock.clone();
        let app = &app;
        async move {
            for _ in 0..n {
                clock.advance(13);
                let t = {
                    use otpd::Clock;
                    clock.now()
                };
                verify(&mut c, "dave", &app.wrong_code_at(t)).await;
            }
        }
    };
    fail(8).await;
    let first = status(&mut c.clone(), "dave").await.locked_until;
    d.clock.set(first as u64);
    fail(8).await;
    let now = d_now(&d);
    let second = status(&mut c, "dave").await.locked_until;
    assert_eq!(second, (now + 1800) as i64, "second lockout is 30 min");
}

#[tokio::test(flavor = "multi_thread")]
async fn throttle_refuses_unchecked_and_says_when_to_retry() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let (app, _) = enroll(&mut c, "erin", T0).await;
    log_in_once(&mut c, "erin", &app).await;
    for _ in 0..5 {
        d.clock.advance(1);
        let r = verify(&mut c, "erin", &app.wrong_code_at(d_now(&d))).await;
        assert_eq!(decision(&r), Decision::Rejected);
    }
    // T0+1..T0+5 failed; the oldest leaves the window at T0+61.
    d.clock.set(T0 + 30);
    let r = verify(&mut c, "erin", &app.code_at(T0 + 30)).await;
    assert_eq!(decision(&r), Decision::Throttled);
    assert_eq!(r.retry_after_seconds, 31);
    assert_eq!(
        status(&mut c, "erin").await.consecutive_failures,
        5,
        "not counted"
    );
    d.clock.set(T0 + 61);
    let r = verify(&mut c, "erin", &app.code_at(T0 + 61)).await;
    assert_eq!(decision(&r), Decision::Accepted);
}

#[tokio::test(flavor = "multi_thread")]
async fn state_survives_a_restart() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let (app, codes) = enroll(&mut c, "frank", T0).await;
    d.clock.advance(30);
    let used = app.code_at(T0 + 30);
    assert_eq!(
        decision(&verify(&mut c, "frank", &used).await),
        Decision::Accepted
    );
    assert_eq!(
        decision(&verify(&mut c, "frank", &codes[3]).await),
        Decision::Accepted
    );
    verify(&mut c, "frank", &app.wrong_code_at(T0 + 30)).await;
    drop(c);

    let (dir, config, clock) = d.stop();
    let d = InProcess::start_in(dir, config, clock);
    let mut c = d.client().await;
    let s = status(&mut c, "frank").await;
    assert_eq!((s.backup_codes_left, s.consecutive_failures), (9, 1));
    assert_eq!(
        decision(&verify(&mut c, "frank", &used).await),
        Decision::Rejected
    );
    assert_eq!(
        decision(&verify(&mut c, "frank", &codes[3]).await),
        Decision::Rejected
    );
    assert_eq!(
        decision(&verify(&mut c, "frank", &codes[4]).await),
        Decision::Accepted
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_verifies_of_one_code_succeed_exactly_once() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let (app, backup) = enroll(&mut c, "gina", T0).await;
    d.clock.advance(30);
    for code in [app.code_at(T0 + 30), backup[0].clone()] {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            // Separate connections, so the requests really race.
            let mut c = connect(d.socket()).await;
            let code = code.clone();
            tasks.push(tokio::spawn(
                async move { verify(&mut c, "gina", &code).await },
            ));
        }
        let mut accepted = 0;
        for t in tasks {
            if decision(&t.await.unwrap()) == Decision::Accepted {
                accepted += 1;
            }
        }
        assert_eq!(
            accepted,
            1,
            "code {} accepted {accepted} times",
            if code.len() == 6 { "totp" } else { "backup" }
        );
        c.unlock(pb::UnlockRequest {
            user: "gina".as_bytes().to_vec().into(),
        })
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_or_backup_code_in_the_store_files() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let (app, codes) = enroll(&mut c, "hank", T0).await;
    let (_app2, _) = enroll(&mut c, "ivy", T0).await;
    drop(c);
    let (dir, config, _) = d.stop();
    let secret = app.secret();
    let b32 = app.secret_base32();
    let mut files = 0;
    let mut stack = vec![config.state_dir.join("store")];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
            assert!(!has(&secret), "raw secret in {}", path.display());
            assert!(!has(b32.as_bytes()), "base32 secret in {}", path.display());
            for code in &codes {
                assert!(!has(code.as_bytes()), "backup code in {}", path.display());
            }
            assert!(!has(b"\"secret\""), "unsealed record in {}", path.display());
        }
    }
    assert!(files > 0);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_invalid_argument_and_changes_nothing() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let (app, _) = enroll(&mut c, "jane", T0).await;
    let long_user = "u".repeat(257);
    let bad_users: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        long_user.into_bytes(),
        b"\xff\xfejane".to_vec(),
        b"jane\0".to_vec(),
        b"ja:ne".to_vec(),
        b"ja\nne".to_vec(),
    ];
    for user in bad_users {
        let err = c
            .verify(pb::VerifyRequest {
                user: user.clone().into(),
                code: b"123456".to_vec().into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "user {user:?}: {err}");
        assert!(
            err.message().contains("invalid user name"),
            "{}",
            err.message()
        );
    }
    let huge = "1".repeat(64 * 1024);
    for code in [
        "",
        "12345",
        "1234567",
        "123456789",
        "12a456",
        "123 456",
        "123\u{0}56",
        " 123456",
        "١٢٣٤٥٦",
        &huge,
    ] {
        let err = c.verify(verify_req("jane", code)).await.unwrap_err();
        assert!(
            matches!(
                err.code(),
                Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted
            ),
            "code {:?}: {err}",
            &code[..code.len().min(12)]
        );
        assert!(!err.message().contains(code) || code.is_empty());
    }
    // Nothing counted, nothing locked: the right code still works.
    let s = status(&mut c, "jane").await;
    assert_eq!(s.consecutive_failures, 0);
    d.clock.advance(30);
    assert_eq!(
        decision(&verify(&mut c, "jane", &app.code_at(T0 + 30)).await),
        Decision::Accepted
    );

    // Enrollment parameters are checked too.
    for (digits, period) in [(7, 0), (0, 5), (0, 100_000)] {
        let err = c
            .enroll_start(pb::EnrollStartRequest {
                user: "kim".as_bytes().to_vec().into(),
                digits,
                period,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    let err = c
        .enroll_start(pb::EnrollStartRequest {
            user: "kim".as_bytes().to_vec().into(),
            issuer: "a:b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        State::try_from(status(&mut c, "kim").await.state),
        Ok(State::NotEnrolled)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_calls_on_unknown_users_say_not_found() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let u = || "nobody-here".as_bytes().to_vec().into();
    assert_eq!(
        c.unlock(pb::UnlockRequest { user: u() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        c.reset(pb::ResetRequest {
            user: u(),
            ..Default::default()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
    assert_eq!(
        c.regenerate_backup_codes(pb::RegenerateBackupCodesRequest {
            user: u(),
            ..Default::default()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
    assert_eq!(
        c.enroll_confirm(pb::EnrollConfirmRequest {
            user: u(),
            code: b"123456".to_vec().into()
        })
        .await
        .unwrap_err()
        .code(),
        Code::FailedPrecondition
    );
    let r = verify(&mut c, "nobody-here", "123456").await;
    assert_eq!(
        decision(&r),
        Decision::NotEnrolled,
        "admins see the real reason"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn re_enrollment_replaces_the_secret_only_on_confirmation() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let (old, _) = enroll(&mut c, "liam", T0).await;
    let started = c
        .enroll_start(pb::EnrollStartRequest {
            user: "liam".as_bytes().to_vec().into(),
            digits: 8,
            algorithm: pb::Algorithm::Sha256 as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let new = App::from_uri(&started.otpauth_uri);
    assert!(
        started.otpauth_uri.contains("digits=8")
            && started.otpauth_uri.contains("algorithm=SHA256")
    );
    let s = status(&mut c, "liam").await;
    assert!(s.pending);
    assert_eq!(State::try_from(s.state), Ok(State::Active));
    d.clock.advance(30);
    assert_eq!(
        decision(&verify(&mut c, "liam", &old.code_at(T0 + 30)).await),
        Decision::Accepted
    );
    d.clock.advance(30);
    c.enroll_confirm(pb::EnrollConfirmRequest {
        user: "liam".as_bytes().to_vec().into(),
        code: new.code_at(T0 + 60).into_bytes().into(),
    })
    .await
    .unwrap();
    d.clock.advance(30);
    assert_eq!(
        decision(&verify(&mut c, "liam", &old.code_at(T0 + 90)).await),
        Decision::Rejected
    );
    let r = verify(&mut c, "liam", &new.code_at(T0 + 90)).await;
    assert_eq!(decision(&r), Decision::Accepted);
    let s = status(&mut c, "liam").await;
    assert_eq!((s.digits, s.pending), (8, false));

    // Reset removes everything.
    c.reset(pb::ResetRequest {
        user: "liam".as_bytes().to_vec().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        State::try_from(status(&mut c, "liam").await.state),
        Ok(State::NotEnrolled)
    );
    assert_eq!(
        decision(&verify(&mut c, "liam", &new.code_at(T0 + 120)).await),
        Decision::NotEnrolled
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupted_or_moved_record_fails_closed_for_that_user_only() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let (alice, _) = enroll(&mut c, "alice", T0).await;
    enroll(&mut c, "bob", T0).await;
    enroll(&mut c, "carl", T0).await;
    drop(c);
    let (dir, config, clock) = d.stop();
    {
        use otpd::record::UserName;
        use otpd::store::{SledStore, Store};
        let store = SledStore::open(&otpd::server::store_path(&config.state_dir)).unwrap();
        let name = |s: &str| UserName::parse(s.as_bytes()).unwrap();
        let mut bob = store.get(&name("bob")).unwrap().unwrap();
        let mid = bob.len() / 2;
        bob[mid] ^= 0x40;
        store.put(&name("bob"), &bob).unwrap();
        // Alice's valid record copied under carl's name must not open.
        let alices = store.get(&name("alice")).unwrap().unwrap();
        store.put(&name("carl"), &alices).unwrap();
    }
    let d = InProcess::start_in(dir, config, clock);
    let mut c = d.client().await;
    d.clock.advance(30);
    for user in ["bob", "carl"] {
        let err = c
            .verify(verify_req(user, &alice.code_at(T0 + 30)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DataLoss, "{user}");
        assert!(err.message().contains("corrupted"));
    }
    assert_eq!(
        decision(&verify(&mut c, "alice", &alice.code_at(T0 + 30)).await),
        Decision::Accepted
    );
    let list = c
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.unreadable, vec!["bob".to_string(), "carl".to_string()]);
    assert_eq!(
        list.users
            .iter()
            .map(|u| u.user.as_str())
            .collect::<Vec<_>>(),
        vec!["alice"]
    );
    // The way out: reset works on an unreadable record.
    c.reset(pb::ResetRequest {
        user: "bob".as_bytes().to_vec().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let list = c
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.unreadable, vec!["carl".to_string()]);
}

#[test]
fn store_in_use_by_another_daemon_is_refused_clearly() {
    let dir = shared_tempdir();
    let first = Process::start(dir.path());
    // Same state dir, another socket.
    let mut config = config_in(dir.path());
    config.socket = dir.path().join("second.sock");
    let err = otpd::Daemon::open(&config, Arc::new(otpd::SystemClock)).unwrap_err();
    assert!(matches!(err, otpd::Error::StoreLocked { .. }), "{err}");
    assert!(err.to_string().contains("another otpd"), "{err}");
    // The binary says so and exits 78.
    let out = std::process::Command::new(built("otpd"))
        .args(["--socket", dir.path().join("third.sock").to_str().unwrap()])
        .args(["--state-dir", first.state_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked by another process"));
    // And a second daemon on the same socket is refused too.
    let out = std::process::Command::new(built("otpd"))
        .args(["--socket", first.socket.to_str().unwrap()])
        .args([
            "--state-dir",
            dir.path().join("other-state").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listening"));
}

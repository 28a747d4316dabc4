//! A state directory written by otpd 0.1 (`tests/fixtures/store-v0.1`, see
//! its README.txt) must open with the current code and mean the same: the
//! daemon starts on a copy of it the way `otpd` starts (store, master key,
//! watermark check) and every fact of `expected.json` holds, checked over
//! the socket by behaviour (status fields, verify outcomes), not by record
//! layout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use otpd::ManualClock;
use otpd_proto::v1 as pb;
use otpd_tests::*;
use pb::otpd_client::OtpdClient;
use pb::{Algorithm, Decision, Method, Reason, State};
use serde_json::Value;
use tonic::transport::Channel;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/store-v0.1")
}

/// The files of the state directory, as `otpd` lays it out.
const STATE_FILES: [&str; 4] = ["master.key", "watermarks", "store/conf", "store/db"];

fn snapshot() -> Vec<Vec<u8>> {
    STATE_FILES
        .iter()
        .map(|f| fs::read(fixture().join(f)).unwrap())
        .collect()
}

/// Copies the fixture's state into `state` with the modes otpd requires
/// (git keeps neither modes nor the store's empty `blobs/` directory).
fn copy_state(state: &Path) {
    fs::create_dir_all(state.join("store")).unwrap();
    for f in STATE_FILES {
        fs::copy(fixture().join(f), state.join(f)).unwrap();
        fs::set_permissions(state.join(f), fs::Permissions::from_mode(0o600)).unwrap();
    }
    for d in [state.join("store"), state.to_owned()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// An authenticator app for a secret of expected.json (totp-rs, not otpd).
struct App(totp_rs::TOTP);

impl App {
    fn of(secret: &Value) -> Self {
        let algorithm = match s(&secret["algorithm"]) {
            "sha1" => totp_rs::Algorithm::SHA1,
            "sha256" => totp_rs::Algorithm::SHA256,
            "sha512" => totp_rs::Algorithm::SHA512,
            other => panic!("algorithm {other}"),
        };
        let key = totp_rs::Secret::Encoded(s(&secret["secret_base32"]).to_owned())
            .to_bytes()
            .unwrap();
        Self(totp_rs::TOTP::new_unchecked(
            algorithm,
            u(&secret["digits"]) as usize,
            1,
            u(&secret["period"]),
            key,
            None,
            String::new(),
        ))
    }

    fn code_at(&self, t: u64) -> String {
        self.0.generate(t)
    }
}

fn algorithm(name: &str) -> Algorithm {
    match name {
        "sha1" => Algorithm::Sha1,
        "sha256" => Algorithm::Sha256,
        "sha512" => Algorithm::Sha512,
        other => panic!("algorithm {other}"),
    }
}

async fn verify_from(
    c: &mut OtpdClient<Channel>,
    user: &str,
    code: &str,
    service: &str,
    remote_host: &str,
) -> pb::VerifyResponse {
    c.verify(pb::VerifyRequest {
        user: user.as_bytes().to_vec().into(),
        code: code.as_bytes().to_vec().into(),
        service: service.into(),
        remote_host: remote_host.into(),
        tty: String::new(),
        local_requester: None,
        allow_app_password: false,
        grace_only: false,
    })
    .await
    .unwrap()
    .into_inner()
}

/// At the console: the trusted bucket.
async fn verify_local(c: &mut OtpdClient<Channel>, user: &str, code: &str) -> pb::VerifyResponse {
    verify_from(c, user, code, "login", "").await
}

fn outcome(r: &pb::VerifyResponse) -> (Decision, Reason) {
    (
        Decision::try_from(r.decision).unwrap(),
        Reason::try_from(r.reason).unwrap(),
    )
}

const ACCEPTED: (Decision, Reason) = (Decision::Accepted, Reason::Ok);

async fn confirm(c: &mut OtpdClient<Channel>, user: &str, code: &str) -> Vec<String> {
    c.enroll_confirm(pb::EnrollConfirmRequest {
        user: user.as_bytes().to_vec().into(),
        code: code.as_bytes().to_vec().into(),
    })
    .await
    .unwrap()
    .into_inner()
    .backup_codes
}

/// State, parameters, backup codes, enrollment: what every user's status
/// shows, as expected.json says.
fn check_status(st: &pb::UserStatus, e: &Value, now: u64) {
    let user = st.user.as_str();
    let state = match s(&e["state"]) {
        "active" => State::Active,
        "locked" => State::Locked,
        "pending" => State::Pending,
        other => panic!("state {other}"),
    };
    assert_eq!(st.state(), state, "{user}: state");
    // The status shows the active secret's parameters, else the pending's.
    let shown = if e["active"].is_null() {
        &e["pending"]
    } else {
        &e["active"]
    };
    assert_eq!(
        st.algorithm(),
        algorithm(s(&shown["algorithm"])),
        "{user}: algorithm"
    );
    assert_eq!(u64::from(st.digits), u(&shown["digits"]), "{user}: digits");
    assert_eq!(u64::from(st.period), u(&shown["period"]), "{user}: period");
    let enrolled_at = if e["active"].is_null() {
        0
    } else {
        u(&e["active"]["since"])
    };
    assert_eq!(st.enrolled_at as u64, enrolled_at, "{user}: enrolled_at");
    assert_eq!(st.pending, !e["pending"].is_null(), "{user}: pending");
    let left = if e["backup_codes"].is_null() {
        0
    } else {
        u(&e["backup_codes"]["left"])
    };
    assert_eq!(
        u64::from(st.backup_codes_left),
        left,
        "{user}: backup codes"
    );
    for (bucket, failures, until) in [
        ("trusted", st.consecutive_failures, st.locked_until),
        (
            "strangers",
            st.strangers_consecutive_failures,
            st.strangers_locked_until,
        ),
    ] {
        let c = &e[bucket];
        assert_eq!(
            u64::from(failures),
            u(&c["consecutive_failures"]),
            "{user}: {bucket} failures"
        );
        let expected_until = u(&c["locked_until"]);
        let expected_until = if expected_until > now {
            expected_until
        } else {
            0
        };
        assert_eq!(until as u64, expected_until, "{user}: {bucket} lockout");
    }
    match (&st.last_success, &e["last_success"]) {
        (None, Value::Null) => {}
        (Some(got), want) if !want.is_null() => {
            assert_eq!(got.time as u64, u(&want["time"]), "{user}: last success");
            assert_eq!(got.service, s(&want["service"]));
            assert_eq!(got.remote_host, s(&want["remote_host"]));
            let method = match s(&want["method"]) {
                "totp" => Method::Totp,
                "backup_code" => Method::BackupCode,
                other => panic!("method {other}"),
            };
            assert_eq!(got.method(), method);
        }
        (got, want) => panic!("{user}: last success {got:?}, expected {want}"),
    }
    if let Some(skew) = e.get("clock_skew_seconds") {
        assert_eq!(
            st.clock_skew_seconds,
            skew.as_i64().unwrap(),
            "{user}: skew"
        );
    }
    assert_eq!(st.rolled_back_at, 0, "{user}: no rollback found at start");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v0_1_state_directory_opens_and_means_the_same() {
    let before = snapshot();
    let expected: Value =
        serde_json::from_slice(&fs::read(fixture().join("expected.json")).unwrap()).unwrap();
    let users = &expected["users"];
    let end = u(&expected["clock"]["end"]);

    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    copy_state(&config.state_dir);
    let clock = Arc::new(ManualClock::new(end + 5));
    let d = InProcess::start_in(dir, config, clock.clone());
    let mut c = d.client().await;

    // Every user opens, with the status the fixture recorded.
    let listed = c
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.unreadable.is_empty(), "{:?}", listed.unreadable);
    let names: Vec<&str> = listed.users.iter().map(|s| s.user.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol", "dave"]);
    for st in &listed.users {
        check_status(st, &users[st.user.as_str()], clock_now(&clock));
    }

    let alice = &users["alice"];
    let alice_app = App::of(&alice["active"]);
    let period = u(&alice["active"]["period"]);

    // Alice's last used step stays used.
    let used_step = u(&alice["last_used_step"]);
    let r = verify_local(&mut c, "alice", &alice_app.code_at(used_step * period)).await;
    assert_eq!(outcome(&r), (Decision::Rejected, Reason::Replayed));
    // 192.0.2.7 is a host she logged in from: its failures are trusted ones.
    let r = verify_from(&mut c, "alice", "000000", "sshd", "192.0.2.7").await;
    assert_eq!(outcome(&r).0, Decision::Rejected);
    let st = status(&mut c, "alice").await;
    let failures = u(&alice["trusted"]["consecutive_failures"]) + 2;
    assert_eq!(
        (
            u64::from(st.consecutive_failures),
            st.strangers_consecutive_failures
        ),
        (failures, 0)
    );

    // Bob is locked out for the console, until the recorded time.
    let bob = &users["bob"];
    let bob_app = App::of(&bob["active"]);
    let bob_until = u(&bob["trusted"]["locked_until"]);
    let now = clock_now(&clock);
    let r = verify_local(&mut c, "bob", &bob_app.code_at(now)).await;
    assert_eq!(outcome(&r), (Decision::Locked, Reason::Locked));
    assert_eq!(r.retry_after_seconds, bob_until - now);

    // Carol's pending secret confirms.
    let carol_app = App::of(&users["carol"]["pending"]);
    let codes = confirm(&mut c, "carol", &carol_app.code_at(now)).await;
    assert_eq!(codes.len(), 10);
    let st = status(&mut c, "carol").await;
    assert_eq!((st.state(), st.enrolled_at as u64), (State::Active, now));

    // Dave: secret A is in force, B awaits confirmation.
    let dave = &users["dave"];
    let (a, b) = (App::of(&dave["active"]), App::of(&dave["pending"]));
    if a.code_at(now) != b.code_at(now) {
        let r = verify_local(&mut c, "dave", &b.code_at(now)).await;
        assert_eq!(outcome(&r).0, Decision::Rejected, "B is not active yet");
    }
    let r = verify_local(&mut c, "dave", &a.code_at(now)).await;
    assert_eq!(outcome(&r), ACCEPTED, "A is active");
    confirm(&mut c, "dave", &b.code_at(now)).await;
    let st = status(&mut c, "dave").await;
    assert_eq!(st.state(), State::Active);
    assert!(!st.pending);
    assert_eq!(st.algorithm(), algorithm(s(&dave["pending"]["algorithm"])));
    assert_eq!(st.enrolled_at as u64, now);

    // Later: fresh codes work, B replaced A.
    clock.set(end + 60);
    let now = clock_now(&clock);
    let r = verify_from(
        &mut c,
        "alice",
        &alice_app.code_at(now),
        "sshd",
        "192.0.2.7",
    )
    .await;
    assert_eq!(outcome(&r), ACCEPTED, "a fresh code of alice");
    if a.code_at(now) != b.code_at(now) {
        let r = verify_local(&mut c, "dave", &a.code_at(now)).await;
        assert_eq!(outcome(&r).0, Decision::Rejected, "A was replaced");
    }
    let r = verify_local(&mut c, "dave", &b.code_at(now)).await;
    assert_eq!(outcome(&r), ACCEPTED, "B is active");

    // Alice's backup codes: an unused one works (once), the used one not.
    let unused = s(&alice["backup_codes"]["unused"][0]);
    let left = u(&alice["backup_codes"]["left"]);
    let r = verify_local(&mut c, "alice", unused).await;
    assert_eq!(outcome(&r), ACCEPTED, "an unused backup code");
    assert_eq!(r.method(), Method::BackupCode);
    assert_eq!(u64::from(r.backup_codes_left), left - 1);
    for spent in [s(&alice["backup_codes"]["used"][0]), unused] {
        let r = verify_local(&mut c, "alice", spent).await;
        assert_eq!(
            outcome(&r),
            (Decision::Rejected, Reason::WrongCode),
            "a used backup code"
        );
    }

    // After the lockout, bob's secret and backup codes work.
    clock.set(bob_until);
    let now = clock_now(&clock);
    assert_eq!(status(&mut c, "bob").await.state(), State::Active);
    let r = verify_local(&mut c, "bob", &bob_app.code_at(now)).await;
    assert_eq!(outcome(&r), ACCEPTED, "bob's code after the lockout");
    let r = verify_local(&mut c, "bob", s(&bob["backup_codes"]["unused"][0])).await;
    assert_eq!(outcome(&r), ACCEPTED, "bob's backup code");

    drop(c);
    drop(d);
    assert!(snapshot() == before, "the checked-in fixture was modified");
}

fn clock_now(clock: &ManualClock) -> u64 {
    otpd::Clock::now(clock)
}

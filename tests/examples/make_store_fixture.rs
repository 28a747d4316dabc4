//! Writes an otpd state directory (master key, sled store, replay-watermark
//! journal) with the code of this commit, and `expected.json` with every
//! fact about it that a later version must still see: the fixture of
//! `tests/tests/store_migration.rs`.
//!
//!     cargo run -p otpd-tests --example make_store_fixture -- <out dir>
//!
//! `<out dir>` must not exist or be empty. The daemon is opened the way
//! `otpd` opens it at start (`Daemon::open_with`: state directory checks,
//! `store/`, `master.key`, `watermarks`), its sockets in a temporary
//! directory elsewhere, and driven through its engine with a manual clock.
//! Only public APIs of the daemon crate are used, so this runs against an
//! older commit too (copy it there). Secrets, backup codes and sealing
//! nonces are random: every run gives different files and a matching
//! `expected.json`. The master key is a fixed TEST key.

use std::error::Error;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use otpd::backup_codes::KdfParams;
use otpd::config::Config;
use otpd::engine::{
    Decision, Engine, EnrollOptions, LoginContext, Reason, State, Verdict, Verification,
};
use otpd::record::{Method, UserName};
use otpd::secret::{Code, TotpSecret};
use otpd::totp::{Algorithm, TotpParams, code_at_step, step_of};
use otpd::{Daemon, ManualClock};
use serde_json::{Value, json};

type Res<T> = Result<T, Box<dyn Error>>;

/// First instant of the fixture: a 30 s and 60 s step boundary.
const T0: u64 = 1_800_000_000;
/// Alice's accepted TOTP code (step 3 of 30 s after T0).
const T1: u64 = T0 + 90;
/// The clock when the fixture is complete.
const END: u64 = T0 + 100;
/// The fixed TEST master key: bytes 0x00..=0x1f.
const KEY: [u8; 32] = {
    let mut k = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        k[i] = i as u8;
        i += 1;
    }
    k
};
const ISSUER: &str = "otpd-fixture";

fn main() -> Res<()> {
    let out: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or("usage: make_store_fixture <out dir>")?
        .into();
    if out.exists() && fs::read_dir(&out)?.next().is_some() {
        return Err(format!("{} exists and is not empty", out.display()).into());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&out)?;
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    // The fixed key first: otpd loads an existing master.key.
    let mut key = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out.join("master.key"))?;
    key.write_all(&KEY)?;
    key.sync_all()?;
    drop(key);

    let sockets = tempfile::tempdir()?;
    let config = Config {
        socket: sockets.path().join("otpd.sock"),
        pam_socket: Some(sockets.path().join("pam.sock")),
        state_dir: out.clone(),
        issuer: Some(ISSUER.into()),
        ..Config::default()
    };
    // The production settings, backup-code hash included: what real
    // stores hold.
    let engine_config = config.engine_config();
    let clock = Arc::new(ManualClock::new(T0));
    let daemon = Daemon::open_with(&config, engine_config.clone(), clock.clone())?;
    let engine = daemon.engine();
    let users = populate(&engine, &clock)?;
    drop(engine);
    drop(daemon);

    let expected = json!({
        "about": "Facts about the otpd state directory beside this file, written by \
                  tests/examples/make_store_fixture.rs. TEST secrets and a TEST master \
                  key: never use them for anything real.",
        "clock": { "t0": T0, "end": END },
        "master_key_hex": KEY.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "layout": {
            "master_key": "master.key",
            "store": "store",
            "watermarks": "watermarks",
            "sled_tree": "users.v1"
        },
        "engine": {
            "window_steps": engine_config.window,
            "issuer": ISSUER,
            "policy": {
                "max_failures": engine_config.policy.max_failures,
                "window_seconds": engine_config.policy.window,
                "lock_threshold": engine_config.policy.lock_threshold,
                "lock_duration_seconds": engine_config.policy.lock_duration,
                "lock_max_seconds": engine_config.policy.lock_max
            },
            "backup_code_kdf": kdf_json(engine_config.kdf)
        },
        "users": users
    });
    let mut text = serde_json::to_string_pretty(&expected)?;
    text.push('\n');
    fs::write(out.join("expected.json"), text)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn kdf_json(k: KdfParams) -> Value {
    json!({ "algorithm": "argon2id", "m_kib": k.m_kib, "t": k.t, "p": k.p })
}

fn user(name: &str) -> Res<UserName> {
    Ok(UserName::parse(name.as_bytes())?)
}

fn code(s: &str) -> Res<Code> {
    Ok(Code::parse(s.as_bytes())?)
}

fn ctx(service: &str, remote_host: &str) -> LoginContext {
    LoginContext {
        service: service.into(),
        remote_host: remote_host.into(),
        tty: String::new(),
        requester: None,
    }
}

/// A secret as returned by `enroll_start`, with what computes its codes.
struct Enrolled {
    base32: String,
    secret: TotpSecret,
    params: TotpParams,
    since: u64,
}

impl Enrolled {
    fn code_at(&self, t: u64) -> String {
        code_at_step(&self.secret, self.params, step_of(self.params, t)).to_string()
    }

    /// A code valid at no step within ±12 of `t` (otpd probes ±10 for
    /// clock skew) and in `avoid`.
    fn wrong_at(&self, t: u64, avoid: &[String]) -> Res<String> {
        let step = step_of(self.params, t);
        let near: Vec<String> = (step - 12..=step + 12)
            .map(|s| code_at_step(&self.secret, self.params, s).to_string())
            .collect();
        (0..1000u32)
            .map(|i| {
                format!(
                    "{:0w$}",
                    12_345_678 + i,
                    w = usize::from(self.params.digits)
                )
            })
            .map(|c| c[c.len() - usize::from(self.params.digits)..].to_owned())
            .find(|c| !near.contains(c) && !avoid.contains(c))
            .ok_or_else(|| "no wrong code found".into())
    }

    fn json(&self) -> Value {
        json!({
            "secret_base32": self.base32,
            "algorithm": self.params.algorithm.name(),
            "digits": self.params.digits,
            "period": self.params.period,
            "since": self.since
        })
    }
}

fn start(
    engine: &Engine,
    clock: &ManualClock,
    name: &str,
    algorithm: Algorithm,
    digits: u8,
    period: u64,
) -> Res<Enrolled> {
    let started = engine.enroll_start(
        &user(name)?,
        EnrollOptions {
            issuer: None,
            algorithm: Some(algorithm),
            digits: Some(digits),
            period: Some(period),
        },
    )?;
    let bytes = totp_rs::Secret::Encoded(started.secret_base32.to_string())
        .to_bytes()
        .map_err(|e| format!("secret of {name}: {e:?}"))?;
    Ok(Enrolled {
        base32: started.secret_base32.to_string(),
        secret: TotpSecret::from_bytes(bytes),
        params: started.params,
        since: clock_now(clock),
    })
}

fn clock_now(clock: &ManualClock) -> u64 {
    otpd::Clock::now(clock)
}

/// Confirms `e` at the clock's time; returns the backup codes.
fn confirm(engine: &Engine, clock: &ManualClock, name: &str, e: &mut Enrolled) -> Res<Vec<String>> {
    let now = clock_now(clock);
    let codes = engine.enroll_confirm(&user(name)?, &code(&e.code_at(now))?)?;
    e.since = now;
    Ok(codes.iter().map(|c| c.to_string()).collect())
}

/// Verifies through both phases, as the service does.
fn verify(engine: &Engine, name: &str, c: &str, ctx: &LoginContext) -> Res<Verdict> {
    Ok(match engine.verify(&user(name)?, &code(c)?, ctx)? {
        Verification::Done(v) => v,
        Verification::NeedsKdf(attempt) => engine.verify_backup_code(attempt, ctx)?,
    })
}

fn expect(v: Verdict, decision: Decision, reason: Reason, what: &str) -> Res<()> {
    if v.decision != decision || v.reason != reason {
        return Err(format!("{what}: got {v:?}, expected {decision:?}/{reason:?}").into());
    }
    Ok(())
}

fn check(cond: bool, what: &str) -> Res<()> {
    if cond {
        Ok(())
    } else {
        Err(format!("fixture check failed: {what}").into())
    }
}

fn populate(engine: &Engine, clock: &ManualClock) -> Res<Value> {
    let local = ctx("login", "");

    // T0: alice, bob and dave enroll and confirm; carol only starts.
    let mut alice = start(engine, clock, "alice", Algorithm::Sha1, 6, 30)?;
    let alice_codes = confirm(engine, clock, "alice", &mut alice)?;
    let mut bob = start(engine, clock, "bob", Algorithm::Sha256, 8, 60)?;
    let bob_codes = confirm(engine, clock, "bob", &mut bob)?;
    let mut dave_a = start(engine, clock, "dave", Algorithm::Sha1, 6, 30)?;
    let dave_codes = confirm(engine, clock, "dave", &mut dave_a)?;
    let carol = start(engine, clock, "carol", Algorithm::Sha1, 6, 30)?;

    // T0+10: alice logs in at the console with her first backup code.
    clock.set(T0 + 10);
    let used = alice_codes[0].clone();
    let v = verify(engine, "alice", &used, &local)?;
    expect(v, Decision::Accepted, Reason::Ok, "alice's backup code")?;
    check(
        v.method == Some(Method::BackupCode),
        "alice used a backup code",
    )?;

    // T0+15, T0+16: two wrong codes for bob from an unknown host (strangers).
    let stranger = ctx("sshd", "198.51.100.9");
    let mut stranger_failures = Vec::new();
    for t in [T0 + 15, T0 + 16] {
        clock.set(t);
        let wrong = bob.wrong_at(t, &bob_codes)?;
        expect(
            verify(engine, "bob", &wrong, &stranger)?,
            Decision::Rejected,
            Reason::WrongCode,
            "bob, stranger",
        )?;
        stranger_failures.push(t);
    }

    // Bob locks himself out at the console: the throttle allows 5 failures
    // per 60 s, the lockout comes with the 8th in a row.
    let policy = engine.config().policy;
    let threshold = policy.lock_threshold;
    let mut trusted_failures = Vec::new();
    for i in 0..u64::from(threshold) {
        let t = if i < 5 { T0 + 20 + i } else { T0 + 85 + i - 5 };
        clock.set(t);
        let wrong = bob.wrong_at(t, &bob_codes)?;
        expect(
            verify(engine, "bob", &wrong, &local)?,
            Decision::Rejected,
            Reason::WrongCode,
            "bob, console",
        )?;
        trusted_failures.push(t);
    }
    let bob_last_failure = trusted_failures.last().copied().unwrap_or(T0);
    let bob_locked_until = bob_last_failure + policy.lock_duration_for(1);

    // T0+30: dave starts a re-enrollment (secret B); A stays in force.
    clock.set(T0 + 30);
    let dave_b = start(engine, clock, "dave", Algorithm::Sha512, 6, 30)?;

    // T1: alice logs in over SSH with a TOTP code.
    clock.set(T1);
    let v = verify(
        engine,
        "alice",
        &alice.code_at(T1),
        &ctx("sshd", "192.0.2.7"),
    )?;
    expect(v, Decision::Accepted, Reason::Ok, "alice's TOTP code")?;
    let alice_step = step_of(alice.params, T1);

    // T1+5, T1+6: two wrong codes for alice at the console.
    let mut alice_failures = Vec::new();
    for t in [T1 + 5, T1 + 6] {
        clock.set(t);
        let wrong = alice.wrong_at(t, &alice_codes)?;
        expect(
            verify(engine, "alice", &wrong, &local)?,
            Decision::Rejected,
            Reason::WrongCode,
            "alice, console",
        )?;
        alice_failures.push(t);
    }
    clock.set(END);

    // What the engine says now must be what expected.json says.
    let st = |n: &str| -> Res<otpd::engine::UserStatus> { Ok(engine.status(&user(n)?)?) };
    let a = st("alice")?;
    check(a.state == State::Active, "alice active")?;
    check(
        a.consecutive_failures == 2 && a.locked_until == 0,
        "alice failures",
    )?;
    check(a.backup_codes_left == 9, "alice has 9 backup codes")?;
    check(a.enrolled_at == T0, "alice enrolled at T0")?;
    let b = st("bob")?;
    check(b.state == State::Locked, "bob locked")?;
    check(b.locked_until == bob_locked_until, "bob locked until")?;
    check(b.consecutive_failures == threshold, "bob's failures")?;
    check(b.stranger_failures == 2, "bob's stranger failures")?;
    check(st("carol")?.state == State::Pending, "carol pending")?;
    let d = st("dave")?;
    check(
        d.state == State::Active && d.pending,
        "dave active, re-enrolling",
    )?;

    let no_counts = json!({ "consecutive_failures": 0, "locked_until": 0, "failure_times": [] });
    Ok(json!({
        "alice": {
            "state": "active",
            "active": alice.json(),
            "pending": null,
            "last_used_step": alice_step,
            "last_used_step_time": T1,
            "backup_codes": {
                "issued": alice_codes.len(),
                "left": alice_codes.len() - 1,
                "used": [used],
                "unused": alice_codes[1..].to_vec(),
            },
            "trusted": {
                "consecutive_failures": 2,
                "locked_until": 0,
                "failure_times": alice_failures,
            },
            "strangers": no_counts,
            "known_origins": ["192.0.2.7"],
            "last_success": {
                "time": T1, "service": "sshd", "remote_host": "192.0.2.7", "method": "totp"
            },
            "clock_skew_seconds": 0
        },
        "bob": {
            "state": "locked",
            "active": bob.json(),
            "pending": null,
            "last_used_step": step_of(bob.params, T0),
            "last_used_step_time": T0,
            "backup_codes": {
                "issued": bob_codes.len(),
                "left": bob_codes.len(),
                "used": [],
                "unused": bob_codes,
            },
            "trusted": {
                "consecutive_failures": threshold,
                "locked_until": bob_locked_until,
                "failure_times": trusted_failures,
                "note": "8 wrong codes from the local machine (empty remote host); the \
                         throttle keeps only the failures of the last window"
            },
            "strangers": {
                "consecutive_failures": 2,
                "locked_until": 0,
                "failure_times": stranger_failures,
                "remote_host": "198.51.100.9"
            },
            "known_origins": [],
            "last_success": null,
            "clock_skew_seconds": 0
        },
        "carol": {
            "state": "pending",
            "active": null,
            "pending": carol.json(),
            "last_used_step": null,
            "backup_codes": null,
            "trusted": no_counts,
            "strangers": no_counts,
            "known_origins": [],
            "last_success": null
        },
        "dave": {
            "state": "active",
            "active": dave_a.json(),
            "pending": dave_b.json(),
            "last_used_step": step_of(dave_a.params, T0),
            "last_used_step_time": T0,
            "backup_codes": {
                "issued": dave_codes.len(),
                "left": dave_codes.len(),
                "used": [],
                "unused": dave_codes,
            },
            "trusted": no_counts,
            "strangers": no_counts,
            "known_origins": [],
            "last_success": null,
            "clock_skew_seconds": 0
        }
    }))
}

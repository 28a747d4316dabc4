//! Chaos: the built `otpd` under a mixed concurrent load of enrollments,
//! verifications (TOTP and backup codes) and backup-code regenerations is
//! killed with SIGKILL at a random point, restarted on the same state
//! directory, and checked:
//!
//! 1. no code whose Verify answered ACCEPTED before a kill is accepted again;
//! 2. every user whose EnrollConfirm answered OK is still active, and holds
//!    exactly the backup codes of its last confirmed set (a code of that set
//!    works, a code of an older set does not);
//! 3. the store opens (the daemon starts).
//!
//! Repeated for [`MAX_CYCLES`] cycles or [`TIME_BUDGET`], whichever comes
//! first. The randomness (operations, users, kill points) comes from one
//! seed, printed at the start; `OTPD_CHAOS_SEED=<seed>` replays its
//! choices (the kill lands at the same delay, the real clock and scheduler
//! aside).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use otpd_proto::v1 as pb;
use otpd_tests::*;
use pb::otpd_client::OtpdClient;
use tonic::transport::Channel;

const MAX_CYCLES: u32 = 30;
const TIME_BUDGET: Duration = Duration::from_secs(60);
const WORKERS: usize = 4;
/// Users enrolled before the first kill (more are enrolled under load).
const INITIAL_USERS: usize = 4;
/// Longest run of load before the kill. An enrollment or a regeneration
/// hashes ten codes with Argon2id (19 MiB): long enough for several.
const MAX_LOAD_MS: u64 = 3000;

/// SplitMix64: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the test knows about one enrolled user.
struct User {
    name: String,
    app: App,
    /// The unused codes of the last set the daemon confirmed to us.
    backup: Vec<String>,
    /// Codes of earlier sets: never valid again.
    stale: Vec<String>,
    /// False when an EnrollConfirm, a regeneration or a backup-code Verify
    /// was in flight at the kill: whether it took effect is unknown until
    /// the next check.
    certain: bool,
}

/// What one worker did before the daemon died.
#[derive(Default)]
struct Report {
    users: Vec<User>,
    accepted: Vec<(String, String)>,
    violations: Vec<String>,
    ops: u64,
}

fn user_req(user: &str) -> Vec<u8> {
    user.as_bytes().to_vec()
}

/// Runs random operations on the worker's own users until the daemon dies
/// (the first transport error) or `stop` is set.
async fn worker(
    mut client: OtpdClient<Channel>,
    id: usize,
    cycle: u32,
    mut users: Vec<User>,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
) -> Report {
    let mut r = Report::default();
    let mut fresh = 0u32;
    while !stop.load(Ordering::Relaxed) {
        r.ops += 1;
        let roll = rng.below(100);
        let live: Vec<usize> = (0..users.len()).filter(|&i| users[i].certain).collect();
        if roll < 5 || live.is_empty() {
            // Enrollment of a new user.
            fresh += 1;
            let name = format!("c{cycle}w{id}u{fresh}");
            let started = match client
                .enroll_start(pb::EnrollStartRequest {
                    user: user_req(&name).into(),
                    ..Default::default()
                })
                .await
            {
                Ok(s) => s.into_inner(),
                Err(_) => break,
            };
            let app = App::from_uri(&started.otpauth_uri);
            let code = app.code_at(unix_now());
            match client
                .enroll_confirm(pb::EnrollConfirmRequest {
                    user: user_req(&name).into(),
                    code: code.into_bytes().into(),
                })
                .await
            {
                Ok(c) => users.push(User {
                    name,
                    app,
                    backup: c.into_inner().backup_codes,
                    stale: Vec::new(),
                    certain: true,
                }),
                Err(s) if s.code() == tonic::Code::Unauthenticated => {} // step changed
                Err(_) => {
                    users.push(User {
                        name,
                        app,
                        backup: Vec::new(),
                        stale: Vec::new(),
                        certain: false,
                    });
                    break;
                }
            }
        } else if roll < 55 {
            // A backup code of the current set.
            let u = &mut users[live[rng.below(live.len() as u64) as usize]];
            if u.backup.is_empty() {
                continue;
            }
            let code = u
                .backup
                .swap_remove(rng.below(u.backup.len() as u64) as usize);
            match client.verify(verify_req(&u.name, &code)).await {
                Ok(v) => {
                    let v = v.into_inner();
                    if v.decision == Decision::Accepted as i32 {
                        r.accepted.push((u.name.clone(), code));
                    } else {
                        r.violations.push(format!(
                            "{}: a current backup code was refused under load: {v:?}",
                            u.name
                        ));
                    }
                }
                // Used or not: unknown, and so is the count left.
                Err(_) => {
                    u.certain = false;
                    break;
                }
            }
        } else if roll < 93 {
            // A TOTP code of the previous, current or next step.
            let u = &users[live[rng.below(live.len() as u64) as usize]];
            let t = (unix_now() + 30 * rng.below(3)).saturating_sub(30);
            let code = u.app.code_at(t);
            match client.verify(verify_req(&u.name, &code)).await {
                Ok(v) => {
                    if v.into_inner().decision == Decision::Accepted as i32 {
                        r.accepted.push((u.name.clone(), code));
                    }
                }
                Err(_) => break,
            }
        } else {
            // A new set of backup codes.
            let u = &mut users[live[rng.below(live.len() as u64) as usize]];
            match client
                .regenerate_backup_codes(pb::RegenerateBackupCodesRequest {
                    user: user_req(&u.name).into(),
                    ..Default::default()
                })
                .await
            {
                Ok(c) => {
                    let old = std::mem::replace(&mut u.backup, c.into_inner().backup_codes);
                    u.stale.extend(old);
                }
                Err(_) => {
                    u.certain = false;
                    break;
                }
            }
        }
    }
    r.users = users;
    r
}

/// A configuration without throttling or lockout: the checks verify used
/// and stale codes on purpose, and must see "replayed" or "wrong", never
/// "locked" or "throttled".
fn write_config(dir: &Path) {
    std::fs::write(
        dir.join("otpd.toml"),
        "[rate_limit]\nmax_failures = 1000000\nwindow_seconds = 60\n\
         [lockout]\nthreshold = 1000000\n",
    )
    .unwrap();
}

/// After a restart: checks 1 and 2; brings uncertain users back to a known
/// state (a regeneration), or forgets them if their enrollment was lost
/// with the kill before its reply.
async fn check(
    client: &mut OtpdClient<Channel>,
    users: &mut Vec<User>,
    recent: &[(String, String)],
    older: &[(String, String)],
    rng: &mut Rng,
    violations: &mut Vec<String>,
    accepted: &mut Vec<(String, String)>,
) {
    // 1. Accepted before a kill: never again. Every code accepted in the
    // last cycle, and a sample of the earlier ones.
    let sample = (0..older.len().min(10)).map(|_| &older[rng.below(older.len() as u64) as usize]);
    for (user, code) in recent.iter().chain(sample) {
        let v = verify(client, user, code).await;
        if v.decision == Decision::Accepted as i32 {
            violations.push(format!(
                "{user}: a code accepted before the kill was accepted again"
            ));
        }
    }

    // 2. Confirmed enrollments survive, with their last set of codes.
    let mut kept = Vec::with_capacity(users.len());
    for mut u in users.drain(..) {
        let s = status(client, &u.name).await;
        let active = s.state == pb::State::Active as i32 || s.state == pb::State::Locked as i32;
        if !u.certain {
            if !active {
                continue; // the confirmation was lost with its reply: allowed
            }
            match client
                .regenerate_backup_codes(pb::RegenerateBackupCodesRequest {
                    user: user_req(&u.name).into(),
                    ..Default::default()
                })
                .await
            {
                Ok(c) => {
                    let old = std::mem::replace(&mut u.backup, c.into_inner().backup_codes);
                    u.stale.extend(old);
                    u.certain = true;
                }
                Err(e) => violations.push(format!("{}: regeneration failed: {e}", u.name)),
            }
            kept.push(u);
            continue;
        }
        if !active {
            violations.push(format!(
                "{}: EnrollConfirm answered OK, after the restart: {s:?}",
                u.name
            ));
            continue;
        }
        if s.backup_codes_left as usize != u.backup.len() {
            violations.push(format!(
                "{}: {} backup codes left, expected {}",
                u.name,
                s.backup_codes_left,
                u.backup.len()
            ));
        }
        kept.push(u);
    }
    *users = kept;

    // A current code works and a stale one does not, for a few users (each
    // costs an Argon2 hash).
    for _ in 0..2 {
        if users.is_empty() {
            break;
        }
        let n = users.len() as u64;
        let u = &mut users[rng.below(n) as usize];
        if !u.backup.is_empty() {
            let code = u
                .backup
                .swap_remove(rng.below(u.backup.len() as u64) as usize);
            let v = verify(client, &u.name, &code).await;
            if v.decision == Decision::Accepted as i32 {
                accepted.push((u.name.clone(), code));
            } else {
                violations.push(format!(
                    "{}: a code of the last confirmed set was refused: {v:?}",
                    u.name
                ));
            }
        }
        if !u.stale.is_empty() {
            let code = &u.stale[rng.below(u.stale.len() as u64) as usize];
            let v = verify(client, &u.name, code).await;
            if v.decision == Decision::Accepted as i32 {
                violations.push(format!("{}: a code of an older set was accepted", u.name));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_code_is_reaccepted_and_no_enrollment_lost_across_random_kills() {
    let seed = std::env::var("OTPD_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("chaos seed {seed} (replay with OTPD_CHAOS_SEED={seed})");
    let mut rng = Rng(seed);

    let dir = shared_tempdir();
    write_config(dir.path());
    let started = Instant::now();
    let mut users: Vec<User> = Vec::new();
    let mut accepted: Vec<(String, String)> = Vec::new();
    let mut recent: Vec<(String, String)> = Vec::new();
    let mut cycles = 0u32;
    let mut ops = 0u64;
    let mut violations = Vec::new();

    {
        let d = Process::start(dir.path());
        let mut client = connect(&d.socket).await;
        for i in 0..INITIAL_USERS {
            let name = format!("init{i}");
            let (app, backup) = enroll(&mut client, &name, unix_now()).await;
            users.push(User {
                name,
                app,
                backup,
                stale: Vec::new(),
                certain: true,
            });
        }
        d.crash();
    }

    loop {
        // 3. The store opens: `start` fails the test (with otpd's stderr)
        // if the daemon does not become ready. The last kill is checked too.
        let d = Process::start(dir.path());
        let mut client = connect(&d.socket).await;
        let mut checked = Vec::new();
        check(
            &mut client,
            &mut users,
            &recent,
            &accepted,
            &mut rng,
            &mut violations,
            &mut checked,
        )
        .await;
        assert!(
            violations.is_empty(),
            "seed {seed}, after kill {cycles}:\n{}",
            violations.join("\n")
        );
        accepted.append(&mut recent);
        if cycles >= MAX_CYCLES || started.elapsed() >= TIME_BUDGET {
            break;
        }
        // Accepted during the check: before the coming kill, like the load's.
        recent = checked;

        // Load, then SIGKILL at a random point of it.
        let stop = Arc::new(AtomicBool::new(false));
        let mut shares: Vec<Vec<User>> = (0..WORKERS).map(|_| Vec::new()).collect();
        for (i, u) in users.drain(..).enumerate() {
            shares[i % WORKERS].push(u);
        }
        let mut tasks = Vec::new();
        for (id, share) in shares.into_iter().enumerate() {
            let client = connect(&d.socket).await;
            let worker_rng = Rng(rng.next());
            tasks.push(tokio::spawn(worker(
                client,
                id,
                cycles,
                share,
                worker_rng,
                stop.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(rng.below(MAX_LOAD_MS))).await;
        let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        stop.store(true, Ordering::Relaxed);
        d.crash();
        for t in tasks {
            let r = t.await.unwrap();
            users.extend(r.users);
            recent.extend(r.accepted);
            violations.extend(r.violations);
            ops += r.ops;
        }
        assert!(
            violations.is_empty(),
            "seed {seed}, cycle {cycles} (under load):\n{}",
            violations.join("\n")
        );
        cycles += 1;
    }

    println!(
        "chaos: {cycles} kill -9 cycles in {:.1} s, {ops} operations, {} accepted codes \
         never accepted again, {} enrolled users kept (seed {seed})",
        started.elapsed().as_secs_f64(),
        accepted.len(),
        users.len()
    );
    assert!(cycles >= 2, "only {cycles} cycles in {TIME_BUDGET:?}");
}

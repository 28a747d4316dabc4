//! The built `otpd` binary when its store fails: a full disk that frees
//! again, store files put back from a copy, a damaged sled log.
//!
//! Real clock and real codes, with a 300-second TOTP period so that the
//! three codes a scenario needs (confirm, then two logins) are all in the
//! ±1-step window however the test is scheduled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use otpd_proto::v1 as pb;
use otpd_tests::*;
use pb::otpd_client::OtpdClient;
use pb::{Decision, Reason};
use tonic::transport::Channel;

const PERIOD: u64 = 300;

/// A small tmpfs mounted on `dir`, unmounted on drop (declare it before the
/// daemon, so that the daemon is stopped first).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs on {} (tests run as root)", dir.display());
        Self(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Enrolls `user` with a 300 s period, confirming with the previous step's
/// code; returns the app and the current step.
async fn enroll_slow(c: &mut OtpdClient<Channel>, user: &str) -> (App, u64) {
    let started = c
        .enroll_start(pb::EnrollStartRequest {
            user: user.as_bytes().to_vec().into(),
            period: PERIOD as u32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let app = App::from_uri(&started.otpauth_uri);
    let step = unix_now() / PERIOD;
    c.enroll_confirm(pb::EnrollConfirmRequest {
        user: user.as_bytes().to_vec().into(),
        code: app.code_at((step - 1) * PERIOD).into_bytes().into(),
    })
    .await
    .unwrap();
    (app, step)
}

fn decision(r: &pb::VerifyResponse) -> (Option<Decision>, Option<Reason>) {
    (
        Decision::try_from(r.decision).ok(),
        Reason::try_from(r.reason).ok(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_closed_and_otpd_recovers_when_space_returns() {
    let dir = shared_tempdir();
    let state = dir.path().join("state");
    let _tmpfs = Tmpfs::mount(&state, "4m");
    let d = Process::start(dir.path());
    let mut c = connect(&d.socket).await;
    let (app, step) = enroll_slow(&mut c, "alice").await;

    // Fill the disk, then write (new enrollments of another user) until a
    // write fails: the space left in partly used pages is gone too.
    let filler = state.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
    }
    let mut failed = false;
    for _ in 0..2000 {
        let r = c
            .enroll_start(pb::EnrollStartRequest {
                user: b"filler".to_vec().into(),
                ..Default::default()
            })
            .await;
        if let Err(status) = r {
            assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
            failed = true;
            break;
        }
    }
    assert!(failed, "no write failed on a full tmpfs");

    // A correct code fails closed: INTERNAL, never UNAVAILABLE (which a
    // PAM stack with fail_mode=open would let through), never accepted.
    let r = c
        .verify(verify_req("alice", &app.code_at(step * PERIOD)))
        .await;
    let status = r.expect_err("a decision that cannot be stored is not accepted");
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");

    // Space returns. Past the documented reopen interval (the rate limit,
    // not a readiness wait), the next login works, without a restart.
    std::fs::remove_file(&filler).unwrap();
    std::thread::sleep(otpd::store::REOPEN_INTERVAL);
    let r = verify(&mut c, "alice", &app.code_at((step + 1) * PERIOD)).await;
    assert_eq!(decision(&r), (Some(Decision::Accepted), Some(Reason::Ok)));
    // And the code spent during the outage (if it was) stays refused.
    let r = verify(&mut c, "alice", &app.code_at(step * PERIOD)).await;
    assert_eq!(decision(&r).0, Some(Decision::Rejected));

    drop(c);
    let log = d.stderr();
    assert!(d.stop().success());
    assert_eq!(
        log.matches("store failed; decisions fail closed").count(),
        1,
        "the outage is logged once: {log}"
    );
    assert_eq!(
        log.matches("recovered without a restart").count(),
        1,
        "the recovery is logged once: {log}"
    );
}

/// Copies a directory tree (sled's store: files and one level of dirs).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn store_files_put_back_from_a_copy_cannot_make_a_used_code_valid_again() {
    let dir = shared_tempdir();
    let store = dir.path().join("state").join("store");
    let saved = dir.path().join("saved-store");
    let d = Process::start(dir.path());
    let mut c = connect(&d.socket).await;
    let (app, step) = enroll_slow(&mut c, "alice").await;
    let (_, backup) = enroll(&mut c, "bob", unix_now()).await;
    drop(c);
    assert!(d.stop().success());
    copy_tree(&store, &saved);

    let d = Process::start(dir.path());
    let mut c = connect(&d.socket).await;
    let code = app.code_at(step * PERIOD);
    let r = verify(&mut c, "alice", &code).await;
    assert_eq!(decision(&r).0, Some(Decision::Accepted));
    let r = verify(&mut c, "bob", &backup[0]).await;
    assert_eq!(decision(&r).0, Some(Decision::Accepted));
    drop(c);
    assert!(d.stop().success());

    // The old store comes back (the watermark journal stays).
    std::fs::remove_dir_all(&store).unwrap();
    copy_tree(&saved, &store);
    let d = Process::start(dir.path());
    let mut c = connect(&d.socket).await;
    let r = verify(&mut c, "alice", &code).await;
    assert_eq!(
        decision(&r),
        (Some(Decision::Rejected), Some(Reason::Replayed)),
        "a used code was accepted again after a rollback"
    );
    let r = verify(&mut c, "bob", &backup[0]).await;
    assert_eq!(decision(&r).0, Some(Decision::Rejected), "used backup code");
    assert!(status(&mut c, "alice").await.rolled_back_at > 0);
    assert!(status(&mut c, "bob").await.rolled_back_at > 0);
    // A fresh code still works.
    let r = verify(&mut c, "alice", &app.code_at((step + 1) * PERIOD)).await;
    assert_eq!(decision(&r).0, Some(Decision::Accepted));
    assert!(
        status(&mut c, "alice").await.rolled_back_at > 0,
        "flag kept"
    );

    // otpctl shows it, in both formats.
    let otpctl = |json: bool| {
        let mut cmd = Command::new(built("otpctl"));
        cmd.arg("--socket").arg(&d.socket);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.args(["status", "alice"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(
        otpctl(false).contains("active+ROLLED-BACK"),
        "{}",
        otpctl(false)
    );
    assert!(
        otpctl(true).contains("\"rolled_back_at\":\""),
        "{}",
        otpctl(true)
    );
    drop(c);
    let log = d.stderr();
    assert!(d.stop().success());
    let reports: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("event=\"store_rollback\""))
        .collect();
    assert_eq!(reports.len(), 2, "one error per user: {log}");
    assert!(
        log.contains("the store lost writes (rolled back)"),
        "start-up report: {log}"
    );
}

/// Scenarios of a damaged sled log: the daemon refuses to start with a
/// clear error, or starts and never accepts a used code.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_sled_log_never_revives_a_used_code() {
    type Damage = fn(&Path);
    let truncate: Damage = |db| {
        let len = std::fs::metadata(db).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
        f.set_len(len.saturating_sub(300)).unwrap();
    };
    let garble: Damage = |db| {
        let mut bytes = std::fs::read(db).unwrap();
        let n = bytes.len();
        for b in &mut bytes[n.saturating_sub(600)..n.saturating_sub(100)] {
            *b ^= 0x5a;
        }
        std::fs::write(db, bytes).unwrap();
    };
    for (name, damage) in [("truncated", truncate), ("garbled", garble)] {
        let dir = shared_tempdir();
        let d = Process::start(dir.path());
        let mut c = connect(&d.socket).await;
        let (app, step) = enroll_slow(&mut c, "alice").await;
        let code = app.code_at(step * PERIOD);
        let r = verify(&mut c, "alice", &code).await;
        assert_eq!(decision(&r).0, Some(Decision::Accepted));
        drop(c);
        assert!(d.stop().success());

        damage(&dir.path().join("state").join("store").join("db"));
        match Process::try_start(dir.path()) {
            Err((status, stderr)) => {
                assert!(
                    stderr.contains("store") && !status.contains("signal"),
                    "{name}: refused without a clear reason ({status}): {stderr}"
                );
            }
            Ok(d) => {
                let mut c = connect(&d.socket).await;
                match c.verify(verify_req("alice", &code)).await {
                    Ok(r) => assert_ne!(
                        decision(&r.into_inner()).0,
                        Some(Decision::Accepted),
                        "{name}: a used code was accepted again"
                    ),
                    Err(s) => assert_ne!(s.code(), tonic::Code::Unavailable, "{name}: {s:?}"),
                }
            }
        }
    }
}

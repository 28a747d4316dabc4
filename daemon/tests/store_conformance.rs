//! The store conformance suite (`otpd::store::conformance`) against every
//! backend, and a crash of a real process between an update and its reply.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use otpd::Error;
use otpd::record::UserName;
use otpd::store::conformance::{Backend, MemoryBackend, SledBackend};
use otpd::store::{SledStore, Store, Write};
use tempfile::TempDir;

fn memory() -> Result<MemoryBackend, Error> {
    Ok(MemoryBackend::new())
}

/// A sled store in a temporary directory, removed with the backend.
struct TempSled {
    backend: SledBackend,
    _dir: TempDir,
}

impl Backend for TempSled {
    fn open(&self) -> Result<Box<dyn Store>, Error> {
        self.backend.open()
    }
    fn optimistic(&self) -> bool {
        self.backend.optimistic()
    }
}

fn sled() -> Result<TempSled, Error> {
    let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
    Ok(TempSled {
        backend: SledBackend::new(&dir.path().join("store")),
        _dir: dir,
    })
}

mod memory_store {
    otpd::store_conformance_tests!(super::memory);
}

mod sled_store {
    otpd::store_conformance_tests!(super::sled);
}

#[test]
fn run_all_runs_on_memory() -> Result<(), Error> {
    otpd::store::conformance::run_all(memory)
}

/// Set in the child process of the crash test: the store directory.
const CRASH_CHILD: &str = "OTPD_STORE_CRASH_CHILD";

/// Spends the code of `alice` if it is unspent; whether it was accepted.
fn verify(s: &dyn Store) -> Result<bool, Error> {
    let alice = UserName::parse(b"alice")?;
    let mut accepted = false;
    s.update(&alice, &mut |old| {
        accepted = old == Some(&b"unspent"[..]);
        Ok(if accepted {
            Write::Put(b"spent".to_vec())
        } else {
            Write::Keep
        })
    })?;
    Ok(accepted)
}

/// A used code is never accepted again after a crash between decide and
/// reply: a process accepts a code (its update returns) and aborts at once,
/// before any destructor or background flush of sled; the store reopened
/// after it holds the spent code and refuses it.
#[test]
fn a_spent_code_survives_a_crash_before_the_reply() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = std::env::var_os(CRASH_CHILD) {
        let s = SledStore::open(Path::new(&dir))?;
        assert!(verify(&s)?);
        std::process::abort();
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store");
    SledStore::open(&path)?.put(&UserName::parse(b"alice")?, b"unspent")?;
    let child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "a_spent_code_survives_a_crash_before_the_reply",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, &path)
        .output()?;
    assert_eq!(
        child.status.signal(),
        Some(6),
        "the child aborts (SIGABRT) right after accepting: {}\n{}",
        child.status,
        String::from_utf8_lossy(&child.stderr)
    );
    let s = SledStore::open(&path)?;
    assert_eq!(s.get(&UserName::parse(b"alice")?)?, Some(b"spent".to_vec()));
    assert!(!verify(&s)?, "the code was accepted twice");
    Ok(())
}

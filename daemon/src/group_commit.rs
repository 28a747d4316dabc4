//! Group commit: many writers, one sync.
//!
//! A writer that needs its write on disk before it answers calls
//! [`GroupSync::wait`] after the write (into the page cache, the store's
//! log) is done. It returns once a sync that *started after that call* has
//! finished: the first waiter with no sync running runs the sync itself;
//! writers arriving meanwhile wait for the next one, which covers all of
//! them. Under load one `fsync` serves every decision made while the
//! previous one ran, so throughput is no longer one decision per fsync,
//! and no reply ever goes out before its write is durable.
//!
//! A failed sync fails every waiter that needed it (fail closed); later
//! syncs are tried afresh.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

#[derive(Debug, Default)]
struct State {
    /// Syncs started so far.
    started: u64,
    /// Syncs finished so far (a sync finishes before the next starts).
    finished: u64,
    /// The number of the last sync that failed (0: none).
    last_failed: u64,
    /// A sync runs now.
    running: bool,
}

/// One sync point (a file, a database) shared by its writers.
#[derive(Debug, Default)]
pub struct GroupSync {
    state: Mutex<State>,
    done: Condvar,
}

/// Why [`GroupSync::wait`] failed.
#[derive(Debug)]
pub enum SyncFailed<E> {
    /// This caller ran the sync, which failed with `E`.
    Own(E),
    /// The sync another caller ran for this one failed.
    Shared,
}

impl GroupSync {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns once a sync that started after this call has finished
    /// (running `sync` itself when no sync is running).
    ///
    /// # Errors
    /// When that sync failed.
    pub fn wait<E>(&self, sync: impl FnOnce() -> Result<(), E>) -> Result<(), SyncFailed<E>> {
        let mut sync = Some(sync);
        let mut s = self.lock();
        // A running sync may have started before this write: the next one
        // is the first that surely covers it.
        let needed = s.started + 1;
        loop {
            if s.finished >= needed {
                return if s.last_failed >= needed {
                    Err(SyncFailed::Shared)
                } else {
                    Ok(())
                };
            }
            if !s.running {
                // `started == finished` here, so this sync is `needed`.
                s.running = true;
                s.started += 1;
                let number = s.started;
                drop(s);
                let result = match sync.take() {
                    Some(f) => f(),
                    None => Ok(()),
                };
                let mut s = self.lock();
                s.finished = number;
                s.running = false;
                if result.is_err() {
                    s.last_failed = number;
                }
                drop(s);
                self.done.notify_all();
                return result.map_err(SyncFailed::Own);
            }
            s = self.done.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// Each writer bumps `written`, then waits; a sync copies `written` to
    /// `durable`. Every waiter must find its write durable on return, and
    /// under contention there are fewer syncs than writers.
    #[test]
    fn every_writer_returns_after_a_sync_that_covers_it_and_syncs_are_shared() {
        let g = Arc::new(GroupSync::default());
        let written = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (g, written, durable, syncs) =
                    (g.clone(), written.clone(), durable.clone(), syncs.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        g.wait(|| {
                            syncs.fetch_add(1, Ordering::SeqCst);
                            let upto = written.load(Ordering::SeqCst);
                            std::thread::sleep(Duration::from_micros(200));
                            durable.fetch_max(upto, Ordering::SeqCst);
                            Ok::<(), ()>(())
                        })
                        .unwrap();
                        assert!(durable.load(Ordering::SeqCst) >= mine);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let syncs = syncs.load(Ordering::SeqCst);
        assert!(syncs < 800, "{syncs} syncs for 800 writes");
    }

    #[test]
    fn a_failed_sync_fails_its_waiters_and_the_next_one_is_tried_afresh() {
        let g = GroupSync::default();
        assert!(matches!(
            g.wait(|| Err("disk full")),
            Err(SyncFailed::Own("disk full"))
        ));
        assert!(g.wait(|| Ok::<(), &str>(())).is_ok());
        // Two writers arrive while sync 1 runs: both need sync 2, which
        // one of them runs and which fails: the other gets Shared.
        let g = Arc::new(GroupSync::default());
        let calls = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(std::sync::Barrier::new(3));
        let sync =
            |g: Arc<GroupSync>, calls: Arc<AtomicU64>, gate: Option<Arc<std::sync::Barrier>>| {
                g.wait(move || {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    if let Some(gate) = gate {
                        gate.wait();
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    if n == 1 { Ok(()) } else { Err("io") }
                })
            };
        let first = {
            let (g, calls, gate) = (g.clone(), calls.clone(), gate.clone());
            std::thread::spawn(move || sync(g, calls, Some(gate)))
        };
        // Wait until sync 1 runs, then start the two (they must not run
        // the gate: only the first sync has one).
        let (g1, c1, gate1) = (g.clone(), calls.clone(), gate.clone());
        let (g2, c2, gate2) = (g.clone(), calls.clone(), gate.clone());
        let b = std::thread::spawn(move || {
            gate1.wait();
            sync(g1, c1, None)
        });
        let c = std::thread::spawn(move || {
            gate2.wait();
            sync(g2, c2, None)
        });
        assert!(first.join().unwrap().is_ok());
        let results = [b.join().unwrap(), c.join().unwrap()];
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one sync for both");
        assert_eq!(
            results
                .iter()
                .filter(|r| matches!(r, Err(SyncFailed::Own("io"))))
                .count(),
            1
        );
        assert_eq!(
            results
                .iter()
                .filter(|r| matches!(r, Err(SyncFailed::Shared)))
                .count(),
            1
        );
    }
}

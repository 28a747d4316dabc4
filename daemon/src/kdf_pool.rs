//! The pool of Argon2 working memory the daemon lends to the core's KDF.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use otpd_core::kdf::{Block, Scratch};

/// Argon2 working memory, reused: at most `buffers` blocks of `m_kib` KiB
/// exist at any time, so the memory the KDF can take is bounded however
/// many attempts arrive, and while attempts keep coming the same buffers
/// serve them all (no allocator churn). A hash that finds every buffer in
/// use waits for one. Buffers left idle are given back to the system with
/// [`KdfMemory::release_idle`].
pub struct KdfMemory {
    pool: Mutex<Pool>,
    returned: Condvar,
    buffers: usize,
}

struct Pool {
    /// Buffers not in use, with the time each was given back.
    free: Vec<(Vec<Block>, Instant)>,
    /// Buffers that exist (free or in use).
    created: usize,
}

/// Each buffer reserves at least this much address space (only the blocks
/// a hash uses are touched): above glibc's largest dynamic mmap threshold
/// (32 MiB), so a buffer is mapped from the kernel and unmapped when it is
/// released, instead of lingering in the allocator's heap.
const MIN_BUFFER_BYTES: usize = 33 << 20;

impl std::fmt::Debug for KdfMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdfMemory")
            .field("buffers", &self.buffers)
            .finish_non_exhaustive()
    }
}

impl KdfMemory {
    /// A pool of at most `buffers` (at least 1) working memories, created
    /// when first needed.
    pub fn new(buffers: usize) -> Self {
        Self {
            pool: Mutex::new(Pool {
                free: Vec::new(),
                created: 0,
            }),
            returned: Condvar::new(),
            buffers: buffers.max(1),
        }
    }

    /// Most buffers that can exist at once.
    pub fn buffers(&self) -> usize {
        self.buffers
    }

    /// Buffers that exist now (free or in use).
    pub fn held(&self) -> usize {
        self.lock().created
    }

    /// Frees the buffers nobody used for `idle`; returns how many exist
    /// afterwards.
    pub fn release_idle(&self, idle: Duration) -> usize {
        let released: Vec<_> = {
            let mut pool = self.lock();
            let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut pool.free)
                .into_iter()
                .partition(|(_, since)| since.elapsed() >= idle);
            pool.free = keep;
            pool.created -= old.len();
            old
        };
        // Unmapped outside the lock.
        drop(released);
        self.held()
    }

    // A panic while the pool is locked leaves its bookkeeping consistent
    // (every change is a single push/pop/counter step).
    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Scratch for KdfMemory {
    fn take(&self) -> Vec<Block> {
        let mut pool = self.lock();
        loop {
            if let Some((buf, _)) = pool.free.pop() {
                return buf;
            }
            if pool.created < self.buffers {
                pool.created += 1;
                return Vec::with_capacity(MIN_BUFFER_BYTES / std::mem::size_of::<Block>());
            }
            pool = self
                .returned
                .wait(pool)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn give_back(&self, buf: Vec<Block>) {
        self.lock().free.push((buf, Instant::now()));
        self.returned.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpd_core::Error;
    use otpd_core::backup_codes::BackupCodeSet;
    use otpd_core::kdf::KdfParams;
    use otpd_core::secret::Code;
    use rand::rngs::OsRng;

    fn cheap() -> KdfParams {
        KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        }
    }

    fn code(s: &str) -> Code {
        match Code::parse(s.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    /// The ceiling README states for backup-code work: 19 MiB per hash, at
    /// most 4 at once on any machine, one per core below that.
    #[test]
    fn the_kdf_memory_ceiling_is_19_mib_per_core_up_to_76_mib() {
        use crate::engine::{MAX_KDF_PARALLELISM, default_kdf_parallelism, kdf_memory_ceiling};
        const MIB: u64 = 1 << 20;
        let kdf = KdfParams::default();
        assert_eq!(kdf_memory_ceiling(&kdf, 1), 19 * MIB);
        assert_eq!(kdf_memory_ceiling(&kdf, MAX_KDF_PARALLELISM), 76 * MIB);
        let here = default_kdf_parallelism();
        assert!((1..=MAX_KDF_PARALLELISM).contains(&here));
        assert!(kdf_memory_ceiling(&kdf, here) <= 76 * MIB);
        // The pool lends at most that many working memories.
        assert_eq!(KdfMemory::new(here).buffers(), here);
        assert_eq!(KdfMemory::new(0).buffers(), 1);
    }

    #[test]
    fn the_memory_pool_never_holds_more_buffers_than_its_size() -> Result<(), Error> {
        let mem = std::sync::Arc::new(KdfMemory::new(2));
        let (plain, set) = BackupCodeSet::generate(cheap(), &mut OsRng, &*mem)?;
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (mem, probe, c) = (mem.clone(), set.probe(), code(&plain[1]));
                std::thread::spawn(move || probe.hash(c.as_bytes(), &*mem).map(|h| *h.expose()))
            })
            .collect();
        let mut hashes = Vec::new();
        for t in threads {
            match t.join() {
                Ok(h) => hashes.push(h?),
                Err(_) => panic!("hash thread panicked"),
            }
        }
        assert!(hashes.windows(2).all(|w| w[0] == w[1]));
        let created = {
            let pool = mem.lock();
            assert!((1..=2).contains(&pool.created), "{} buffers", pool.created);
            assert_eq!(pool.free.len(), pool.created, "every buffer came back");
            pool.created
        };
        assert_eq!(mem.release_idle(Duration::from_secs(3600)), created);
        assert_eq!(mem.release_idle(Duration::ZERO), 0);
        set.probe().hash(code(&plain[1]).as_bytes(), &*mem)?;
        assert_eq!(mem.held(), 1);
        Ok(())
    }
}

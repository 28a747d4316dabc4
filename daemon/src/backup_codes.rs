//! Single-use backup codes: 8 random digits each, stored only as Argon2id
//! hashes, consumed in any order.
//!
//! Hashing is split from the decision so that it can run without the
//! user's lock: [`BackupCodeSet::probe`] names the salt and cost,
//! [`Probe::hash`] does the work in memory borrowed from a [`KdfMemory`],
//! and [`BackupCodeSet::consume_hash`] decides on the result.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use argon2::{Algorithm as Argon2Algorithm, Argon2, Block, Params, Version};
use rand::Rng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::secret::Code;

/// Codes issued at a time.
pub const COUNT: usize = 10;
/// Digits per code.
pub const DIGITS: usize = 8;

/// Argon2id cost, stored with each set so that raising it later keeps old
/// sets verifiable. Defaults: OWASP's minimum for Argon2id (19 MiB, t=2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        Self {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
        }
    }
}

/// The stored form of one user's backup codes: a salt shared by the set
/// (one hash per attempt, however many codes are left) and the hashes of
/// the codes not yet used.
#[derive(Clone, Serialize, Deserialize)]
pub struct BackupCodeSet {
    kdf: KdfParams,
    salt: [u8; 16],
    hashes: Vec<[u8; 32]>,
}

impl std::fmt::Debug for BackupCodeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupCodeSet")
            .field("remaining", &self.hashes.len())
            .finish_non_exhaustive()
    }
}

/// A code in clear, as shown to the user once.
pub type PlainCode = Zeroizing<String>;

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

    fn hash(&self, kdf: KdfParams, salt: &[u8; 16], code: &[u8]) -> Result<CodeHash, Error> {
        let params = Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
            .map_err(|e| Error::Internal(format!("backup-code KDF parameters: {e}")))?;
        let blocks = params.block_count();
        let argon = Argon2::new(Argon2Algorithm::Argon2id, Version::V0x13, params);
        let mut out = CodeHash(Zeroizing::new([0u8; 32]));
        let mut buf = self.take();
        if buf.len() < blocks {
            buf.resize(blocks, Block::new());
        }
        let result = argon.hash_password_into_with_memory(code, salt, &mut *out.0, &mut buf[..]);
        self.give_back(buf);
        result.map_err(|e| Error::Internal(format!("backup-code KDF: {e}")))?;
        Ok(out)
    }
}

/// The Argon2id hash of one attempt.
pub struct CodeHash(Zeroizing<[u8; 32]>);

/// What hashing an attempt against a set needs: its cost and salt (no
/// secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    kdf: KdfParams,
    salt: [u8; 16],
}

impl Probe {
    /// The cost of one hash.
    pub fn kdf(&self) -> KdfParams {
        self.kdf
    }

    /// Hashes `code` in memory from `mem` (waits for a buffer if all are in
    /// use).
    pub fn hash(&self, code: &Code, mem: &KdfMemory) -> Result<CodeHash, Error> {
        mem.hash(self.kdf, &self.salt, code.as_bytes())
    }
}

impl BackupCodeSet {
    /// Issues a fresh set of [`COUNT`] distinct codes.
    pub fn generate(kdf: KdfParams, mem: &KdfMemory) -> Result<(Vec<PlainCode>, Self), Error> {
        let mut rng = rand::rngs::OsRng;
        let mut salt = [0u8; 16];
        rng.fill(&mut salt);
        let mut plain: Vec<PlainCode> = Vec::with_capacity(COUNT);
        while plain.len() < COUNT {
            let n: u32 = rng.gen_range(0..100_000_000);
            let code = Zeroizing::new(format!("{n:08}"));
            if !plain.iter().any(|c| c.as_str() == code.as_str()) {
                plain.push(code);
            }
        }
        let hashes = plain
            .iter()
            .map(|c| mem.hash(kdf, &salt, c.as_bytes()).map(|h| *h.0))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((plain, Self { kdf, salt, hashes }))
    }

    /// Codes not used yet.
    pub fn remaining(&self) -> usize {
        self.hashes.len()
    }

    /// Could `code` be one of these codes (so that it is worth hashing)?
    pub fn may_hold(&self, code: &Code) -> bool {
        code.len() == DIGITS && !self.hashes.is_empty()
    }

    /// What hashing an attempt against this set needs.
    pub fn probe(&self) -> Probe {
        Probe {
            kdf: self.kdf,
            salt: self.salt,
        }
    }

    /// If `hash` (made with `probe`) is the hash of an unused code, removes
    /// that code and returns `Some(true)`; `Some(false)` if it is not;
    /// `None` if `probe` is not this set's (the set was replaced in
    /// between). Every stored hash is compared, in constant time.
    pub fn consume_hash(&mut self, probe: &Probe, hash: &CodeHash) -> Option<bool> {
        if *probe != self.probe() {
            return None;
        }
        let mut found = None;
        for (i, stored) in self.hashes.iter().enumerate() {
            if bool::from(stored.ct_eq(&*hash.0)) {
                found = Some(i);
            }
        }
        Some(match found {
            Some(i) => {
                self.hashes.swap_remove(i);
                true
            }
            None => false,
        })
    }

    /// Hashes and consumes in one go (the caller holds the user's lock for
    /// the whole hash: for tests and tools, not for logins).
    pub fn consume(&mut self, code: &Code, mem: &KdfMemory) -> Result<bool, Error> {
        if !self.may_hold(code) {
            return Ok(false);
        }
        let probe = self.probe();
        let hash = probe.hash(code, mem)?;
        Ok(self.consume_hash(&probe, &hash).unwrap_or(false))
    }

    /// Identifies this set among the user's sets (from its random salt).
    pub(crate) fn set_id(&self) -> u64 {
        fingerprint(&self.salt)
    }

    /// Short fingerprints of the unused codes' hashes (for the replay
    /// watermarks, which only ever remove codes).
    pub(crate) fn fingerprints(&self) -> Vec<u64> {
        self.hashes.iter().map(|h| fingerprint(h)).collect()
    }

    /// Drops every unused code whose fingerprint is not in `keep`; returns
    /// how many were dropped.
    pub(crate) fn retain_fingerprints(&mut self, keep: &[u64]) -> usize {
        let before = self.hashes.len();
        self.hashes.retain(|h| keep.contains(&fingerprint(h)));
        before - self.hashes.len()
    }
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    for (dst, src) in first.iter_mut().zip(bytes) {
        *dst = *src;
    }
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> KdfParams {
        KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        }
    }

    fn mem() -> KdfMemory {
        KdfMemory::new(1)
    }

    fn code(s: &str) -> Code {
        match Code::parse(s.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn ten_distinct_eight_digit_codes_each_work_once_in_any_order() -> Result<(), Error> {
        let (plain, mut set) = BackupCodeSet::generate(cheap(), &mem())?;
        assert_eq!(plain.len(), COUNT);
        for c in &plain {
            assert_eq!(c.len(), DIGITS);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
        let mut sorted: Vec<&str> = plain.iter().map(|c| c.as_str()).collect();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), COUNT);

        for (used, c) in plain.iter().rev().enumerate() {
            assert!(set.consume(&code(c), &mem())?);
            assert_eq!(set.remaining(), COUNT - used - 1);
            assert!(!set.consume(&code(c), &mem())?, "a code worked twice");
        }
        Ok(())
    }

    #[test]
    fn wrong_codes_and_other_sets_do_not_match() -> Result<(), Error> {
        let (plain, mut set) = BackupCodeSet::generate(cheap(), &mem())?;
        let (other_plain, _) = BackupCodeSet::generate(cheap(), &mem())?;
        for c in other_plain.iter().filter(|c| !plain.contains(c)) {
            assert!(!set.consume(&code(c), &mem())?);
        }
        assert!(!set.consume(&code("123456"), &mem())?);
        assert_eq!(set.remaining(), COUNT);
        Ok(())
    }

    #[test]
    fn a_hash_made_for_a_replaced_set_decides_nothing() -> Result<(), Error> {
        let mem = mem();
        let (plain, mut set) = BackupCodeSet::generate(cheap(), &mem)?;
        let (_, other) = BackupCodeSet::generate(cheap(), &mem)?;
        let c = code(&plain[0]);
        let stale = other.probe().hash(&c, &mem)?;
        assert_eq!(set.consume_hash(&other.probe(), &stale), None);
        let fresh = set.probe().hash(&c, &mem)?;
        assert_eq!(set.consume_hash(&set.probe(), &fresh), Some(true));
        assert_eq!(set.consume_hash(&set.probe(), &fresh), Some(false));
        Ok(())
    }

    #[test]
    fn the_memory_pool_never_holds_more_buffers_than_its_size() -> Result<(), Error> {
        let mem = std::sync::Arc::new(KdfMemory::new(2));
        let (plain, set) = BackupCodeSet::generate(cheap(), &mem)?;
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (mem, probe, c) = (mem.clone(), set.probe(), code(&plain[1]));
                std::thread::spawn(move || probe.hash(&c, &mem).map(|h| *h.0))
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
        set.probe().hash(&code(&plain[1]), &mem)?;
        assert_eq!(mem.held(), 1);
        Ok(())
    }

    /// Hashing in pooled memory gives what Argon2id's own allocating call
    /// gives (so existing stores keep verifying).
    #[test]
    fn pooled_hash_equals_the_plain_argon2id_hash() -> Result<(), Error> {
        let kdf = cheap();
        let salt = [7u8; 16];
        let params = Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut plain = [0u8; 32];
        Argon2::new(Argon2Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(b"12345678", &salt, &mut plain)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mem = mem();
        // A bigger buffer left from an earlier, costlier hash is fine too.
        mem.hash(KdfParams { m_kib: 256, ..kdf }, &salt, b"1")?;
        let pooled = mem.hash(kdf, &salt, b"12345678")?;
        assert_eq!(*pooled.0, plain);
        Ok(())
    }

    #[test]
    fn stored_form_holds_no_plain_code() -> Result<(), Error> {
        let (plain, set) = BackupCodeSet::generate(cheap(), &mem())?;
        let stored = serde_json::to_string(&set).map_err(|e| Error::Internal(e.to_string()))?;
        for c in &plain {
            assert!(!stored.contains(c.as_str()));
        }
        Ok(())
    }
}

//! Single-use backup codes: 8 random digits each, stored only as Argon2id
//! hashes, consumed in any order.
//!
//! Hashing is split from the decision so that it can run without the
//! user's lock: [`BackupCodeSet::probe`] names the salt and cost,
//! [`Probe::hash`] does the work in working memory the caller lends (see
//! [`Scratch`]), and [`BackupCodeSet::consume_hash`] decides on the result.

use rand::Rng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::Random;
use crate::error::Error;
use crate::kdf::{self, KdfHash, KdfParams, Scratch};
use crate::secret::Code;

/// Codes issued at a time.
pub const COUNT: usize = 10;
/// Digits per code.
pub const DIGITS: usize = 8;

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

    /// Hashes `code` in working memory from `scratch`.
    pub fn hash(&self, code: &[u8], scratch: &dyn Scratch) -> Result<KdfHash, Error> {
        kdf::hash(self.kdf, &self.salt, code, scratch)
    }
}

impl BackupCodeSet {
    /// Issues a fresh set of [`COUNT`] distinct codes.
    pub fn generate(
        kdf: KdfParams,
        rng: &mut dyn Random,
        scratch: &dyn Scratch,
    ) -> Result<(Vec<PlainCode>, Self), Error> {
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
            .map(|c| kdf::hash(kdf, &salt, c.as_bytes(), scratch).map(|h| *h.expose()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((plain, Self { kdf, salt, hashes }))
    }

    /// Takes over codes issued by another tool (google-authenticator's
    /// scratch codes): each must be [`DIGITS`] digits; repeats count once.
    /// Only their hashes are kept.
    pub fn from_plain(
        codes: &[Code],
        kdf: KdfParams,
        rng: &mut dyn Random,
        scratch: &dyn Scratch,
    ) -> Result<Self, Error> {
        if codes.iter().any(|c| c.len() != DIGITS) {
            return Err(Error::InvalidArgument(format!(
                "backup codes must be {DIGITS} digits"
            )));
        }
        if codes.len() > 4 * COUNT {
            return Err(Error::InvalidArgument(format!(
                "at most {} backup codes",
                4 * COUNT
            )));
        }
        let mut salt = [0u8; 16];
        rng.fill(&mut salt);
        let mut hashes: Vec<[u8; 32]> = Vec::with_capacity(codes.len());
        for c in codes {
            let h = *kdf::hash(kdf, &salt, c.as_bytes(), scratch)?.expose();
            if !hashes.contains(&h) {
                hashes.push(h);
            }
        }
        Ok(Self { kdf, salt, hashes })
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
    pub fn consume_hash(&mut self, probe: &Probe, hash: &KdfHash) -> Option<bool> {
        if *probe != self.probe() {
            return None;
        }
        let mut found = None;
        for (i, stored) in self.hashes.iter().enumerate() {
            if bool::from(stored.ct_eq(hash.expose())) {
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
    pub fn consume(&mut self, code: &Code, scratch: &dyn Scratch) -> Result<bool, Error> {
        if !self.may_hold(code) {
            return Ok(false);
        }
        let probe = self.probe();
        let hash = probe.hash(code.as_bytes(), scratch)?;
        Ok(self.consume_hash(&probe, &hash).unwrap_or(false))
    }

    /// Identifies this set among the user's sets (from its random salt).
    pub fn set_id(&self) -> u64 {
        fingerprint(&self.salt)
    }

    /// Short fingerprints of the unused codes' hashes (for the replay
    /// watermarks, which only ever remove codes).
    pub fn fingerprints(&self) -> Vec<u64> {
        self.hashes.iter().map(|h| fingerprint(h)).collect()
    }

    /// Drops every unused code whose fingerprint is not in `keep`; returns
    /// how many were dropped.
    pub fn retain_fingerprints(&mut self, keep: &[u64]) -> usize {
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
    use crate::kdf::Fresh;
    use rand::rngs::OsRng;

    fn cheap() -> KdfParams {
        KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        }
    }

    fn mem() -> Fresh {
        Fresh
    }

    fn code(s: &str) -> Code {
        match Code::parse(s.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn ten_distinct_eight_digit_codes_each_work_once_in_any_order() -> Result<(), Error> {
        let (plain, mut set) = BackupCodeSet::generate(cheap(), &mut OsRng, &mem())?;
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
        let (plain, mut set) = BackupCodeSet::generate(cheap(), &mut OsRng, &mem())?;
        let (other_plain, _) = BackupCodeSet::generate(cheap(), &mut OsRng, &mem())?;
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
        let (plain, mut set) = BackupCodeSet::generate(cheap(), &mut OsRng, &mem)?;
        let (_, other) = BackupCodeSet::generate(cheap(), &mut OsRng, &mem)?;
        let c = code(&plain[0]);
        let stale = other.probe().hash(c.as_bytes(), &mem)?;
        assert_eq!(set.consume_hash(&other.probe(), &stale), None);
        let fresh = set.probe().hash(c.as_bytes(), &mem)?;
        assert_eq!(set.consume_hash(&set.probe(), &fresh), Some(true));
        assert_eq!(set.consume_hash(&set.probe(), &fresh), Some(false));
        Ok(())
    }

    #[test]
    fn stored_form_holds_no_plain_code() -> Result<(), Error> {
        let (plain, set) = BackupCodeSet::generate(cheap(), &mut OsRng, &mem())?;
        let stored = serde_json::to_string(&set).map_err(|_| Error::Internal("json"))?;
        for c in &plain {
            assert!(!stored.contains(c.as_str()));
        }
        Ok(())
    }
}

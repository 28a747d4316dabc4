//! Single-use backup codes: 8 random digits each, stored only as Argon2id
//! hashes, consumed in any order.

use argon2::{Algorithm as Argon2Algorithm, Argon2, Params, Version};
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

fn hash(kdf: KdfParams, salt: &[u8; 16], code: &[u8]) -> Result<[u8; 32], Error> {
    let params = Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
        .map_err(|e| Error::Internal(format!("backup-code KDF parameters: {e}")))?;
    let argon = Argon2::new(Argon2Algorithm::Argon2id, Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(code, salt, &mut out)
        .map_err(|e| Error::Internal(format!("backup-code KDF: {e}")))?;
    Ok(out)
}

impl BackupCodeSet {
    /// Issues a fresh set of [`COUNT`] distinct codes.
    pub fn generate(kdf: KdfParams) -> Result<(Vec<PlainCode>, Self), Error> {
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
            .map(|c| hash(kdf, &salt, c.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((plain, Self { kdf, salt, hashes }))
    }

    /// Codes not used yet.
    pub fn remaining(&self) -> usize {
        self.hashes.len()
    }

    /// If `code` is one of the unused codes, removes it and returns true.
    /// Every stored hash is compared, in constant time.
    pub fn consume(&mut self, code: &Code) -> Result<bool, Error> {
        if code.len() != DIGITS || self.hashes.is_empty() {
            return Ok(false);
        }
        let candidate = Zeroizing::new(hash(self.kdf, &self.salt, code.as_bytes())?);
        let mut found = None;
        for (i, stored) in self.hashes.iter().enumerate() {
            if bool::from(stored.ct_eq(&*candidate)) {
                found = Some(i);
            }
        }
        match found {
            Some(i) => {
                self.hashes.swap_remove(i);
                Ok(true)
            }
            None => Ok(false),
        }
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

    fn code(s: &str) -> Code {
        match Code::parse(s.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn ten_distinct_eight_digit_codes_each_work_once_in_any_order() -> Result<(), Error> {
        let (plain, mut set) = BackupCodeSet::generate(cheap())?;
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
            assert!(set.consume(&code(c))?);
            assert_eq!(set.remaining(), COUNT - used - 1);
            assert!(!set.consume(&code(c))?, "a code worked twice");
        }
        Ok(())
    }

    #[test]
    fn wrong_codes_and_other_sets_do_not_match() -> Result<(), Error> {
        let (plain, mut set) = BackupCodeSet::generate(cheap())?;
        let (other_plain, _) = BackupCodeSet::generate(cheap())?;
        for c in other_plain.iter().filter(|c| !plain.contains(c)) {
            assert!(!set.consume(&code(c))?);
        }
        assert!(!set.consume(&code("123456"))?);
        assert_eq!(set.remaining(), COUNT);
        Ok(())
    }

    #[test]
    fn stored_form_holds_no_plain_code() -> Result<(), Error> {
        let (plain, set) = BackupCodeSet::generate(cheap())?;
        let stored = serde_json::to_string(&set).map_err(|e| Error::Internal(e.to_string()))?;
        for c in &plain {
            assert!(!stored.contains(c.as_str()));
        }
        Ok(())
    }
}

//! Argon2id, the one slow hash otpd uses (backup codes, app passwords).
//!
//! The core computes; the caller lends the working memory through
//! [`Scratch`], so that the daemon can bound and reuse it (a pool of a few
//! buffers) while tests and tools simply allocate ([`Fresh`]).

use argon2::{Algorithm as Argon2Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use argon2::Block;

use crate::error::Error;

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

/// Working memory for one hash at a time.
pub trait Scratch: Send + Sync {
    /// A buffer (any length; it is grown to the blocks a hash needs). May
    /// wait until one is free.
    fn take(&self) -> Vec<Block>;
    /// Gives a buffer back after the hash.
    fn give_back(&self, buf: Vec<Block>);
}

/// Scratch that allocates for each hash and frees after it (tests, tools,
/// enrollment paths that are not under attack).
#[derive(Debug, Default, Clone, Copy)]
pub struct Fresh;

impl Scratch for Fresh {
    fn take(&self) -> Vec<Block> {
        Vec::new()
    }

    fn give_back(&self, _buf: Vec<Block>) {}
}

/// The 32-byte Argon2id hash of one input; zeroized on drop.
pub struct KdfHash(Zeroizing<[u8; 32]>);

impl KdfHash {
    /// The hash bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for KdfHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KdfHash(<redacted>)")
    }
}

/// Argon2id of `input` with `salt` at cost `kdf`, in memory from `scratch`.
pub fn hash(
    kdf: KdfParams,
    salt: &[u8; 16],
    input: &[u8],
    scratch: &dyn Scratch,
) -> Result<KdfHash, Error> {
    let params = Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
        .map_err(|_| Error::Internal("KDF parameters out of range"))?;
    let blocks = params.block_count();
    let argon = Argon2::new(Argon2Algorithm::Argon2id, Version::V0x13, params);
    let mut out = KdfHash(Zeroizing::new([0u8; 32]));
    let mut buf = scratch.take();
    if buf.len() < blocks {
        buf.resize(blocks, Block::new());
    }
    let result = argon.hash_password_into_with_memory(input, salt, &mut *out.0, &mut buf[..]);
    scratch.give_back(buf);
    result.map_err(|_| Error::Internal("KDF failed"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashing in lent memory gives what Argon2id's own allocating call
    /// gives (so existing stores keep verifying).
    #[test]
    fn lent_memory_hash_equals_the_plain_argon2id_hash() -> Result<(), Error> {
        let kdf = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let salt = [7u8; 16];
        let params = Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
            .map_err(|_| Error::Internal("params"))?;
        let mut plain = [0u8; 32];
        Argon2::new(Argon2Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(b"12345678", &salt, &mut plain)
            .map_err(|_| Error::Internal("argon2"))?;
        assert_eq!(hash(kdf, &salt, b"12345678", &Fresh)?.expose(), &plain);
        Ok(())
    }
}

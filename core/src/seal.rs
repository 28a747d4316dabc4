//! Sealing of user records: XChaCha20-Poly1305 under the master key, with
//! the user name bound as associated data.
//!
//! Sealed format: `version (1 byte) || nonce (24 bytes) || ciphertext+tag`.
//! The associated data is `"otpd.v1.user\0" || version || user name`, so a
//! record copied under another user's name, or altered in any byte, does not
//! open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::Random;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
/// Length of the master key in bytes.
pub const KEY_LEN: usize = 32;
const AAD_PREFIX: &[u8] = b"otpd.v1.user\0";

/// The key that seals every user record. Zeroized on drop, never printed.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Why a sealed record did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Too short or an unknown format version.
    #[error("malformed sealed record")]
    Malformed,
    /// Authentication failed: altered, another user's, or another key.
    #[error("sealed record does not authenticate")]
    Forged,
}

impl MasterKey {
    /// A random key (for tests and first start).
    pub fn generate(rng: &mut dyn Random) -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(key.as_mut());
        Self(key)
    }

    /// The key from its 32 bytes (as read from the key file).
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        Self(bytes)
    }

    /// A short public identifier of the key (not secret: derived by
    /// sealing nothing), to tell keys apart during a rotation.
    pub fn id(&self) -> u64 {
        let aad = b"otpd.v1.key-id";
        let tag = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&[0u8; NONCE_LEN]),
                Payload { msg: &[], aad },
            )
            .unwrap_or_default();
        let mut first = [0u8; 8];
        for (d, s) in first.iter_mut().zip(&tag) {
            *d = *s;
        }
        u64::from_le_bytes(first)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(self.0.as_ref()))
    }
}

fn aad(user: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + 1 + user.len());
    aad.extend_from_slice(AAD_PREFIX);
    aad.push(VERSION);
    aad.extend_from_slice(user.as_bytes());
    aad
}

/// Seals `plaintext` for `user`.
pub fn seal(
    key: &MasterKey,
    user: &str,
    plaintext: &[u8],
    rng: &mut dyn Random,
) -> Result<Vec<u8>, Error> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let aad = aad(user);
    let ciphertext = key
        .cipher()
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| Error::Internal("record encryption failed"))?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens a record sealed for `user`.
pub fn open(key: &MasterKey, user: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let (&version, rest) = sealed.split_first().ok_or(OpenError::Malformed)?;
    if version != VERSION || rest.len() < NONCE_LEN + 16 {
        return Err(OpenError::Malformed);
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let aad = aad(user);
    key.cipher()
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| OpenError::Forged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    #[test]
    fn round_trip() -> Result<(), Error> {
        let key = MasterKey::generate(&mut OsRng);
        let sealed = seal(&key, "alice", b"the secret", &mut OsRng)?;
        assert_eq!(
            open(&key, "alice", &sealed)
                .as_deref()
                .map(|v| v.as_slice()),
            Ok(&b"the secret"[..])
        );
        // Fresh nonce each time.
        assert_ne!(sealed, seal(&key, "alice", b"the secret", &mut OsRng)?);
        Ok(())
    }

    #[test]
    fn plaintext_is_not_in_the_sealed_bytes() -> Result<(), Error> {
        let key = MasterKey::generate(&mut OsRng);
        let sealed = seal(&key, "alice", b"JBSWY3DPEHPK3PXP", &mut OsRng)?;
        assert!(!sealed.windows(16).any(|w| w == b"JBSWY3DPEHPK3PXP"));
        Ok(())
    }

    #[test]
    fn every_flipped_bit_is_detected() -> Result<(), Error> {
        let key = MasterKey::generate(&mut OsRng);
        let sealed = seal(&key, "alice", b"the secret", &mut OsRng)?;
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut t = sealed.clone();
                t[i] ^= 1 << bit;
                assert!(open(&key, "alice", &t).is_err(), "byte {i} bit {bit}");
            }
        }
        Ok(())
    }

    #[test]
    fn record_moved_to_another_user_does_not_open() -> Result<(), Error> {
        let key = MasterKey::generate(&mut OsRng);
        let sealed = seal(&key, "alice", b"alice's secret", &mut OsRng)?;
        assert_eq!(open(&key, "mallory", &sealed), Err(OpenError::Forged));
        assert_eq!(open(&key, "alice\0", &sealed), Err(OpenError::Forged));
        Ok(())
    }

    #[test]
    fn another_key_does_not_open() -> Result<(), Error> {
        let sealed = seal(&MasterKey::generate(&mut OsRng), "alice", b"x", &mut OsRng)?;
        assert_eq!(
            open(&MasterKey::generate(&mut OsRng), "alice", &sealed),
            Err(OpenError::Forged)
        );
        Ok(())
    }

    #[test]
    fn truncated_or_unknown_version_is_malformed() {
        let key = MasterKey::generate(&mut OsRng);
        assert_eq!(open(&key, "a", &[]), Err(OpenError::Malformed));
        assert_eq!(open(&key, "a", &[1; 20]), Err(OpenError::Malformed));
        assert_eq!(open(&key, "a", &[9; 64]), Err(OpenError::Malformed));
    }
}

//! Sealing of user records: XChaCha20-Poly1305 under the master key, with
//! the user name bound as associated data.
//!
//! Sealed format: `version (1 byte) || nonce (24 bytes) || ciphertext+tag`.
//! The associated data is `"otpd.v1.user\0" || version || user name`, so a
//! record copied under another user's name, or altered in any byte, does not
//! open.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::error::Error;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;
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
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self(key)
    }

    /// Loads the key file, or creates it (mode 0600) if it does not exist.
    ///
    /// Refuses a key file that is not a regular file, is readable or
    /// writable by group or others, is not owned by the daemon's user, or
    /// does not hold exactly 32 bytes.
    pub fn load_or_create(path: &Path) -> Result<Self, Error> {
        match fs::symlink_metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(e) => Err(Error::Key {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    fn load(path: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::Key {
            path: path.to_owned(),
            reason,
        };
        // Open first (never through a symlink), then check what was opened:
        // no window between the check and the read. O_NONBLOCK: opening a
        // FIFO (or a device) put there in its place returns at once instead
        // of waiting for a writer, and is refused below; it does not change
        // how a regular file is read.
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| bad(format!("cannot open (a symlink is refused): {e}")))?;
        let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
        if !meta.file_type().is_file() {
            return Err(bad(format!(
                "not a regular file ({}); remove it and let otpd create a new key, \
                 or restore the key from a backup",
                file_kind(&meta.file_type())
            )));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "mode {mode:04o} lets group or others read it; run `chmod 600 {}` \
                 (and consider the key exposed)",
                path.display()
            )));
        }
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(bad(format!(
                "owned by uid {}, not by the daemon's uid {euid}",
                meta.uid()
            )));
        }
        let mut buf = Zeroizing::new(Vec::with_capacity(KEY_LEN + 1));
        Read::by_ref(&mut file)
            .take(KEY_LEN as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| bad(e.to_string()))?;
        if buf.len() != KEY_LEN {
            return Err(bad(format!(
                "holds {} bytes, expected {KEY_LEN}",
                buf.len()
            )));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&buf);
        Ok(Self(key))
    }

    fn create(path: &Path) -> Result<Self, Error> {
        let bad = |e: std::io::Error| Error::Key {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let key = Self::generate();
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(bad)?;
        file.write_all(key.0.as_ref()).map_err(bad)?;
        file.sync_all().map_err(bad)?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(bad)?;
        }
        Ok(key)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(self.0.as_ref()))
    }
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a file"
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
pub fn seal(key: &MasterKey, user: &str, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
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
        .map_err(|_| Error::Internal("record encryption failed".into()))?;
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

    #[test]
    fn round_trip() -> Result<(), Error> {
        let key = MasterKey::generate();
        let sealed = seal(&key, "alice", b"the secret")?;
        assert_eq!(
            open(&key, "alice", &sealed)
                .as_deref()
                .map(|v| v.as_slice()),
            Ok(&b"the secret"[..])
        );
        // Fresh nonce each time.
        assert_ne!(sealed, seal(&key, "alice", b"the secret")?);
        Ok(())
    }

    #[test]
    fn plaintext_is_not_in_the_sealed_bytes() -> Result<(), Error> {
        let key = MasterKey::generate();
        let sealed = seal(&key, "alice", b"JBSWY3DPEHPK3PXP")?;
        assert!(!sealed.windows(16).any(|w| w == b"JBSWY3DPEHPK3PXP"));
        Ok(())
    }

    #[test]
    fn every_flipped_bit_is_detected() -> Result<(), Error> {
        let key = MasterKey::generate();
        let sealed = seal(&key, "alice", b"the secret")?;
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
        let key = MasterKey::generate();
        let sealed = seal(&key, "alice", b"alice's secret")?;
        assert_eq!(open(&key, "mallory", &sealed), Err(OpenError::Forged));
        assert_eq!(open(&key, "alice\0", &sealed), Err(OpenError::Forged));
        Ok(())
    }

    #[test]
    fn another_key_does_not_open() -> Result<(), Error> {
        let sealed = seal(&MasterKey::generate(), "alice", b"x")?;
        assert_eq!(
            open(&MasterKey::generate(), "alice", &sealed),
            Err(OpenError::Forged)
        );
        Ok(())
    }

    #[test]
    fn truncated_or_unknown_version_is_malformed() {
        let key = MasterKey::generate();
        assert_eq!(open(&key, "a", &[]), Err(OpenError::Malformed));
        assert_eq!(open(&key, "a", &[1; 20]), Err(OpenError::Malformed));
        assert_eq!(open(&key, "a", &[9; 64]), Err(OpenError::Malformed));
    }

    #[test]
    fn key_file_created_0600_and_reloaded() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("master.key");
        let a = MasterKey::load_or_create(&path)?;
        let meta = fs::metadata(&path)?;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        let b = MasterKey::load_or_create(&path)?;
        let sealed = seal(&a, "u", b"x")?;
        assert!(open(&b, "u", &sealed).is_ok());
        Ok(())
    }

    #[test]
    fn key_file_readable_by_others_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("master.key");
        MasterKey::load_or_create(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640))?;
        let err = MasterKey::load_or_create(&path)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("0640") && e.contains("chmod 600")),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn key_file_behind_a_symlink_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let real = dir.path().join("elsewhere.key");
        MasterKey::load_or_create(&real)?;
        let link = dir.path().join("master.key");
        std::os::unix::fs::symlink(&real, &link)?;
        let err = MasterKey::load_or_create(&link)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("symlink")),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn key_file_of_wrong_length_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("master.key");
        fs::write(&path, b"short")?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        assert!(MasterKey::load_or_create(&path).is_err());
        Ok(())
    }

    #[test]
    fn a_fifo_in_place_of_the_key_is_refused_without_blocking()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("master.key");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
        // On a thread, so that a blocking open fails the test instead of
        // hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(MasterKey::load_or_create(&p).map(|_| ()));
        });
        let result = rx.recv_timeout(std::time::Duration::from_secs(10));
        let Ok(Err(err)) = result else {
            // Unblock the thread (a writer end) before failing.
            let _ = OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(&path);
            return Err(format!("a FIFO key was not refused promptly: {result:?}").into());
        };
        assert!(
            err.to_string().contains("not a regular file (a FIFO)"),
            "{err}"
        );
        Ok(())
    }
}

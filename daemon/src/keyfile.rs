//! The master key file: read with every check a key file deserves (mode,
//! owner, type, length, no symlink), or created 0600 on first start.
//! Sealing itself is pure and lives in the core (`otpd_core::seal`).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use otpd_core::seal::{KEY_LEN, MasterKey};
use zeroize::Zeroizing;

use crate::error::Error;

/// Loads the key file, or creates it (mode 0600) if it does not exist.
///
/// Refuses a key file that is not a regular file, is readable or
/// writable by group or others, is not owned by the daemon's user, or
/// does not hold exactly 32 bytes.
pub fn load_or_create(path: &Path) -> Result<MasterKey, Error> {
    match fs::symlink_metadata(path) {
        Ok(_) => load(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(e) => Err(Error::Key {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

fn load(path: &Path) -> Result<MasterKey, Error> {
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
    Ok(MasterKey::from_bytes(key))
}

fn create(path: &Path) -> Result<MasterKey, Error> {
    let bad = |e: std::io::Error| Error::Key {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, bytes.as_mut());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(bad)?;
    file.write_all(bytes.as_ref()).map_err(bad)?;
    file.sync_all().map_err(bad)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(bad)?;
    }
    Ok(MasterKey::from_bytes(bytes))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_created_0600_and_reloaded() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("master.key");
        let a = load_or_create(&path)?;
        let meta = fs::metadata(&path)?;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        let b = load_or_create(&path)?;
        let sealed = seal(&a, "u", b"x")?;
        assert!(open(&b, "u", &sealed).is_ok());
        Ok(())
    }

    #[test]
    fn key_file_readable_by_others_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("master.key");
        load_or_create(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640))?;
        let err = load_or_create(&path)
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
        load_or_create(&real)?;
        let link = dir.path().join("master.key");
        std::os::unix::fs::symlink(&real, &link)?;
        let err = load_or_create(&link)
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
        assert!(load_or_create(&path).is_err());
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
            let _ = tx.send(load_or_create(&p).map(|_| ()));
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

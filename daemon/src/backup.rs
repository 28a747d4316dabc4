//! Encrypted backups of the whole store, written by the daemon on its own
//! without ever knowing the backup passphrase.
//!
//! `otpctl backup init` derives an age X25519 key pair from the admin's
//! passphrase (Argon2id, see [`otpd_core::backup`]) and hands otpd the
//! public half with the salt and cost: the key state file
//! (`<state_dir>/backup-key.json`, mode 0600, nothing secret in it). With
//! it otpd writes backups of every user's record and replay watermarks
//! ([`otpd_core::backup::Document`]) as age files into `[backup] directory`:
//! after changes, at most one per `interval_seconds` (told by the injected
//! clock), and at once on `otpctl backup now`. Each file is written to a
//! temporary file, fsynced, renamed into place and the directory fsynced;
//! mode 0600; the oldest beyond `keep` are removed.
//!
//! A failed backup (no directory, full disk) is logged, kept for
//! `otpctl backup status`, and retried after the interval; it never
//! touches a login.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use age_core::format::{FileKey, Stanza};
use otpd_core::backup::{self as document, KdfStanza};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::BackupSection;
use crate::engine::Engine;
use crate::error::Error;
use crate::record::UserName;
use crate::store::{Store, USERS_PAGE, Write};

/// The key state's file name inside the state directory.
pub const KEY_FILE: &str = "backup-key.json";
/// Backup file names: `otpd-backup-<UTC time>[-N].age`.
pub const FILE_PREFIX: &str = "otpd-backup-";
/// The extension of backup files.
pub const FILE_SUFFIX: &str = ".age";
/// The `format` of the key state file.
const KEY_FORMAT: &str = "otpd-backup-key";
/// How often the scheduler looks at the clock when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);

/// Counts the store's writes, so the scheduler knows whether a backup is
/// due, and wakes it.
#[derive(Debug, Default)]
pub struct Changes {
    count: AtomicU64,
    wake: tokio::sync::Notify,
}

impl Changes {
    /// Writes so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    fn bump(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// A store that counts its writes in [`Changes`].
pub struct Counting {
    inner: Box<dyn Store>,
    changes: Arc<Changes>,
}

impl Counting {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Store>, changes: Arc<Changes>) -> Self {
        Self { inner, changes }
    }
}

impl Store for Counting {
    fn get(&self, user: &UserName) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get(user)
    }

    fn update(
        &self,
        user: &UserName,
        decide: &mut dyn FnMut(Option<&[u8]>) -> Result<Write, Error>,
    ) -> Result<(), Error> {
        let mut wrote = false;
        let r = self.inner.update(user, &mut |current| {
            let write = decide(current)?;
            wrote = write != Write::Keep;
            Ok(write)
        });
        if r.is_ok() && wrote {
            self.changes.bump();
        }
        r
    }

    fn update_batch(
        &self,
        users: &[UserName],
        decide: &mut dyn FnMut(usize, Option<&[u8]>) -> Result<Write, Error>,
        before_write: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let mut wrote = false;
        let r = self.inner.update_batch(
            users,
            &mut |i, current| {
                let write = decide(i, current)?;
                wrote |= write != Write::Keep;
                Ok(write)
            },
            before_write,
        );
        if wrote {
            self.changes.bump();
        }
        r
    }

    fn list(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, Error> {
        self.inner.list(after, limit)
    }

    fn is_empty(&self) -> Result<bool, Error> {
        self.inner.is_empty()
    }
}

/// The backup key as otpd keeps it: the public half and how the secret
/// half is derived from the passphrase. Nothing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyState {
    /// `otpd-backup-key`.
    pub format: String,
    /// 1.
    pub version: u32,
    /// The age recipient (`age1...`).
    pub recipient: String,
    /// Salt and Argon2id cost.
    pub kdf: KdfStanza,
    /// When it was set, Unix seconds.
    pub set_at: u64,
}

/// The key state's path inside the state directory.
pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(KEY_FILE)
}

fn load_key(path: &Path) -> Result<Option<KeyState>, String> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let key: KeyState = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    if key.format != KEY_FORMAT || key.version != 1 {
        return Err("not an otpd backup key state of version 1".into());
    }
    check_key(&key.recipient, &key.kdf).map_err(|e| e.to_string())?;
    Ok(Some(key))
}

fn check_key(recipient: &str, kdf: &KdfStanza) -> Result<age::x25519::Recipient, Error> {
    let r = age::x25519::Recipient::from_str(recipient)
        .map_err(|e| Error::BackupKey(format!("the public key is not an age X25519 key: {e}")))?;
    KdfStanza::parse(&kdf.args()).map_err(|e| Error::BackupKey(e.to_string()))?;
    Ok(r)
}

/// The stanza that carries the key derivation in every backup's header;
/// it wraps nothing (stock age ignores it, see [`otpd_core::backup`]).
struct KdfRecipient<'a>(&'a KdfStanza);

impl age::Recipient for KdfRecipient<'_> {
    fn wrap_file_key(
        &self,
        _file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        Ok((
            vec![Stanza {
                tag: document::STANZA_TAG.to_owned(),
                args: self.0.args(),
                body: Vec::new(),
            }],
            HashSet::new(),
        ))
    }
}

/// What `otpctl backup status` shows.
#[derive(Debug, Clone)]
pub struct Status {
    /// The key, if set.
    pub key: Option<KeyState>,
    /// `[backup]`.
    pub config: BackupSection,
    /// The last backup written: Unix time and file.
    pub last: Option<(u64, PathBuf)>,
    /// The last failure (time, reason), if the last attempt failed.
    pub last_error: Option<(u64, String)>,
    /// Changes not in a backup yet.
    pub pending: bool,
}

/// A backup written.
#[derive(Debug, Clone)]
pub struct Written {
    /// The file.
    pub file: PathBuf,
    /// When (Unix seconds).
    pub time: u64,
    /// Users in it.
    pub users: u64,
    /// Users left out because their records do not open (they fail closed).
    pub unreadable: u64,
    /// Older files removed (beyond `keep`).
    pub removed: u64,
}

#[derive(Default)]
struct State {
    key: Option<KeyState>,
    last: Option<(u64, PathBuf)>,
    last_error: Option<(u64, String)>,
    /// [`Changes::count`] when the last successful backup started.
    done: Option<u64>,
    /// When the last automatic or manual attempt started.
    last_attempt: Option<u64>,
}

/// The backup writer and its schedule.
pub struct Backups {
    engine: Arc<Engine>,
    clock: Arc<dyn Clock>,
    changes: Arc<Changes>,
    config: BackupSection,
    key_path: PathBuf,
    host: String,
    state: Mutex<State>,
    /// One backup (or key change) at a time.
    writing: Mutex<()>,
}

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backups")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Backups {
    /// Backups of `engine`'s store, whose writes `changes` counts. A key
    /// state file that does not load is logged and reported (backups stop
    /// until `otpctl backup init` sets a key again); it never stops otpd.
    pub fn new(
        engine: Arc<Engine>,
        clock: Arc<dyn Clock>,
        changes: Arc<Changes>,
        config: BackupSection,
        state_dir: &Path,
    ) -> Self {
        let key_path = key_path(state_dir);
        let mut state = State::default();
        match load_key(&key_path) {
            Ok(key) => state.key = key,
            Err(reason) => {
                tracing::error!(
                    path = %key_path.display(),
                    reason = reason.as_str(),
                    "the backup key state does not load; no backups are written until \
                     `otpctl backup init` sets a key"
                );
                state.last_error = Some((
                    clock.now(),
                    format!("backup key state {}: {reason}", key_path.display()),
                ));
            }
        }
        state.last = newest_file(&config.directory);
        Self {
            engine,
            clock,
            changes,
            config,
            key_path,
            host: host_name(),
            state: Mutex::new(state),
            writing: Mutex::new(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn writing(&self) -> MutexGuard<'_, ()> {
        self.writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state `otpctl backup status` shows.
    pub fn status(&self) -> Status {
        let st = self.state();
        Status {
            key: st.key.clone(),
            config: self.config.clone(),
            last: st.last.clone(),
            last_error: st.last_error.clone(),
            pending: st.key.is_some() && st.done != Some(self.changes.count()),
        }
    }

    /// Sets the backup key. `expected`: `None` for the first key (refused
    /// if one is set); else the recipient of the key being replaced (a
    /// change of passphrase; refused if it is not the current one). Waits
    /// for a backup in progress, so that no backup under the old key is
    /// written after this returns. The next backup comes at once.
    pub fn set_key(
        &self,
        recipient: &str,
        kdf: KdfStanza,
        expected: Option<&str>,
    ) -> Result<(), Error> {
        check_key(recipient, &kdf)?;
        let _writing = self.writing();
        let current = self.state().key.clone();
        match (expected, &current) {
            (None, Some(_)) => {
                return Err(Error::BackupKey(
                    "a backup key is set already; change it with `otpctl backup \
                     change-passphrase`"
                        .into(),
                ));
            }
            (Some(_), None) => {
                return Err(Error::BackupKey(
                    "no backup key is set; set one with `otpctl backup init`".into(),
                ));
            }
            (Some(e), Some(c)) if e != c.recipient => {
                return Err(Error::BackupKey(
                    "the backup key changed meanwhile; run the command again".into(),
                ));
            }
            _ => {}
        }
        let key = KeyState {
            format: KEY_FORMAT.to_owned(),
            version: 1,
            recipient: recipient.to_owned(),
            kdf,
            set_at: self.clock.now(),
        };
        let json = serde_json::to_vec_pretty(&key)
            .map_err(|e| Error::Internal(format!("encode the backup key state: {e}")))?;
        let dir = self.key_path.parent().unwrap_or_else(|| Path::new("/"));
        write_atomically(dir, &self.key_path, &mut |f| f.write_all(&json)).map_err(|reason| {
            Error::BackupKey(format!(
                "cannot write {}: {reason}",
                self.key_path.display()
            ))
        })?;
        let mut st = self.state();
        st.key = Some(key);
        st.done = None;
        st.last_attempt = None;
        drop(st);
        self.changes.wake.notify_one();
        Ok(())
    }

    /// Writes a backup now (blocking: run it off the async workers).
    /// Failures are logged and kept for the status too.
    pub fn backup_now(&self) -> Result<Written, Error> {
        let now = self.clock.now();
        self.state().last_attempt = Some(now);
        let changes = self.changes.count();
        match self.write(now) {
            Ok(w) => {
                tracing::info!(
                    file = %w.file.display(),
                    users = w.users,
                    unreadable = w.unreadable,
                    removed = w.removed,
                    "backup written"
                );
                let mut st = self.state();
                st.last = Some((w.time, w.file.clone()));
                st.last_error = None;
                st.done = Some(changes);
                Ok(w)
            }
            Err(e) => {
                tracing::error!(error = %e, "backup failed; logins are unaffected");
                self.state().last_error = Some((now, e.to_string()));
                Err(e)
            }
        }
    }

    /// Whether an automatic backup is due: a key is set, the store changed
    /// since the last backup, and the interval since the last attempt has
    /// passed.
    fn due(&self) -> bool {
        let st = self.state();
        if st.key.is_none() || st.done == Some(self.changes.count()) {
            return false;
        }
        let now = self.clock.now();
        st.last_attempt
            .is_none_or(|t| now >= t.saturating_add(self.config.interval_seconds))
    }

    /// Writes automatic backups until the task is dropped: woken by every
    /// change and once a second (to notice the clock pass the interval).
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.changes.wake.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
            if !self.due() {
                continue;
            }
            let me = Arc::clone(&self);
            // Errors are logged and kept by backup_now.
            let _ = tokio::task::spawn_blocking(move || me.backup_now()).await;
        }
    }

    fn write(&self, now: u64) -> Result<Written, Error> {
        let _writing = self.writing();
        let key = self.state().key.clone().ok_or_else(|| {
            Error::BackupKey("no backup key is set; set one with `otpctl backup init`".into())
        })?;
        let recipient = check_key(&key.recipient, &key.kdf)?;
        let dir = &self.config.directory;
        let bad = |path: &Path, reason: String| Error::Backup {
            path: path.to_owned(),
            reason,
        };
        prepare_dir(dir).map_err(|r| bad(dir, r))?;
        let kdf = KdfRecipient(&key.kdf);
        let recipients: [&dyn age::Recipient; 2] = [&recipient, &kdf];
        let name = free_name(dir, now);
        let mut users = 0u64;
        let mut unreadable = 0u64;
        let mut failure: Option<Error> = None;
        write_atomically(dir, &name, &mut |file| {
            let encryptor = age::Encryptor::with_recipients(recipients.into_iter())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut out = encryptor.wrap_output(BufWriter::new(file.try_clone()?))?;
            match self.write_document(&mut out, now, &mut users, &mut unreadable) {
                Ok(()) => {}
                Err(e) => {
                    let msg = e.to_string();
                    failure = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
            out.finish()?.flush()
        })
        .map_err(|reason| failure.take().unwrap_or_else(|| bad(&name, reason)))?;
        let removed = prune(dir, self.config.keep as usize).map_err(|r| bad(dir, r))?;
        Ok(Written {
            file: name,
            time: now,
            users,
            unreadable,
            removed,
        })
    }

    /// Streams the document (one user at a time, never all records in
    /// memory) into `out`.
    fn write_document(
        &self,
        out: &mut dyn std::io::Write,
        now: u64,
        users: &mut u64,
        unreadable: &mut u64,
    ) -> Result<(), Error> {
        let io = |e: std::io::Error| Error::Internal(format!("write the backup: {e}"));
        let json = |e: serde_json::Error| Error::Internal(format!("encode the backup: {e}"));
        write!(
            out,
            "{{\"format\":{},\"version\":{},\"created\":{now},\"host\":{},\"users\":[",
            serde_json::to_string(document::FORMAT).map_err(json)?,
            document::VERSION,
            serde_json::to_string(&self.host).map_err(json)?,
        )
        .map_err(io)?;
        let mut after: Option<String> = None;
        loop {
            let names = self.engine.user_names(after.as_deref(), USERS_PAGE)?;
            for name in &names {
                let Ok(user) = UserName::parse(name.as_bytes()) else {
                    *unreadable += 1;
                    continue;
                };
                let record = match self.engine.record(&user) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(Error::Core(
                        otpd_core::Error::Corrupted { .. } | otpd_core::Error::NewerRecord { .. },
                    ))
                    | Err(Error::RolledBack { .. }) => {
                        tracing::warn!(
                            user = user.as_str(),
                            "left out of the backup: the record does not open"
                        );
                        *unreadable += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if *users > 0 {
                    out.write_all(b",").map_err(io)?;
                }
                let entry = document::UserEntry {
                    user: user.to_string(),
                    watermarks: document::Watermarks::of(&record),
                    record,
                };
                serde_json::to_writer(&mut *out, &entry).map_err(json)?;
                *users += 1;
            }
            if names.len() < USERS_PAGE {
                break;
            }
            after = names.last().cloned();
        }
        out.write_all(b"]}").map_err(io)
    }
}

/// The host name for the document.
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// Creates the backup directory (mode 0700) if missing; refuses anything
/// but a directory.
fn prepare_dir(dir: &Path) -> Result<(), String> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err("not a directory".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create it: {e}"))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot set mode 0700: {e}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A file name for a backup taken at `now` that is not taken yet.
fn free_name(dir: &Path, now: u64) -> PathBuf {
    let time = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_secs(now.min(253_402_300_799)),
    )
    .to_string()
    .replace(['-', ':'], "");
    let mut n = 0u32;
    loop {
        let name = if n == 0 {
            format!("{FILE_PREFIX}{time}{FILE_SUFFIX}")
        } else {
            format!("{FILE_PREFIX}{time}-{n}{FILE_SUFFIX}")
        };
        let path = dir.join(name);
        if fs::symlink_metadata(&path).is_err() {
            return path;
        }
        n += 1;
    }
}

/// Orders backup file names by time, then by their `-N`.
fn order_key(name: &str) -> Option<(String, u32)> {
    let stem = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    match stem.split_once('-') {
        Some((time, n)) => Some((time.to_owned(), n.parse().ok()?)),
        None => Some((stem.to_owned(), 0)),
    }
}

/// The backup files in `dir`, oldest first.
pub fn list_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<((String, u32), PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(key) = name.to_str().and_then(order_key) else {
            continue;
        };
        if entry.file_type()?.is_file() {
            files.push((key, entry.path()));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

fn newest_file(dir: &Path) -> Option<(u64, PathBuf)> {
    let newest = list_files(dir).ok()?.pop()?;
    let time = fs::metadata(&newest)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Some((time, newest))
}

/// Removes the oldest backup files beyond `keep`; returns how many.
fn prune(dir: &Path, keep: usize) -> Result<u64, String> {
    let files = list_files(dir).map_err(|e| e.to_string())?;
    let excess = files.len().saturating_sub(keep);
    for old in &files[..excess] {
        fs::remove_file(old).map_err(|e| format!("cannot remove {}: {e}", old.display()))?;
    }
    if excess > 0 {
        sync_dir(dir).map_err(|e| e.to_string())?;
    }
    Ok(excess as u64)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `path` (in `dir`) through a temporary file: created mode 0600,
/// filled by `fill`, fsynced, renamed over `path`, and the directory
/// fsynced. On failure the temporary file is removed and `path` is as it
/// was.
pub fn write_atomically(
    dir: &Path,
    path: &Path,
    fill: &mut dyn FnMut(&mut File) -> std::io::Result<()>,
) -> Result<(), String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("otpd"),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        fill(&mut file)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_ordered_by_time_then_number_and_others_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "otpd-backup-20270101T000000Z-1.age",
            "otpd-backup-20270101T000000Z.age",
            "otpd-backup-20261231T235959Z.age",
            "otpd-backup-20270101T000000Z-10.age",
            "otpd-backup-20270101T000000Z-2.age",
            "notes.txt",
            ".otpd-backup-x.tmp",
        ] {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        let names: Vec<String> = list_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "otpd-backup-20261231T235959Z.age",
                "otpd-backup-20270101T000000Z.age",
                "otpd-backup-20270101T000000Z-1.age",
                "otpd-backup-20270101T000000Z-2.age",
                "otpd-backup-20270101T000000Z-10.age",
            ]
        );
        assert_eq!(prune(dir.path(), 2).unwrap(), 3);
        assert_eq!(list_files(dir.path()).unwrap().len(), 2);
        assert!(dir.path().join("notes.txt").exists());
    }

    #[test]
    fn a_name_taken_gets_the_next_number() {
        let dir = tempfile::tempdir().unwrap();
        let first = free_name(dir.path(), 1_800_000_000);
        assert_eq!(
            first.file_name().unwrap(),
            "otpd-backup-20270115T080000Z.age"
        );
        fs::write(&first, b"x").unwrap();
        let second = free_name(dir.path(), 1_800_000_000);
        assert_eq!(
            second.file_name().unwrap(),
            "otpd-backup-20270115T080000Z-1.age"
        );
    }

    #[test]
    fn an_atomic_write_that_fails_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"old").unwrap();
        let r = write_atomically(dir.path(), &path, &mut |f| {
            f.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        write_atomically(dir.path(), &path, &mut |f| f.write_all(b"new")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }
}

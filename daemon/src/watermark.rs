//! Replay watermarks: what a rolled-back store must not undo.
//!
//! A damaged sled log is recovered by dropping the damaged entry and every
//! later one, so an older, validly sealed version of a user record can come
//! back: its replay state (last used TOTP step, unused backup codes) then
//! makes used codes valid again. The watermarks keep, per user, the part of
//! the record that may only move forward, in a journal beside the store
//! (`<state_dir>/watermarks`, mode 0600) that a rollback of the store cannot
//! reach:
//!
//! - the record's write `generation` (each save increments it),
//! - the highest spent TOTP step of the active secret (identified by the
//!   time it was confirmed),
//! - the fingerprints of the unused backup codes of the current set,
//! - when a rollback of this user was detected (until `otpctl reset`).
//!
//! Each save appends the new mark and fsyncs the journal *before* the
//! record is written, and appends a "committed" mark (without fsync) after.
//! A loaded record older than a committed mark was rolled back: it is
//! reported (error log, audit event, `otpctl status`) and repaired in memory
//! (step = max, consumed backup codes removed again). Whether or not the
//! rollback is certain (the unsynced "committed" mark may be lost with the
//! store's write), a record older than a durable mark of a removal, or
//! whose secret is not the last one written, fails closed (`RolledBack`
//! until `otpctl reset`), and a backup-code set that is not the last one
//! written is dropped. The cost: a write that failed after its mark (full
//! disk, crash) and replaced the secret or reset the user leaves that user
//! refused until the admin repeats it.
//! Entries are sealed under the master key like the records, so the
//! journal holds no user name or code fingerprint in clear.
//!
//! Journal format: `length (u32 LE) || sealed JSON mark`, appended; the last
//! mark of a user wins. A torn last entry (crash during an append) is cut
//! off with a warning; damage anywhere else stops the daemon at start with
//! a clear error, because it would silently weaken replay protection.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write as _};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::crypto::{self, MasterKey};
use crate::error::Error;
use crate::group_commit::{GroupSync, SyncFailed};
use crate::record::UserRecord;

/// The journal's file name inside the state directory.
pub const FILE_NAME: &str = "watermarks";

/// Sealing label: a NUL byte cannot start a user name, so a journal entry
/// never opens as a record, nor a record as an entry.
const SEAL_LABEL: &str = "\u{0}watermark";

/// Largest sealed entry accepted when reading.
const MAX_ENTRY: u32 = 64 * 1024;

/// The journal is rewritten (compacted) when it exceeds this size and four
/// times the size of its live marks.
const COMPACT_AT: u64 = 256 * 1024;

/// What may only move forward for one user.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The user.
    pub user: String,
    /// Generation of the last record written (or being written).
    pub generation: u64,
    /// Highest generation known to be in the store.
    pub committed: u64,
    /// The last write removed the record (`otpctl reset`).
    #[serde(default)]
    pub removed: bool,
    /// `since` of the active enrollment of the last record, if any.
    pub enrolled_since: Option<u64>,
    /// Highest spent TOTP step of that enrollment.
    pub step: Option<u64>,
    /// Identifier of the last record's backup-code set.
    pub backup_set: Option<u64>,
    /// Fingerprints of that set's unused codes.
    #[serde(default)]
    pub backup_left: Vec<u64>,
    /// Unix time a rollback of this user's record was detected; cleared by
    /// a reset.
    pub rolled_back_at: Option<u64>,
    /// The active devices of the last record and the highest step each
    /// spent (marks written since devices exist; `None` in marks of otpd
    /// 0.1, which use `enrolled_since` and `step`).
    #[serde(default)]
    pub devices: Option<Vec<DeviceMark>>,
    /// Ids of the last record's app passwords (a revoked one must not come
    /// back with a rolled-back record).
    #[serde(default)]
    pub app_passwords: Option<Vec<String>>,
}

/// What may only move forward for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMark {
    /// The device's id.
    pub id: u64,
    /// Highest step it spent.
    pub step: Option<u64>,
}

impl std::fmt::Debug for Mark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mark")
            .field("user", &self.user)
            .field("generation", &self.generation)
            .field("committed", &self.committed)
            .field("removed", &self.removed)
            .field("rolled_back_at", &self.rolled_back_at)
            .finish_non_exhaustive()
    }
}

impl Mark {
    /// The mark of `rec`, about to be written as generation
    /// `rec.generation`, following `prev`.
    pub fn of_record(user: &str, rec: &UserRecord, prev: &Head) -> Self {
        let backup = rec.backup_codes.as_ref();
        Self {
            user: user.to_owned(),
            generation: rec.generation,
            committed: prev.committed,
            removed: false,
            enrolled_since: None,
            step: None,
            // A step spent ahead of a device's watermark (a revealed
            // clock-skew code) counts too: after a rollback the merged
            // watermark may then refuse the steps between, which fails
            // closed, but never revives a spent code.
            devices: Some(
                rec.devices
                    .iter()
                    .map(|d| DeviceMark {
                        id: d.id,
                        step: d.highest_spent_step(),
                    })
                    .collect(),
            ),
            app_passwords: Some(rec.app_passwords.iter().map(|p| p.id.clone()).collect()),
            backup_set: backup.map(|s| s.set_id()),
            backup_left: backup.map(|s| s.fingerprints()).unwrap_or_default(),
            rolled_back_at: prev.rolled_back_at,
        }
    }

    /// The mark of a removal following `prev`.
    pub fn of_removal(user: &str, prev: &Head) -> Self {
        Self {
            user: user.to_owned(),
            generation: prev.generation.saturating_add(1),
            committed: prev.committed,
            removed: true,
            ..Self::default()
        }
    }
}

/// The result of checking a loaded record against its mark.
#[derive(Debug)]
pub struct Reconciled {
    /// The record to decide with, or `None` when it fails closed because
    /// the store lost the record's current secret or enrollment.
    pub record: Option<Option<UserRecord>>,
    /// The store certainly lost committed writes of this user.
    pub rolled_back: bool,
    /// Consumed backup codes the record held again (now removed).
    pub codes_removed: usize,
    /// The record's last used step was behind (now raised).
    pub step_raised: bool,
}

/// Checks `rec` (as loaded) against `mark` and repairs what a rollback
/// undid. Pure: the caller reports and persists.
pub fn reconcile(mark: &Mark, rec: Option<UserRecord>) -> Reconciled {
    let generation = match (&rec, mark.removed) {
        (Some(r), _) => r.generation,
        (None, true) => mark.generation,
        (None, false) => 0,
    };
    let current = |record| Reconciled {
        record: Some(record),
        rolled_back: false,
        codes_removed: 0,
        step_raised: false,
    };
    if generation >= mark.generation {
        return current(rec);
    }
    // Older than the last mark: either the last write did not complete
    // (the mark is fsynced first; no reply was sent) or, when the record is
    // older than a committed generation, the store rolled back.
    let certain = generation < mark.committed;
    let Some(mut r) = rec else {
        let lost = certain
            && (mark.enrolled_since.is_some()
                || mark.devices.as_ref().is_some_and(|d| !d.is_empty()));
        return Reconciled {
            record: if lost { None } else { Some(None) },
            rolled_back: certain,
            codes_removed: 0,
            step_raised: false,
        };
    };
    let mut out = Reconciled {
        record: None,
        rolled_back: certain,
        codes_removed: 0,
        step_raised: false,
    };
    // What follows holds whether or not the rollback is certain: the
    // "committed" mark is not fsynced, so a power loss can drop it together
    // with the store's copy of the write. The last durable mark is what
    // the store must hold (or was about to hold); an older secret, a reset
    // record or a superseded backup-code set is never used again.
    if mark.removed {
        // The record was reset (e.g. a stolen phone): fail closed.
        return out;
    }
    // Each device must be one the last durable write had (else an older,
    // replaced or removed secret came back: fail closed), and gets its
    // spent step back. Marks of 0.1 name the one secret by its time.
    let known: Vec<DeviceMark> = match (&mark.devices, mark.enrolled_since) {
        (Some(devices), _) => devices.clone(),
        (None, Some(since)) => vec![DeviceMark {
            id: otpd_core::record::migrated_device_id(since, false),
            step: mark.step,
        }],
        (None, None) => Vec::new(),
    };
    for device in &mut r.devices {
        let Some(m) = known.iter().find(|m| m.id == device.id) else {
            return out;
        };
        if m.step > device.last_used_step {
            device.last_used_step = m.step;
            device
                .spent_ahead
                .retain(|&s| m.step.is_some_and(|w| s > w));
            out.step_raised = true;
        }
    }
    if let Some(ids) = &mark.app_passwords {
        // A revoked app password stays revoked.
        r.app_passwords.retain(|p| ids.contains(&p.id));
    }
    match (r.backup_codes.as_mut(), mark.backup_set) {
        (Some(set), Some(id)) if set.set_id() == id => {
            out.codes_removed = set.retain_fingerprints(&mark.backup_left);
        }
        (Some(set), _) => {
            // A superseded set came back.
            out.codes_removed = set.remaining();
            r.backup_codes = None;
        }
        _ => {}
    }
    out.record = Some(Some(r));
    out
}

/// What every decision needs of a user's last mark, held in memory; the
/// rest of the mark (devices, backup-code fingerprints, app passwords) is
/// read from the journal when a record turns out older than its mark
/// (a rollback, or a write that did not complete) — about 60 bytes per
/// user in memory instead of the whole mark's ~500.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Head {
    /// [`Mark::generation`].
    pub generation: u64,
    /// [`Mark::committed`].
    pub committed: u64,
    /// [`Mark::removed`].
    pub removed: bool,
    /// [`Mark::rolled_back_at`].
    pub rolled_back_at: Option<u64>,
}

impl Mark {
    /// The part held in memory.
    pub fn head(&self) -> Head {
        Head {
            generation: self.generation,
            committed: self.committed,
            removed: self.removed,
            rolled_back_at: self.rolled_back_at,
        }
    }
}

/// A user's last mark, as held in memory: its head and where its entry is.
struct Held {
    head: Head,
    /// Offset of its journal entry (the length header's first byte).
    at: u64,
    /// Bytes of its journal entry (header included).
    entry_len: u32,
}

struct Inner {
    /// `None` after a failed write: reopened (and cut back to `len`) by the
    /// next one. Shared with the syncs of [`Watermarks::sync`], which run
    /// outside the lock.
    file: Option<Arc<File>>,
    /// Length of the valid journal.
    len: u64,
    /// The sum of the sizes of each user's newest entry (kept, not summed
    /// per write: a million users).
    live_total: u64,
    /// The head of each user's last mark and where its entry is, in name
    /// order so that a listing page reads only its range.
    marks: BTreeMap<Box<str>, Held>,
    /// A compaction renamed its file in place but the state directory did
    /// not sync: the rename may not survive a power loss yet. Retried by
    /// every write; a durable write fails until it succeeds.
    dir_unsynced: bool,
}

/// The journal of replay watermarks.
pub struct Watermarks {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// The journal's syncs, shared by concurrent durable writers (group
    /// commit): a write appends under the lock, then waits for a sync that
    /// started after it.
    sync: GroupSync,
    /// Tests: make syncing the state directory fail.
    #[cfg(test)]
    fail_dir_sync: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Watermarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watermarks")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The journal's path inside the state directory.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

fn open_file(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.permissions().mode() & 0o777 != 0o600 {
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn entry(key: &MasterKey, mark: &Mark) -> Result<Vec<u8>, Error> {
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(mark).map_err(|e| Error::Internal(format!("encode mark: {e}")))?,
    );
    let sealed = crypto::seal(key, SEAL_LABEL, &plain, &mut rand::rngs::OsRng)?;
    let len = u32::try_from(sealed.len())
        .ok()
        .filter(|&l| l <= MAX_ENTRY)
        .ok_or_else(|| Error::Internal("watermark entry too large".into()))?;
    let mut out = Vec::with_capacity(4 + sealed.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The mark in the entry of `entry_len` bytes (header included) at `at`,
/// opened with one of `keys`.
fn read_mark(file: &File, at: u64, entry_len: u32, keys: &[&MasterKey]) -> Result<Mark, String> {
    let mut raw = vec![0u8; entry_len as usize];
    file.read_exact_at(&mut raw, at)
        .map_err(|e| format!("cannot read: {e}"))?;
    let Some((header, sealed)) = raw.split_first_chunk::<4>() else {
        return Err("shorter than its header".into());
    };
    if u64::from(u32::from_le_bytes(*header)) + 4 != u64::from(entry_len) {
        return Err("its length changed (the journal was changed under otpd)".into());
    }
    let plain = keys
        .iter()
        .find_map(|key| crypto::open(key, SEAL_LABEL, sealed).ok())
        .ok_or("does not authenticate (the journal was changed under otpd)")?;
    serde_json::from_slice::<Mark>(&plain).map_err(|e| format!("malformed: {e}"))
}

impl Watermarks {
    /// Opens (or creates) the journal at `path` and reads every mark.
    /// A torn last entry is cut off; any other damage is an error.
    pub fn open(path: &Path, keys: &[&MasterKey]) -> Result<Self, Error> {
        let bad = |reason: String| Error::Watermark {
            path: path.to_owned(),
            reason,
        };
        let mut file = open_file(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        let size = file
            .metadata()
            .map_err(|e| bad(format!("cannot read: {e}")))?
            .len();
        // Read entry by entry (not the whole file at once: at a million
        // users it is hundreds of MiB).
        let mut reader = std::io::BufReader::with_capacity(256 * 1024, &mut file);
        let mut marks: BTreeMap<Box<str>, Held> = BTreeMap::new();
        let mut at = 0u64;
        let mut sealed = Vec::new();
        while at < size {
            let mut header = [0u8; 4];
            if read_full(&mut reader, &mut header).map_err(|e| bad(format!("cannot read: {e}")))?
                < 4
            {
                break;
            }
            let len = u32::from_le_bytes(header);
            let end = at.saturating_add(4).saturating_add(u64::from(len));
            if len > MAX_ENTRY {
                return Err(bad(format!(
                    "damaged at byte {at} (entry length {len}); replay protection \
                     cannot be trusted. Move the file aside to start without it"
                )));
            }
            sealed.resize(len as usize, 0);
            if read_full(&mut reader, &mut sealed).map_err(|e| bad(format!("cannot read: {e}")))?
                < sealed.len()
            {
                break;
            }
            // During a key rotation entries may be sealed under either key.
            let mark = keys
                .iter()
                .find_map(|key| crypto::open(key, SEAL_LABEL, &sealed).ok())
                .and_then(|plain| serde_json::from_slice::<Mark>(&plain).ok());
            match mark {
                Some(mark) => {
                    let entry_len = len.saturating_add(4);
                    let head = mark.head();
                    marks.insert(
                        mark.user.into_boxed_str(),
                        Held {
                            head,
                            at,
                            entry_len,
                        },
                    );
                }
                None if end >= size => break,
                None => {
                    return Err(bad(format!(
                        "entry at byte {at} does not authenticate (damaged, or sealed \
                         under another key); replay protection cannot be trusted. \
                         Move the file aside to start without it"
                    )));
                }
            }
            at = end;
        }
        drop(reader);
        let len = at;
        if at < size {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = size - at,
                "watermark journal ends in a torn entry (a crash during a write); cut off"
            );
            file.set_len(len)
                .and_then(|()| file.sync_all())
                .map_err(|e| bad(format!("cannot cut off the torn entry: {e}")))?;
        }
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| bad(format!("cannot sync the state directory: {e}")))?;
        }
        Ok(Self {
            path: path.to_owned(),
            sync: GroupSync::default(),
            inner: Mutex::new(Inner {
                file: Some(Arc::new(file)),
                len,
                live_total: marks.values().map(|h| u64::from(h.entry_len)).sum(),
                marks,
                dir_unsynced: false,
            }),
            #[cfg(test)]
            fail_dir_sync: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Syncs the state directory (makes a rename durable).
    fn sync_dir(&self) -> std::io::Result<()> {
        #[cfg(test)]
        if self
            .fail_dir_sync
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(std::io::Error::other("injected directory sync failure"));
        }
        match self.path.parent() {
            Some(dir) => File::open(dir).and_then(|d| d.sync_all()),
            None => Ok(()),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // `marks` and `len` change only after a write succeeded.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The head of `user`'s last mark, if any (from memory).
    pub fn head(&self, user: &str) -> Option<Head> {
        self.inner().marks.get(user).map(|h| h.head)
    }

    /// The whole last mark of `user`, if any, read from the journal and
    /// opened with one of `keys`.
    ///
    /// # Errors
    /// When the entry cannot be read or does not open: the journal was
    /// changed under the daemon (fail closed).
    pub fn get(&self, user: &str, keys: &[&MasterKey]) -> Result<Option<Mark>, Error> {
        let (file, at, entry_len) = {
            let inner = self.inner();
            let Some(held) = inner.marks.get(user) else {
                return Ok(None);
            };
            (inner.file.clone(), held.at, held.entry_len)
        };
        let bad = |reason: String| Error::Watermark {
            path: self.path.clone(),
            reason,
        };
        // After a failed write the handle is gone until the next write
        // reopens it; the file at the path holds every entry listed.
        let file = match file {
            Some(f) => f,
            None => Arc::new(open_file(&self.path).map_err(|e| bad(format!("cannot open: {e}")))?),
        };
        let mark = read_mark(&file, at, entry_len, keys)
            .map_err(|reason| bad(format!("entry of user {user:?} at byte {at}: {reason}")))?;
        if mark.user != user {
            return Err(bad(format!(
                "the entry at byte {at} is not the mark of user {user:?}"
            )));
        }
        Ok(Some(mark))
    }

    /// Every user with a mark, sorted.
    pub fn users(&self) -> Vec<String> {
        self.inner().marks.keys().map(|u| u.to_string()).collect()
    }

    /// Up to `limit` users, in name order after `after`, whose last mark
    /// is not a removal: users the store should hold. Reads only that
    /// range, however many marks there are.
    pub fn present_after(&self, after: Option<&str>, limit: usize) -> Vec<String> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.inner()
            .marks
            .range::<str, _>((start, Bound::Unbounded))
            .filter(|(_, h)| !h.head.removed)
            .take(limit)
            .map(|(u, _)| u.to_string())
            .collect()
    }

    /// Appends `mark`; with `durable`, it is on disk on return. On failure
    /// nothing changes (a partial entry is cut off by the next write).
    pub fn put(&self, key: &MasterKey, mark: Mark, durable: bool) -> Result<(), Error> {
        self.put_many(key, vec![mark], durable)
    }

    /// Appends `marks` in one write; with `durable`, all of them are on
    /// disk on return, after one sync (a batch of imports). On failure none
    /// counts (a partial write is cut off by the next write).
    pub fn put_many(&self, key: &MasterKey, marks: Vec<Mark>, durable: bool) -> Result<(), Error> {
        if marks.is_empty() {
            return Ok(());
        }
        // Sealed before the lock is taken.
        let mut bytes = Vec::new();
        let mut sizes = Vec::with_capacity(marks.len());
        for mark in &marks {
            let e = entry(key, mark)?;
            sizes.push(e.len() as u64);
            bytes.extend_from_slice(&e);
        }
        let mut inner = self.inner();
        let result = self.append(&mut inner, &bytes, durable);
        if let Err(e) = result {
            inner.file = None;
            return Err(e);
        }
        let appended_at = inner.len;
        inner.len += bytes.len() as u64;
        let mut at = appended_at;
        for (mark, size) in marks.into_iter().zip(sizes) {
            let entry_len = u32::try_from(size).unwrap_or(u32::MAX);
            let held = Held {
                head: mark.head(),
                at,
                entry_len,
            };
            at += size;
            let old = inner
                .marks
                .insert(mark.user.into_boxed_str(), held)
                .map_or(0, |h| u64::from(h.entry_len));
            inner.live_total = inner.live_total.saturating_sub(old).saturating_add(size);
        }
        let live = inner.live_total;
        if inner.len > COMPACT_AT
            && inner.len > live.saturating_mul(4)
            && let Err(e) = self.compact(&mut inner, None)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "watermark journal not compacted; retried later");
        }
        drop(inner);
        if durable {
            self.sync_journal(appended_at)?;
        }
        Ok(())
    }

    /// Waits until the journal is on disk up to a sync that started after
    /// this call (shared with the other durable writers). A compaction
    /// meanwhile wrote everything durably into the file that now stands at
    /// the path: syncing that file is then enough.
    fn sync_journal(&self, appended_at: u64) -> Result<(), Error> {
        let bad = |reason: String| Error::Watermark {
            path: self.path.clone(),
            reason,
        };
        let result = self.sync.wait(|| {
            let file = self.inner().file.clone();
            match file {
                Some(f) => f.sync_data(),
                None => Err(std::io::Error::other("the journal failed since")),
            }
        });
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut inner = self.inner();
                // Reopened (and cut back) by the next write, which also
                // retries the sync of whatever this one left unsynced.
                inner.file = None;
                drop(inner);
                Err(bad(match e {
                    SyncFailed::Own(e) => e.to_string(),
                    SyncFailed::Shared => {
                        format!("the shared sync of the entry at {appended_at} failed")
                    }
                }))
            }
        }
    }

    /// Rewrites the whole journal sealed under `key` (a key rotation; the
    /// entries open with one of `old`), durably, replacing the file in one
    /// rename.
    pub fn reseal(&self, key: &MasterKey, old: &[&MasterKey]) -> Result<(), Error> {
        let mut inner = self.inner();
        self.compact(&mut inner, Some((key, old)))
    }

    fn append(&self, inner: &mut Inner, bytes: &[u8], durable: bool) -> Result<(), Error> {
        let bad = |e: std::io::Error| Error::Watermark {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        if inner.dir_unsynced {
            match self.sync_dir() {
                Ok(()) => inner.dir_unsynced = false,
                // Without the rename on disk, a power loss may bring back
                // the journal as it was before the compaction, without
                // this entry.
                Err(e) if durable => return Err(bad(e)),
                Err(e) => {
                    tracing::debug!(error = %e, "state directory still does not sync");
                }
            }
        }
        if inner.file.is_none() {
            let file = open_file(&self.path).map_err(bad)?;
            // Cut off what a failed write may have left.
            file.set_len(inner.len).map_err(bad)?;
            inner.file = Some(Arc::new(file));
        }
        let file = inner
            .file
            .as_ref()
            .ok_or_else(|| bad(std::io::Error::other("closed")))?;
        file.write_all_at(bytes, inner.len).map_err(bad)?;
        Ok(())
    }

    /// Rewrites the journal with one entry per user (atomically: a new file
    /// renamed over the old one): each user's last entry copied as it is,
    /// or with `reseal` (the new key, and the keys the entries open with)
    /// opened and sealed again.
    fn compact(
        &self,
        inner: &mut Inner,
        reseal: Option<(&MasterKey, &[&MasterKey])>,
    ) -> Result<(), Error> {
        let bad = |e: std::io::Error| Error::Watermark {
            path: self.path.clone(),
            reason: format!("compaction: {e}"),
        };
        let tmp = self.path.with_extension("compact");
        let _ = fs::remove_file(&tmp);
        // Read too: the marks are read from it once it is the journal.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(bad)?;
        // Written entry by entry through a buffer (not built whole in
        // memory: at a million users it is hundreds of MiB).
        let old = match &inner.file {
            Some(f) => Arc::clone(f),
            None => Arc::new(open_file(&self.path).map_err(bad)?),
        };
        let mut len = 0u64;
        let mut sizes = Vec::with_capacity(inner.marks.len());
        let written = (|| {
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, &file);
            let mut raw = Vec::new();
            for held in inner.marks.values() {
                raw.resize(held.entry_len as usize, 0);
                old.read_exact_at(&mut raw, held.at)?;
                let e = match reseal {
                    None => std::mem::take(&mut raw),
                    Some((key, keys)) => {
                        let mark = read_mark(&old, held.at, held.entry_len, keys)
                            .map_err(std::io::Error::other)?;
                        entry(key, &mark).map_err(std::io::Error::other)?
                    }
                };
                sizes.push(u32::try_from(e.len()).unwrap_or(u32::MAX));
                len += e.len() as u64;
                out.write_all(&e)?;
                raw = e;
            }
            out.flush()
        })()
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(bad(e));
        }
        // The path names the new file now: write to it from here on, even
        // if the directory does not sync (the old file is unlinked; what
        // went there would be lost at the next start).
        inner.file = Some(Arc::new(file));
        inner.len = len;
        let mut at = 0u64;
        for (held, size) in inner.marks.values_mut().zip(sizes) {
            held.at = at;
            held.entry_len = size;
            at += u64::from(size);
        }
        inner.live_total = len;
        if let Err(e) = self.sync_dir() {
            inner.dir_unsynced = true;
            return Err(bad(e));
        }
        Ok(())
    }
}

/// Users checked against their watermarks at start; more are checked on
/// first use. About 20 µs each (one read and one AEAD open).
pub const START_CHECK_LIMIT: usize = 10_000;

/// The start-up check (after the socket is bound, before serving): logs
/// rolled-back and unreadable records loudly, or one line that all is well.
pub fn report_start(engine: &crate::engine::Engine) {
    match engine.check_store(START_CHECK_LIMIT) {
        Ok(check) if check.rolled_back.is_empty() && check.unreadable.is_empty() => {
            tracing::info!(
                checked = check.checked,
                more_unchecked = check.more_unchecked,
                "store checked against the replay watermarks: no rollback"
            );
        }
        Ok(check) => {
            tracing::error!(
                checked = check.checked,
                more_unchecked = check.more_unchecked,
                rolled_back = ?check.rolled_back,
                unreadable = ?check.unreadable,
                "the store lost writes (rolled back) or holds records that do not open; \
                 replayed codes stay refused, users listed as unreadable fail closed \
                 until `otpctl reset`; see `otpctl status`"
            );
        }
        Err(e) => tracing::error!(error = %e, "store check at start failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup_codes::BackupCodeSet;
    use crate::device::{Device, DeviceName};
    use crate::kdf::{Fresh, KdfParams};
    use crate::secret::TotpSecret;
    use crate::totp::TotpParams;
    use rand::rngs::OsRng;

    fn enrolled(since: u64, step: u64, generation: u64) -> UserRecord {
        UserRecord {
            devices: vec![Device {
                id: since,
                name: DeviceName::default_name(),
                secret: TotpSecret::generate(&mut OsRng),
                params: TotpParams::default(),
                issuer: "t".into(),
                enrolled_at: since,
                last_used_step: Some(step),
                spent_ahead: Vec::new(),
                clock_skew_seconds: 0,
                last_used_at: None,
                kind: crate::device::Kind::Totp,
                hotp_resync: None,
                drift_steps: 0,
                drift_streak: 0,
            }],
            generation,
            ..UserRecord::new()
        }
    }

    fn step(r: Option<UserRecord>) -> Option<u64> {
        r.and_then(|r| r.devices.first().and_then(|d| d.last_used_step))
    }

    fn committed(user: &str, rec: &UserRecord) -> Mark {
        let mut m = Mark::of_record(user, rec, &Head::default());
        m.committed = rec.generation;
        m
    }

    #[test]
    fn current_record_is_untouched() {
        let rec = enrolled(1, 100, 5);
        let r = reconcile(&committed("a", &rec), Some(rec));
        assert!(!r.rolled_back);
        assert_eq!(step(r.record.flatten()), Some(100));
    }

    #[test]
    fn rolled_back_record_gets_its_step_back_and_is_reported() {
        let new = enrolled(1, 100, 5);
        let mut old = new.clone();
        old.generation = 3;
        old.devices[0].last_used_step = Some(90);
        let r = reconcile(&committed("a", &new), Some(old));
        assert!(r.rolled_back && r.step_raised);
        assert_eq!(step(r.record.flatten()), Some(100));
    }

    #[test]
    fn incomplete_last_write_is_merged_but_not_reported() {
        let new = enrolled(1, 100, 5);
        let mut mark = Mark::of_record("a", &new, &Head::default());
        mark.committed = 4;
        let mut old = new.clone();
        old.generation = 4;
        old.devices[0].last_used_step = Some(99);
        let r = reconcile(&mark, Some(old));
        assert!(!r.rolled_back && r.step_raised);
    }

    #[test]
    fn consumed_backup_codes_are_removed_again() -> Result<(), Error> {
        let kdf = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let mem = Fresh;
        let (plain, set) = BackupCodeSet::generate(kdf, &mut OsRng, &mem)?;
        let mut old = enrolled(1, 100, 3);
        old.backup_codes = Some(set);
        let mut new = old.clone();
        new.generation = 5;
        let code = crate::secret::Code::parse(plain[0].as_bytes())?;
        assert!(
            new.backup_codes
                .as_mut()
                .is_some_and(|s| s.consume(&code, &mem).unwrap_or(false))
        );
        let r = reconcile(&committed("a", &new), Some(old));
        assert_eq!(r.codes_removed, 1);
        let mut rec = r.record.flatten().ok_or(Error::Internal("gone".into()))?;
        assert_eq!(rec.backup_codes.as_ref().map(|s| s.remaining()), Some(9));
        assert!(
            !rec.backup_codes
                .as_mut()
                .is_some_and(|s| s.consume(&code, &mem).unwrap_or(true))
        );
        Ok(())
    }

    #[test]
    fn an_older_secret_or_a_lost_enrollment_fails_closed() {
        let new = enrolled(200, 100, 5);
        let old = enrolled(1, 10, 2);
        assert!(reconcile(&committed("a", &new), Some(old)).record.is_none());
        assert!(reconcile(&committed("a", &new), None).record.is_none());
        // A record that was reset stays reset.
        let mut removal = Mark::of_removal("a", &committed("a", &new).head());
        removal.committed = removal.generation;
        let r = reconcile(&removal, None);
        assert!(!r.rolled_back && matches!(r.record, Some(None)));
        assert!(reconcile(&removal, Some(new)).record.is_none());
    }

    /// The durable mark of a write of `new` after the committed `old`,
    /// whose own "committed" mark (not fsynced) was lost.
    fn uncommitted(new: &UserRecord, old: &UserRecord) -> Mark {
        Mark::of_record("a", new, &committed("a", old).head())
    }

    #[test]
    fn a_reset_whose_commit_mark_was_lost_is_not_undone_by_a_rollback() {
        // Reset (stolen phone): the removal mark is durable, its commit mark
        // is lost, and the store comes back with the last record.
        let old = enrolled(1, 10, 5);
        let removal = Mark::of_removal("a", &committed("a", &old).head());
        assert!(removal.committed < removal.generation);
        let r = reconcile(&removal, Some(old));
        assert!(r.record.is_none(), "the reset secret came back");
    }

    #[test]
    fn a_replaced_secret_whose_commit_mark_was_lost_is_not_used_again() {
        let old = enrolled(1, 10, 5);
        let new = enrolled(200, 0, 6);
        let r = reconcile(&uncommitted(&new, &old), Some(old));
        assert!(r.record.is_none(), "the replaced secret came back");
    }

    #[test]
    fn a_superseded_backup_code_set_whose_commit_mark_was_lost_is_dropped() -> Result<(), Error> {
        let kdf = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let mem = Fresh;
        let (_, leaked) = BackupCodeSet::generate(kdf, &mut OsRng, &mem)?;
        let (_, fresh) = BackupCodeSet::generate(kdf, &mut OsRng, &mem)?;
        let mut old = enrolled(1, 10, 5);
        old.backup_codes = Some(leaked);
        let mut new = old.clone();
        new.generation = 6;
        new.backup_codes = Some(fresh);
        let r = reconcile(&uncommitted(&new, &old), Some(old));
        assert_eq!(r.codes_removed, 10);
        let rec = r.record.flatten().ok_or(Error::Internal("gone".into()))?;
        assert!(rec.backup_codes.is_none(), "the superseded codes came back");
        assert_eq!(rec.devices[0].last_used_step, Some(10));
        Ok(())
    }

    #[test]
    fn journal_survives_reopen_cuts_a_torn_tail_and_refuses_damage()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = path(dir.path());
        let key = MasterKey::generate(&mut OsRng);
        let rec = enrolled(1, 100, 1);
        {
            let w = Watermarks::open(&p, &[&key])?;
            w.put(&key, committed("alice", &rec), true)?;
            w.put(&key, committed("bob", &rec), true)?;
        }
        assert_eq!(fs::metadata(&p)?.permissions().mode() & 0o777, 0o600);
        let full = fs::read(&p)?;
        assert!(!full.windows(5).any(|w| w == b"alice"), "name in clear");
        // Torn tail: cut off, the first mark stays.
        fs::write(&p, &full[..full.len() - 7])?;
        let w = Watermarks::open(&p, &[&key])?;
        assert_eq!(w.users(), vec!["alice".to_string()]);
        drop(w);
        // A torn header after whole entries: cut off, both marks stay.
        fs::write(&p, [&full[..], &[9, 0]].concat())?;
        let w = Watermarks::open(&p, &[&key])?;
        assert_eq!(w.users(), vec!["alice".to_string(), "bob".to_string()]);
        assert_eq!(fs::metadata(&p)?.len(), full.len() as u64);
        drop(w);
        // Damage before the end: refused.
        let mut damaged = full.clone();
        damaged[10] ^= 1;
        fs::write(&p, &damaged)?;
        assert!(matches!(
            Watermarks::open(&p, &[&key]),
            Err(Error::Watermark { .. })
        ));
        Ok(())
    }

    #[test]
    fn compaction_keeps_the_last_mark_of_each_user() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = path(dir.path());
        let key = MasterKey::generate(&mut OsRng);
        let w = Watermarks::open(&p, &[&key])?;
        let mut rec = enrolled(1, 0, 0);
        for i in 1..=3000u64 {
            rec.generation = i;
            rec.devices[0].last_used_step = Some(i);
            w.put(&key, committed("alice", &rec), false)?;
        }
        assert!(fs::metadata(&p)?.len() < COMPACT_AT + 1024);
        let step = |w: &Watermarks| -> Result<Option<u64>, Error> {
            Ok(w.get("alice", &[&key])?
                .and_then(|m| m.devices)
                .and_then(|d| d.first().and_then(|d| d.step)))
        };
        // Read from the compacted file at its new place, then after a
        // restart.
        assert_eq!(step(&w)?, Some(3000));
        assert_eq!(w.head("alice").map(|h| h.generation), Some(3000));
        drop(w);
        let w = Watermarks::open(&p, &[&key])?;
        assert_eq!(step(&w)?, Some(3000));
        Ok(())
    }

    #[test]
    fn a_resealed_journal_opens_with_the_new_key_only() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = path(dir.path());
        let (old, new) = (
            MasterKey::generate(&mut OsRng),
            MasterKey::generate(&mut OsRng),
        );
        let w = Watermarks::open(&p, &[&old])?;
        w.put(&old, committed("alice", &enrolled(1, 5, 1)), true)?;
        // Written during the rotation, already under the new key.
        w.put(&new, committed("bob", &enrolled(1, 6, 1)), true)?;
        assert!(matches!(
            w.get("alice", &[&new]),
            Err(Error::Watermark { .. })
        ));
        w.reseal(&new, &[&new, &old])?;
        let step = |w: &Watermarks, u: &str| -> Result<Option<u64>, Error> {
            Ok(w.get(u, &[&new])?
                .and_then(|m| m.devices)
                .and_then(|d| d.first().and_then(|d| d.step)))
        };
        assert_eq!((step(&w, "alice")?, step(&w, "bob")?), (Some(5), Some(6)));
        drop(w);
        let w = Watermarks::open(&p, &[&new])?;
        assert_eq!((step(&w, "alice")?, step(&w, "bob")?), (Some(5), Some(6)));
        Ok(())
    }

    /// Puts marks of "alice" until the journal is compacted.
    fn fill_until_compacted(
        w: &Watermarks,
        key: &MasterKey,
    ) -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::MetadataExt;
        let ino = fs::metadata(&w.path)?.ino();
        let mut rec = enrolled(1, 0, 0);
        for i in 1..=3000u64 {
            rec.generation = i;
            rec.devices[0].last_used_step = Some(i);
            w.put(key, committed("alice", &rec), false)?;
            if fs::metadata(&w.path)?.ino() != ino {
                return Ok(());
            }
        }
        Err("never compacted".into())
    }

    /// Whether the journal's open handle is the file at its path.
    fn writes_to_the_live_file(w: &Watermarks) -> Result<bool, Box<dyn std::error::Error>> {
        use std::os::unix::fs::MetadataExt;
        let on_disk = fs::metadata(&w.path)?.ino();
        let inner = w.inner();
        Ok(match inner.file.as_ref() {
            Some(f) => f.metadata()?.ino() == on_disk,
            None => true,
        })
    }

    #[test]
    fn marks_after_a_failed_directory_sync_of_a_compaction_are_not_lost()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = path(dir.path());
        let key = MasterKey::generate(&mut OsRng);
        let w = Watermarks::open(&p, &[&key])?;
        w.fail_dir_sync
            .store(true, std::sync::atomic::Ordering::Relaxed);
        fill_until_compacted(&w, &key)?;
        assert!(
            writes_to_the_live_file(&w)?,
            "handle left on the unlinked journal"
        );
        // The compacted file was renamed in place; only the directory sync
        // failed. Later marks must go to that file, not the unlinked one.
        let rec = enrolled(1, 7, 1);
        w.put(&key, committed("bob", &rec), false)?;
        // A durable mark needs the rename on disk: refused while the
        // directory does not sync, accepted once it does.
        assert!(matches!(
            w.put(&key, committed("carol", &rec), true),
            Err(Error::Watermark { .. })
        ));
        w.fail_dir_sync
            .store(false, std::sync::atomic::Ordering::Relaxed);
        w.put(&key, committed("carol", &rec), true)?;
        drop(w);
        let w = Watermarks::open(&p, &[&key])?;
        let step = |u| -> Result<Option<u64>, Error> {
            Ok(w.get(u, &[&key])?
                .and_then(|m| m.devices)
                .and_then(|d| d.first().and_then(|d| d.step)))
        };
        assert_eq!(step("bob")?, Some(7));
        assert_eq!(step("carol")?, Some(7));
        assert!(w.get("alice", &[&key])?.is_some());
        Ok(())
    }
}

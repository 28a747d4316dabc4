//! The store on an embedded sled database.
//!
//! [`Store::update`] is a compare-and-swap loop: read the record, let
//! `decide` choose, swap the new value in only if the record still holds
//! the bytes `decide` saw; otherwise `decide` runs again on the bytes that
//! won (at most [`UPDATE_ATTEMPTS`] times). A write is flushed (fsynced)
//! before `update` returns; concurrent updates share their flushes (group
//! commit, [`crate::group_commit`]): each returns after a flush that
//! started after its write. [`Store::update_batch`] runs the same loop for
//! many users in rounds (read all, decide all, `before_write`, swap each
//! in; the users that lost a swap are decided again) and flushes once.
//!
//! sled latches the first I/O error of its log (a full disk, say) and
//! returns it from every later call of that handle, even after the cause is
//! gone. [`SledStore`] therefore treats a failed call as the end of that
//! handle: the call fails (closed), and a later call — at most once per
//! [`REOPEN_INTERVAL`] — drops the handle and opens the database again, so
//! the daemon recovers by itself when space returns. The outage is logged
//! once when it starts and once when a write succeeds again.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Store, UPDATE_ATTEMPTS, Write};
use crate::error::Error;
use crate::group_commit::{GroupSync, SyncFailed};
use crate::record::UserName;

/// Shortest time between two attempts to reopen a failed database.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// An open database and its tree of users.
struct Handle {
    db: ::sled::Db,
    users: ::sled::Tree,
    /// The flushes of this handle, shared by concurrent writers.
    sync: GroupSync,
}

/// Health of the store, behind one lock.
struct State {
    /// `None` after a failure, until the next successful reopen.
    handle: Option<Arc<Handle>>,
    /// Counts reopens, so a late failure on a retired handle does not
    /// retire its successor.
    epoch: u64,
    /// When the current outage began (logged once); `None` when healthy.
    outage: Option<Instant>,
    /// Last reopen attempt, for the rate limit.
    last_reopen: Option<Instant>,
}

/// The sled-backed store under `<state_dir>/store`, which reopens itself
/// after an I/O failure (see the module documentation).
pub struct SledStore {
    state: Mutex<State>,
    path: PathBuf,
    cache_bytes: u64,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish()
    }
}

fn store_error(e: ::sled::Error) -> Error {
    Error::Store(e.to_string())
}

/// sled's page cache when not configured ([`SledStore::open_with_cache`]):
/// `[store] cache_mib`'s default.
pub const DEFAULT_CACHE_BYTES: u64 = crate::config::DEFAULT_STORE_CACHE_MIB << 20;

fn open_handle(path: &Path, cache_bytes: u64) -> Result<Handle, Error> {
    let db = ::sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .open()
        .map_err(|e| match &e {
            ::sled::Error::Io(io)
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                Error::StoreLocked {
                    path: path.to_owned(),
                }
            }
            _ => Error::Store(format!("cannot open {}: {e}", path.display())),
        })?;
    let users = db.open_tree("users.v1").map_err(store_error)?;
    Ok(Handle {
        db,
        users,
        sync: GroupSync::default(),
    })
}

impl SledStore {
    /// Opens (or creates) the database at `path`. Another process holding it
    /// is reported as [`Error::StoreLocked`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`SledStore::open`] with a page cache of `cache_bytes` (sled may
    /// exceed it somewhat: it counts the pages' serialised size).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Self, Error> {
        let handle = open_handle(path, cache_bytes)?;
        Ok(Self {
            state: Mutex::new(State {
                handle: Some(Arc::new(handle)),
                epoch: 0,
                outage: None,
                last_reopen: None,
            }),
            path: path.to_owned(),
            cache_bytes,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every field is valid at every point: a panic elsewhere broke nothing.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `op` on the open database (reopening it first if an earlier
    /// call failed and the rate limit allows). A failure (an `Err` of `op`)
    /// retires the handle; a success for which `wrote` holds ends an
    /// outage.
    ///
    /// The state lock is held only to pick the handle, not during `op`, so
    /// writes of different users still proceed (and commit) together. A
    /// call still running on a retired handle keeps sled's file lock; a
    /// reopen meanwhile fails (closed) and is retried after the interval.
    fn with<T>(
        &self,
        wrote: impl FnOnce(&T) -> bool,
        op: impl FnOnce(&Handle) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let (handle, epoch) = {
            let mut state = self.state();
            if state.handle.is_none() {
                let now = Instant::now();
                if state
                    .last_reopen
                    .is_some_and(|t| now.duration_since(t) < REOPEN_INTERVAL)
                {
                    return Err(Error::StoreUnavailable {
                        path: self.path.clone(),
                    });
                }
                state.last_reopen = Some(now);
                match open_handle(&self.path, self.cache_bytes) {
                    Ok(h) => {
                        tracing::debug!(path = %self.path.display(), "store reopened");
                        state.handle = Some(Arc::new(h));
                        state.epoch += 1;
                    }
                    Err(e) => {
                        tracing::debug!(path = %self.path.display(), error = %e, "store reopen failed");
                        return Err(e);
                    }
                }
            }
            match state.handle.as_ref() {
                Some(h) => (Arc::clone(h), state.epoch),
                None => {
                    return Err(Error::StoreUnavailable {
                        path: self.path.clone(),
                    });
                }
            }
        };
        let result = op(&handle);
        drop(handle);
        let mut state = self.state();
        match &result {
            Ok(value) if wrote(value) => {
                if let Some(since) = state.outage.take() {
                    tracing::warn!(
                        path = %self.path.display(),
                        outage_seconds = since.elapsed().as_secs(),
                        "store writable again; recovered without a restart"
                    );
                }
            }
            Ok(_) => {}
            Err(e) => {
                // sled latches an I/O error for the life of the handle:
                // retire it (once), reopen on a later call.
                if state.epoch == epoch {
                    state.handle = None;
                }
                if state.outage.is_none() {
                    state.outage = Some(Instant::now());
                    tracing::error!(
                        path = %self.path.display(),
                        error = %e,
                        "store failed; decisions fail closed until it works again \
                         (reopening at most every {REOPEN_INTERVAL:?})"
                    );
                }
            }
        }
        result
    }

    /// Whether a write has failed and none has succeeded since.
    pub fn in_outage(&self) -> bool {
        self.state().outage.is_some()
    }
}

/// Makes every write made so far durable: a flush shared with the
/// concurrent writers of the handle.
fn flush(h: &Handle) -> Result<(), Error> {
    h.sync
        .wait(|| h.db.flush().map(|_| ()).map_err(store_error))
        .map_err(|e| match e {
            SyncFailed::Own(e) => e,
            SyncFailed::Shared => Error::Store("the shared flush failed".into()),
        })
}

/// Result of one update on a handle: `Err` is a failure of the store (it
/// retires the handle), `Ok(Err)` an error of `decide` or a conflict that
/// did not settle (the store is fine), `Ok(Ok(wrote))` success.
type UpdateResult = Result<Result<bool, Error>, Error>;

/// The compare-and-swap loop of [`Store::update`] on one handle.
#[allow(clippy::type_complexity)] // the type of `Store::update`'s argument
fn update_on(
    h: &Handle,
    user: &UserName,
    decide: &mut dyn FnMut(Option<&[u8]>) -> Result<Write, Error>,
) -> UpdateResult {
    let key = user.as_str().as_bytes();
    let mut current = h.users.get(key).map_err(store_error)?;
    for _ in 0..UPDATE_ATTEMPTS {
        let new = match decide(current.as_deref()) {
            Ok(Write::Keep) => return Ok(Ok(false)),
            Ok(Write::Put(bytes)) => Some(bytes),
            Ok(Write::Remove) if current.is_none() => return Ok(Ok(false)),
            Ok(Write::Remove) => None,
            Err(e) => return Ok(Err(e)),
        };
        match h
            .users
            .compare_and_swap(key, current.as_ref(), new)
            .map_err(store_error)?
        {
            Ok(()) => {
                flush(h)?;
                return Ok(Ok(true));
            }
            // Another writer changed the record since it was read:
            // decide again on what it wrote.
            Err(conflict) => current = conflict.current,
        }
    }
    Ok(Err(Error::StoreContended {
        user: user.to_string(),
        attempts: UPDATE_ATTEMPTS,
    }))
}

/// Result of a batch on a handle: `Err` is a failure of the store (it
/// retires the handle), `Ok(Err)` a failure of `before_write`, `Ok(Ok)`
/// the users' results and whether anything was written.
type BatchResult = Result<Result<BatchDone, Error>, Error>;

/// The users' results of a batch, and whether anything was written.
type BatchDone = (Vec<Result<(), Error>>, bool);

/// [`Store::update_batch`] on one handle: read every record, decide every
/// user, let `before_write` run, then compare-and-swap each record in;
/// users whose record changed meanwhile are decided again in the next
/// round (at most [`UPDATE_ATTEMPTS`] decisions each). One flush at the end.
#[allow(clippy::type_complexity)] // the types of `Store::update_batch`'s arguments
fn update_batch_on(
    h: &Handle,
    users: &[UserName],
    decide: &mut dyn FnMut(usize, Option<&[u8]>) -> Result<Write, Error>,
    before_write: &mut dyn FnMut() -> Result<(), Error>,
) -> BatchResult {
    let mut results: Vec<Option<Result<(), Error>>> = (0..users.len()).map(|_| None).collect();
    let mut current = Vec::with_capacity(users.len());
    for user in users {
        current.push(h.users.get(user.as_str().as_bytes()).map_err(store_error)?);
    }
    let mut pending: Vec<usize> = (0..users.len()).collect();
    let mut wrote = false;
    for _ in 0..UPDATE_ATTEMPTS {
        if pending.is_empty() {
            break;
        }
        let mut writes = Vec::new();
        for &i in &pending {
            match decide(i, current[i].as_deref()) {
                Ok(Write::Keep) => results[i] = Some(Ok(())),
                Ok(Write::Remove) if current[i].is_none() => results[i] = Some(Ok(())),
                Ok(Write::Put(bytes)) => writes.push((i, Some(bytes))),
                Ok(Write::Remove) => writes.push((i, None)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if writes.is_empty() {
            pending.clear();
            break;
        }
        if let Err(e) = before_write() {
            return Ok(Err(e));
        }
        let mut again = Vec::new();
        for (i, new) in writes {
            let key = users[i].as_str().as_bytes();
            match h
                .users
                .compare_and_swap(key, current[i].as_ref(), new)
                .map_err(store_error)?
            {
                Ok(()) => {
                    wrote = true;
                    results[i] = Some(Ok(()));
                }
                // Another writer (or an earlier entry of the same name)
                // changed the record since it was read: decide again.
                Err(conflict) => {
                    current[i] = conflict.current;
                    again.push(i);
                }
            }
        }
        pending = again;
    }
    if wrote {
        flush(h)?;
    }
    let results = results
        .into_iter()
        .zip(users)
        .map(|(r, user)| {
            r.unwrap_or_else(|| {
                Err(Error::StoreContended {
                    user: user.to_string(),
                    attempts: UPDATE_ATTEMPTS,
                })
            })
        })
        .collect();
    Ok(Ok((results, wrote)))
}

impl Store for SledStore {
    fn get(&self, user: &UserName) -> Result<Option<Vec<u8>>, Error> {
        self.with(
            |_| false,
            |h| {
                Ok(h.users
                    .get(user.as_str().as_bytes())
                    .map_err(store_error)?
                    .map(|v| v.to_vec()))
            },
        )
    }

    fn update(
        &self,
        user: &UserName,
        decide: &mut dyn FnMut(Option<&[u8]>) -> Result<Write, Error>,
    ) -> Result<(), Error> {
        self.with(
            |r: &Result<bool, Error>| matches!(r, Ok(true)),
            |h| update_on(h, user, decide),
        )?
        .map(|_| ())
    }

    fn update_batch(
        &self,
        users: &[UserName],
        decide: &mut dyn FnMut(usize, Option<&[u8]>) -> Result<Write, Error>,
        before_write: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<Vec<Result<(), Error>>, Error> {
        self.with(
            |r: &Result<BatchDone, Error>| matches!(r, Ok((_, true))),
            |h| update_batch_on(h, users, decide, before_write),
        )?
        .map(|(results, _)| results)
    }

    fn list(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, Error> {
        let start = match after {
            Some(a) => Bound::Excluded(a.as_bytes()),
            None => Bound::Unbounded,
        };
        self.with(
            |_| false,
            |h| {
                h.users
                    .range::<&[u8], _>((start, Bound::Unbounded))
                    .keys()
                    .take(limit)
                    .map(|k| {
                        k.map(|k| String::from_utf8_lossy(&k).into_owned())
                            .map_err(store_error)
                    })
                    .collect()
            },
        )
    }

    fn is_empty(&self) -> Result<bool, Error> {
        self.with(
            |_| false,
            |h| Ok(h.users.first().map_err(store_error)?.is_none()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens the database again right after a handle was dropped: sled's
    /// background flusher may hold the file lock a moment longer, so a
    /// lock is retried for up to 5 s (as the conformance suite does).
    fn reopen(path: &Path) -> Result<SledStore, Error> {
        let mut tries = 0;
        loop {
            match SledStore::open(path) {
                Err(Error::StoreLocked { .. }) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    #[test]
    fn put_get_remove_survive_reopen() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let s = SledStore::open(dir.path())?;
            s.put(&UserName::test("bob"), b"b")?;
            s.put(&UserName::test("alice"), b"a")?;
            s.remove(&UserName::test("bob"))?;
        }
        let s = reopen(dir.path())?;
        assert_eq!(s.get(&UserName::test("alice"))?, Some(b"a".to_vec()));
        assert_eq!(s.get(&UserName::test("bob"))?, None);
        assert_eq!(s.users()?, vec!["alice".to_string()]);
        Ok(())
    }

    /// An error of `decide` is the caller's, not the store's: the handle
    /// stays, no outage starts.
    #[test]
    fn a_decide_error_is_not_an_outage() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let s = SledStore::open(dir.path())?;
        let alice = UserName::test("alice");
        s.put(&alice, b"v")?;
        let r = s.update(&alice, &mut |_| Err(Error::Internal("no".into())));
        assert!(matches!(&r, Err(Error::Internal(m)) if m == "no"), "{r:?}");
        assert!(!s.in_outage());
        assert_eq!(s.state().epoch, 0);
        assert!(s.state().handle.is_some(), "the handle was retired");
        Ok(())
    }

    /// Names that are not UTF-8 (only a store edited by other means has
    /// them) list lossily, and listing every user ends even when a full
    /// page of them sorts before its own cursor.
    #[test]
    fn non_utf8_names_list_and_the_listing_ends() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let s = SledStore::open(dir.path())?;
        s.with(
            |_| true,
            |h| {
                h.users.insert(b"a", &b"r"[..]).map_err(store_error)?;
                for i in 0..super::super::USERS_PAGE {
                    let mut key = b"z\xff".to_vec();
                    key.extend_from_slice(format!("{i:04}").as_bytes());
                    h.users.insert(key, &b"r"[..]).map_err(store_error)?;
                }
                flush(h)
            },
        )?;
        assert_eq!(s.list(None, 2)?, ["a", "z\u{FFFD}0000"]);
        let all = s.users()?;
        assert_eq!(all.first().map(String::as_str), Some("a"));
        assert!(all.iter().any(|n| n == "z\u{FFFD}0999"));
        Ok(())
    }
}

//! Persistence: the store port, and its backends. The store only ever
//! sees sealed bytes, keyed by user name.
//!
//! The contract is atomic: [`Store::update`] runs read-decide-write as
//! one step *in the store*, so a decision never rests on an in-process
//! lock and stays correct when several writers (threads, or later several
//! daemons on one database) update the same user. Two updates of one user
//! never both apply to the same old record: one of them sees the other's
//! write.
//!
//! Backends:
//! - [`SledStore`]: the embedded sled database of the daemon
//!   (compare-and-swap, retried; reopens itself after an I/O error).
//! - [`MemoryStore`]: in memory, for fast tests and as the reference
//!   implementation of the contract.
//!
//! [`conformance`] is one test suite that every backend passes.

pub mod conformance;
mod memory;
mod sled;

pub use self::memory::MemoryStore;
pub use self::sled::{REOPEN_INTERVAL, SledStore};

use crate::error::Error;
use crate::record::UserName;

/// How often a backend that detects concurrent writers (compare-and-swap)
/// runs `decide` for one [`Store::update`] before it gives up with
/// [`Error::StoreContended`]. Each conflict means another writer's update
/// of the same user succeeded, so the system as a whole made progress.
pub const UPDATE_ATTEMPTS: u32 = 64;

/// Page size [`Store::users`] lists with.
pub const USERS_PAGE: usize = 1000;

/// What an update writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Nothing: the record stays as it is (or absent).
    Keep,
    /// These sealed bytes replace the record (or create it).
    Put(Vec<u8>),
    /// The record is removed (nothing happens if there is none).
    Remove,
}

/// Durable storage of sealed user records, keyed by user name.
///
/// Conformance: every backend passes [`conformance::run_all`].
pub trait Store: Send + Sync {
    /// The sealed record of `user`, if any.
    fn get(&self, user: &UserName) -> Result<Option<Vec<u8>>, Error>;

    /// Read-decide-write as one atomic step: `decide` gets the current
    /// sealed bytes (`None`: no record) and returns what to write.
    ///
    /// It may be called more than once (when another writer — e.g. another
    /// process sharing the store — changed the record in between; then it
    /// is called again with the new bytes), so it must decide from its
    /// argument only and tolerate repeats. Only the decision of its last
    /// call is written. On `Ok` the write (if any) is durable (fsynced).
    /// Errors from `decide` abort the update with nothing written, and are
    /// returned as they are. A conflict that does not settle within
    /// [`UPDATE_ATTEMPTS`] calls ends in [`Error::StoreContended`], with
    /// nothing written.
    ///
    /// `decide` must not update the same store itself: a backend may hold
    /// a lock while it runs.
    #[allow(clippy::type_complexity)] // spelled out: the contract callers write against
    fn update(
        &self,
        user: &UserName,
        decide: &mut dyn FnMut(Option<&[u8]>) -> Result<Write, Error>,
    ) -> Result<(), Error>;

    /// Read-decide-write for many users, each as atomic as one
    /// [`Store::update`], made durable together: one sync for the whole
    /// batch instead of one per user (a bulk import of a million users).
    ///
    /// `decide(i, bytes)` decides for `users[i]` as `update`'s `decide`
    /// does (it may be called again for the same `i` after a conflict, on
    /// the bytes that won). Before the first write of the batch, and again
    /// before the writes of each retry round, `before_write` runs once with
    /// nothing of that round written yet (the engine makes the replay
    /// watermarks of the round durable there, with one sync); if it fails,
    /// nothing more is written and its error is returned.
    ///
    /// Returns one result per user, in order: `Ok` (written, or nothing to
    /// write), or the user's own error (from `decide`, or
    /// [`Error::StoreContended`]) with nothing written for that user; one
    /// user's error never fails the others. On `Ok` every write of the
    /// batch is durable. An `Err` (the store failed, or `before_write`
    /// did) means no write of the batch is known to be durable: some may
    /// be in the store, each whole; deciding again on what is there is
    /// safe. A name listed twice is decided again after its earlier
    /// entry's write, as with two updates.
    ///
    /// The default runs one `update` per user (one sync each); backends
    /// override it.
    #[allow(clippy::type_complexity)] // spelled out: the contract callers write against
    fn update_batch(
        &self,
        users: &[UserName],
        decide: &mut dyn FnMut(usize, Option<&[u8]>) -> Result<Write, Error>,
        before_write: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let mut results = Vec::with_capacity(users.len());
        for (i, user) in users.iter().enumerate() {
            // Whose error an `Err` of `update` is: the user's (decide, a
            // conflict that did not settle) or the batch's (before_write,
            // the store).
            let mut batch_error = false;
            let mut user_error = false;
            let r = self.update(user, &mut |current| {
                let write = match decide(i, current) {
                    Ok(write) => write,
                    Err(e) => {
                        user_error = true;
                        return Err(e);
                    }
                };
                if write != Write::Keep
                    && let Err(e) = before_write()
                {
                    batch_error = true;
                    return Err(e);
                }
                user_error = false;
                Ok(write)
            });
            match r {
                Err(e) if batch_error => return Err(e),
                Err(e) if user_error || matches!(e, Error::StoreContended { .. }) => {
                    results.push(Err(e));
                }
                Err(e) => return Err(e),
                Ok(()) => results.push(Ok(())),
            }
        }
        Ok(results)
    }

    /// Up to `limit` user names in byte order strictly after `after`
    /// (`None`: from the first). Names that are not valid UTF-8 are
    /// returned lossily decoded. A million users list page by page.
    ///
    /// Names written through [`UserName`] are always valid UTF-8; a name
    /// that is not (a store edited by other means) is listed lossily, and
    /// paging past it may list it twice or skip names right after it.
    fn list(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, Error>;

    /// Whether no record is stored (without listing them).
    fn is_empty(&self) -> Result<bool, Error>;

    /// Stores `sealed` for `user`, whatever was there; on return it is on
    /// disk.
    fn put(&self, user: &UserName, sealed: &[u8]) -> Result<(), Error> {
        self.update(user, &mut |_| Ok(Write::Put(sealed.to_vec())))
    }

    /// Removes `user`; on return the removal is on disk.
    fn remove(&self, user: &UserName) -> Result<(), Error> {
        self.update(user, &mut |_| Ok(Write::Remove))
    }

    /// Every stored user name (lossily decoded) in byte order, read in
    /// pages of [`USERS_PAGE`].
    fn users(&self) -> Result<Vec<String>, Error> {
        let mut all: Vec<String> = Vec::new();
        loop {
            let page = self.list(all.last().map(String::as_str), USERS_PAGE)?;
            let full = page.len() >= USERS_PAGE;
            // With valid names every page starts after the last one. A
            // lossily decoded name can sort before its raw bytes and be
            // listed again: stop rather than loop.
            let progressed = match (all.last(), page.last()) {
                (Some(prev), Some(last)) => last > prev,
                _ => true,
            };
            all.extend(page);
            if !full || !progressed {
                return Ok(all);
            }
        }
    }
}

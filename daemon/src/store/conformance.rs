//! One test suite for every store backend: what the engine relies on,
//! checked the same way against the in-memory store, sled and any later
//! backend (PostgreSQL).
//!
//! Each property is a public function taking a fresh, empty [`Backend`];
//! it returns the store's errors and panics (a failed assertion) when the
//! backend breaks the contract. A backend's test file instantiates one
//! `#[test]` per property with [`store_conformance_tests!`]:
//!
//! ```
//! use otpd::store::conformance::MemoryBackend;
//!
//! fn memory() -> Result<MemoryBackend, otpd::Error> {
//!     Ok(MemoryBackend::new())
//! }
//!
//! mod memory_store {
//!     otpd::store_conformance_tests!(super::memory);
//! }
//! # fn main() {}
//! ```
//!
//! or runs them all at once with [`run_all`].
//!
//! [`store_conformance_tests!`]: crate::store_conformance_tests

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::thread;

use super::{MemoryStore, SledStore, Store, UPDATE_ATTEMPTS, Write};
use crate::error::Error;
use crate::record::UserName;

/// A store backend under test: opens handles on one set of data.
pub trait Backend {
    /// A handle on the backend's data. Opening again after the previous
    /// handle is dropped is a restart of the daemon: it must see every
    /// update that returned `Ok` before.
    fn open(&self) -> Result<Box<dyn Store>, Error>;

    /// Whether other writers may commit while `decide` runs (the update
    /// then calls `decide` again: compare-and-swap), rather than wait for
    /// the update to end (a lock). The properties that write from inside
    /// `decide` only run on optimistic backends: on a locking one they
    /// would deadlock.
    fn optimistic(&self) -> bool;
}

/// A [`MemoryStore`] as a backend: reopening is another handle on the
/// same records.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    store: MemoryStore,
}

impl MemoryBackend {
    /// A backend with no records.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Backend for MemoryBackend {
    fn open(&self) -> Result<Box<dyn Store>, Error> {
        Ok(Box::new(self.store.clone()))
    }

    fn optimistic(&self) -> bool {
        false
    }
}

/// A [`SledStore`] in a directory as a backend. sled admits one open
/// handle per directory: each property drops a handle before it opens the
/// next. The caller keeps the directory (a `TempDir`) alive.
#[derive(Debug)]
pub struct SledBackend {
    path: PathBuf,
}

impl SledBackend {
    /// The store at `path` (created on first open).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
        }
    }
}

impl Backend for SledBackend {
    /// Opens the database; a reopen right after the previous handle was
    /// dropped may find sled's file lock still held for a moment by that
    /// handle's background flusher, so a lock is retried for up to 5 s.
    fn open(&self) -> Result<Box<dyn Store>, Error> {
        let mut tries = 0;
        loop {
            match SledStore::open(&self.path) {
                Err(Error::StoreLocked { .. }) if tries < 100 => {
                    tries += 1;
                    thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return Ok(Box::new(other?)),
            }
        }
    }

    fn optimistic(&self) -> bool {
        true
    }
}

/// A property of the contract, checked on a fresh, empty backend.
pub type Property = fn(&dyn Backend) -> Result<(), Error>;

/// Every property, by name (the names of the functions of this module).
pub const PROPERTIES: &[(&str, Property)] = &[
    ("round_trip", round_trip),
    ("writes_survive_reopen", writes_survive_reopen),
    ("keep_writes_nothing", keep_writes_nothing),
    ("decide_error_writes_nothing", decide_error_writes_nothing),
    ("remove_by_update", remove_by_update),
    ("a_spent_code_stays_spent", a_spent_code_stays_spent),
    (
        "one_of_two_concurrent_updates_applies",
        one_of_two_concurrent_updates_applies,
    ),
    ("no_lost_updates", no_lost_updates),
    ("list_pages", list_pages),
    ("list_empty", list_empty),
    ("racing_decides_one_wins", racing_decides_one_wins),
    (
        "a_write_during_decide_reruns_decide",
        a_write_during_decide_reruns_decide,
    ),
    (
        "endless_conflict_ends_in_an_error",
        endless_conflict_ends_in_an_error,
    ),
    (
        "batch_writes_every_user_durably",
        batch_writes_every_user_durably,
    ),
    (
        "batch_decide_error_fails_only_that_user",
        batch_decide_error_fails_only_that_user,
    ),
    (
        "batch_failed_before_write_writes_nothing",
        batch_failed_before_write_writes_nothing,
    ),
    (
        "batch_name_twice_applies_both",
        batch_name_twice_applies_both,
    ),
    (
        "batch_write_during_decide_reruns_that_user",
        batch_write_during_decide_reruns_that_user,
    ),
];

/// Runs every property, each on a fresh backend from `new`.
pub fn run_all<B: Backend>(new: impl Fn() -> Result<B, Error>) -> Result<(), Error> {
    for (_, property) in PROPERTIES {
        property(&new()?)?;
    }
    Ok(())
}

/// One `#[test]` per conformance property, each on a fresh backend from
/// `$new`: a path to a `fn() -> Result<impl Backend, otpd::Error>`.
/// Invoke it inside a module of its own (one per backend).
#[macro_export]
macro_rules! store_conformance_tests {
    ($new:path) => {
        $crate::store_conformance_tests!(@each $new;
            round_trip,
            writes_survive_reopen,
            keep_writes_nothing,
            decide_error_writes_nothing,
            remove_by_update,
            a_spent_code_stays_spent,
            one_of_two_concurrent_updates_applies,
            no_lost_updates,
            list_pages,
            list_empty,
            racing_decides_one_wins,
            a_write_during_decide_reruns_decide,
            endless_conflict_ends_in_an_error,
            batch_writes_every_user_durably,
            batch_decide_error_fails_only_that_user,
            batch_failed_before_write_writes_nothing,
            batch_name_twice_applies_both,
            batch_write_during_decide_reruns_that_user,
        );
    };
    (@each $new:path; $($property:ident),* $(,)?) => {
        $(
            #[test]
            fn $property() -> ::core::result::Result<(), $crate::Error> {
                $crate::store::conformance::$property(&$new()?)
            }
        )*

        #[test]
        fn every_property_is_instantiated() {
            let here: &[&str] = &[$(stringify!($property)),*];
            let all: ::std::vec::Vec<&str> = $crate::store::conformance::PROPERTIES
                .iter()
                .map(|(name, _)| *name)
                .collect();
            assert_eq!(here, all.as_slice());
        }
    };
}

fn name(s: &str) -> Result<UserName, Error> {
    Ok(UserName::parse(s.as_bytes())?)
}

/// Waits for a scoped thread; its panic (a failed assertion) goes on.
fn join<T>(h: thread::ScopedJoinHandle<'_, T>) -> T {
    h.join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A counter stored as a record (8 bytes little-endian; none is 0).
fn counter(record: Option<&[u8]>) -> Result<u64, Error> {
    match record {
        None => Ok(0),
        Some(bytes) => bytes
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| Error::Internal(format!("not a counter: {bytes:?}"))),
    }
}

/// `get` sees what `put` wrote until `remove`; an empty record is a
/// record; removing nothing is fine.
pub fn round_trip(b: &dyn Backend) -> Result<(), Error> {
    let s = b.open()?;
    let alice = name("alice")?;
    assert!(s.is_empty()?);
    assert_eq!(s.get(&alice)?, None);
    s.put(&alice, b"one")?;
    assert_eq!(s.get(&alice)?, Some(b"one".to_vec()));
    assert!(!s.is_empty()?);
    s.put(&alice, b"two")?;
    assert_eq!(s.get(&alice)?, Some(b"two".to_vec()));
    s.put(&alice, b"")?;
    assert_eq!(
        s.get(&alice)?,
        Some(Vec::new()),
        "an empty record is not none"
    );
    s.remove(&alice)?;
    assert_eq!(s.get(&alice)?, None);
    assert!(s.is_empty()?);
    s.remove(&alice)?;
    assert_eq!(s.get(&alice)?, None);
    Ok(())
}

/// Every write that returned `Ok` is there after a reopen; removed
/// records stay removed.
pub fn writes_survive_reopen(b: &dyn Backend) -> Result<(), Error> {
    let (alice, bob, carol) = (name("alice")?, name("bob")?, name("carol")?);
    {
        let s = b.open()?;
        s.put(&alice, b"a1")?;
        s.put(&bob, b"b1")?;
        s.update(&carol, &mut |_| Ok(Write::Put(b"c1".to_vec())))?;
        s.remove(&bob)?;
        s.update(&alice, &mut |old| {
            assert_eq!(old, Some(&b"a1"[..]));
            Ok(Write::Put(b"a2".to_vec()))
        })?;
    }
    let s = b.open()?;
    assert_eq!(s.get(&alice)?, Some(b"a2".to_vec()));
    assert_eq!(s.get(&bob)?, None);
    assert_eq!(s.get(&carol)?, Some(b"c1".to_vec()));
    assert_eq!(s.users()?, ["alice", "carol"]);
    Ok(())
}

/// [`Write::Keep`] leaves a record, and an absent one absent; `decide`
/// sees the current bytes, once when nobody else writes.
pub fn keep_writes_nothing(b: &dyn Backend) -> Result<(), Error> {
    let s = b.open()?;
    let (alice, bob) = (name("alice")?, name("bob")?);
    s.put(&alice, b"v")?;
    let mut seen = Vec::new();
    s.update(&alice, &mut |old| {
        seen.push(old.map(<[u8]>::to_vec));
        Ok(Write::Keep)
    })?;
    assert_eq!(seen, [Some(b"v".to_vec())]);
    seen.clear();
    s.update(&bob, &mut |old| {
        seen.push(old.map(<[u8]>::to_vec));
        Ok(Write::Keep)
    })?;
    assert_eq!(seen, [None]);
    assert_eq!(s.get(&alice)?, Some(b"v".to_vec()));
    assert_eq!(s.get(&bob)?, None);
    assert_eq!(s.users()?, ["alice"]);
    drop(s);
    let s = b.open()?;
    assert_eq!(s.users()?, ["alice"]);
    Ok(())
}

/// An error of `decide` is returned as it is, nothing is written, and the
/// store keeps working.
pub fn decide_error_writes_nothing(b: &dyn Backend) -> Result<(), Error> {
    let s = b.open()?;
    let (alice, bob) = (name("alice")?, name("bob")?);
    s.put(&alice, b"v")?;
    for user in [&alice, &bob] {
        let r = s.update(user, &mut |_| Err(Error::Internal("decided no".into())));
        assert!(
            matches!(&r, Err(Error::Internal(m)) if m == "decided no"),
            "{r:?}"
        );
    }
    assert_eq!(s.get(&alice)?, Some(b"v".to_vec()));
    assert_eq!(s.get(&bob)?, None);
    s.put(&alice, b"w")?;
    assert_eq!(s.get(&alice)?, Some(b"w".to_vec()));
    Ok(())
}

/// [`Write::Remove`] removes a record, and is harmless without one.
pub fn remove_by_update(b: &dyn Backend) -> Result<(), Error> {
    let s = b.open()?;
    let alice = name("alice")?;
    s.put(&alice, b"v")?;
    s.update(&alice, &mut |old| {
        assert_eq!(old, Some(&b"v"[..]));
        Ok(Write::Remove)
    })?;
    assert_eq!(s.get(&alice)?, None);
    s.update(&alice, &mut |old| {
        assert_eq!(old, None);
        Ok(Write::Remove)
    })?;
    assert!(s.is_empty()?);
    drop(s);
    assert!(b.open()?.is_empty()?);
    Ok(())
}

/// A used code is never accepted again after a crash between decide and
/// reply: once `update` has returned, the spent code is in the store, and
/// the same decision on a reopened store refuses it.
pub fn a_spent_code_stays_spent(b: &dyn Backend) -> Result<(), Error> {
    let alice = name("alice")?;
    // The verification of one code: accepted (and spent) if unspent.
    let verify = |s: &dyn Store| -> Result<bool, Error> {
        let mut accepted = false;
        s.update(&alice, &mut |old| {
            accepted = old == Some(&b"unspent"[..]);
            Ok(if accepted {
                Write::Put(b"spent".to_vec())
            } else {
                Write::Keep
            })
        })?;
        Ok(accepted)
    };
    {
        let s = b.open()?;
        s.put(&alice, b"unspent")?;
        assert!(verify(&*s)?, "the first use is accepted");
        // The crash: no reply, no further call on this handle.
    }
    let s = b.open()?;
    assert_eq!(s.get(&alice)?, Some(b"spent".to_vec()));
    assert!(!verify(&*s)?, "the code was accepted twice");
    Ok(())
}

/// What one contender of a race did: whether its last `decide` wrote, and
/// every record its `decide` saw.
type Contender = (bool, Vec<Option<Vec<u8>>>);

/// Two threads update one record from the same old value, each writing
/// its own value only if the record still holds the old one. `gate` runs
/// inside each `decide` call with the call's number (from 1).
fn race(s: &dyn Store, gate: &(dyn Fn(usize) + Sync)) -> Result<[Contender; 2], Error> {
    let alice = name("alice")?;
    s.put(&alice, b"old")?;
    let start = Barrier::new(2);
    let [a, b] = thread::scope(|scope| {
        [b"mine-a", b"mine-b"]
            .map(|mine| {
                let (start, alice) = (&start, &alice);
                scope.spawn(move || -> Result<Contender, Error> {
                    let (mut applied, mut seen) = (false, Vec::new());
                    start.wait();
                    s.update(alice, &mut |old| {
                        seen.push(old.map(<[u8]>::to_vec));
                        gate(seen.len());
                        applied = old == Some(&b"old"[..]);
                        Ok(if applied {
                            Write::Put(mine.to_vec())
                        } else {
                            Write::Keep
                        })
                    })?;
                    Ok((applied, seen))
                })
            })
            .map(join)
    });
    let (a, b) = (a?, b?);
    let final_value = s.get(&alice)?;
    let (winner, loser, mine) = match (a.0, b.0) {
        (true, false) => (&a, &b, &b"mine-a"[..]),
        (false, true) => (&b, &a, &b"mine-b"[..]),
        _ => panic!("exactly one update must apply: {a:?} {b:?}"),
    };
    assert_eq!(
        final_value.as_deref(),
        Some(mine),
        "the winner's value stays"
    );
    assert_eq!(winner.1.last(), Some(&Some(b"old".to_vec())));
    assert_eq!(
        loser.1.last(),
        Some(&Some(mine.to_vec())),
        "the loser decided last on the winner's write"
    );
    Ok([a, b])
}

/// Two concurrent updates of one user, both deciding from the same old
/// record: exactly one applies, the other sees its write.
pub fn one_of_two_concurrent_updates_applies(b: &dyn Backend) -> Result<(), Error> {
    let s = b.open()?;
    race(&*s, &|_| {})?;
    Ok(())
}

/// Optimistic backends: both contenders read the old record before either
/// writes (they meet inside `decide`); one write wins, the other update
/// calls `decide` again on the winner's bytes.
pub fn racing_decides_one_wins(b: &dyn Backend) -> Result<(), Error> {
    if !b.optimistic() {
        return Ok(());
    }
    let s = b.open()?;
    let both_read = Barrier::new(2);
    let [a, b] = race(&*s, &|call| {
        if call == 1 {
            both_read.wait();
        }
    })?;
    let mut calls = [a.1.len(), b.1.len()];
    calls.sort_unstable();
    assert_eq!(calls, [1, 2], "the loser decided twice: {a:?} {b:?}");
    Ok(())
}

/// Many threads increment a counter in one record: no increment is lost.
pub fn no_lost_updates(b: &dyn Backend) -> Result<(), Error> {
    const THREADS: u64 = 4;
    const EACH: u64 = 25;
    let s = b.open()?;
    let alice = name("alice")?;
    let start = Barrier::new(THREADS as usize);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| -> Result<(), Error> {
                    start.wait();
                    for _ in 0..EACH {
                        s.update(&alice, &mut |old| {
                            Ok(Write::Put((counter(old)? + 1).to_le_bytes().to_vec()))
                        })?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(join)
    })?;
    assert_eq!(counter(s.get(&alice)?.as_deref())?, THREADS * EACH);
    Ok(())
}

/// 2,500 users list in three pages of 1,000, each name once, in byte
/// order; `after` may name a user that does not exist.
pub fn list_pages(b: &dyn Backend) -> Result<(), Error> {
    const USERS: usize = 2500;
    let s = b.open()?;
    let names: Vec<String> = (0..USERS).map(|i| format!("user-{i:04}")).collect();
    // Written out of order (7 is coprime to 2,500: every index once).
    for i in 0..USERS {
        s.put(&name(&names[i * 7 % USERS])?, b"r")?;
    }
    let mut listed: Vec<String> = Vec::new();
    let mut pages = 0;
    loop {
        let page = s.list(listed.last().map(String::as_str), 1000)?;
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 1000);
        pages += 1;
        listed.extend(page);
    }
    assert_eq!(pages, 3);
    assert_eq!(listed, names);
    assert_eq!(s.users()?, names);
    assert_eq!(s.list(Some("user-0999a"), 2)?, ["user-1000", "user-1001"]);
    assert_eq!(s.list(Some(""), 1)?, ["user-0000"]);
    assert_eq!(s.list(Some("user-2499"), 10)?, Vec::<String>::new());
    assert_eq!(s.list(Some("zzz"), 10)?, Vec::<String>::new());
    assert_eq!(s.list(None, 0)?, Vec::<String>::new());
    assert!(!s.is_empty()?);
    Ok(())
}

/// An empty store lists nothing and says so.
pub fn list_empty(b: &dyn Backend) -> Result<(), Error> {
    let s = b.open()?;
    assert!(s.is_empty()?);
    assert_eq!(s.list(None, 10)?, Vec::<String>::new());
    assert_eq!(s.list(Some("alice"), 10)?, Vec::<String>::new());
    assert_eq!(s.users()?, Vec::<String>::new());
    Ok(())
}

/// Optimistic backends: another writer commits between the read and the
/// write of an update (from another thread, while `decide` runs). The
/// update does not overwrite it: `decide` runs again on its bytes.
pub fn a_write_during_decide_reruns_decide(b: &dyn Backend) -> Result<(), Error> {
    if !b.optimistic() {
        return Ok(());
    }
    let s = b.open()?;
    let s = &*s;
    let alice = name("alice")?;
    s.put(&alice, b"v1")?;
    let mut seen = Vec::new();
    s.update(&alice, &mut |old| {
        seen.push(old.map(<[u8]>::to_vec));
        if seen.len() == 1 {
            thread::scope(|scope| join(scope.spawn(|| s.put(&alice, b"theirs"))))?;
        }
        let mut new = old.unwrap_or_default().to_vec();
        new.extend_from_slice(b"+mine");
        Ok(Write::Put(new))
    })?;
    assert_eq!(seen, [Some(b"v1".to_vec()), Some(b"theirs".to_vec())]);
    assert_eq!(s.get(&alice)?, Some(b"theirs+mine".to_vec()));
    Ok(())
}

/// Optimistic backends: when another writer wins every time, the update
/// gives up after [`UPDATE_ATTEMPTS`] decisions with
/// [`Error::StoreContended`], having written nothing.
pub fn endless_conflict_ends_in_an_error(b: &dyn Backend) -> Result<(), Error> {
    if !b.optimistic() {
        return Ok(());
    }
    let s = b.open()?;
    let s = &*s;
    let alice = name("alice")?;
    s.put(&alice, b"v0")?;
    let mut calls: u32 = 0;
    let r = s.update(&alice, &mut |_| {
        calls += 1;
        let theirs = format!("theirs-{calls}");
        thread::scope(|scope| join(scope.spawn(|| s.put(&alice, theirs.as_bytes()))))?;
        Ok(Write::Put(b"mine".to_vec()))
    });
    assert!(
        matches!(&r, Err(Error::StoreContended { attempts, .. }) if *attempts == UPDATE_ATTEMPTS),
        "{r:?}"
    );
    assert_eq!(calls, UPDATE_ATTEMPTS);
    assert_eq!(
        s.get(&alice)?,
        Some(format!("theirs-{UPDATE_ATTEMPTS}").into_bytes())
    );
    Ok(())
}

/// Appends `+tag` to a record (an absent one is empty).
fn appended(old: Option<&[u8]>, tag: &str) -> Write {
    let mut new = old.unwrap_or_default().to_vec();
    new.extend_from_slice(b"+");
    new.extend_from_slice(tag.as_bytes());
    Write::Put(new)
}

/// A batch puts, keeps and removes records as each user's decision says,
/// sees each user's current bytes, returns one `Ok` per user, and is on
/// disk when it returns; `before_write` runs before the writes, and not at
/// all for a batch that writes nothing (a dry run); an empty batch is
/// fine.
pub fn batch_writes_every_user_durably(b: &dyn Backend) -> Result<(), Error> {
    let users = [name("alice")?, name("bob")?, name("carol")?, name("dave")?];
    {
        let s = b.open()?;
        s.put(&users[0], b"a")?;
        s.put(&users[2], b"c")?;
        s.put(&users[3], b"d")?;
        let mut seen = Vec::new();
        let mut syncs = 0;
        let results = s.update_batch(
            &users,
            &mut |i, old| {
                seen.push((i, old.map(<[u8]>::to_vec)));
                Ok(match i {
                    0 | 1 => appended(old, "new"),
                    2 => Write::Keep,
                    _ => Write::Remove,
                })
            },
            &mut || {
                syncs += 1;
                Ok(())
            },
        )?;
        assert_eq!(results.len(), 4);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        seen.sort();
        assert_eq!(
            seen,
            [
                (0, Some(b"a".to_vec())),
                (1, None),
                (2, Some(b"c".to_vec())),
                (3, Some(b"d".to_vec())),
            ]
        );
        assert!(syncs >= 1, "before_write never ran");
        // Nothing to write: no before_write.
        let mut syncs = 0;
        let results = s.update_batch(&users, &mut |_, _| Ok(Write::Keep), &mut || {
            syncs += 1;
            Ok(())
        })?;
        assert_eq!((results.len(), syncs), (4, 0));
        let empty = s.update_batch(&[], &mut |_, _| Ok(Write::Keep), &mut || {
            panic!("before_write for an empty batch")
        })?;
        assert!(empty.is_empty());
        // The crash: no further call on this handle.
    }
    let s = b.open()?;
    assert_eq!(s.get(&users[0])?, Some(b"a+new".to_vec()));
    assert_eq!(s.get(&users[1])?, Some(b"+new".to_vec()));
    assert_eq!(s.get(&users[2])?, Some(b"c".to_vec()));
    assert_eq!(s.get(&users[3])?, None);
    Ok(())
}

/// One user's failed decision fails that user only: its error comes back
/// as it is in its place, nothing is written for it, the others are
/// written.
pub fn batch_decide_error_fails_only_that_user(b: &dyn Backend) -> Result<(), Error> {
    let s = b.open()?;
    let users = [name("alice")?, name("bob")?, name("carol")?];
    s.put(&users[1], b"b")?;
    let results = s.update_batch(
        &users,
        &mut |i, old| match i {
            1 => Err(Error::Internal("decided no".into())),
            _ => Ok(appended(old, "new")),
        },
        &mut || Ok(()),
    )?;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(&results[1], Err(Error::Internal(m)) if m == "decided no"),
        "{results:?}"
    );
    drop(s);
    let s = b.open()?;
    assert_eq!(s.get(&users[0])?, Some(b"+new".to_vec()));
    assert_eq!(s.get(&users[1])?, Some(b"b".to_vec()));
    assert_eq!(s.get(&users[2])?, Some(b"+new".to_vec()));
    Ok(())
}

/// When `before_write` fails (the replay watermarks cannot be made
/// durable), the batch fails with its error and writes nothing.
pub fn batch_failed_before_write_writes_nothing(b: &dyn Backend) -> Result<(), Error> {
    let s = b.open()?;
    let users = [name("alice")?, name("bob")?];
    s.put(&users[0], b"a")?;
    let r = s.update_batch(&users, &mut |_, old| Ok(appended(old, "new")), &mut || {
        Err(Error::Internal("no sync".into()))
    });
    assert!(
        matches!(&r, Err(Error::Internal(m)) if m == "no sync"),
        "{r:?}"
    );
    drop(s);
    let s = b.open()?;
    assert_eq!(s.get(&users[0])?, Some(b"a".to_vec()));
    assert_eq!(s.get(&users[1])?, None);
    Ok(())
}

/// A name listed twice is two updates: the second decides on the first's
/// write, nothing is lost.
pub fn batch_name_twice_applies_both(b: &dyn Backend) -> Result<(), Error> {
    let s = b.open()?;
    let alice = name("alice")?;
    s.put(&alice, b"v")?;
    let results = s.update_batch(
        &[alice.clone(), alice.clone()],
        &mut |i, old| Ok(appended(old, &i.to_string())),
        &mut || Ok(()),
    )?;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let got = s.get(&alice)?;
    assert!(
        got == Some(b"v+0+1".to_vec()) || got == Some(b"v+1+0".to_vec()),
        "{got:?}"
    );
    Ok(())
}

/// Optimistic backends: another writer commits a user's record while the
/// batch decides it; that user is decided again on the other writer's
/// bytes (each user as atomic as one `update`), the others once.
pub fn batch_write_during_decide_reruns_that_user(b: &dyn Backend) -> Result<(), Error> {
    if !b.optimistic() {
        return Ok(());
    }
    let s = b.open()?;
    let s = &*s;
    let users = [name("alice")?, name("bob")?];
    s.put(&users[0], b"v1")?;
    let mut seen = Vec::new();
    let results = s.update_batch(
        &users,
        &mut |i, old| {
            seen.push((i, old.map(<[u8]>::to_vec)));
            if i == 0 && seen.len() == 1 {
                thread::scope(|scope| join(scope.spawn(|| s.put(&users[0], b"theirs"))))?;
            }
            Ok(appended(old, "mine"))
        },
        &mut || Ok(()),
    )?;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        seen,
        [
            (0, Some(b"v1".to_vec())),
            (1, None),
            (0, Some(b"theirs".to_vec())),
        ]
    );
    assert_eq!(s.get(&users[0])?, Some(b"theirs+mine".to_vec()));
    assert_eq!(s.get(&users[1])?, Some(b"+mine".to_vec()));
    Ok(())
}

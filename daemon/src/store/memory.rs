//! The store in memory: for fast tests, and the reference implementation
//! of the contract (one lock held across read, decide and write, so
//! `decide` runs exactly once per update).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Store, Write};
use crate::error::Error;
use crate::record::UserName;

/// Records in a map in memory, keyed by the bytes of the user name.
///
/// Clones share the same records: a clone is a second handle on the same
/// store (what reopening is for a store on disk). Nothing survives the
/// last handle.
#[derive(Clone, Default)]
pub struct MemoryStore {
    records: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("records", &self.records().len())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn records(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // A panic in `decide` happens before the map is touched: a
        // poisoned map is still consistent.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn get(&self, user: &UserName) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.records().get(user.as_str().as_bytes()).cloned())
    }

    fn update(
        &self,
        user: &UserName,
        decide: &mut dyn FnMut(Option<&[u8]>) -> Result<Write, Error>,
    ) -> Result<(), Error> {
        let key = user.as_str().as_bytes();
        let mut records = self.records();
        match decide(records.get(key).map(Vec::as_slice))? {
            Write::Keep => {}
            Write::Put(bytes) => {
                records.insert(key.to_vec(), bytes);
            }
            Write::Remove => {
                records.remove(key);
            }
        }
        Ok(())
    }

    fn list(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, Error> {
        let start = match after {
            Some(a) => Bound::Excluded(a.as_bytes()),
            None => Bound::Unbounded,
        };
        Ok(self
            .records()
            .range::<[u8], _>((start, Bound::Unbounded))
            .take(limit)
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect())
    }

    fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.records().is_empty())
    }
}

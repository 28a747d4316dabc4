//! Persistence: a small trait, and its implementation on an embedded sled
//! database. The store only ever sees sealed bytes.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::record::UserName;

/// Durable storage of sealed user records, keyed by user name.
pub trait Store: Send + Sync {
    /// The sealed record of `user`, if any.
    fn get(&self, user: &UserName) -> Result<Option<Vec<u8>>, Error>;
    /// Stores `sealed` for `user`; on return it is on disk.
    fn put(&self, user: &UserName, sealed: &[u8]) -> Result<(), Error>;
    /// Removes `user`; on return the removal is on disk.
    fn remove(&self, user: &UserName) -> Result<(), Error>;
    /// Every stored user name (lossily decoded), sorted.
    fn users(&self) -> Result<Vec<String>, Error>;
}

/// The sled-backed store under `<state_dir>/store`.
pub struct SledStore {
    db: sled::Db,
    users: sled::Tree,
    path: PathBuf,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish()
    }
}

fn store_error(e: sled::Error) -> Error {
    Error::Store(e.to_string())
}

impl SledStore {
    /// Opens (or creates) the database at `path`. Another process holding it
    /// is reported as [`Error::StoreLocked`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| match &e {
                sled::Error::Io(io)
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
        Ok(Self {
            db,
            users,
            path: path.to_owned(),
        })
    }

    fn flush(&self) -> Result<(), Error> {
        self.db.flush().map(|_| ()).map_err(store_error)
    }
}

impl Store for SledStore {
    fn get(&self, user: &UserName) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .users
            .get(user.as_str().as_bytes())
            .map_err(store_error)?
            .map(|v| v.to_vec()))
    }

    fn put(&self, user: &UserName, sealed: &[u8]) -> Result<(), Error> {
        self.users
            .insert(user.as_str().as_bytes(), sealed)
            .map_err(store_error)?;
        self.flush()
    }

    fn remove(&self, user: &UserName) -> Result<(), Error> {
        self.users
            .remove(user.as_str().as_bytes())
            .map_err(store_error)?;
        self.flush()
    }

    fn users(&self) -> Result<Vec<String>, Error> {
        self.users
            .iter()
            .keys()
            .map(|k| {
                k.map(|k| String::from_utf8_lossy(&k).into_owned())
                    .map_err(store_error)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_remove_survive_reopen() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let s = SledStore::open(dir.path())?;
            s.put(&UserName::test("bob"), b"b")?;
            s.put(&UserName::test("alice"), b"a")?;
            s.remove(&UserName::test("bob"))?;
        }
        let s = SledStore::open(dir.path())?;
        assert_eq!(s.get(&UserName::test("alice"))?, Some(b"a".to_vec()));
        assert_eq!(s.get(&UserName::test("bob"))?, None);
        assert_eq!(s.users()?, vec!["alice".to_string()]);
        Ok(())
    }
}

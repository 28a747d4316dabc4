//! Name-service lookups (uid → login name) off the async workers, behind
//! a short cache.
//!
//! With LDAP or SSSD a lookup can take seconds; run on an async worker it
//! would stall every request that worker serves. So a lookup runs on the
//! blocking pool, and its answer (a name, or "no such uid") is kept for
//! [`TTL`], for at most [`CAPACITY`] uids. A failed lookup (the directory
//! is down) is not cached: the caller gets no name, so it may act on no
//! account of its own (fail closed).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::unistd::{Uid, User};

/// How long an answer is used.
pub const TTL: Duration = Duration::from_secs(30);

/// Uids remembered at once.
pub const CAPACITY: usize = 1024;

/// Answers of the name service, by uid, with the time they were given.
#[derive(Debug)]
pub struct NameCache {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<u32, (Option<String>, Instant)>,
}

impl NameCache {
    /// Keeps answers for `ttl`, at most `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: HashMap::new(),
        }
    }

    /// The cached answer for `uid` at `now`: `Some(name)` (`name` is `None`
    /// for a uid without a passwd entry), or `None` to look it up.
    pub fn get(&self, uid: u32, now: Instant) -> Option<Option<String>> {
        self.entries
            .get(&uid)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(name, _)| name.clone())
    }

    /// Remembers the answer for `uid` given at `now`. When full, drops the
    /// expired answers, then the oldest.
    pub fn put(&mut self, uid: u32, name: Option<String>, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&uid) {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
            if self.entries.len() >= self.capacity {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(uid, _)| *uid);
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        if self.capacity > 0 {
            self.entries.insert(uid, (name, now));
        }
    }

    /// Answers held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The login names of uids, from the system's name service.
#[derive(Debug)]
pub struct Accounts {
    cache: Mutex<NameCache>,
}

impl Default for Accounts {
    fn default() -> Self {
        Self {
            cache: Mutex::new(NameCache::new(TTL, CAPACITY)),
        }
    }
}

impl Accounts {
    /// The login name of `uid`; `None` if it has none or the lookup failed.
    pub async fn name_of(&self, uid: u32) -> Option<String> {
        if let Some(hit) = self.lock().get(uid, Instant::now()) {
            return hit;
        }
        let looked_up = tokio::task::spawn_blocking(move || User::from_uid(Uid::from_raw(uid)))
            .await
            .ok()?;
        match looked_up {
            Ok(user) => {
                let name = user.map(|u| u.name);
                self.lock().put(uid, name.clone(), Instant::now());
                name
            }
            Err(e) => {
                tracing::warn!(uid, error = %e, "cannot look up the caller's login name");
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NameCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_after_the_ttl() {
        let t0 = Instant::now();
        let mut c = NameCache::new(TTL, 4);
        assert_eq!(c.get(1000, t0), None);
        c.put(1000, Some("alice".into()), t0);
        c.put(1001, None, t0);
        assert_eq!(c.get(1000, t0 + TTL / 2), Some(Some("alice".into())));
        // "No such uid" is an answer too.
        assert_eq!(c.get(1001, t0), Some(None));
        assert_eq!(c.get(1000, t0 + TTL), None);
    }

    #[test]
    fn the_cache_holds_at_most_its_capacity_dropping_the_expired_then_the_oldest() {
        let t0 = Instant::now();
        let mut c = NameCache::new(TTL, 3);
        c.put(1, Some("a".into()), t0);
        c.put(2, Some("b".into()), t0 + Duration::from_secs(1));
        c.put(3, Some("c".into()), t0 + Duration::from_secs(2));
        c.put(4, Some("d".into()), t0 + Duration::from_secs(3));
        assert_eq!(c.len(), 3);
        assert_eq!(
            c.get(1, t0 + Duration::from_secs(3)),
            None,
            "oldest dropped"
        );
        assert!(c.get(2, t0 + Duration::from_secs(3)).is_some());
        // Later, 2 and 3 have expired: both make room at once.
        let later = t0 + TTL + Duration::from_secs(2);
        c.put(5, None, later);
        assert_eq!(c.len(), 2);
        for uid in 0..10_000 {
            c.put(uid, None, later);
        }
        assert_eq!(c.len(), 3);
    }

    #[tokio::test]
    async fn lookups_answer_from_the_name_service() {
        let a = Accounts::default();
        assert_eq!(a.name_of(0).await.as_deref(), Some("root"));
        assert_eq!(a.name_of(0).await.as_deref(), Some("root"));
        // A uid without a passwd entry.
        assert_eq!(a.name_of(3_999_999_999).await, None);
        assert_eq!(a.lock().len(), 2);
    }
}

//! Rate-limited reporting of a repetitive event: the first occurrence for a
//! key is reported at once, later ones are counted and reported as one
//! summary per key per window ("N connections refused from uid U in the
//! last minute"). A local user who triggers the event in a loop gets one
//! line per window, not one per event.
//!
//! Time is a parameter (`now`), so the behaviour is tested with explicit
//! timestamps.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What to log for one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The first occurrence for this key (in this window): log it in full.
    First,
    /// The window since the last report for this key has passed: log that
    /// `count` occurrences (this one included) happened since then.
    Summary {
        /// Occurrences since the last report.
        count: u64,
    },
}

/// Counts occurrences per key and decides when to report them.
#[derive(Debug)]
pub struct Summariser<K> {
    window: Duration,
    keys: HashMap<K, Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the last line for this key was due.
    since: Instant,
    /// Occurrences not reported yet.
    pending: u64,
}

impl<K: Eq + Hash + Copy> Summariser<K> {
    /// At most one line per key per `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            keys: HashMap::new(),
        }
    }

    /// Records one occurrence for `key` at `now`; `Some` when a line is due.
    pub fn record(&mut self, key: K, now: Instant) -> Option<Report> {
        match self.keys.get_mut(&key) {
            None => {
                self.keys.insert(
                    key,
                    Entry {
                        since: now,
                        pending: 0,
                    },
                );
                Some(Report::First)
            }
            Some(entry) if now.saturating_duration_since(entry.since) < self.window => {
                entry.pending = entry.pending.saturating_add(1);
                None
            }
            Some(entry) => {
                let count = entry.pending.saturating_add(1);
                *entry = Entry {
                    since: now,
                    pending: 0,
                };
                Some(Report::Summary { count })
            }
        }
    }

    /// Summaries due at `now` for keys that went quiet: `(key, count)` for
    /// every key whose window has passed with occurrences not yet reported.
    /// Keys whose window passed with nothing pending are forgotten, so the
    /// next occurrence is reported as [`Report::First`] again and the map
    /// holds only keys seen in the last window.
    pub fn flush(&mut self, now: Instant) -> Vec<(K, u64)> {
        let mut due = Vec::new();
        let window = self.window;
        self.keys.retain(|key, entry| {
            if now.saturating_duration_since(entry.since) < window {
                return true;
            }
            if entry.pending == 0 {
                return false;
            }
            due.push((*key, entry.pending));
            *entry = Entry {
                since: now,
                pending: 0,
            };
            true
        });
        due
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn first_then_one_summary_per_window_per_key() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Summariser::new(MINUTE);
        assert_eq!(s.record(1000u32, at(0)), Some(Report::First));
        // 62,000 more in the first minute: not one line.
        for i in 1..=62_000u64 {
            assert_eq!(s.record(1000, at(i / 2)), None);
        }
        // Another uid is reported on its own.
        assert_eq!(s.record(1001, at(10)), Some(Report::First));
        assert_eq!(s.record(1001, at(20)), None);
        // Nothing is due before the minute is over.
        assert!(s.flush(at(59_999)).is_empty());
        // After it: one summary per uid, with the count since the last line.
        let mut due = s.flush(at(60_020));
        due.sort_unstable();
        assert_eq!(due, vec![(1000, 62_000), (1001, 1)]);
        // The next occurrence within the new window is counted, not logged.
        assert_eq!(s.record(1000, at(61_000)), None);
        // An occurrence after the window reports itself with the pending ones.
        assert_eq!(
            s.record(1000, at(121_000)),
            Some(Report::Summary { count: 2 })
        );
        assert_eq!(s.record(1000, at(121_001)), None);
    }

    #[test]
    fn a_quiet_key_is_forgotten_and_reported_in_full_again() {
        let t0 = Instant::now();
        let mut s = Summariser::new(MINUTE);
        assert_eq!(s.record(7u32, t0), Some(Report::First));
        // Nothing pending after the window: forgotten, no summary line.
        assert!(s.flush(t0 + MINUTE).is_empty());
        assert!(s.is_empty());
        assert_eq!(s.record(7, t0 + 2 * MINUTE), Some(Report::First));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn time_going_backwards_never_reports_early() {
        let t0 = Instant::now() + MINUTE;
        let mut s = Summariser::new(MINUTE);
        assert_eq!(s.record(1u32, t0), Some(Report::First));
        assert_eq!(s.record(1, t0 - Duration::from_secs(30)), None);
        assert!(s.flush(t0 - Duration::from_secs(30)).is_empty());
        assert_eq!(s.flush(t0 + MINUTE), vec![(1, 1)]);
    }
}

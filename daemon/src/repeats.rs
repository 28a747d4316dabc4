//! A bound on repetitive log events: per key (a caller's uid), the first
//! few events of a window are logged one by one, the rest only counted and
//! reported in one summary when the window ends.
//!
//! Time is a parameter (`now` on every call), so the bookkeeping is tested
//! without sleeping. The type knows nothing of `tracing`: the caller logs
//! what [`Repeats::note`] and [`Repeats::due`] tell it to.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// Log it.
    Log,
    /// Do not log it; it is counted for the key's next summary.
    Quiet,
}

/// Events of one key that were counted but not logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary<K> {
    /// The key; `None` for the keys that found the table full.
    pub key: Option<K>,
    /// How many events were not logged.
    pub quiet: u64,
    /// The time they fell in (a window, or less when drained early).
    pub over: Duration,
}

#[derive(Debug, Clone)]
struct Window {
    start: Instant,
    /// Events that may still be logged one by one in this window.
    left: u32,
    quiet: u64,
}

/// Per-key counters of repetitive events.
#[derive(Debug)]
pub struct Repeats<K> {
    burst: u32,
    window: Duration,
    max_keys: usize,
    keys: HashMap<K, Window>,
    /// Events of keys that found the table full.
    overflow: Option<Window>,
    /// Closed windows not yet handed out by [`Repeats::due`].
    ready: Vec<Summary<K>>,
}

impl<K: Eq + Hash + Copy> Repeats<K> {
    /// Logs up to `burst` events per key and `window`, summarises the rest
    /// once per key and window; tracks at most `max_keys` keys (the events
    /// of further keys share one summary with key `None`).
    pub fn new(burst: u32, window: Duration, max_keys: usize) -> Self {
        Self {
            burst,
            window,
            max_keys,
            keys: HashMap::new(),
            overflow: None,
            ready: Vec::new(),
        }
    }

    /// Counts one event of `key` at `now` and says whether to log it.
    ///
    /// A key whose last window ended with events not logged starts the
    /// next window quiet: while the flood goes on, the key costs one
    /// summary per window and nothing else.
    pub fn note(&mut self, key: K, now: Instant) -> Note {
        if let Some(w) = self.keys.get(&key)
            && now.saturating_duration_since(w.start) >= self.window
        {
            self.close(key, now);
        }
        let burst = self.burst;
        let full = self.keys.len() >= self.max_keys;
        let w = match self.keys.get_mut(&key) {
            Some(w) => w,
            None if full => {
                let w = self.overflow.get_or_insert(Window {
                    start: now,
                    left: 0,
                    quiet: 0,
                });
                w.quiet += 1;
                return Note::Quiet;
            }
            None => self.keys.entry(key).or_insert(Window {
                start: now,
                left: burst,
                quiet: 0,
            }),
        };
        if w.left > 0 {
            w.left -= 1;
            Note::Log
        } else {
            w.quiet += 1;
            Note::Quiet
        }
    }

    /// Summaries of the windows that have ended by `now` with events not
    /// logged (at most one per key and window).
    pub fn due(&mut self, now: Instant) -> Vec<Summary<K>> {
        let ended: Vec<K> = self
            .keys
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.start) >= self.window)
            .map(|(k, _)| *k)
            .collect();
        for key in ended {
            self.close(key, now);
        }
        if let Some(w) = &self.overflow
            && now.saturating_duration_since(w.start) >= self.window
        {
            self.ready.push(Summary {
                key: None,
                quiet: w.quiet,
                over: self.window,
            });
            self.overflow = None;
        }
        std::mem::take(&mut self.ready)
    }

    /// Every pending summary, windows still open included (at shutdown).
    pub fn drain(&mut self, now: Instant) -> Vec<Summary<K>> {
        let mut out = std::mem::take(&mut self.ready);
        for (key, w) in self.keys.drain() {
            if w.quiet > 0 {
                out.push(Summary {
                    key: Some(key),
                    quiet: w.quiet,
                    over: now.saturating_duration_since(w.start).min(self.window),
                });
            }
        }
        if let Some(w) = self.overflow.take() {
            out.push(Summary {
                key: None,
                quiet: w.quiet,
                over: now.saturating_duration_since(w.start).min(self.window),
            });
        }
        out
    }

    /// Keys tracked now (for tests of the bound).
    pub fn tracked(&self) -> usize {
        self.keys.len()
    }

    /// Ends the window of `key`: a summary if events went unlogged (and a
    /// quiet next window), else the key is forgotten.
    fn close(&mut self, key: K, now: Instant) {
        let Some(w) = self.keys.remove(&key) else {
            return;
        };
        if w.quiet == 0 {
            return;
        }
        self.ready.push(Summary {
            key: Some(key),
            quiet: w.quiet,
            over: self.window,
        });
        self.keys.insert(
            key,
            Window {
                start: now,
                left: 0,
                quiet: 0,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn logs_the_first_events_then_one_summary_per_window() {
        let t0 = Instant::now();
        let mut r = Repeats::new(3, MINUTE, 16);
        let notes: Vec<Note> = (0..10).map(|_| r.note(7u32, t0)).collect();
        assert_eq!(&notes[..3], &[Note::Log; 3]);
        assert!(notes[3..].iter().all(|n| *n == Note::Quiet));
        // Another key has its own allowance.
        assert_eq!(r.note(8, t0), Note::Log);
        assert!(r.due(t0 + Duration::from_secs(59)).is_empty());
        assert_eq!(
            r.due(t0 + MINUTE),
            vec![Summary {
                key: Some(7),
                quiet: 7,
                over: MINUTE
            }]
        );
        // Key 8 logged everything: forgotten, nothing to say.
        assert_eq!(r.tracked(), 1);
        // The flood goes on: the next window is quiet from the start.
        let t1 = t0 + MINUTE + Duration::from_secs(1);
        assert_eq!(r.note(7, t1), Note::Quiet);
        assert_eq!(r.note(7, t1), Note::Quiet);
        assert!(r.due(t1).is_empty(), "at most one summary per window");
        let s = r.due(t0 + 2 * MINUTE);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].key, s[0].quiet), (Some(7), 2));
        // A window without events ends the quiet state.
        assert!(r.due(t0 + 3 * MINUTE).is_empty());
        assert_eq!(r.tracked(), 0);
        assert_eq!(r.note(7, t0 + 3 * MINUTE), Note::Log);
    }

    #[test]
    fn a_late_event_closes_its_own_window_without_losing_counts() {
        let t0 = Instant::now();
        let mut r = Repeats::new(1, MINUTE, 16);
        assert_eq!(r.note(1u32, t0), Note::Log);
        assert_eq!(r.note(1, t0), Note::Quiet);
        // Nobody called `due` in time; the next event closes the window.
        assert_eq!(r.note(1, t0 + 2 * MINUTE), Note::Quiet);
        let s = r.due(t0 + 2 * MINUTE);
        assert_eq!((s[0].key, s[0].quiet), (Some(1), 1));
        let s = r.drain(t0 + 2 * MINUTE + Duration::from_secs(5));
        assert_eq!(
            s,
            vec![Summary {
                key: Some(1),
                quiet: 1,
                over: Duration::from_secs(5)
            }]
        );
    }

    #[test]
    fn the_table_is_bounded_and_overflow_is_summarised_too() {
        let t0 = Instant::now();
        let mut r = Repeats::new(2, MINUTE, 4);
        for uid in 0..100u32 {
            r.note(uid, t0);
        }
        assert_eq!(r.tracked(), 4);
        let s = r.drain(t0);
        assert_eq!(s.iter().map(|s| s.quiet).sum::<u64>(), 96);
        assert_eq!(
            s.iter().find(|s| s.key.is_none()).map(|s| s.quiet),
            Some(96)
        );
    }

    #[test]
    fn counts_add_up_under_a_long_flood() {
        let t0 = Instant::now();
        let mut r = Repeats::new(10, MINUTE, 16);
        let (mut logged, mut summarised, mut summaries) = (0u64, 0u64, 0u64);
        // 10 events a second for an hour.
        for i in 0..36_000u64 {
            let now = t0 + Duration::from_millis(i * 100);
            for s in r.due(now) {
                summarised += s.quiet;
                summaries += 1;
            }
            if r.note(42u32, now) == Note::Log {
                logged += 1;
            }
        }
        for s in r.drain(t0 + Duration::from_secs(3600)) {
            summarised += s.quiet;
            summaries += 1;
        }
        assert_eq!(logged + summarised, 36_000);
        assert_eq!(logged, 10);
        assert!(summaries <= 61, "{summaries}");
    }
}

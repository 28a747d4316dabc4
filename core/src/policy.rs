//! Rate limit and lockout: pure functions of a user's counters and the time.
//!
//! * Throttle: at most `max_failures` failures in any `window` seconds;
//!   beyond that, attempts are refused unchecked until the oldest failure in
//!   the window ages out.
//! * Lockout: every `lock_threshold` consecutive failures lock the user for
//!   `lock_duration`, doubled for each further lockout without a success in
//!   between, up to `lock_max`. Attempts while locked are refused unchecked
//!   (even a correct code) and do not count.
//! * A success clears the consecutive count, the throttle and the doubling.
//!   Successes never count against any limit.

use serde::{Deserialize, Serialize};

/// Limits, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures allowed per throttle window.
    pub max_failures: u32,
    /// Throttle window in seconds.
    pub window: u64,
    /// Consecutive failures that lock the user.
    pub lock_threshold: u32,
    /// First lockout, seconds.
    pub lock_duration: u64,
    /// Longest lockout, seconds.
    pub lock_max: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: 60,
            lock_threshold: 8,
            lock_duration: 15 * 60,
            lock_max: 24 * 60 * 60,
        }
    }
}

/// The persisted failure state of one user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Times of recent failures (at most `max_failures`, oldest first).
    pub recent_failures: Vec<u64>,
    /// Failures since the last success (or unlock).
    pub consecutive_failures: u32,
    /// Unix time until which the user is locked; 0 = never locked.
    pub locked_until: u64,
}

/// Whether an attempt may be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Check the code.
    Open,
    /// Locked out until this Unix time.
    Locked {
        /// Unix time the lock ends.
        until: u64,
    },
    /// Too many recent failures; retry at this Unix time.
    Throttled {
        /// Unix time the next attempt will be checked.
        retry_at: u64,
    },
}

impl Gate {
    /// Seconds from `now` until an attempt will be checked again.
    pub fn retry_after(self, now: u64) -> u64 {
        match self {
            Self::Open => 0,
            Self::Locked { until } => until.saturating_sub(now),
            Self::Throttled { retry_at } => retry_at.saturating_sub(now),
        }
    }
}

impl Policy {
    /// May an attempt be checked at `now`?
    pub fn gate(&self, c: &Counters, now: u64) -> Gate {
        if c.locked_until > now {
            return Gate::Locked {
                until: c.locked_until,
            };
        }
        let max = self.max_failures as usize;
        let in_window: Vec<u64> = c
            .recent_failures
            .iter()
            .copied()
            .filter(|&t| t.saturating_add(self.window) > now)
            .collect();
        if max > 0 && in_window.len() >= max {
            // The attempt after the `max`-th most recent failure ages out.
            let oldest_relevant = in_window[in_window.len() - max];
            return Gate::Throttled {
                retry_at: oldest_relevant.saturating_add(self.window),
            };
        }
        Gate::Open
    }

    /// Records a checked attempt that failed.
    pub fn record_failure(&self, c: &mut Counters, now: u64) {
        c.recent_failures
            .retain(|&t| t.saturating_add(self.window) > now);
        c.recent_failures.push(now);
        let keep = (self.max_failures as usize).max(1);
        if c.recent_failures.len() > keep {
            let excess = c.recent_failures.len() - keep;
            c.recent_failures.drain(..excess);
        }
        c.consecutive_failures = c.consecutive_failures.saturating_add(1);
        if self.lock_threshold > 0 && c.consecutive_failures.is_multiple_of(self.lock_threshold) {
            let lockouts = c.consecutive_failures / self.lock_threshold;
            c.locked_until = now.saturating_add(self.lock_duration_for(lockouts));
        }
    }

    /// Records a success.
    pub fn record_success(&self, c: &mut Counters) {
        *c = Counters::default();
    }

    /// Length of the `n`-th lockout in a row (1-based).
    pub fn lock_duration_for(&self, n: u32) -> u64 {
        let doublings = n.saturating_sub(1).min(63);
        self.lock_duration
            .saturating_mul(1u64 << doublings)
            .min(self.lock_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    #[test]
    fn fifth_failure_in_a_minute_throttles_until_the_first_ages_out() {
        let p = Policy::default();
        let mut c = Counters::default();
        for i in 0..5 {
            assert_eq!(p.gate(&c, T0 + i), Gate::Open);
            p.record_failure(&mut c, T0 + i);
        }
        assert_eq!(p.gate(&c, T0 + 5), Gate::Throttled { retry_at: T0 + 60 });
        assert_eq!(p.gate(&c, T0 + 5).retry_after(T0 + 5), 55);
        assert_eq!(p.gate(&c, T0 + 59), Gate::Throttled { retry_at: T0 + 60 });
        assert_eq!(p.gate(&c, T0 + 60), Gate::Open);
        // Next failure: the window now holds failures 2..=6 → wait for #2.
        p.record_failure(&mut c, T0 + 60);
        assert_eq!(p.gate(&c, T0 + 60), Gate::Throttled { retry_at: T0 + 61 });
    }

    #[test]
    fn eighth_consecutive_failure_locks_then_doubles_up_to_the_cap() {
        let p = Policy::default();
        let mut c = Counters::default();
        let mut now = T0;
        let mut expected = [900u64, 1800, 3600, 7200, 14400, 28800, 57600, 86400, 86400].iter();
        for failure in 1..=72u32 {
            // Pace the attempts so the throttle never gets in the way.
            loop {
                match p.gate(&c, now) {
                    Gate::Open => break,
                    g => now += g.retry_after(now),
                }
            }
            p.record_failure(&mut c, now);
            if failure % 8 == 0 {
                let dur = expected.next().copied().unwrap_or(86400);
                assert_eq!(c.locked_until, now + dur, "lockout #{}", failure / 8);
                assert_eq!(p.gate(&c, now + dur - 1), Gate::Locked { until: now + dur });
            } else {
                assert!(c.locked_until <= now, "locked early at failure {failure}");
            }
        }
    }

    #[test]
    fn success_clears_failures_and_resets_the_doubling() {
        let p = Policy::default();
        let mut c = Counters::default();
        let mut now = T0;
        for _ in 0..8 {
            p.record_failure(&mut c, now);
            now += 13;
        }
        assert!(matches!(p.gate(&c, now), Gate::Locked { .. }));
        now = c.locked_until;
        p.record_success(&mut c);
        assert_eq!(c, Counters::default());
        for _ in 0..8 {
            p.record_failure(&mut c, now);
            now += 13;
        }
        // First lockout again, not the second.
        assert_eq!(c.locked_until, now - 13 + 900);
    }

    #[test]
    fn successes_do_not_count_against_the_limit() {
        let p = Policy::default();
        let mut c = Counters::default();
        for i in 0..100 {
            assert_eq!(p.gate(&c, T0 + i), Gate::Open);
            p.record_success(&mut c);
        }
    }

    #[test]
    fn huge_settings_saturate_instead_of_overflowing() {
        let p = Policy {
            lock_duration: u64::MAX / 2,
            lock_max: u64::MAX,
            ..Policy::default()
        };
        assert_eq!(p.lock_duration_for(u32::MAX), u64::MAX);
        let mut c = Counters {
            consecutive_failures: u32::MAX - 1,
            ..Counters::default()
        };
        p.record_failure(&mut c, u64::MAX - 1);
        p.record_failure(&mut c, u64::MAX);
        assert_eq!(c.consecutive_failures, u32::MAX);
    }

    /// The figure in the README: how many guesses a patient attacker gets
    /// checked per year under the default policy, attacking one user.
    #[test]
    fn worst_case_guesses_per_year_with_defaults() {
        let p = Policy::default();
        let mut c = Counters::default();
        let year = 365 * 24 * 3600;
        let mut now = T0;
        let mut checked = 0u64;
        while now < T0 + year {
            match p.gate(&c, now) {
                Gate::Open => {
                    checked += 1;
                    p.record_failure(&mut c, now);
                }
                g => now += g.retry_after(now),
            }
        }
        // 7 growing lockouts (15 min .. 16 h), then one per 24 h.
        assert_eq!(checked, 2_968, "update the README's guessing odds");
    }

    /// The README's figure per user with origins: attempts from the
    /// trusted origins (the console, hosts the user logged in from) and
    /// from every other host (all together) have a budget each, so a year
    /// of guessing from everywhere at once gets twice the one-bucket figure,
    /// however many attacker hosts there are.
    #[test]
    fn worst_case_guesses_per_year_per_user_from_any_number_of_hosts() {
        use crate::record::UserRecord;
        let p = Policy::default();
        let mut rec = UserRecord::default();
        rec.remember_origin("bastion");
        // A known origin (shared NAT, bastion), the console, and 100
        // attacker hosts, each guessing whenever it may.
        let mut origins = vec!["bastion".to_owned(), String::new()];
        origins.extend((0..100).map(|i| format!("203.0.113.{i}")));
        let year = 365 * 24 * 3600;
        let mut now = T0;
        let (mut checked, mut per_origin) = (0u64, vec![0u64; origins.len()]);
        while now < T0 + year {
            let mut any = false;
            for (i, origin) in origins.iter().enumerate() {
                let bucket = rec.bucket_of(origin);
                if p.gate(rec.counters(bucket), now) == Gate::Open {
                    p.record_failure(rec.counters_mut(bucket), now);
                    checked += 1;
                    per_origin[i] += 1;
                    any = true;
                }
            }
            if !any {
                // Every origin must wait: skip to the first that may go.
                now += [&rec.counters, &rec.stranger_counters]
                    .iter()
                    .map(|c| p.gate(c, now).retry_after(now))
                    .min()
                    .unwrap_or(1)
                    .max(1);
            }
        }
        assert_eq!(checked, 2 * 2_968, "update the README's guessing odds");
        let strangers: u64 = per_origin[2..].iter().sum();
        assert_eq!(strangers, 2_968, "100 hosts get what one host gets");
        assert_eq!(per_origin[0] + per_origin[1], 2_968);
    }
}

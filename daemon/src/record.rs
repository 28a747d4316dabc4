//! What the daemon stores per user (sealed as a whole before it reaches the
//! store), and the validation of user names.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::backup_codes::BackupCodeSet;
use crate::crypto::{self, MasterKey, OpenError};
use crate::error::Error;
use crate::policy::Counters;
use crate::secret::TotpSecret;
use crate::totp::{TotpParams, UsedSteps};

/// Most single future steps kept spent (see [`UserRecord::spend_step`]).
/// A clock-skew hint reveals at most `SKEW_PROBE_STEPS` (10) steps ahead and
/// steps fall out of the acceptance window (±10 at most), so 21 can be
/// pending at once; beyond the bound the watermark moves instead.
pub const MAX_SPENT_AHEAD: usize = 32;

/// Most remote hosts remembered per user as known origins.
pub const MAX_KNOWN_ORIGINS: usize = 32;

/// Which failure counters judge an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// The local machine, or a remote host the user logged in from.
    Trusted,
    /// Any other remote host.
    Strangers,
}

/// Longest accepted user name, in bytes.
pub const MAX_USER_LEN: usize = 256;

/// A validated user name: UTF-8, 1..=256 bytes, no control characters, no
/// `:` (it would break the otpauth label) and no leading `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

impl UserName {
    /// Validates untrusted bytes.
    pub fn parse(raw: &[u8]) -> Result<Self, Error> {
        if raw.is_empty() {
            return Err(Error::InvalidUser("empty"));
        }
        if raw.len() > MAX_USER_LEN {
            return Err(Error::InvalidUser("longer than 256 bytes"));
        }
        if raw.contains(&0) {
            return Err(Error::InvalidUser("contains a NUL byte"));
        }
        let s = std::str::from_utf8(raw).map_err(|_| Error::InvalidUser("not valid UTF-8"))?;
        if s.chars().any(char::is_control) {
            return Err(Error::InvalidUser("contains a control character"));
        }
        if s.contains(':') {
            return Err(Error::InvalidUser("contains ':'"));
        }
        if s.starts_with('-') {
            return Err(Error::InvalidUser("starts with '-'"));
        }
        Ok(Self(s.to_owned()))
    }

    /// A known-good name, for tests.
    #[cfg(test)]
    pub(crate) fn test(name: &str) -> Self {
        match Self::parse(name.as_bytes()) {
            Ok(user) => user,
            Err(e) => panic!("test user name {name:?}: {e}"),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A TOTP secret with its parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrollment {
    /// The shared key.
    pub secret: TotpSecret,
    /// Algorithm, digits, period.
    pub params: TotpParams,
    /// Issuer shown in the app.
    pub issuer: String,
    /// When it was created (pending) or confirmed (active), Unix seconds.
    pub since: u64,
}

/// How a login succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// A TOTP code.
    Totp,
    /// A backup code.
    BackupCode,
}

/// The last accepted code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSuccess {
    /// Unix seconds.
    pub time: u64,
    /// PAM service.
    pub service: String,
    /// PAM_RHOST.
    pub remote_host: String,
    /// TOTP or backup code.
    pub method: Method,
}

/// Everything about one user. Sealed as a whole under the master key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserRecord {
    /// The confirmed secret; logins need a code when this is set.
    pub active: Option<Enrollment>,
    /// A started, unconfirmed enrollment.
    pub pending: Option<Enrollment>,
    /// Unused backup codes.
    pub backup_codes: Option<BackupCodeSet>,
    /// The last TOTP time step accepted (replay protection).
    pub last_used_step: Option<u64>,
    /// Single steps after `last_used_step` that are spent too: future steps
    /// whose code a clock-skew hint answered. Ascending, at most
    /// [`MAX_SPENT_AHEAD`], each after `last_used_step`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spent_ahead: Vec<u64>,
    /// Failure counters and lockout of attempts from trusted origins: the
    /// local machine (no remote host) and the hosts in `known_origins`.
    /// (Records written before origins existed kept all their counts here.)
    #[serde(default)]
    pub counters: Counters,
    /// Failure counters and lockout of attempts from every other origin,
    /// all together (so many attacker hosts get no more guesses than one).
    #[serde(default)]
    pub stranger_counters: Counters,
    /// Remote hosts this user logged in from, most recent first, at most
    /// [`MAX_KNOWN_ORIGINS`].
    #[serde(default)]
    pub known_origins: Vec<String>,
    /// The last success.
    pub last_success: Option<LastSuccess>,
    /// Clock skew of the last accepted TOTP code, in seconds.
    #[serde(default)]
    pub clock_skew_seconds: i64,
    /// Write generation: incremented by every save, compared with the
    /// replay watermarks to detect a rolled-back store (see `watermark`).
    #[serde(default)]
    pub generation: u64,
}

impl UserRecord {
    /// The TOTP steps this user can no longer use.
    pub fn used_steps(&self) -> UsedSteps<'_> {
        UsedSteps {
            watermark: self.last_used_step,
            ahead: &self.spent_ahead,
        }
    }

    /// The counters that judge an attempt from `remote_host` (empty: the
    /// local machine).
    pub fn bucket_of(&self, remote_host: &str) -> Bucket {
        if remote_host.is_empty() || self.known_origins.iter().any(|h| h == remote_host) {
            Bucket::Trusted
        } else {
            Bucket::Strangers
        }
    }

    /// The counters of a bucket.
    pub fn counters(&self, bucket: Bucket) -> &Counters {
        match bucket {
            Bucket::Trusted => &self.counters,
            Bucket::Strangers => &self.stranger_counters,
        }
    }

    /// The counters of a bucket, to update.
    pub fn counters_mut(&mut self, bucket: Bucket) -> &mut Counters {
        match bucket {
            Bucket::Trusted => &mut self.counters,
            Bucket::Strangers => &mut self.stranger_counters,
        }
    }

    /// Remembers `remote_host` (after a success from it) as the most
    /// recent known origin; the oldest beyond [`MAX_KNOWN_ORIGINS`] is
    /// forgotten. The local machine (empty) needs no entry.
    pub fn remember_origin(&mut self, remote_host: &str) {
        if remote_host.is_empty() {
            return;
        }
        self.known_origins.retain(|h| h != remote_host);
        self.known_origins.insert(0, remote_host.to_owned());
        self.known_origins.truncate(MAX_KNOWN_ORIGINS);
    }

    /// Records an accepted step: the watermark moves up to it (never down)
    /// and the spent steps it passes are forgotten.
    pub fn use_step(&mut self, step: u64) {
        let watermark = self.last_used_step.map_or(step, |w| w.max(step));
        self.last_used_step = Some(watermark);
        self.spent_ahead.retain(|&s| s > watermark);
    }

    /// Spends one step after the watermark without spending the steps
    /// before it. Steps before `oldest_usable` can never be accepted again
    /// and are dropped; if the set is still full, the watermark moves up to
    /// `step` (refusing more, never less).
    pub fn spend_step(&mut self, step: u64, oldest_usable: u64) {
        if self.used_steps().contains(step) {
            return;
        }
        self.spent_ahead.retain(|&s| s >= oldest_usable);
        if self.spent_ahead.len() >= MAX_SPENT_AHEAD {
            self.use_step(step);
            return;
        }
        self.spent_ahead.push(step);
        self.spent_ahead.sort_unstable();
    }

    /// Serializes and seals for `user`. The plaintext is zeroized.
    pub fn seal(&self, key: &MasterKey, user: &UserName) -> Result<Vec<u8>, Error> {
        let plain = Zeroizing::new(
            serde_json::to_vec(self).map_err(|e| Error::Internal(format!("encode record: {e}")))?,
        );
        crypto::seal(key, user.as_str(), &plain)
    }

    /// Opens and parses a record sealed for `user`. Any failure means the
    /// record is corrupted (or was moved from another user).
    pub fn open(key: &MasterKey, user: &UserName, sealed: &[u8]) -> Result<Self, Error> {
        let corrupted = || Error::Corrupted {
            user: user.to_string(),
        };
        let plain = crypto::open(key, user.as_str(), sealed).map_err(|e: OpenError| {
            tracing::debug!(user = user.as_str(), error = %e, "record does not open");
            corrupted()
        })?;
        serde_json::from_slice(&plain).map_err(|_| corrupted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        assert!(UserName::parse(b"alice").is_ok());
        assert!(UserName::parse("jürgen".as_bytes()).is_ok());
        assert!(UserName::parse(b"DOMAIN\\john smith").is_ok());
        for bad in [
            &b""[..],
            b"a\0b",
            b"\xff\xfe",
            b"a:b",
            b"a\nb",
            b"-rf",
            &[b'a'; 257][..],
        ] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(UserName::parse(&[b'a'; 256]).is_ok());
    }

    #[test]
    fn spent_steps_stay_spent_and_are_pruned_when_passed() {
        let mut rec = UserRecord {
            last_used_step: Some(100),
            ..UserRecord::default()
        };
        rec.spend_step(110, 99);
        rec.spend_step(105, 99);
        rec.spend_step(100, 99);
        assert_eq!(rec.last_used_step, Some(100));
        assert_eq!(rec.spent_ahead, [105, 110]);
        assert!(!rec.used_steps().contains(101));
        assert!(rec.used_steps().contains(105));
        rec.use_step(106);
        assert_eq!(rec.spent_ahead, [110]);
        rec.use_step(90);
        assert_eq!(
            rec.last_used_step,
            Some(106),
            "the watermark never moves down"
        );
        rec.use_step(110);
        assert!(rec.spent_ahead.is_empty());
    }

    #[test]
    fn a_full_set_of_spent_steps_moves_the_watermark_instead() {
        let mut rec = UserRecord::default();
        for i in 0..MAX_SPENT_AHEAD as u64 {
            rec.spend_step(1000 + i, 0);
        }
        assert_eq!(rec.spent_ahead.len(), MAX_SPENT_AHEAD);
        rec.spend_step(2000, 0);
        assert_eq!(rec.last_used_step, Some(2000));
        assert!(rec.spent_ahead.is_empty());
        // Stale steps are dropped first.
        let mut rec = UserRecord::default();
        for i in 0..MAX_SPENT_AHEAD as u64 {
            rec.spend_step(1000 + i, 0);
        }
        rec.spend_step(2000, 1010);
        assert_eq!(rec.last_used_step, None);
        assert_eq!(rec.spent_ahead.len(), MAX_SPENT_AHEAD - 10 + 1);
    }

    #[test]
    fn origins_that_succeeded_are_trusted_most_recent_32() {
        let mut rec = UserRecord::default();
        assert_eq!(rec.bucket_of(""), Bucket::Trusted);
        assert_eq!(rec.bucket_of("192.0.2.1"), Bucket::Strangers);
        rec.remember_origin("192.0.2.1");
        assert_eq!(rec.bucket_of("192.0.2.1"), Bucket::Trusted);
        for i in 0..MAX_KNOWN_ORIGINS {
            rec.remember_origin(&format!("host{i}"));
        }
        assert_eq!(rec.known_origins.len(), MAX_KNOWN_ORIGINS);
        assert_eq!(
            rec.bucket_of("192.0.2.1"),
            Bucket::Strangers,
            "oldest forgotten"
        );
        rec.remember_origin("host0");
        assert_eq!(rec.known_origins[0], "host0");
        assert_eq!(rec.known_origins.len(), MAX_KNOWN_ORIGINS);
    }

    #[test]
    fn records_without_spent_steps_still_open() -> Result<(), serde_json::Error> {
        let rec: UserRecord = serde_json::from_str(
            r#"{"active":null,"pending":null,"backup_codes":null,"last_used_step":7,
                "counters":{"recent_failures":[],"consecutive_failures":0,"locked_until":0},
                "last_success":null,"clock_skew_seconds":0}"#,
        )?;
        assert_eq!(rec.last_used_step, Some(7));
        assert!(rec.spent_ahead.is_empty());
        assert!(rec.known_origins.is_empty());
        assert_eq!(rec.stranger_counters, Counters::default());
        Ok(())
    }

    /// Existing failure counts become the trusted bucket's.
    #[test]
    fn old_counters_become_the_trusted_bucket() -> Result<(), serde_json::Error> {
        let rec: UserRecord = serde_json::from_str(
            r#"{"active":null,"pending":null,"backup_codes":null,"last_used_step":null,
                "counters":{"recent_failures":[5],"consecutive_failures":9,"locked_until":77},
                "last_success":null}"#,
        )?;
        assert_eq!(rec.counters(Bucket::Trusted).consecutive_failures, 9);
        assert_eq!(rec.counters(Bucket::Trusted).locked_until, 77);
        assert_eq!(rec.counters(Bucket::Strangers), &Counters::default());
        Ok(())
    }
}

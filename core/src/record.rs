//! What otpd stores per user (sealed as a whole before it reaches the
//! store), its schema versions, and the validation of user names.
//!
//! Versions: a record carries `version`. Version 1 (otpd 0.1, no `version`
//! field) held one secret (`active`) and one pending enrollment; version 2
//! holds devices and app passwords. [`UserRecord::open`] reads both and
//! migrates a version 1 record in memory (its secret becomes the device
//! `default` with the same watermark and skew); it is written back as
//! version 2 by the next change. A record of a newer version than this
//! build knows fails closed for that user ([`Error::NewerRecord`]).

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Random;
use crate::app_password::AppPassword;
use crate::backup_codes::BackupCodeSet;
use crate::device::{Device, DeviceName};
use crate::error::Error;
use crate::policy::Counters;
use crate::seal::{self, MasterKey};
use crate::secret::TotpSecret;
use crate::totp::TotpParams;

/// The schema version this build writes.
pub const RECORD_VERSION: u32 = 2;

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

    /// A known-good name, for tests (panics on a bad one).
    #[doc(hidden)]
    #[allow(clippy::panic)]
    pub fn test(name: &str) -> Self {
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

/// How a login succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// A TOTP code.
    Totp,
    /// A backup code.
    BackupCode,
    /// An app password.
    AppPassword,
}

/// The last accepted credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSuccess {
    /// Unix seconds.
    pub time: u64,
    /// PAM service.
    pub service: String,
    /// PAM_RHOST.
    pub remote_host: String,
    /// TOTP, backup code or app password.
    pub method: Method,
    /// The device (TOTP) or app password id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// An enrollment awaiting its first code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// The new device (`enrolled_at`: when the enrollment started).
    pub device: Device,
    /// `true`: added beside the active devices; `false`: replaces them all
    /// (a fresh enrollment, with new backup codes).
    pub adds: bool,
}

/// How long a started enrollment waits for its first code by default
/// (15 minutes).
pub const DEFAULT_PENDING_EXPIRY: u64 = 15 * 60;

impl Pending {
    /// Unix time from which it can no longer be confirmed, with enrollments
    /// living `expiry` seconds.
    pub fn expires_at(&self, expiry: u64) -> u64 {
        self.device.enrolled_at.saturating_add(expiry)
    }

    /// Whether it can no longer be confirmed at `now`.
    pub fn is_expired(&self, now: u64, expiry: u64) -> bool {
        now >= self.expires_at(expiry)
    }

    /// Seconds left to confirm it at `now` (0: expired).
    pub fn seconds_left(&self, now: u64, expiry: u64) -> u64 {
        self.expires_at(expiry).saturating_sub(now)
    }
}

/// Everything about one user. Sealed as a whole under the master key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserRecord {
    /// Schema version ([`RECORD_VERSION`] once opened).
    pub version: u32,
    /// The active devices; logins need a code when there is one.
    pub devices: Vec<Device>,
    /// A started, unconfirmed enrollment.
    pub pending: Option<Pending>,
    /// Unused backup codes.
    pub backup_codes: Option<BackupCodeSet>,
    /// App passwords (hashes only).
    #[serde(default)]
    pub app_passwords: Vec<AppPassword>,
    /// Failure counters and lockout of attempts from trusted origins: the
    /// local machine (no remote host) and the hosts in `known_origins`.
    pub counters: Counters,
    /// Failure counters and lockout of attempts from every other origin,
    /// all together (so many attacker hosts get no more guesses than one).
    pub stranger_counters: Counters,
    /// Remote hosts this user logged in from, most recent first, at most
    /// [`MAX_KNOWN_ORIGINS`].
    pub known_origins: Vec<String>,
    /// The last success.
    pub last_success: Option<LastSuccess>,
    /// Write generation: incremented by every save, compared with the
    /// replay watermarks to detect a rolled-back store.
    pub generation: u64,
    /// When the user was last reminded at login that they have no
    /// recovery path (Unix seconds); absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_nudged_at: Option<u64>,
}

impl UserRecord {
    /// A new, empty record of the current version.
    pub fn new() -> Self {
        Self {
            version: RECORD_VERSION,
            ..Self::default()
        }
    }

    /// Drops a pending enrollment that expired by `now` (called before
    /// every write of the record, so an abandoned secret does not linger).
    /// Returns whether one was dropped.
    pub fn drop_expired_pending(&mut self, now: u64, expiry: u64) -> bool {
        let expired = self
            .pending
            .as_ref()
            .is_some_and(|p| p.is_expired(now, expiry));
        if expired {
            self.pending = None;
        }
        expired
    }

    /// Whether logins need a code (an active device exists).
    pub fn is_enrolled(&self) -> bool {
        !self.devices.is_empty()
    }

    /// The device named `name`.
    pub fn device(&self, name: &DeviceName) -> Option<&Device> {
        self.devices.iter().find(|d| &d.name == name)
    }

    /// Whether `name` is used by an active or the pending device.
    pub fn name_taken(&self, name: &DeviceName) -> bool {
        self.device(name).is_some()
            || self
                .pending
                .as_ref()
                .is_some_and(|p| &p.device.name == name)
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

    /// Serializes (as the current version) and seals for `user`. The
    /// plaintext is zeroized.
    pub fn seal(
        &self,
        key: &MasterKey,
        user: &UserName,
        rng: &mut dyn Random,
    ) -> Result<Vec<u8>, Error> {
        let mut current = self.clone();
        current.version = RECORD_VERSION;
        let plain = Zeroizing::new(
            serde_json::to_vec(&current).map_err(|_| Error::Internal("encode record"))?,
        );
        seal::seal(key, user.as_str(), &plain, rng)
    }

    /// Opens a record sealed for `user`, of any known version (older ones
    /// migrated in memory). A record that does not open is corrupted (or
    /// was moved from another user, or sealed under another key).
    pub fn open(key: &MasterKey, user: &UserName, sealed: &[u8]) -> Result<Self, Error> {
        let plain = seal::open(key, user.as_str(), sealed).map_err(|_| Error::Corrupted {
            user: user.to_string(),
        })?;
        Self::decode(user, &plain)
    }

    /// Parses a record's plaintext of any known version.
    pub fn decode(user: &UserName, plain: &[u8]) -> Result<Self, Error> {
        let corrupted = || Error::Corrupted {
            user: user.to_string(),
        };
        #[derive(Deserialize)]
        struct Version {
            #[serde(default)]
            version: u32,
        }
        let Version { version } = serde_json::from_slice(plain).map_err(|_| corrupted())?;
        match version {
            0 | 1 => {
                let v1: v1::Record = serde_json::from_slice(plain).map_err(|_| corrupted())?;
                Ok(v1.migrate())
            }
            RECORD_VERSION => serde_json::from_slice(plain).map_err(|_| corrupted()),
            newer => Err(Error::NewerRecord {
                user: user.to_string(),
                version: newer,
                supported: RECORD_VERSION,
            }),
        }
    }
}

/// Version 1 (otpd 0.1): one secret per user.
mod v1 {
    use super::*;

    #[derive(Deserialize)]
    pub(super) struct Enrollment {
        secret: TotpSecret,
        params: TotpParams,
        issuer: String,
        since: u64,
    }

    #[derive(Deserialize)]
    pub(super) struct LastSuccess {
        time: u64,
        service: String,
        remote_host: String,
        method: Method,
    }

    #[derive(Deserialize)]
    pub(super) struct Record {
        active: Option<Enrollment>,
        pending: Option<Enrollment>,
        backup_codes: Option<BackupCodeSet>,
        last_used_step: Option<u64>,
        #[serde(default)]
        spent_ahead: Vec<u64>,
        #[serde(default)]
        counters: Counters,
        #[serde(default)]
        stranger_counters: Counters,
        #[serde(default)]
        known_origins: Vec<String>,
        last_success: Option<LastSuccess>,
        #[serde(default)]
        clock_skew_seconds: i64,
        #[serde(default)]
        generation: u64,
    }

    /// The id a migrated device gets: its enrollment time, so that the
    /// replay watermarks of 0.1 (which name the secret by that time) still
    /// match it. A pending one gets the top bit set, to differ from an
    /// active secret confirmed at the same second.
    pub(super) fn migrated_id(since: u64, pending: bool) -> u64 {
        if pending {
            since | (1 << 63)
        } else {
            since & !(1 << 63)
        }
    }

    impl Record {
        pub(super) fn migrate(self) -> UserRecord {
            let default = DeviceName::default_name();
            let last_totp = self
                .last_success
                .as_ref()
                .filter(|l| l.method == Method::Totp)
                .map(|l| l.time);
            let devices = self
                .active
                .map(|e| Device {
                    id: migrated_id(e.since, false),
                    name: default.clone(),
                    secret: e.secret,
                    params: e.params,
                    issuer: e.issuer,
                    enrolled_at: e.since,
                    last_used_step: self.last_used_step,
                    spent_ahead: self.spent_ahead,
                    clock_skew_seconds: self.clock_skew_seconds,
                    last_used_at: last_totp,
                    kind: crate::device::Kind::Totp,
                    hotp_resync: None,
                    drift_steps: 0,
                    drift_streak: 0,
                })
                .into_iter()
                .collect();
            let pending = self.pending.map(|e| Pending {
                device: Device {
                    id: migrated_id(e.since, true),
                    name: default.clone(),
                    secret: e.secret,
                    params: e.params,
                    issuer: e.issuer,
                    enrolled_at: e.since,
                    last_used_step: None,
                    spent_ahead: Vec::new(),
                    clock_skew_seconds: 0,
                    last_used_at: None,
                    kind: crate::device::Kind::Totp,
                    hotp_resync: None,
                    drift_steps: 0,
                    drift_streak: 0,
                },
                adds: false,
            });
            UserRecord {
                version: RECORD_VERSION,
                devices,
                pending,
                backup_codes: self.backup_codes,
                app_passwords: Vec::new(),
                counters: self.counters,
                stranger_counters: self.stranger_counters,
                known_origins: self.known_origins,
                last_success: self.last_success.map(|l| super::LastSuccess {
                    time: l.time,
                    service: l.service,
                    remote_host: l.remote_host,
                    credential: (l.method == Method::Totp).then(|| default.to_string()),
                    method: l.method,
                }),
                generation: self.generation,
                recovery_nudged_at: None,
            }
        }
    }
}

/// The device id a version 1 secret confirmed (or started, if `pending`)
/// at `since` has after migration.
pub fn migrated_device_id(since: u64, pending: bool) -> u64 {
    v1::migrated_id(since, pending)
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
    fn a_version_1_record_becomes_the_device_default() -> Result<(), Error> {
        let user = UserName::test("alice");
        let plain = br#"{"active":{"secret":[1,2,3],"params":{"algorithm":"sha1","digits":6,"period":30},"issuer":"otpd","since":1000},
            "pending":null,"backup_codes":null,"last_used_step":7,"spent_ahead":[9],
            "counters":{"recent_failures":[5],"consecutive_failures":2,"locked_until":0},
            "last_success":{"time":900,"service":"sshd","remote_host":"h","method":"totp"},"clock_skew_seconds":-30,"generation":4}"#;
        let rec = UserRecord::decode(&user, plain)?;
        assert_eq!(rec.version, RECORD_VERSION);
        assert_eq!(rec.devices.len(), 1);
        let d = &rec.devices[0];
        assert_eq!(d.name.as_str(), "default");
        assert_eq!(d.secret.expose(), &[1, 2, 3]);
        assert_eq!(
            (d.last_used_step, d.spent_ahead.as_slice()),
            (Some(7), &[9][..])
        );
        assert_eq!(
            (d.clock_skew_seconds, d.enrolled_at, d.id),
            (-30, 1000, 1000)
        );
        assert_eq!(rec.counters(Bucket::Trusted).consecutive_failures, 2);
        assert_eq!(rec.stranger_counters, Counters::default());
        assert_eq!(rec.generation, 4);
        assert_eq!(
            rec.last_success.and_then(|l| l.credential).as_deref(),
            Some("default")
        );
        Ok(())
    }

    #[test]
    fn a_newer_record_fails_closed_and_garbage_is_corrupted() {
        let user = UserName::test("alice");
        assert!(matches!(
            UserRecord::decode(&user, br#"{"version":3}"#),
            Err(Error::NewerRecord { version: 3, .. })
        ));
        assert!(matches!(
            UserRecord::decode(&user, b"{not json"),
            Err(Error::Corrupted { .. })
        ));
    }

    #[test]
    fn version_2_round_trips_sealed() -> Result<(), Error> {
        use rand::rngs::OsRng;
        let key = MasterKey::generate(&mut OsRng);
        let user = UserName::test("bob");
        let mut rec = UserRecord::new();
        rec.generation = 9;
        rec.remember_origin("192.0.2.1");
        let sealed = rec.seal(&key, &user, &mut OsRng)?;
        let back = UserRecord::open(&key, &user, &sealed)?;
        assert_eq!((back.version, back.generation), (RECORD_VERSION, 9));
        assert_eq!(back.known_origins, ["192.0.2.1"]);
        Ok(())
    }
}

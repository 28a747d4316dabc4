//! A user's devices: each authenticator (an app on a phone, a spare
//! tablet, a hardware token) has its own secret, parameters, replay
//! watermark and measured clock skew.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::secret::TotpSecret;
use crate::totp::{TotpParams, UsedSteps};

/// Most devices per user (active ones; one more may be pending).
pub const MAX_DEVICES: usize = 16;

/// The name of the device `otpctl enroll` creates unless told otherwise.
pub const DEFAULT_DEVICE: &str = "default";

/// Longest device name, in bytes.
pub const MAX_NAME_LEN: usize = 32;

/// Most single future steps kept spent per device (see
/// [`Device::spend_step`]). A clock-skew hint reveals at most
/// `SKEW_PROBE_STEPS` (10) steps ahead and steps fall out of the acceptance
/// window (±10 at most), so 21 can be pending at once; beyond the bound the
/// watermark moves instead.
pub const MAX_SPENT_AHEAD: usize = 32;

/// A validated device name: 1..=32 ASCII letters, digits, `-`, `_`, `.`,
/// starting with a letter or digit (it appears in commands and logs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceName(String);

impl DeviceName {
    /// Validates untrusted input.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let bad = |why: &str| Err(Error::InvalidArgument(format!("device name {why}")));
        if raw.is_empty() {
            return bad("is empty");
        }
        if raw.len() > MAX_NAME_LEN {
            return bad("is longer than 32 bytes");
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return bad("may hold only ASCII letters, digits, '-', '_' and '.'");
        }
        if !raw.as_bytes()[0].is_ascii_alphanumeric() {
            return bad("must start with a letter or a digit");
        }
        Ok(Self(raw.to_owned()))
    }

    /// `default`.
    pub fn default_name() -> Self {
        Self(DEFAULT_DEVICE.to_owned())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::parse(&s)
    }
}

impl From<DeviceName> for String {
    fn from(n: DeviceName) -> String {
        n.0
    }
}

impl std::fmt::Display for DeviceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Time-based or counter-based.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// TOTP (RFC 6238): `last_used_step` is a time step.
    #[default]
    Totp,
    /// HOTP (RFC 4226): `last_used_step` is the last accepted counter.
    Hotp,
}

/// One authenticator of a user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Device {
    /// Stable identity (random; survives renames), for the replay
    /// watermarks.
    pub id: u64,
    /// What the user and admin call it.
    pub name: DeviceName,
    /// The shared key.
    pub secret: TotpSecret,
    /// Algorithm, digits, period.
    pub params: TotpParams,
    /// Issuer shown in the app.
    pub issuer: String,
    /// When it was confirmed (pending: when the enrollment started), Unix
    /// seconds.
    pub enrolled_at: u64,
    /// The last TOTP time step accepted (replay protection).
    pub last_used_step: Option<u64>,
    /// Single steps after `last_used_step` that are spent too: future steps
    /// whose code a clock-skew hint answered. Ascending, at most
    /// [`MAX_SPENT_AHEAD`], each after `last_used_step`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spent_ahead: Vec<u64>,
    /// Clock skew seen with its last accepted code, in seconds.
    #[serde(default)]
    pub clock_skew_seconds: i64,
    /// When its last code was accepted, Unix seconds.
    #[serde(default)]
    pub last_used_at: Option<u64>,
    /// TOTP or HOTP (records written before HOTP existed: TOTP).
    #[serde(default, skip_serializing_if = "is_totp")]
    pub kind: Kind,
    /// HOTP: a counter matched far ahead, armed for resynchronisation (see
    /// [`crate::hotp`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotp_resync: Option<u64>,
    /// TOTP: the clock offset learned from its accepted codes, in steps
    /// (negative: the device runs late); its acceptance window is centred
    /// on the current step plus this, never wider (see [`crate::drift`]).
    /// Absent in older records: 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drift_steps: i32,
    /// TOTP: accepted codes in a row that matched off the centre of the
    /// window on the same side (negative: earlier), the evidence the offset
    /// moves on (see [`crate::drift::learn`]). Absent in older records: 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drift_streak: i32,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn is_totp(k: &Kind) -> bool {
    *k == Kind::Totp
}

impl Device {
    /// The TOTP steps this device can no longer use.
    pub fn used_steps(&self) -> UsedSteps<'_> {
        UsedSteps {
            watermark: self.last_used_step,
            ahead: &self.spent_ahead,
        }
    }

    /// The highest step this device has spent (watermark or ahead).
    pub fn highest_spent_step(&self) -> Option<u64> {
        self.spent_ahead
            .iter()
            .copied()
            .chain(self.last_used_step)
            .max()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device {
            id: 1,
            name: DeviceName::default_name(),
            secret: TotpSecret::from_bytes(vec![1; 20]),
            params: TotpParams::default(),
            issuer: "otpd".into(),
            enrolled_at: 0,
            last_used_step: None,
            spent_ahead: Vec::new(),
            clock_skew_seconds: 0,
            last_used_at: None,
            kind: Kind::Totp,
            hotp_resync: None,
            drift_steps: 0,
            drift_streak: 0,
        }
    }

    #[test]
    fn names() {
        for good in [
            "phone",
            "spare-tablet",
            "yubikey_5",
            "a",
            "0.b",
            &"x".repeat(32),
        ] {
            assert!(DeviceName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "ä", "a\0", &"x".repeat(33)] {
            assert!(DeviceName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spent_steps_stay_spent_and_are_pruned_when_passed() {
        let mut d = Device {
            last_used_step: Some(100),
            ..device()
        };
        d.spend_step(110, 99);
        d.spend_step(105, 99);
        d.spend_step(100, 99);
        assert_eq!(d.last_used_step, Some(100));
        assert_eq!(d.spent_ahead, [105, 110]);
        assert!(!d.used_steps().contains(101));
        assert!(d.used_steps().contains(105));
        d.use_step(106);
        assert_eq!(d.spent_ahead, [110]);
        d.use_step(90);
        assert_eq!(
            d.last_used_step,
            Some(106),
            "the watermark never moves down"
        );
        d.use_step(110);
        assert!(d.spent_ahead.is_empty());
    }

    #[test]
    fn a_full_set_of_spent_steps_moves_the_watermark_instead() {
        let mut d = device();
        for i in 0..MAX_SPENT_AHEAD as u64 {
            d.spend_step(1000 + i, 0);
        }
        assert_eq!(d.spent_ahead.len(), MAX_SPENT_AHEAD);
        d.spend_step(2000, 0);
        assert_eq!(d.last_used_step, Some(2000));
        assert!(d.spent_ahead.is_empty());
        // Stale steps are dropped first.
        let mut d = device();
        for i in 0..MAX_SPENT_AHEAD as u64 {
            d.spend_step(1000 + i, 0);
        }
        d.spend_step(2000, 1010);
        assert_eq!(d.last_used_step, None);
        assert_eq!(d.spent_ahead.len(), MAX_SPENT_AHEAD - 10 + 1);
    }
}

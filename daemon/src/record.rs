//! What the daemon stores per user (sealed as a whole before it reaches the
//! store), and the validation of user names.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::backup_codes::BackupCodeSet;
use crate::crypto::{self, MasterKey, OpenError};
use crate::error::Error;
use crate::policy::Counters;
use crate::secret::TotpSecret;
use crate::totp::TotpParams;

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
    /// Failure counters and lockout.
    #[serde(default)]
    pub counters: Counters,
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
            tracing::debug!(user = %user, error = %e, "record does not open");
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
}

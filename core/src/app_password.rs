//! App passwords: long random passwords for clients that cannot prompt for
//! a code (IMAP, SMTP, FTP, CalDAV, scripts), each valid on one PAM
//! service only, stored only as an Argon2id hash.
//!
//! Format: 24 characters from Crockford's base32 alphabet (no `i`, `l`,
//! `o`, `u`), shown as six groups of four (`k7qm-3xa9-...`). The first group
//! is the public id (listed, used to revoke, and used to find the hash to
//! check, so an attempt costs one hash however many app passwords the user
//! has); the other 20 characters are the secret: 100 bits, which no
//! throttled online guessing, nor offline guessing against a stolen store
//! with its Argon2id hashes, comes close to. Input is case-insensitive and
//! may be typed with `-`, spaces or nothing between the groups. Codes are 6
//! or 8 digits, so the two shapes never overlap.

use rand::Rng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::Random;
use crate::error::Error;
use crate::kdf::{self, KdfHash, KdfParams, Scratch};

/// The alphabet (Crockford's base32, lower case).
pub const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Characters in a password.
pub const LEN: usize = 24;
/// Characters of the public id (the first group).
pub const ID_LEN: usize = 4;
/// Bits of secret in a password (the characters after the id).
pub const SECRET_BITS: usize = (LEN - ID_LEN) * 5;
/// Most app passwords per user.
pub const MAX_PER_USER: usize = 32;
/// Longest service name, in bytes.
pub const MAX_SERVICE_LEN: usize = 64;
/// Longest label, in bytes.
pub const MAX_LABEL_LEN: usize = 128;
/// Longest input looked at (24 characters with separators).
const MAX_INPUT_LEN: usize = 64;

/// A typed password with the shape of an app password, normalised (lower
/// case, no separators). Zeroized on drop, never printed.
pub struct AppPasswordInput(Zeroizing<[u8; LEN]>);

impl std::fmt::Debug for AppPasswordInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AppPasswordInput")
            .field(&self.id())
            .finish_non_exhaustive()
    }
}

impl AppPasswordInput {
    /// The input as an app password, or `None` if it does not have the
    /// shape of one (then it may be a code).
    pub fn parse(raw: &[u8]) -> Option<Self> {
        if raw.len() > MAX_INPUT_LEN {
            return None;
        }
        let mut out = Zeroizing::new([0u8; LEN]);
        let mut n = 0;
        for &b in raw {
            if b == b'-' || b == b' ' {
                continue;
            }
            let c = b.to_ascii_lowercase();
            if !ALPHABET.contains(&c) || n == LEN {
                return None;
            }
            out[n] = c;
            n += 1;
        }
        (n == LEN).then_some(Self(out))
    }

    /// The public id (the first group).
    pub fn id(&self) -> String {
        String::from_utf8_lossy(&self.0[..ID_LEN]).into_owned()
    }
}

/// Whether `raw` has the shape of an app password.
pub fn looks_like(raw: &[u8]) -> bool {
    AppPasswordInput::parse(raw).is_some()
}

/// The stored form of one app password: no password, only its hash.
#[derive(Clone, Serialize, Deserialize)]
pub struct AppPassword {
    /// The public id (first group of the password).
    pub id: String,
    /// The PAM service it works on.
    pub service: String,
    /// Free text from the admin.
    pub label: String,
    /// When it was issued, Unix seconds.
    pub created_at: u64,
    /// When it stops working, Unix seconds; `None`: never.
    pub expires_at: Option<u64>,
    /// When it was last accepted, Unix seconds.
    pub last_used: Option<u64>,
    kdf: KdfParams,
    salt: [u8; 16],
    hash: [u8; 32],
}

impl std::fmt::Debug for AppPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppPassword")
            .field("id", &self.id)
            .field("service", &self.service)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What hashing an attempt against one app password needs (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppProbe {
    /// The app password's id.
    pub id: String,
    kdf: KdfParams,
    salt: [u8; 16],
}

impl AppProbe {
    /// The cost of the hash.
    pub fn kdf(&self) -> KdfParams {
        self.kdf
    }

    /// Hashes `input` in working memory from `scratch`.
    pub fn hash(&self, input: &AppPasswordInput, scratch: &dyn Scratch) -> Result<KdfHash, Error> {
        kdf::hash(self.kdf, &self.salt, &input.0[..], scratch)
    }
}

/// Why an app password was not accepted (for the audit trail; the caller
/// only learns "wrong").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No app password with that id.
    Unknown,
    /// Issued for another PAM service.
    OtherService,
    /// Past its expiry.
    Expired,
    /// The id exists but the password does not match.
    Wrong,
}

impl Refusal {
    /// Name used in audit events.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown_app_password",
            Self::OtherService => "app_password_other_service",
            Self::Expired => "app_password_expired",
            Self::Wrong => "wrong_app_password",
        }
    }
}

/// Validates a service name (what pam_otpd sends as PAM_SERVICE).
pub fn validate_service(service: &str) -> Result<(), Error> {
    if service.is_empty() || service.len() > MAX_SERVICE_LEN {
        return Err(Error::InvalidArgument(
            "the service must be 1..=64 bytes (the PAM service name, e.g. dovecot)".into(),
        ));
    }
    if service.chars().any(|c| c.is_control() || c.is_whitespace() || c == '/') {
        return Err(Error::InvalidArgument(
            "the service must not contain spaces, '/' or control characters".into(),
        ));
    }
    Ok(())
}

/// Validates a label.
pub fn validate_label(label: &str) -> Result<(), Error> {
    if label.len() > MAX_LABEL_LEN || label.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(
            "the label must be at most 128 bytes without control characters".into(),
        ));
    }
    Ok(())
}

impl AppPassword {
    /// Issues a new app password whose id is not in `taken`. Returns the
    /// password to show once (grouped) and its stored form.
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        taken: &[&str],
        service: &str,
        label: &str,
        now: u64,
        expires_at: Option<u64>,
        kdf: KdfParams,
        rng: &mut dyn Random,
        scratch: &dyn Scratch,
    ) -> Result<(Zeroizing<String>, Self), Error> {
        validate_service(service)?;
        validate_label(label)?;
        let mut raw = Zeroizing::new([0u8; LEN]);
        loop {
            for c in raw.iter_mut() {
                *c = ALPHABET[rng.gen_range(0..ALPHABET.len())];
            }
            let id = &raw[..ID_LEN];
            if !taken.iter().any(|t| t.as_bytes() == id) {
                break;
            }
        }
        let input = AppPasswordInput(raw);
        let mut salt = [0u8; 16];
        rng.fill(&mut salt);
        let hash = kdf::hash(kdf, &salt, &input.0[..], scratch)?;
        let mut shown = Zeroizing::new(String::with_capacity(LEN + LEN / 4));
        for (i, chunk) in input.0.chunks(4).enumerate() {
            if i > 0 {
                shown.push('-');
            }
            shown.push_str(&String::from_utf8_lossy(chunk));
        }
        Ok((
            shown,
            Self {
                id: input.id(),
                service: service.to_owned(),
                label: label.to_owned(),
                created_at: now,
                expires_at,
                last_used: None,
                kdf,
                salt,
                hash: *hash.expose(),
            },
        ))
    }

    /// Whether an attempt on `service` at `now` may be checked against it.
    pub fn admits(&self, service: &str, now: u64) -> Result<AppProbe, Refusal> {
        if self.service != service {
            return Err(Refusal::OtherService);
        }
        if self.expires_at.is_some_and(|t| now >= t) {
            return Err(Refusal::Expired);
        }
        Ok(AppProbe {
            id: self.id.clone(),
            kdf: self.kdf,
            salt: self.salt,
        })
    }

    /// Whether `hash` (made with `probe`) is this password's, in constant
    /// time. `None` if `probe` is not this password's (it was revoked and
    /// reissued in between).
    pub fn matches(&self, probe: &AppProbe, hash: &KdfHash) -> Option<bool> {
        if probe.id != self.id || probe.kdf != self.kdf || probe.salt != self.salt {
            return None;
        }
        Some(bool::from(self.hash.ct_eq(hash.expose())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf::Fresh;
    use rand::rngs::OsRng;

    const CHEAP: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    #[test]
    fn shape() {
        let ok = "k7qm-3xa9-bcde-fghj-kmnp-qrst";
        assert!(looks_like(ok.as_bytes()));
        assert!(looks_like(ok.to_uppercase().as_bytes()));
        assert!(looks_like(ok.replace('-', " ").as_bytes()));
        assert!(looks_like(ok.replace('-', "").as_bytes()));
        for bad in [
            "123456",
            "12345678",
            "",
            "k7qm-3xa9-bcde-fghj-kmnp-qrs",
            "k7qm-3xa9-bcde-fghj-kmnp-qrstv",
            "k7qm-3xa9-bcde-fghj-kmnp-qrsi",
            "k7qm-3xa9-bcde-fghj-kmnp-qrsu",
            "k7qm\0-3xa9-bcde-fghj-kmnp-qrs",
        ] {
            assert!(!looks_like(bad.as_bytes()), "{bad:?}");
        }
        assert!(!looks_like(&[b'a'; 200]));
        assert_eq!(SECRET_BITS, 100);
    }

    #[test]
    fn issued_password_matches_only_itself_on_its_service() -> Result<(), Error> {
        let (shown, stored) =
            AppPassword::generate(&[], "dovecot", "laptop", 100, Some(200), CHEAP, &mut OsRng, &Fresh)?;
        assert_eq!(shown.len(), LEN + 5);
        assert!(!format!("{stored:?}").contains(&shown[5..]));
        let input = AppPasswordInput::parse(shown.as_bytes()).ok_or(Error::Internal("shape"))?;
        assert_eq!(input.id(), stored.id);
        let probe = stored.admits("dovecot", 150).map_err(|_| Error::Internal("admit"))?;
        assert_eq!(stored.matches(&probe, &probe.hash(&input, &Fresh)?), Some(true));
        let mut other = shown.as_bytes().to_vec();
        let last = other.len() - 1;
        other[last] = if other[last] == b'0' { b'1' } else { b'0' };
        let wrong = AppPasswordInput::parse(&other).ok_or(Error::Internal("shape"))?;
        assert_eq!(stored.matches(&probe, &probe.hash(&wrong, &Fresh)?), Some(false));
        assert_eq!(stored.admits("sshd", 150).err(), Some(Refusal::OtherService));
        assert_eq!(stored.admits("dovecot", 200).err(), Some(Refusal::Expired));
        let stored_json = serde_json::to_string(&stored).map_err(|_| Error::Internal("json"))?;
        assert!(!stored_json.contains(&shown[5..]), "no password in the stored form");
        Ok(())
    }

    #[test]
    fn ids_do_not_collide_with_taken_ones() -> Result<(), Error> {
        let mut taken: Vec<String> = Vec::new();
        for _ in 0..MAX_PER_USER {
            let refs: Vec<&str> = taken.iter().map(String::as_str).collect();
            let (_, p) = AppPassword::generate(&refs, "su", "", 0, None, CHEAP, &mut OsRng, &Fresh)?;
            assert!(!taken.contains(&p.id));
            taken.push(p.id);
        }
        Ok(())
    }
}

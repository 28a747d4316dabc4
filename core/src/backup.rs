//! otpd's backup: the plaintext document inside an encrypted backup file,
//! its parser (pure: bytes in, records out), the key derivation from the
//! backup passphrase, and the header stanza that carries the derivation's
//! salt and cost with every file.
//!
//! A backup file is an [age](https://age-encryption.org/v1) file encrypted
//! to one X25519 recipient. Its secret key is not random: it is the 32
//! bytes of Argon2id(passphrase, salt, cost) ([`derive_secret`]), so the
//! daemon can write backups with the public key alone and a new machine can
//! open one with the file and the passphrase alone. The salt and the cost
//! travel in an extra stanza of the age header ([`KdfStanza`]):
//!
//! ```text
//! -> otpd-argon2id v1 m=262144 t=3 p=1 <salt>
//! ```
//!
//! with an empty body. Stock `age` ignores stanzas of types it does not
//! know (the age specification says so), and the header's MAC covers it.
//! The salt is 22 characters of unpadded base64 and is used as those
//! ASCII bytes (so the `argon2` command-line tool can take it too).
//!
//! The plaintext ([`Document`], JSON):
//!
//! ```text
//! { "format": "otpd-backup", "version": 1, "created": <unix seconds>,
//!   "host": "<host name>",
//!   "users": [ { "user": "alice",
//!                "record": { <the user's record, as otpd seals it> },
//!                "watermarks": { "generation": 7,
//!                                "devices": [ { "id": 1, "name": "phone",
//!                                               "kind": "totp", "step": 60000000 } ] } } ] }
//! ```
//!
//! `record` is [`UserRecord`] as serialised for sealing (device secrets as
//! arrays of byte values, backup codes and app passwords as Argon2id
//! hashes); `watermarks` repeat, per device, the highest TOTP step spent
//! or the last HOTP counter used, so a restore can keep the larger of the
//! store's and the backup's.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::device::{Kind, MAX_DEVICES};
use crate::record::{RECORD_VERSION, UserName, UserRecord};

/// The `format` of a backup document.
pub const FORMAT: &str = "otpd-backup";
/// The document version this build writes and reads.
pub const VERSION: u32 = 1;
/// Largest document (and backup file) read: 2 GiB, about a million users.
pub const MAX_BYTES: usize = 2 << 30;
/// Most users in one document.
pub const MAX_USERS: usize = 10_000_000;

/// The age stanza type that carries the key derivation.
pub const STANZA_TAG: &str = "otpd-argon2id";
/// Version of the stanza's layout.
const STANZA_VERSION: &str = "v1";

/// Argon2id cost for new backup keys: 256 MiB, 3 passes, 1 lane (about a
/// second on one core; an attacker pays as much per guess).
pub const STRONG_KDF: BackupKdf = BackupKdf {
    m_kib: 256 * 1024,
    t: 3,
    p: 1,
};

/// A cheap cost, for tests only (`otpctl backup init --insecure-test-kdf`).
pub const TEST_KDF: BackupKdf = BackupKdf {
    m_kib: 64,
    t: 1,
    p: 1,
};

/// Most memory a backup file may ask for (4 GiB): a file altered to ask
/// for more is refused before anything is derived.
pub const MAX_M_KIB: u32 = 4 * 1024 * 1024;
/// Most passes a file may ask for.
pub const MAX_T: u32 = 64;
/// Most lanes a file may ask for.
pub const MAX_P: u32 = 16;

/// Why a backup's document, stanza or key state was refused. Never holds
/// a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Larger than [`MAX_BYTES`].
    #[error("the backup is larger than {MAX_BYTES} bytes")]
    TooLarge,
    /// Not JSON of the documented shape.
    #[error("the backup is not an otpd backup document: {0}")]
    Malformed(String),
    /// Another format, or a newer version.
    #[error(
        "the backup is {format:?} version {version}; this otpd reads {FORMAT:?} version {VERSION}"
    )]
    Unsupported {
        /// Its format name.
        format: String,
        /// Its version.
        version: u32,
    },
    /// A user entry is not acceptable.
    #[error("user entry {index} of the backup: {reason}")]
    BadUser {
        /// 0-based position in `users`.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The header stanza is missing or malformed.
    #[error("the backup's key derivation stanza ({STANZA_TAG}) {0}")]
    Stanza(&'static str),
    /// The key derivation failed (parameters out of range).
    #[error("the backup key cannot be derived: {0}")]
    Kdf(&'static str),
}

/// Argon2id cost of a backup key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupKdf {
    /// Memory, KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl BackupKdf {
    /// Checks the bounds a file may ask for.
    pub fn check(&self) -> Result<(), Error> {
        if self.t == 0 || self.t > MAX_T {
            return Err(Error::Kdf("t out of range"));
        }
        if self.p == 0 || self.p > MAX_P {
            return Err(Error::Kdf("p out of range"));
        }
        if self.m_kib < 8 * self.p || self.m_kib > MAX_M_KIB {
            return Err(Error::Kdf("m out of range"));
        }
        Ok(())
    }
}

/// The key derivation of one backup key: salt and cost (public).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfStanza {
    /// 22 characters of unpadded base64; used as its ASCII bytes.
    pub salt: String,
    /// Cost.
    pub kdf: BackupKdf,
}

impl KdfStanza {
    /// A stanza with a salt made of 16 bytes from the caller's random
    /// source.
    pub fn new(random16: [u8; 16], kdf: BackupKdf) -> Self {
        Self {
            salt: data_encoding::BASE64_NOPAD.encode(&random16),
            kdf,
        }
    }

    /// The stanza's arguments (after the tag).
    pub fn args(&self) -> Vec<String> {
        vec![
            STANZA_VERSION.to_owned(),
            format!("m={}", self.kdf.m_kib),
            format!("t={}", self.kdf.t),
            format!("p={}", self.kdf.p),
            self.salt.clone(),
        ]
    }

    /// Parses a stanza's arguments (untrusted: from a file's header).
    pub fn parse(args: &[String]) -> Result<Self, Error> {
        let [version, m, t, p, salt] = args else {
            return Err(Error::Stanza("does not have 5 arguments"));
        };
        if version != STANZA_VERSION {
            return Err(Error::Stanza("is of an unknown version"));
        }
        let num = |arg: &str, key: &str| -> Result<u32, Error> {
            arg.strip_prefix(key)
                .and_then(|v| v.strip_prefix('='))
                .filter(|v| !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok())
                .ok_or(Error::Stanza("has a malformed cost"))
        };
        let kdf = BackupKdf {
            m_kib: num(m, "m")?,
            t: num(t, "t")?,
            p: num(p, "p")?,
        };
        kdf.check()?;
        if !(16..=64).contains(&salt.len())
            || !salt
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        {
            return Err(Error::Stanza("has a malformed salt"));
        }
        Ok(Self {
            salt: salt.clone(),
            kdf,
        })
    }
}

/// The X25519 secret key of a backup: Argon2id(passphrase, salt, cost),
/// 32 bytes. Allocates `kdf.m_kib` of memory for the time it runs.
pub fn derive_secret(passphrase: &[u8], stanza: &KdfStanza) -> Result<Zeroizing<[u8; 32]>, Error> {
    use argon2::{Algorithm, Argon2, Params, Version};
    stanza.kdf.check()?;
    let params = Params::new(stanza.kdf.m_kib, stanza.kdf.t, stanza.kdf.p, Some(32))
        .map_err(|_| Error::Kdf("parameters out of range"))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, stanza.salt.as_bytes(), &mut *out)
        .map_err(|_| Error::Kdf("Argon2id failed"))?;
    Ok(out)
}

/// What may only move forward, for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceWatermark {
    /// The device's id.
    pub id: u64,
    /// Its name (for people reading the document).
    pub name: String,
    /// `totp` or `hotp`.
    pub kind: Kind,
    /// TOTP: the highest step spent; HOTP: the last counter used.
    pub step: Option<u64>,
}

/// What may only move forward, for one user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watermarks {
    /// The record's write generation.
    pub generation: u64,
    /// Per active device.
    pub devices: Vec<DeviceWatermark>,
}

impl Watermarks {
    /// The watermarks of a record.
    pub fn of(rec: &UserRecord) -> Self {
        Self {
            generation: rec.generation,
            devices: rec
                .devices
                .iter()
                .map(|d| DeviceWatermark {
                    id: d.id,
                    name: d.name.to_string(),
                    kind: d.kind,
                    step: d.highest_spent_step(),
                })
                .collect(),
        }
    }
}

/// One user in the document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// The login name.
    pub user: String,
    /// The record.
    pub record: UserRecord,
    /// Its replay watermarks.
    pub watermarks: Watermarks,
}

/// The plaintext of a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// When it was written, Unix seconds.
    pub created: u64,
    /// The host that wrote it.
    pub host: String,
    /// Every readable user.
    pub users: Vec<UserEntry>,
}

impl Document {
    /// A document of `users` (records as opened, watermarks from them).
    pub fn new(created: u64, host: &str, users: Vec<(UserName, UserRecord)>) -> Self {
        Self {
            format: FORMAT.to_owned(),
            version: VERSION,
            created,
            host: host.to_owned(),
            users: users
                .into_iter()
                .map(|(user, record)| UserEntry {
                    user: user.to_string(),
                    watermarks: Watermarks::of(&record),
                    record,
                })
                .collect(),
        }
    }

    /// The JSON plaintext (zeroized when dropped).
    pub fn to_json(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        serde_json::to_vec(self)
            .map(Zeroizing::new)
            .map_err(|e| Error::Malformed(e.to_string()))
    }
}

/// A parsed backup: what a restore applies.
#[derive(Debug, Clone)]
pub struct Backup {
    /// When it was written, Unix seconds.
    pub created: u64,
    /// The host that wrote it.
    pub host: String,
    /// Users and their records, each device at least at its watermark.
    pub users: Vec<(UserName, UserRecord)>,
}

/// Totals of a backup, as `otpctl restore` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Users.
    pub users: usize,
    /// Active devices.
    pub devices: usize,
    /// App passwords.
    pub app_passwords: usize,
    /// Unused backup codes.
    pub backup_codes: usize,
}

impl Backup {
    /// Its totals.
    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            users: self.users.len(),
            ..Summary::default()
        };
        for (_, r) in &self.users {
            s.devices += r.devices.len();
            s.app_passwords += r.app_passwords.len();
            s.backup_codes += r.backup_codes.as_ref().map_or(0, |b| b.remaining());
        }
        s
    }
}

/// Parses a backup's plaintext (untrusted bytes; never panics). Every user
/// name is validated, each at most once; every record must be of a version
/// this build knows; each device is raised to its watermark.
pub fn parse(bytes: &[u8]) -> Result<Backup, Error> {
    if bytes.len() > MAX_BYTES {
        return Err(Error::TooLarge);
    }
    #[derive(Deserialize)]
    struct Head {
        format: String,
        version: u32,
    }
    let head: Head = serde_json::from_slice(bytes).map_err(|e| Error::Malformed(short(&e)))?;
    if head.format != FORMAT || head.version != VERSION {
        return Err(Error::Unsupported {
            format: head.format.chars().take(64).collect(),
            version: head.version,
        });
    }
    let doc: Document = serde_json::from_slice(bytes).map_err(|e| Error::Malformed(short(&e)))?;
    if doc.users.len() > MAX_USERS {
        return Err(Error::Malformed(format!("more than {MAX_USERS} users")));
    }
    let mut users = Vec::with_capacity(doc.users.len());
    let mut seen = std::collections::HashSet::with_capacity(doc.users.len());
    for (index, entry) in doc.users.into_iter().enumerate() {
        let bad = |reason: String| Error::BadUser { index, reason };
        let user = UserName::parse(entry.user.as_bytes()).map_err(|e| bad(e.to_string()))?;
        if !seen.insert(user.clone()) {
            return Err(bad(format!("user {user:?} is listed twice")));
        }
        let mut record = entry.record;
        if record.version > RECORD_VERSION {
            return Err(bad(format!(
                "the record has version {}, newer than this otpd reads ({RECORD_VERSION})",
                record.version
            )));
        }
        record.version = RECORD_VERSION;
        if record.devices.len() > MAX_DEVICES {
            return Err(bad(format!("more than {MAX_DEVICES} devices")));
        }
        for mark in &entry.watermarks.devices {
            if let (Some(step), Some(d)) = (
                mark.step,
                record.devices.iter_mut().find(|d| d.id == mark.id),
            ) {
                d.use_step(step);
            }
        }
        record.generation = record.generation.max(entry.watermarks.generation);
        users.push((user, record));
    }
    Ok(Backup {
        created: doc.created,
        host: doc.host.chars().take(256).collect(),
        users,
    })
}

/// What restoring one user's record from a backup writes.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The record to store.
    pub record: UserRecord,
    /// Devices whose stored watermark was ahead of the backup's and was
    /// kept (codes used after the backup stay used).
    pub watermarks_kept: usize,
    /// Backup codes used after the backup (same set in store and backup)
    /// that stay used.
    pub backup_codes_kept_used: usize,
    /// The user had a record in the store, now replaced.
    pub replaced: bool,
}

/// Restores `restored` over what the store holds (`stored`): the backup's
/// devices, backup codes and app passwords, but the replay watermarks never
/// move backwards. Per device (by id) the larger of the stored and the
/// backup's last used step (TOTP) or counter (HOTP) is kept, with the
/// steps spent ahead of both; a backup-code set the store holds too keeps
/// only the codes unused in both; the failure counters and lockouts of a
/// stored user stay (a restore is not an unlock).
pub fn merge(stored: Option<&UserRecord>, mut restored: UserRecord) -> Merged {
    restored.version = RECORD_VERSION;
    let Some(stored) = stored else {
        return Merged {
            record: restored,
            watermarks_kept: 0,
            backup_codes_kept_used: 0,
            replaced: false,
        };
    };
    let mut watermarks_kept = 0;
    let stored_devices = stored
        .devices
        .iter()
        .chain(stored.pending.as_ref().map(|p| &p.device));
    for old in stored_devices {
        let Some(d) = restored.devices.iter_mut().find(|d| d.id == old.id) else {
            continue;
        };
        let before = (d.last_used_step, d.spent_ahead.clone());
        if let Some(w) = old.last_used_step {
            d.use_step(w);
        }
        for &s in &old.spent_ahead {
            d.spend_step(s, 0);
        }
        if (d.last_used_step, d.spent_ahead.clone()) != before {
            watermarks_kept += 1;
        }
    }
    let mut backup_codes_kept_used = 0;
    if let (Some(set), Some(old)) = (restored.backup_codes.as_mut(), stored.backup_codes.as_ref())
        && set.set_id() == old.set_id()
    {
        backup_codes_kept_used = set.retain_fingerprints(&old.fingerprints());
    }
    restored.counters = stored.counters.clone();
    restored.stranger_counters = stored.stranger_counters.clone();
    restored.generation = restored.generation.max(stored.generation);
    Merged {
        record: restored,
        watermarks_kept,
        backup_codes_kept_used,
        replaced: true,
    }
}

/// A JSON error without the input it quotes (serde_json's messages name
/// only positions and expected shapes, never values of strings, but be
/// sure).
fn short(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

#[cfg(test)]
mod tests;

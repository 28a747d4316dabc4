//! `otpctl backup init | now | status | identity | change-passphrase`:
//! the backup key derived from a passphrase that otpd never sees, and the
//! age files otpd writes with its public half (see `otpd_core::backup`).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use age_core::format::{FileKey, Stanza};
use otpd_core::backup::{self as document, KdfStanza};
use otpd_proto::v1 as pb;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::cli::{BackupCommand, BackupIdentityArgs, ChangePassphraseArgs, InitArgs};
use crate::client::Client;
use crate::error::Error;
use crate::output::{Printer, rfc3339};
use crate::passphrase::{self, Source};

/// Backup file names, as otpd writes them.
const FILE_PREFIX: &str = "otpd-backup-";
const FILE_SUFFIX: &str = ".age";

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    command: BackupCommand,
) -> Result<ExitCode, Error> {
    match command {
        BackupCommand::Init(args) => init(client, p, args).await,
        BackupCommand::Now => now(client, p).await,
        BackupCommand::Status => status(client, p).await,
        BackupCommand::ChangePassphrase(args) => change_passphrase(client, p, args).await,
        // Needs no daemon: handled before connecting.
        BackupCommand::Identity(args) => identity(p, args),
    }
}

/// Words an attacker tries first: the host name, otpd's name.
fn context() -> Vec<String> {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    vec![host.trim().to_owned(), "otpd".into(), "backup".into()]
}

fn kdf_cost(insecure_test_kdf: bool) -> document::BackupKdf {
    if insecure_test_kdf {
        document::TEST_KDF
    } else {
        document::STRONG_KDF
    }
}

fn new_stanza(insecure_test_kdf: bool) -> Result<KdfStanza, Error> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt)
        .map_err(|e| Error::Backup(format!("no random salt from the system: {e}")))?;
    Ok(KdfStanza::new(salt, kdf_cost(insecure_test_kdf)))
}

fn read_new(source: &Source, prompt: &str) -> Result<Zeroizing<String>, Error> {
    let ctx = context();
    let words: Vec<&str> = ctx.iter().map(String::as_str).collect();
    passphrase::read_new(source, prompt, &words).map_err(Error::BackupPassphrase)
}

fn read_existing(source: &Source, prompt: &str) -> Result<Zeroizing<String>, Error> {
    passphrase::read_existing(source, prompt).map_err(Error::BackupPassphrase)
}

/// The age identity of a passphrase under a stanza's salt and cost.
pub fn derive_identity(
    passphrase: &str,
    stanza: &KdfStanza,
) -> Result<age::x25519::Identity, Error> {
    let secret = document::derive_secret(passphrase.as_bytes(), stanza)
        .map_err(|e| Error::Backup(e.to_string()))?;
    let hrp =
        bech32::Hrp::parse("AGE-SECRET-KEY-").map_err(|e| Error::Backup(format!("bech32: {e}")))?;
    let text = Zeroizing::new(
        bech32::encode_upper::<bech32::Bech32>(hrp, &secret[..])
            .map_err(|e| Error::Backup(format!("bech32: {e}")))?,
    );
    age::x25519::Identity::from_str(&text).map_err(|e| Error::Backup(e.to_owned()))
}

/// The stanza that carries the key derivation; it wraps nothing.
struct KdfRecipient<'a>(&'a KdfStanza);

impl age::Recipient for KdfRecipient<'_> {
    fn wrap_file_key(
        &self,
        _file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        Ok((
            vec![Stanza {
                tag: document::STANZA_TAG.to_owned(),
                args: self.0.args(),
                body: Vec::new(),
            }],
            HashSet::new(),
        ))
    }
}

/// Encrypts `plain` to `identity`'s public key, with the stanza.
fn encrypt(
    plain: &[u8],
    identity: &age::x25519::Identity,
    stanza: &KdfStanza,
) -> Result<Vec<u8>, String> {
    let recipient = identity.to_public();
    let kdf = KdfRecipient(stanza);
    let recipients: [&dyn age::Recipient; 2] = [&recipient, &kdf];
    let encryptor =
        age::Encryptor::with_recipients(recipients.into_iter()).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(plain.len() + 512);
    let mut w = encryptor.wrap_output(&mut out).map_err(|e| e.to_string())?;
    w.write_all(plain).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Peeks at a header's stanzas without unwrapping anything.
struct Peek(RefCell<Option<Result<KdfStanza, document::Error>>>);

impl age::Identity for Peek {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        if stanza.tag == document::STANZA_TAG && self.0.borrow().is_none() {
            *self.0.borrow_mut() = Some(KdfStanza::parse(&stanza.args));
        }
        None
    }
}

/// An opened backup file's bytes, before the passphrase.
pub struct BackupFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub stanza: KdfStanza,
}

impl BackupFile {
    /// Reads an age file written by otpd and its key derivation stanza.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::BackupFile {
            path: path.to_owned(),
            reason,
        };
        let file = File::open(path).map_err(|e| bad(e.to_string()))?;
        let mut bytes = Vec::new();
        file.take((document::MAX_BYTES as u64) + (1 << 20) + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(e.to_string()))?;
        if bytes.len() > document::MAX_BYTES + (1 << 20) {
            return Err(bad("larger than a backup can be".into()));
        }
        let decryptor = age::Decryptor::new_buffered(&bytes[..])
            .map_err(|e| bad(format!("not an age file: {e}")))?;
        let peek = Peek(RefCell::new(None));
        let _ = decryptor.decrypt(std::iter::once(&peek as &dyn age::Identity));
        let stanza = peek
            .0
            .into_inner()
            .ok_or_else(|| {
                bad(format!(
                    "its header has no {} stanza: not a backup written by otpd (an age file \
                     of something else?)",
                    document::STANZA_TAG
                ))
            })?
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            bytes,
            stanza,
        })
    }

    /// The plaintext, or [`Error::BackupWrongPassphrase`].
    pub fn decrypt(&self, identity: &age::x25519::Identity) -> Result<Zeroizing<Vec<u8>>, Error> {
        let decryptor =
            age::Decryptor::new_buffered(&self.bytes[..]).map_err(|e| Error::BackupFile {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        let mut reader = match decryptor.decrypt(std::iter::once(identity as &dyn age::Identity)) {
            Ok(r) => r,
            Err(age::DecryptError::NoMatchingKeys) => {
                return Err(Error::BackupWrongPassphrase {
                    path: self.path.clone(),
                });
            }
            Err(e) => {
                return Err(Error::BackupFile {
                    path: self.path.clone(),
                    reason: e.to_string(),
                });
            }
        };
        let mut plain = Zeroizing::new(Vec::new());
        reader
            .read_to_end(&mut plain)
            .map_err(|e| Error::BackupFile {
                path: self.path.clone(),
                reason: format!("damaged or altered: {e}"),
            })?;
        Ok(plain)
    }
}

fn status_stanza(s: &pb::BackupStatus) -> KdfStanza {
    KdfStanza {
        salt: s.kdf_salt.clone(),
        kdf: document::BackupKdf {
            m_kib: s.kdf_m_kib,
            t: s.kdf_t,
            p: s.kdf_p,
        },
    }
}

async fn backup_status(client: &mut Client) -> Result<pb::BackupStatus, Error> {
    Ok(client
        .get_backup_status(pb::GetBackupStatusRequest {})
        .await?
        .into_inner())
}

#[derive(Serialize)]
struct Initialised {
    ok: bool,
    recipient: String,
    directory: String,
}

/// Reads a new passphrase from `source`, derives a fresh key from it (a
/// new salt) and sets its public part in otpd, replacing
/// `expected_recipient` (empty: no key yet). Returns the key, its stanza
/// and its public key.
async fn set_new_key(
    client: &mut Client,
    source: &Source,
    insecure_test_kdf: bool,
    expected_recipient: String,
) -> Result<(age::x25519::Identity, KdfStanza, String), Error> {
    let pass = read_new(source, "New backup passphrase: ")?;
    let stanza = new_stanza(insecure_test_kdf)?;
    let identity = derive_identity(&pass, &stanza)?;
    drop(pass);
    let recipient = identity.to_public().to_string();
    client
        .set_backup_key(pb::SetBackupKeyRequest {
            recipient: recipient.clone(),
            kdf_salt: stanza.salt.clone(),
            kdf_m_kib: stanza.kdf.m_kib,
            kdf_t: stanza.kdf.t,
            kdf_p: stanza.kdf.p,
            expected_recipient,
        })
        .await?;
    Ok((identity, stanza, recipient))
}

async fn init(client: &mut Client, p: &mut Printer<'_>, args: InitArgs) -> Result<ExitCode, Error> {
    let status = backup_status(client).await?;
    if status.configured {
        return Err(Error::Backup(
            "a backup key is set already; change it with `otpctl backup change-passphrase`".into(),
        ));
    }
    let source = Source::new(args.passphrase_file.as_deref());
    let (_, _, recipient) =
        set_new_key(client, &source, args.insecure_test_kdf, String::new()).await?;
    let human = format!(
        "backup key set (public key {recipient}); otpd now writes encrypted backups to {} \
         after changes and on `otpctl backup now`.\n\
         otpd does not keep the passphrase: without it no backup can be opened. Keep it \
         somewhere safe, apart from the backups.\n",
        status.directory
    );
    p.report(
        &Initialised {
            ok: true,
            recipient,
            directory: status.directory,
        },
        &human,
    )?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct Now {
    ok: bool,
    file: String,
    time: Option<String>,
    users: u64,
    unreadable: u64,
    removed: u64,
}

async fn now(client: &mut Client, p: &mut Printer<'_>) -> Result<ExitCode, Error> {
    let r = client
        .backup_now(pb::BackupNowRequest {})
        .await?
        .into_inner();
    let mut human = format!(
        "wrote {} ({} user{})\n",
        r.file,
        r.users,
        if r.users == 1 { "" } else { "s" }
    );
    if r.unreadable > 0 {
        human.push_str(&format!(
            "left out {} user(s) whose records do not open (see `otpctl status`)\n",
            r.unreadable
        ));
    }
    if r.removed > 0 {
        human.push_str(&format!("removed {} older backup file(s)\n", r.removed));
    }
    p.report(
        &Now {
            ok: true,
            time: rfc3339(i64::try_from(r.time).unwrap_or(i64::MAX)),
            file: r.file,
            users: r.users,
            unreadable: r.unreadable,
            removed: r.removed,
        },
        &human,
    )?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct StatusReport {
    configured: bool,
    recipient: Option<String>,
    key_set_at: Option<String>,
    kdf: Option<document::BackupKdf>,
    directory: String,
    interval_seconds: u64,
    keep: u32,
    last_backup_time: Option<String>,
    last_backup_file: Option<String>,
    last_error_time: Option<String>,
    last_error: Option<String>,
    pending: bool,
}

async fn status(client: &mut Client, p: &mut Printer<'_>) -> Result<ExitCode, Error> {
    let s = backup_status(client).await?;
    let time = |t: u64| rfc3339(i64::try_from(t).unwrap_or(i64::MAX));
    let nonempty = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    let r = StatusReport {
        configured: s.configured,
        recipient: nonempty(&s.recipient),
        key_set_at: time(s.key_set_at),
        kdf: s.configured.then(|| status_stanza(&s).kdf),
        directory: s.directory.clone(),
        interval_seconds: s.interval_seconds,
        keep: s.keep,
        last_backup_time: time(s.last_backup_time),
        last_backup_file: nonempty(&s.last_backup_file),
        last_error_time: time(s.last_error_time),
        last_error: nonempty(&s.last_error),
        pending: s.pending,
    };
    let mut h = String::new();
    match &r.recipient {
        Some(key) => {
            h.push_str(&format!(
                "backup key:  {key} (set {})\n",
                r.key_set_at.as_deref().unwrap_or("-")
            ));
            let memory = if s.kdf_m_kib >= 1024 {
                format!("{} MiB", s.kdf_m_kib / 1024)
            } else {
                format!("{} KiB (TESTS ONLY: easy to guess)", s.kdf_m_kib)
            };
            h.push_str(&format!(
                "key cost:    Argon2id {memory}, {} passes, {} lane(s)\n",
                s.kdf_t, s.kdf_p
            ));
        }
        None => h.push_str("backup key:  none; set one with `otpctl backup init`\n"),
    }
    h.push_str(&format!(
        "directory:   {} (at most one automatic backup per {}, keeping {})\n",
        r.directory,
        crate::output::duration(r.interval_seconds),
        r.keep
    ));
    match (&r.last_backup_file, &r.last_backup_time) {
        (Some(f), Some(t)) => h.push_str(&format!("last backup: {t} {f}\n")),
        (Some(f), None) => h.push_str(&format!("last backup: {f}\n")),
        _ => h.push_str("last backup: none yet\n"),
    }
    if r.configured {
        h.push_str(if r.pending {
            "changes:     not in a backup yet\n"
        } else {
            "changes:     all in the last backup\n"
        });
    }
    if let Some(e) = &r.last_error {
        h.push_str(&format!(
            "LAST ERROR:  {} {e}\n",
            r.last_error_time.as_deref().unwrap_or("-")
        ));
    }
    p.report(&r, &h)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct IdentityReport {
    identity: String,
    recipient: String,
}

/// `otpctl backup identity FILE`: the age identity for stock `age`.
pub fn identity(p: &mut Printer<'_>, args: BackupIdentityArgs) -> Result<ExitCode, Error> {
    let file = BackupFile::read(&args.file)?;
    let source = Source::new(args.passphrase_file.as_deref());
    let pass = read_existing(&source, "Backup passphrase: ")?;
    let identity = derive_identity(&pass, &file.stanza)?;
    drop(pass);
    // Check it opens the file before handing it out.
    drop(file.decrypt(&identity)?);
    let recipient = identity.to_public().to_string();
    let secret = identity.to_string();
    p.warn(
        "the line below is the secret key of every backup under this passphrase: whoever \
         reads it can open them and take every user's TOTP secrets. Write it only to a \
         private file (umask 077), use it with `age -d -i FILE`, then delete it",
    )?;
    let human = format!(
        "# otpd backup identity (otpctl backup identity)\n# public key: {recipient}\n{}\n",
        secret.expose_secret()
    );
    p.report(
        &IdentityReport {
            identity: secret.expose_secret().to_owned(),
            recipient,
        },
        &human,
    )?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct Changed {
    ok: bool,
    recipient: String,
    reencrypted: usize,
    already_new: usize,
    not_opened: Vec<String>,
}

async fn change_passphrase(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: ChangePassphraseArgs,
) -> Result<ExitCode, Error> {
    let s = backup_status(client).await?;
    if !s.configured {
        return Err(Error::Backup(
            "no backup key is set; set one with `otpctl backup init`".into(),
        ));
    }
    let current = status_stanza(&s);
    let old_source = Source::new(args.passphrase_file.as_deref());
    let old = read_existing(&old_source, "Current backup passphrase: ")?;
    let old_identity = derive_identity(&old, &current)?;
    if old_identity.to_public().to_string() != s.recipient {
        return Err(Error::BackupKeyMismatch);
    }
    let new_source = Source::new(args.new_passphrase_file.as_deref());
    let (new_identity, stanza, recipient) = set_new_key(
        client,
        &new_source,
        args.insecure_test_kdf,
        s.recipient.clone(),
    )
    .await?;
    // From here on otpd writes only under the new key; re-encrypt the
    // files written under the old one (or older ones the old passphrase
    // opens), each in place, atomically.
    let dir = PathBuf::from(&s.directory);
    let mut identities: HashMap<String, age::x25519::Identity> = HashMap::new();
    identities.insert(current.salt.clone(), old_identity);
    let (mut reencrypted, mut already_new, mut not_opened) = (0, 0, Vec::new());
    for path in list_files(&dir).map_err(|e| Error::BackupFile {
        path: dir.clone(),
        reason: e.to_string(),
    })? {
        let file = match BackupFile::read(&path) {
            Ok(f) => f,
            Err(_) => {
                not_opened.push(path.display().to_string());
                continue;
            }
        };
        if file.stanza == stanza {
            already_new += 1;
            continue;
        }
        let identity = match identities.get(&file.stanza.salt) {
            Some(i) => i.clone(),
            None => {
                let i = derive_identity(&old, &file.stanza)?;
                identities.insert(file.stanza.salt.clone(), i.clone());
                i
            }
        };
        let plain = match file.decrypt(&identity) {
            Ok(plain) => plain,
            Err(_) => {
                not_opened.push(path.display().to_string());
                continue;
            }
        };
        let sealed =
            encrypt(&plain, &new_identity, &stanza).map_err(|reason| Error::BackupFile {
                path: path.clone(),
                reason,
            })?;
        write_atomically(&dir, &path, &sealed).map_err(|reason| Error::BackupFile {
            path: path.clone(),
            reason,
        })?;
        reencrypted += 1;
    }
    drop(old);
    let mut human = format!(
        "backup passphrase changed (public key {recipient}); otpd writes backups only under \
         the new one from now on.\nre-encrypted {reencrypted} backup file(s) in {} under the \
         new passphrase; the old passphrase opens none of them\n",
        s.directory
    );
    if !not_opened.is_empty() {
        human.push_str(&format!(
            "left as they are (the old passphrase does not open them): {}\n",
            not_opened.join(", ")
        ));
    }
    p.report(
        &Changed {
            ok: not_opened.is_empty(),
            recipient,
            reencrypted,
            already_new,
            not_opened: not_opened.clone(),
        },
        &human,
    )?;
    Ok(if not_opened.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::exit::OTHER)
    })
}

/// The backup files otpd wrote into `dir`.
fn list_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let ours = name
            .to_str()
            .is_some_and(|n| n.starts_with(FILE_PREFIX) && n.ends_with(FILE_SUFFIX));
        if ours && entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Replaces `path` (in `dir`) with `bytes`: a temporary file (mode 0600),
/// fsynced, renamed over it, the directory fsynced.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = dir.join(format!(
        ".{}.otpctl.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("backup"),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e.to_string());
    }
    Ok(())
}

//! `otpctl export USER`: one active device's key, to move it to a new
//! phone (QR code on the terminal or in a PNG, or the otpauth URI) or to
//! another otpd (an age file encrypted with a passphrase, which
//! `otpctl import otpd-export` reads back and stock `age -d` opens).
//!
//! Exactly one output per run. Everything that could refuse the run (the
//! flags, the output file, the passphrase) is settled before the key is
//! asked for, so that a refused export fetches nothing and leaves nothing
//! behind. The key is shown as plain text (the URI; a QR code written into
//! a pipe or a file) only with `--plaintext-secret`, and then with a
//! warning on stderr.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use age::secrecy::SecretString;
use otpd_core::device::DeviceName;
use otpd_core::interop::otpd_export::{self as doc, Export, Kind, Token};
use otpd_core::record::UserName;
use otpd_core::secret::TotpSecret;
use otpd_core::totp::{Algorithm, TotpParams};
use otpd_proto::v1::{self as pb, ExportDeviceRequest, ExportDeviceResponse};
use zeroize::Zeroizing;

use crate::cli::{ExportArgs, OtpdExportArgs};
use crate::client::Client;
use crate::commands::import::{Imported, Outcome, Result_};
use crate::error::{Error, exit};
use crate::output::Printer;
use crate::passphrase::{self, Source};
use crate::qr::{PngFile, Qr};

/// scrypt work factor (log2 N) of the encrypted file: what stock `age`
/// uses for passphrases (about a second, 256 MiB).
pub const SCRYPT_LOG_N: u8 = 18;

/// Highest scrypt work factor accepted when opening a file: stock `age`'s
/// own limit (a hostile file cannot make us work for hours).
pub const SCRYPT_MAX_LOG_N: u8 = 22;

/// Largest encrypted file read (the document is at most 64 KiB).
const MAX_FILE: usize = 256 * 1024;

/// What one run produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The QR code, drawn on the terminal.
    Terminal,
    /// The QR code as a PNG file.
    Png(PathBuf),
    /// The otpauth URI as text.
    Uri,
    /// The age file.
    Encrypted(PathBuf),
}

impl Output {
    /// The name recorded in otpd's audit trail.
    pub fn audit_name(&self) -> &'static str {
        match self {
            Output::Terminal => "qr",
            Output::Png(_) => "png",
            Output::Uri => "uri",
            Output::Encrypted(_) => "encrypted",
        }
    }
}

/// An exported device, as the printer shows it (the key only in `uri`).
pub struct Exported<'a> {
    pub user: &'a str,
    pub device: &'a str,
    pub output: &'a Output,
    /// The otpauth URI: printed for `Output::Uri` only.
    pub uri: Option<&'a str>,
    /// The QR code for the terminal.
    pub qr: Option<&'a str>,
}

/// The output chosen by the flags, refusing plain text without
/// `--plaintext-secret`.
fn output(args: &ExportArgs, json: bool) -> Result<Output, Error> {
    let out = match (&args.png, args.uri, &args.encrypted) {
        (Some(png), _, _) => Output::Png(png.clone()),
        (_, true, _) => Output::Uri,
        (_, _, Some(file)) => Output::Encrypted(file.clone()),
        (None, false, None) => Output::Terminal,
    };
    match &out {
        Output::Uri if !args.plaintext_secret => Err(Error::PlaintextRefused {
            what: "--uri prints the key as plain text",
        }),
        Output::Terminal if json => Err(Error::PlaintextRefused {
            what: "--json has no QR code; use --png, --encrypted, or --uri",
        }),
        Output::Terminal if !args.plaintext_secret && !io::stdout().is_terminal() => {
            Err(Error::PlaintextRefused {
                what: "standard output is not a terminal, and the QR code would land in a \
                       pipe or file",
            })
        }
        _ => Ok(out),
    }
}

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: ExportArgs,
) -> Result<ExitCode, Error> {
    let output = output(&args, p.is_json())?;
    // The device name is checked here too, so that a typo fails before the
    // passphrase is asked for.
    if let Some(name) = &args.device {
        DeviceName::parse(name).map_err(|e| Error::InvalidInput(e.to_string()))?;
    }
    match &output {
        Output::Png(path) => {
            let png = PngFile::create(path)?;
            let exported = match fetch(client, &args, &output).await {
                Ok(exported) => exported,
                Err(e) => {
                    png.discard();
                    return Err(e);
                }
            };
            let uri = token(&exported).otpauth_uri(&exported.user);
            Qr::new(&uri)?.write_png(png)?;
            p.exported(&shown(&exported, &output, None, None))?;
        }
        Output::Encrypted(path) => {
            let file = NewFile::create(path)?;
            // Words an attacker tries first (the README's "known words").
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let context = [
                args.user.as_str(),
                host.trim(),
                "otpd",
                "otpctl",
                "export",
                "backup",
            ];
            let pass = match passphrase::read_new(
                &Source::new(args.passphrase_file.as_deref()),
                "New passphrase for the export file: ",
                &context,
            ) {
                Ok(pass) => pass,
                Err(e) => {
                    file.discard();
                    return Err(e.into());
                }
            };
            let exported = match fetch(client, &args, &output).await {
                Ok(exported) => exported,
                Err(e) => {
                    file.discard();
                    return Err(e);
                }
            };
            let export = Export {
                user: UserName::parse(exported.user.as_bytes())
                    .map_err(|e| Error::InvalidInput(e.to_string()))?,
                exported_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs()),
                devices: vec![token(&exported)],
            };
            let json = match doc::render(&export) {
                Ok(json) => json,
                Err(e) => {
                    file.discard();
                    return Err(Error::InvalidInput(e.to_string()));
                }
            };
            file.write_encrypted(&json, &pass)?;
            p.exported(&shown(&exported, &output, None, None))?;
        }
        Output::Uri => {
            let exported = fetch(client, &args, &output).await?;
            let uri = token(&exported).otpauth_uri(&exported.user);
            p.exported(&shown(&exported, &output, Some(&uri), None))?;
        }
        Output::Terminal => {
            let exported = fetch(client, &args, &output).await?;
            let uri = token(&exported).otpauth_uri(&exported.user);
            let qr = Qr::new(&uri)?.to_terminal();
            p.exported(&shown(&exported, &output, None, Some(&qr)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn shown<'a>(
    e: &'a Fetched,
    output: &'a Output,
    uri: Option<&'a str>,
    qr: Option<&'a str>,
) -> Exported<'a> {
    Exported {
        user: &e.user,
        device: &e.device,
        output,
        uri,
        qr,
    }
}

/// The daemon's answer, the key wiped when dropped.
struct Fetched {
    user: String,
    device: String,
    secret: TotpSecret,
    params: TotpParams,
    issuer: String,
    kind: Kind,
}

async fn fetch(client: &mut Client, args: &ExportArgs, output: &Output) -> Result<Fetched, Error> {
    let request = ExportDeviceRequest {
        user: args.user.as_bytes().to_vec().into(),
        device: args.device.clone().unwrap_or_default(),
        format: output.audit_name().to_owned(),
    };
    let mut r: ExportDeviceResponse = client
        .export_device(request)
        .await
        .map_err(|s| Error::for_device(s, &args.user, args.device.as_deref(), None))?
        .into_inner();
    let secret = TotpSecret::from_bytes(r.secret.to_vec());
    let algorithm = match r.algorithm() {
        pb::Algorithm::Unspecified | pb::Algorithm::Sha1 => Algorithm::Sha1,
        pb::Algorithm::Sha256 => Algorithm::Sha256,
        pb::Algorithm::Sha512 => Algorithm::Sha512,
    };
    let kind = if r.hotp {
        Kind::Hotp {
            counter: r.hotp_counter,
        }
    } else {
        Kind::Totp {
            last_used_step: (r.last_used_step > 0).then_some(r.last_used_step),
        }
    };
    Ok(Fetched {
        user: std::mem::take(&mut r.user),
        device: std::mem::take(&mut r.device),
        secret,
        params: TotpParams {
            algorithm,
            digits: u8::try_from(r.digits).unwrap_or(6),
            period: if r.period == 0 {
                30
            } else {
                u64::from(r.period)
            },
        },
        issuer: std::mem::take(&mut r.issuer),
        kind,
    })
}

fn token(e: &Fetched) -> Token {
    Token {
        // The daemon's own device name; "default" if it sent none.
        name: DeviceName::parse(&e.device).unwrap_or_else(|_| DeviceName::default_name()),
        kind: e.kind,
        secret: e.secret.clone(),
        params: e.params,
        issuer: (!e.issuer.is_empty()).then(|| e.issuer.clone()),
    }
}

/// A new file, readable by its owner only, removed again unless written
/// in full.
struct NewFile {
    path: PathBuf,
    file: File,
}

impl NewFile {
    /// Creates `path` with mode 0600; refuses an existing file or symlink.
    fn create(path: &Path) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::AlreadyExists => Error::OutputExists {
                    path: path.to_path_buf(),
                },
                _ => Error::OutputCreate {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        Ok(NewFile {
            path: path.to_path_buf(),
            file,
        })
    }

    fn discard(self) {
        drop(self.file);
        // Best effort: it is empty, so a leftover holds no secret.
        let _ = std::fs::remove_file(&self.path);
    }

    /// Encrypts `plain` to the passphrase (age, scrypt) into the file and
    /// syncs it.
    fn write_encrypted(self, plain: &[u8], pass: &str) -> Result<(), Error> {
        let NewFile { path, file } = self;
        let mut recipient = age::scrypt::Recipient::new(SecretString::from(pass.to_owned()));
        recipient.set_work_factor(SCRYPT_LOG_N);
        let written = age::Encryptor::with_recipients(std::iter::once(&recipient as _))
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|encryptor| {
                let mut w = encryptor.wrap_output(io::BufWriter::new(&file))?;
                w.write_all(plain)?;
                w.finish()?.flush()
            })
            .and_then(|()| file.sync_all());
        if let Err(source) = written {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(Error::OutputWrite { path, source });
        }
        Ok(())
    }
}

/// Opens an encrypted export with its passphrase: the document's bytes.
pub fn decrypt(path: &Path, source: &Source) -> Result<Zeroizing<Vec<u8>>, Error> {
    let read_err = |reason: String| Error::ImportRead {
        path: path.to_path_buf(),
        source: io::Error::other(reason),
    };
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| read_err(e.to_string()))?;
    if !file
        .metadata()
        .map_err(|e| read_err(e.to_string()))?
        .is_file()
    {
        return Err(read_err("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_err(e.to_string()))?;
    if bytes.len() > MAX_FILE {
        return Err(read_err(format!("larger than {MAX_FILE} bytes")));
    }
    let not_age =
        || read_err("not a passphrase-encrypted age file (otpctl export --encrypted)".into());
    let decryptor = age::Decryptor::new_buffered(&bytes[..]).map_err(|_| not_age())?;
    if !decryptor.is_scrypt() {
        return Err(not_age());
    }
    let pass = passphrase::read_existing(source, &format!("Passphrase of {}: ", path.display()))?;
    let mut identity = age::scrypt::Identity::new(SecretString::from(pass.as_str().to_owned()));
    identity.set_max_work_factor(SCRYPT_MAX_LOG_N);
    let mut reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed
            | age::DecryptError::KeyDecryptionFailed
            | age::DecryptError::NoMatchingKeys => Error::WrongPassphrase {
                path: path.to_path_buf(),
            },
            other => read_err(other.to_string()),
        })?;
    let mut plain = Zeroizing::new(Vec::with_capacity(doc::MAX_LEN + 1));
    (&mut reader)
        .take(doc::MAX_LEN as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|e| read_err(format!("damaged: {e}")))?;
    Ok(plain)
}

/// `otpctl import otpd-export FILE`: decrypts, parses and imports every
/// device of the file for its user (or --user), in one atomic step.
pub async fn import(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: OtpdExportArgs,
) -> Result<ExitCode, Error> {
    let plain = decrypt(&args.file, &Source::new(args.passphrase_file.as_deref()))?;
    let export = doc::parse(&plain).map_err(|e| Error::ImportRead {
        path: args.file.clone(),
        source: io::Error::other(format!("not an otpd export: {e}")),
    })?;
    drop(plain);
    let user = args
        .user
        .clone()
        .unwrap_or_else(|| export.user.as_str().to_owned());
    let place = args.file.display().to_string();
    let devices = export
        .devices
        .iter()
        .map(|t| {
            let (period, last_used_step, hotp, counter) = match t.kind {
                Kind::Totp { last_used_step } => {
                    (t.params.period, last_used_step.unwrap_or(0), false, 0)
                }
                Kind::Hotp { counter } => (0, 0, true, counter),
            };
            pb::ImportDeviceRequest {
                user: Default::default(),
                device: t.name.to_string(),
                secret: t.secret.expose().to_vec().into(),
                algorithm: match t.params.algorithm {
                    Algorithm::Sha1 => pb::Algorithm::Sha1,
                    Algorithm::Sha256 => pb::Algorithm::Sha256,
                    Algorithm::Sha512 => pb::Algorithm::Sha512,
                }
                .into(),
                digits: u32::from(t.params.digits),
                period: u32::try_from(period).unwrap_or(u32::MAX),
                issuer: t.issuer.clone().unwrap_or_default(),
                backup_codes: Vec::new(),
                last_used_step,
                replace: args.replace,
                dry_run: args.dry_run,
                source: place.clone(),
                hotp,
                hotp_counter: counter,
            }
        })
        .collect();
    let request = pb::ImportUsersRequest {
        users: vec![pb::ImportUser {
            user: user.as_bytes().to_vec().into(),
            devices,
            replace: args.replace,
            source: place.clone(),
        }],
        dry_run: args.dry_run,
    };
    let response = client.import_users(request).await?.into_inner();
    let (kind_period, kind_counter) = match export.devices.first().map(|t| t.kind) {
        Some(Kind::Hotp { counter }) => (None, Some(counter)),
        Some(Kind::Totp { .. }) => (export.devices.first().map(|t| t.params.period), None),
        None => (None, None),
    };
    let last_used_step = match export.devices.first().map(|t| t.kind) {
        Some(Kind::Totp { last_used_step }) => last_used_step,
        _ => None,
    };
    let mut report = Vec::new();
    for r in response.results {
        let outcome = match r.outcome() {
            pb::import_user_result::Outcome::Imported => Outcome {
                user: r.user,
                file: place.clone(),
                result: Result_::Imported,
                reason: None,
                import: Some(Imported {
                    device: r.devices.join(","),
                    dry_run: args.dry_run,
                    replaced: r.replaced,
                    period: kind_period,
                    counter: kind_counter,
                    backup_codes: r.backup_codes,
                    last_used_step,
                    window_size: None,
                    rate_limit: None,
                    moved_to: None,
                    move_error: None,
                }),
            },
            pb::import_user_result::Outcome::AlreadyEnrolled => Outcome {
                user: r.user,
                file: place.clone(),
                result: Result_::Skipped,
                reason: Some("already enrolled (--replace replaces their devices)".into()),
                import: None,
            },
            pb::import_user_result::Outcome::Failed
            | pb::import_user_result::Outcome::Unspecified => Outcome {
                user: r.user,
                file: place.clone(),
                result: Result_::Failed,
                reason: Some(r.reason),
                import: None,
            },
        };
        report.push(outcome);
    }
    p.import_report(&report)?;
    Ok(if report.iter().any(Outcome::is_failure) {
        ExitCode::from(exit::OTHER)
    } else {
        ExitCode::SUCCESS
    })
}

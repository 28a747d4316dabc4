//! `otpctl import google-authenticator`: devices moved over from
//! google-authenticator-libpam (`~/.google_authenticator` files).
//!
//! Per user: read the file (a regular file, no symbolic link, at most 64
//! KiB), parse it in the core, send it in one ImportDevice call (atomic per
//! user), and, with `--remove-originals`, move the file out of the home
//! into a root-only directory. Every user gets one line of the report:
//! imported, skipped (already enrolled, no file) or failed with the
//! reason. The key and the scratch codes never appear in it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use otpd_core::interop::google_authenticator::{self as ga, Kind};
use otpd_proto::v1::{Algorithm, ImportDeviceRequest};
use serde::Serialize;
use tonic::Code;
use zeroize::Zeroizing;

use crate::cli::{GoogleAuthenticatorArgs, ImportCommand, OtpauthArgs, PamOathArgs};
use crate::client::Client;
use crate::error::{Error, exit};
use crate::output::Printer;

/// Where `--all-homes` looks unless `--path-template` says otherwise (the
/// default of pam_google_authenticator's `secret=` option).
pub const DEFAULT_TEMPLATE: &str = "${HOME}/.google_authenticator";

/// Where `--remove-originals` moves the files unless `--originals-dir`
/// says otherwise.
pub const DEFAULT_ORIGINALS_DIR: &str = "/var/lib/otpd/imported";

/// The passwd file `--all-homes` walks unless `--passwd` says otherwise.
pub const DEFAULT_PASSWD: &str = "/etc/passwd";

/// What happened to one user.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub user: String,
    /// The file read (or looked for).
    pub file: String,
    pub result: Result_,
    /// Why it was skipped or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Imported (or, with --dry-run, would be): the details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<Imported>,
}

/// The outcome's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Result_ {
    Imported,
    Skipped,
    Failed,
}

/// Details of an import.
#[derive(Debug, Serialize)]
pub struct Imported {
    pub device: String,
    pub dry_run: bool,
    /// The user had devices, now replaced.
    pub replaced: bool,
    /// TOTP: seconds per code.
    pub period: Option<u64>,
    /// HOTP: the next counter value.
    pub counter: Option<u64>,
    pub backup_codes: u32,
    /// The last used time step carried over (replay state), if any.
    pub last_used_step: Option<u64>,
    /// google-authenticator settings otpd does not take over (it applies
    /// its own window and limits).
    pub window_size: Option<u32>,
    pub rate_limit: Option<String>,
    /// Where the file was moved (--remove-originals).
    pub moved_to: Option<String>,
    /// Imported, but the file could not be moved aside (counts as a
    /// failure for the exit code).
    pub move_error: Option<String>,
}

impl Outcome {
    fn skipped(user: &str, file: &Path, reason: impl Into<String>) -> Self {
        Self::new(user, file, Result_::Skipped, Some(reason.into()))
    }

    fn failed(user: &str, file: &Path, reason: impl Into<String>) -> Self {
        Self::new(user, file, Result_::Failed, Some(reason.into()))
    }

    fn new(user: &str, file: &Path, result: Result_, reason: Option<String>) -> Self {
        Outcome {
            user: user.to_owned(),
            file: file.display().to_string(),
            result,
            reason,
            import: None,
        }
    }

    /// Failed, or imported without the file moved aside.
    pub fn is_failure(&self) -> bool {
        self.result == Result_::Failed
            || self.import.as_ref().is_some_and(|i| i.move_error.is_some())
    }
}

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    command: ImportCommand,
) -> Result<ExitCode, Error> {
    match command {
        ImportCommand::GoogleAuthenticator(args) => google_authenticator(client, p, args).await,
        ImportCommand::PamOath(args) => pam_oath(client, p, args).await,
        ImportCommand::Otpauth(args) => otpauth(client, p, args).await,
        ImportCommand::OtpdExport(args) => super::export::import(client, p, args).await,
    }
}

/// Sends one user's import; the outcome for the report. Only a refusal of
/// the caller stops the whole run.
async fn submit(
    client: &mut Client,
    user: &str,
    place: &Path,
    request: ImportDeviceRequest,
    period: Option<u64>,
    counter: Option<u64>,
    last_used_step: Option<u64>,
) -> Result<Outcome, Error> {
    let response = match client.import_device(request).await {
        Ok(r) => r.into_inner(),
        // Not allowed at all: stop, as every other command does.
        Err(s) if s.code() == Code::PermissionDenied => return Err(Error::Status(s)),
        Err(s) if s.code() == Code::FailedPrecondition => {
            return Ok(Outcome::skipped(
                user,
                place,
                "already enrolled (--replace replaces their devices)",
            ));
        }
        Err(s) => return Ok(Outcome::failed(user, place, Error::Status(s).to_string())),
    };
    let mut outcome = Outcome::new(user, place, Result_::Imported, None);
    outcome.import = Some(Imported {
        device: response.device,
        dry_run: response.dry_run,
        replaced: response.replaced,
        period,
        counter,
        backup_codes: response.backup_codes,
        last_used_step,
        window_size: None,
        rate_limit: None,
        moved_to: None,
        move_error: None,
    });
    Ok(outcome)
}

/// Most bytes of URIs read.
const MAX_URI_FILE: usize = 16 << 20;

/// One account found in the input, parsed or refused.
struct Found {
    /// Where: `FILE:LINE`, `PICTURE QR code N`, with ` account K` for an
    /// account of an export.
    place: String,
    result: Result<otpd_core::interop::otpauth::OtpAuth, String>,
}

/// The otpauth import: URI lines from a file or stdin, and QR codes from
/// pictures; otpauth:// URIs give one account each, Google Authenticator's
/// otpauth-migration:// URIs any number. Everything is read and checked
/// first (an incomplete export, or --user for several accounts, stops the
/// run before anything is sent); then one ImportDevice call per user.
async fn otpauth(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: OtpauthArgs,
) -> Result<ExitCode, Error> {
    use otpd_core::interop::google_migration as gm;
    use otpd_core::interop::otpauth::{self as uri, Kind as UriKind};

    // What to parse: (place, text), text zeroized after use.
    let mut inputs: Vec<(String, Zeroizing<String>)> = Vec::new();
    if let Some(file) = &args.file {
        let read_err = |reason: String| Error::ImportRead {
            path: file.clone(),
            source: io::Error::other(reason),
        };
        let bytes = if file.as_os_str() == "-" {
            let mut bytes = Zeroizing::new(Vec::new());
            io::stdin()
                .take(MAX_URI_FILE as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| read_err(e.to_string()))?;
            if bytes.len() > MAX_URI_FILE {
                return Err(read_err(format!("larger than {MAX_URI_FILE} bytes")));
            }
            bytes
        } else {
            read_bounded(file, MAX_URI_FILE).map_err(read_err)?
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| read_err("not UTF-8 text".into()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let place = format!("{}:{}", file.display(), i + 1);
            inputs.push((place, Zeroizing::new(line.to_owned())));
        }
    }
    for image in &args.image {
        let codes = crate::qr_image::read(image).map_err(|e| Error::ImportRead {
            path: image.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        let several = codes.len() > 1;
        for (n, code) in codes.into_iter().enumerate() {
            let place = if several {
                format!("{} QR code {}", image.display(), n + 1)
            } else {
                image.display().to_string()
            };
            inputs.push((place, code));
        }
    }

    let mut report = Vec::new();
    let mut found: Vec<Found> = Vec::new();
    // Per export (batch id): its QR code count, the numbers seen, where
    // the first was.
    let mut exports: BTreeMap<i32, (u32, BTreeSet<u32>, String)> = BTreeMap::new();
    for (place, text) in &inputs {
        if !gm::is_migration_uri(text) {
            found.push(Found {
                place: place.clone(),
                result: uri::parse(text).map_err(|e| format!("{place}: {e}")),
            });
            continue;
        }
        let payload = match gm::parse(text) {
            Ok(payload) => payload,
            Err(e) => {
                let place = Path::new(place);
                report.push(Outcome::failed(
                    "?",
                    place,
                    format!("{}: {e}", place.display()),
                ));
                continue;
            }
        };
        let batch = payload.batch;
        let export = exports
            .entry(batch.id)
            .or_insert_with(|| (batch.size, BTreeSet::new(), place.clone()));
        if export.0 != batch.size {
            return Err(Error::ImportUsage(format!(
                "{place}: QR code {} of {} does not belong with {} (an export of {} QR codes \
                 with the same number): give the QR codes of one export at a time",
                batch.index + 1,
                batch.size,
                export.2,
                export.0
            )));
        }
        if !export.1.insert(batch.index) {
            report.push(Outcome::skipped(
                "?",
                Path::new(place),
                format!(
                    "QR code {} of {} of this export again: read once",
                    batch.index + 1,
                    batch.size
                ),
            ));
            continue;
        }
        let many = payload.accounts.len() > 1;
        for (k, account) in payload.accounts.into_iter().enumerate() {
            let place = if many {
                format!("{place} account {}", k + 1)
            } else {
                place.clone()
            };
            let result = account
                .result
                .map_err(|e| format!("{place}: account \"{}\": {e}", account.name));
            found.push(Found { place, result });
        }
    }
    for (size, seen, first) in exports.values() {
        let missing: Vec<u32> = (0..*size)
            .filter(|i| !seen.contains(i))
            .map(|i| i + 1)
            .collect();
        if !missing.is_empty() {
            return Err(Error::ImportIncomplete {
                missing,
                size: *size,
                seen: first.clone(),
            });
        }
    }
    if args.user.is_some() {
        let accounts = found.iter().filter(|f| f.result.is_ok()).count();
        if accounts > 1 {
            return Err(Error::ImportUsage(format!(
                "--user takes an input of one account; this one holds {accounts}: \
                 say whose each is with --map (ACCOUNT USER lines); nothing was imported"
            )));
        }
    }

    let map: Option<Vec<(String, String)>> = match &args.map {
        None => None,
        Some(path) => {
            let raw = read_bounded(path, 1 << 20).map_err(|reason| Error::ImportRead {
                path: path.clone(),
                source: io::Error::other(reason),
            })?;
            Some(
                String::from_utf8_lossy(&raw)
                    .lines()
                    .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                    .filter_map(|l| {
                        let mut f = l.split_whitespace();
                        Some((f.next()?.to_owned(), f.next()?.to_owned()))
                    })
                    .collect(),
            )
        }
    };
    let mut seen = std::collections::HashSet::new();
    for Found { place, result } in found {
        let place = PathBuf::from(place);
        let parsed = match result {
            Ok(parsed) => parsed,
            Err(reason) => {
                report.push(Outcome::failed("?", &place, reason));
                continue;
            }
        };
        let user = match (&args.user, &map) {
            (Some(user), _) => user.clone(),
            (None, Some(map)) => {
                // ACCOUNT, or ISSUER:ACCOUNT for accounts of the same name.
                let full = parsed
                    .issuer
                    .as_ref()
                    .map(|issuer| format!("{issuer}:{}", parsed.account));
                match map
                    .iter()
                    .find(|(a, _)| *a == parsed.account || Some(a) == full.as_ref())
                {
                    Some((_, user)) => user.clone(),
                    None => {
                        report.push(Outcome::skipped(
                            &parsed.account,
                            &place,
                            "no user for this account in --map",
                        ));
                        continue;
                    }
                }
            }
            (None, None) => {
                return Err(Error::ImportUsage("--user or --map is required".into()));
            }
        };
        if !seen.insert(user.clone()) {
            report.push(Outcome::skipped(
                &user,
                &place,
                "a further URI for this user: only the first is imported",
            ));
            continue;
        }
        let (period, counter) = match parsed.kind {
            UriKind::Totp => (Some(parsed.params.period), None),
            UriKind::Hotp { counter } => (None, Some(counter)),
        };
        let request = ImportDeviceRequest {
            user: user.as_bytes().to_vec().into(),
            device: args.device.clone(),
            secret: parsed.secret.expose().to_vec().into(),
            algorithm: match parsed.params.algorithm {
                otpd_core::totp::Algorithm::Sha1 => Algorithm::Sha1,
                otpd_core::totp::Algorithm::Sha256 => Algorithm::Sha256,
                otpd_core::totp::Algorithm::Sha512 => Algorithm::Sha512,
            }
            .into(),
            digits: u32::from(parsed.params.digits),
            period: period.map_or(0, |p| u32::try_from(p).unwrap_or(u32::MAX)),
            issuer: parsed.issuer.clone().unwrap_or_default(),
            backup_codes: Vec::new(),
            last_used_step: 0,
            hotp: counter.is_some(),
            hotp_counter: counter.unwrap_or(0),
            replace: args.replace,
            dry_run: args.dry_run,
            source: place.display().to_string(),
        };
        report.push(submit(client, &user, &place, request, period, counter, None).await?);
    }
    p.import_report(&report)?;
    Ok(if report.iter().any(Outcome::is_failure) {
        ExitCode::from(exit::OTHER)
    } else {
        ExitCode::SUCCESS
    })
}

/// Reads a whole root-owned file (no symlink, a regular file, at most
/// `max` bytes).
fn read_bounded(path: &Path, max: usize) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("{}: {}", path.display(), open_error(e)))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    (&mut file)
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > max {
        return Err(format!("{}: larger than {max} bytes", path.display()));
    }
    Ok(bytes)
}

/// Most users per ImportUsers call (otpd takes at most 1000).
pub const IMPORT_BATCH: usize = 1000;

/// Most bytes of one ImportUsers request, by a generous estimate: otpd
/// refuses requests over 16 KiB (about 140 pam_oath users fit).
pub const IMPORT_BATCH_BYTES: usize = 12 * 1024;

impl OathUser {
    /// An upper bound of the user's size in an ImportUsers request (the
    /// protobuf framing of each field and varint counted at its largest).
    fn wire_len(&self) -> usize {
        let source = self.tokens.first().map_or(0, |t| t.place.as_os_str().len());
        16 + self.name.len()
            + source
            + self
                .tokens
                .iter()
                .map(|t| 40 + t.device.secret.len() + t.device.device.len())
                .sum::<usize>()
    }
}

/// One token line of a user, ready to send.
struct OathToken {
    line: usize,
    place: PathBuf,
    device: ImportDeviceRequest,
    period: Option<u64>,
    counter: Option<u64>,
    last_used_step: Option<u64>,
}

/// A user of the users file and every token line of theirs, or why none
/// of them is imported (reported on each of their lines).
struct OathUser {
    name: String,
    tokens: Vec<OathToken>,
    /// Skipped (a PIN) or failed (a malformed line): the outcome of every
    /// line, and no import.
    refused: Option<(Result_, String)>,
    /// Lines of the user that are not tokens (malformed), for the report.
    bad_lines: Vec<(usize, PathBuf)>,
}

/// Counts and the lines to print of a pam-oath run.
#[derive(Default)]
struct OathReport {
    /// With the line number of each, to print them in file order.
    outcomes: Vec<(usize, Outcome)>,
    imported: usize,
    skipped: usize,
    failed: usize,
    quiet: bool,
}

impl OathReport {
    fn push(&mut self, line: usize, outcome: Outcome) {
        match outcome.result {
            Result_::Imported => self.imported += 1,
            Result_::Skipped => self.skipped += 1,
            Result_::Failed => self.failed += 1,
        }
        if !self.quiet || outcome.result != Result_::Imported {
            self.outcomes.push((line, outcome));
        }
    }

    /// The outcomes to print, in the order of the file's lines.
    fn into_outcomes(mut self) -> Vec<Outcome> {
        self.outcomes.sort_by_key(|(line, _)| *line);
        self.outcomes.into_iter().map(|(_, o)| o).collect()
    }
}

async fn pam_oath(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: PamOathArgs,
) -> Result<ExitCode, Error> {
    use otpd_core::device::DeviceName;
    use otpd_core::interop::users_oath::{self as oath, Kind as OathKind, Pin};
    let base = DeviceName::parse(&args.device).map_err(|e| Error::ImportRead {
        path: args.file.clone(),
        source: io::Error::other(format!("--device: {e}")),
    })?;
    let bytes =
        read_bounded(&args.file, oath::MAX_FILE_LEN).map_err(|reason| Error::ImportRead {
            path: args.file.clone(),
            source: io::Error::other(reason),
        })?;
    let lines = oath::parse(&bytes).map_err(|e| Error::ImportRead {
        path: args.file.clone(),
        source: io::Error::other(e.to_string()),
    })?;
    drop(bytes);
    // Every code a line's token showed before now is spent: the current
    // time step at the import (a TOTP code seen by pam_oath within its
    // window cannot be replayed here; the user's next code works).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut report = OathReport {
        quiet: args.quiet,
        ..OathReport::default()
    };
    // Users in the order of their first line; all lines of a user together.
    let mut users: Vec<OathUser> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for line in lines {
        let (name, line_no, entry) = match line {
            Ok(entry) => (entry.user.as_str().to_owned(), entry.line, Ok(entry)),
            Err(e) => match e.user.as_ref() {
                Some(u) => (u.as_str().to_owned(), e.line, Err(e)),
                None => {
                    let place = format!("{}:{}", args.file.display(), e.line);
                    report.push(
                        e.line,
                        Outcome::failed("?", Path::new(&place), format!("{place}: {e}")),
                    );
                    continue;
                }
            },
        };
        let place = PathBuf::from(format!("{}:{}", args.file.display(), line_no));
        let at = *index.entry(name.clone()).or_insert_with(|| {
            users.push(OathUser {
                name: name.clone(),
                tokens: Vec::new(),
                refused: None,
                bad_lines: Vec::new(),
            });
            users.len() - 1
        });
        let user = &mut users[at];
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let reason = format!("{}: {e}", place.display());
                user.bad_lines.push((line_no, place));
                if !matches!(user.refused, Some((Result_::Failed, _))) {
                    user.refused = Some((
                        Result_::Failed,
                        format!("{reason} (none of this user's tokens is imported)"),
                    ));
                }
                continue;
            }
        };
        if entry.pin == Pin::Set && user.refused.is_none() {
            user.refused = Some((
                Result_::Skipped,
                "has a PIN: otpd has no PIN (the account password is the first factor); \
                 remove it from the line or enroll the user"
                    .to_owned(),
            ));
        }
        let device = match oath_device_name(&base, user.tokens.len() + 1) {
            Ok(d) => d,
            Err(e) => {
                user.refused = Some((Result_::Failed, format!("{}: {e}", place.display())));
                continue;
            }
        };
        let (period, counter, last_used_step) = match entry.kind {
            OathKind::Totp { period } => {
                let used = (entry.has_last_otp() || entry.last_login.is_some())
                    .then(|| now / period.max(1));
                (Some(period), None, used)
            }
            OathKind::Hotp { next_counter } => (None, Some(next_counter), None),
        };
        user.tokens.push(OathToken {
            device: ImportDeviceRequest {
                device: device.to_string(),
                secret: entry.secret.expose().to_vec().into(),
                algorithm: Algorithm::Sha1.into(),
                digits: u32::from(entry.digits),
                period: period.map_or(0, |p| u32::try_from(p).unwrap_or(u32::MAX)),
                last_used_step: last_used_step.unwrap_or(0),
                hotp: counter.is_some(),
                hotp_counter: counter.unwrap_or(0),
                ..ImportDeviceRequest::default()
            },
            line: line_no,
            place,
            period,
            counter,
            last_used_step,
        });
    }
    drop(index);
    // Users refused here are reported in file order with the batches.
    let mut batch: Vec<OathUser> = Vec::with_capacity(IMPORT_BATCH);
    let mut batch_bytes = 0;
    for user in users {
        if let Some((result, reason)) = &user.refused {
            let lines = user.tokens.iter().map(|t| (t.line, &t.place));
            for (line, place) in lines.chain(user.bad_lines.iter().map(|(l, p)| (*l, p))) {
                report.push(
                    line,
                    Outcome::new(&user.name, place, *result, Some(reason.clone())),
                );
            }
            continue;
        }
        let len = user.wire_len();
        if !batch.is_empty()
            && (batch.len() == IMPORT_BATCH || batch_bytes + len > IMPORT_BATCH_BYTES)
        {
            send_oath_batch(client, &mut report, std::mem::take(&mut batch), &args).await?;
            batch_bytes = 0;
        }
        batch_bytes += len;
        batch.push(user);
    }
    if !batch.is_empty() {
        send_oath_batch(client, &mut report, batch, &args).await?;
    }
    let (quiet, imported, skipped, failed) =
        (report.quiet, report.imported, report.skipped, report.failed);
    let outcomes = report.into_outcomes();
    if quiet && !p.is_json() {
        p.import_totals(&outcomes, imported, skipped, failed)?;
    } else {
        p.import_report(&outcomes)?;
    }
    Ok(if failed > 0 {
        ExitCode::from(exit::OTHER)
    } else {
        ExitCode::SUCCESS
    })
}

/// The device name of a user's `n`-th token.
fn oath_device_name(
    base: &otpd_core::device::DeviceName,
    n: usize,
) -> Result<otpd_core::device::DeviceName, otpd_core::Error> {
    otpd_core::ops::numbered_device_name(base, n)
}

/// Sends one batch of users; one outcome per token line. Only a refusal
/// of the caller stops the run; a batch that fails as a whole fails each
/// of its users (re-running imports them).
async fn send_oath_batch(
    client: &mut Client,
    report: &mut OathReport,
    users: Vec<OathUser>,
    args: &PamOathArgs,
) -> Result<(), Error> {
    use otpd_proto::v1::{ImportUser, ImportUsersRequest, import_user_result::Outcome as Wire};
    let request = ImportUsersRequest {
        users: users
            .iter()
            .map(|u| ImportUser {
                user: u.name.as_bytes().to_vec().into(),
                devices: u.tokens.iter().map(|t| t.device.clone()).collect(),
                replace: args.replace,
                source: u
                    .tokens
                    .first()
                    .map(|t| t.place.display().to_string())
                    .unwrap_or_default(),
            })
            .collect(),
        dry_run: args.dry_run,
    };
    let results = match client.import_users(request).await {
        Ok(r) => r.into_inner().results,
        Err(s) if s.code() == Code::PermissionDenied => return Err(Error::Status(s)),
        Err(s) => {
            let reason = Error::Status(s).to_string();
            for u in &users {
                for t in &u.tokens {
                    report.push(t.line, Outcome::failed(&u.name, &t.place, reason.clone()));
                }
            }
            return Ok(());
        }
    };
    if results.len() != users.len() {
        for u in &users {
            for t in &u.tokens {
                report.push(
                    t.line,
                    Outcome::failed(
                        &u.name,
                        &t.place,
                        "otpd answered for another number of users; run the import again",
                    ),
                );
            }
        }
        return Ok(());
    }
    for (u, r) in users.iter().zip(results) {
        let outcome = Wire::try_from(r.outcome).unwrap_or(Wire::Unspecified);
        for (i, t) in u.tokens.iter().enumerate() {
            let o = match outcome {
                Wire::Imported => {
                    let mut o = Outcome::new(&u.name, &t.place, Result_::Imported, None);
                    o.import = Some(Imported {
                        device: r
                            .devices
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| t.device.device.clone()),
                        dry_run: args.dry_run,
                        replaced: r.replaced,
                        period: t.period,
                        counter: t.counter,
                        backup_codes: r.backup_codes,
                        last_used_step: t.last_used_step,
                        window_size: None,
                        rate_limit: None,
                        moved_to: None,
                        move_error: None,
                    });
                    o
                }
                Wire::AlreadyEnrolled => Outcome::skipped(
                    &u.name,
                    &t.place,
                    "already enrolled (--replace replaces their devices)",
                ),
                Wire::Failed | Wire::Unspecified => {
                    Outcome::failed(&u.name, &t.place, r.reason.clone())
                }
            };
            report.push(t.line, o);
        }
    }
    Ok(())
}

async fn google_authenticator(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: GoogleAuthenticatorArgs,
) -> Result<ExitCode, Error> {
    let mut report = Vec::new();
    if let (Some(user), Some(file)) = (&args.user, &args.file) {
        report.push(import_one(client, &args, user, file, None, true).await?);
    } else {
        let passwd = args
            .passwd
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PASSWD));
        let text = fs::read_to_string(&passwd).map_err(|source| Error::ImportRead {
            path: passwd.clone(),
            source,
        })?;
        let template = args.path_template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
        let mut seen = std::collections::HashSet::new();
        for entry in passwd_entries(&text) {
            if !seen.insert(entry.name.to_owned()) {
                continue;
            }
            let file = PathBuf::from(expand(template, entry.name, entry.home));
            let outcome = import_one(client, &args, entry.name, &file, Some(entry.uid), false);
            report.push(outcome.await?);
        }
    }
    p.import_report(&report)?;
    Ok(if report.iter().any(Outcome::is_failure) {
        ExitCode::from(exit::OTHER)
    } else {
        ExitCode::SUCCESS
    })
}

/// One user's import. `owner`: the uid the file must belong to (homes
/// walked with --all-homes). `explicit`: the admin named the file, so its
/// absence is a failure, not "no file".
async fn import_one(
    client: &mut Client,
    args: &GoogleAuthenticatorArgs,
    user: &str,
    file: &Path,
    owner: Option<u32>,
    explicit: bool,
) -> Result<Outcome, Error> {
    let read = match read_file(file, owner) {
        Ok(read) => read,
        Err(ReadError::Missing) if !explicit => {
            return Ok(Outcome::skipped(user, file, "no file"));
        }
        Err(e) => {
            return Ok(Outcome::failed(
                user,
                file,
                format!("{}: {e}", file.display()),
            ));
        }
    };
    let parsed = match ga::parse(&read.bytes) {
        Ok(parsed) => parsed,
        Err(e) => {
            return Ok(Outcome::failed(
                user,
                file,
                format!("{}: {e}", file.display()),
            ));
        }
    };
    // google-authenticator's HOTP_COUNTER is the next counter it accepts,
    // as ImportDevice's hotp_counter.
    let (period, counter) = match parsed.kind {
        Kind::Totp { step_size } => (Some(step_size), None),
        Kind::Hotp { counter } => (None, Some(counter)),
    };
    let request = ImportDeviceRequest {
        user: user.as_bytes().to_vec().into(),
        device: args.device.clone(),
        secret: parsed.secret.expose().to_vec().into(),
        algorithm: Algorithm::Sha1.into(),
        digits: 6,
        period: period.map_or(0, |p| u32::try_from(p).unwrap_or(u32::MAX)),
        issuer: String::new(),
        backup_codes: parsed
            .scratch_codes
            .iter()
            .map(|c| String::from_utf8_lossy(c.as_bytes()).into_owned())
            .collect(),
        last_used_step: parsed.last_used_step.unwrap_or(0),
        hotp: counter.is_some(),
        hotp_counter: counter.unwrap_or(0),
        replace: args.replace,
        dry_run: args.dry_run,
        source: file.display().to_string(),
    };
    let mut outcome = submit(
        client,
        user,
        file,
        request,
        period,
        counter,
        parsed.last_used_step,
    )
    .await?;
    let Some(imported) = outcome.import.as_mut() else {
        return Ok(outcome);
    };
    imported.window_size = parsed.window_size;
    imported.rate_limit = parsed
        .rate_limit
        .map(|r| format!("{} per {}s", r.attempts, r.seconds));
    if args.remove_originals && !args.dry_run {
        let dir = args
            .originals_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ORIGINALS_DIR));
        match move_aside(file, &read, &dir, user) {
            Ok(to) => imported.moved_to = Some(to.display().to_string()),
            Err(e) => imported.move_error = Some(e),
        }
    }
    Ok(outcome)
}

/// Why a file could not be read. Never holds the file's content.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("no such file")]
    Missing,
    #[error("refusing a symbolic link")]
    Symlink,
    #[error("not a regular file")]
    NotRegular,
    #[error("larger than {} bytes", ga::MAX_FILE_LEN)]
    TooLarge,
    #[error("owned by uid {0}, not by the user")]
    WrongOwner(u32),
    #[error("cannot read: {0}")]
    Io(io::Error),
}

/// A file read for import.
struct ReadFile {
    bytes: Zeroizing<Vec<u8>>,
    /// Its directory, held open: the file is removed later through it, so a
    /// symbolic link swapped into the path meanwhile cannot redirect the
    /// removal to another file.
    dir: File,
    name: OsString,
    /// Which file it was (device, inode).
    id: (u64, u64),
}

impl ReadFile {
    /// The file's path through the open directory.
    fn path(&self) -> PathBuf {
        in_dir(&self.dir, &self.name)
    }
}

/// `name` inside the open directory `dir` (Linux's /proc/self/fd link
/// resolves to that very directory, whatever its path has become).
fn in_dir(dir: &File, name: &OsStr) -> PathBuf {
    Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name)
}

fn open_error(e: io::Error) -> ReadError {
    match e.raw_os_error() {
        Some(libc::ENOENT) => ReadError::Missing,
        Some(libc::ELOOP) => ReadError::Symlink,
        _ => ReadError::Io(e),
    }
}

/// Reads a file as root without following a symbolic link in its last
/// component, refusing anything but a regular file of at most 64 KiB
/// (O_NONBLOCK: a FIFO planted in a home cannot make us wait).
fn read_file(path: &Path, owner: Option<u32>) -> Result<ReadFile, ReadError> {
    let name = path.file_name().ok_or(ReadError::NotRegular)?.to_owned();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(parent)
        .map_err(open_error)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(in_dir(&dir, &name))
        .map_err(open_error)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular);
    }
    if meta.len() > ga::MAX_FILE_LEN as u64 {
        return Err(ReadError::TooLarge);
    }
    if let Some(uid) = owner
        && meta.uid() != uid
    {
        return Err(ReadError::WrongOwner(meta.uid()));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(4096));
    (&file)
        .take(ga::MAX_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() > ga::MAX_FILE_LEN {
        return Err(ReadError::TooLarge);
    }
    Ok(ReadFile {
        bytes,
        dir,
        name,
        id: (meta.dev(), meta.ino()),
    })
}

/// Moves an imported file out of the home: writes what was imported to a
/// new root-only file in `dir` (created 0700; never overwriting), then
/// removes the original (through its open directory, and only if it is
/// still the file that was read). Works across file systems.
fn move_aside(file: &Path, read: &ReadFile, dir: &Path, user: &str) -> Result<PathBuf, String> {
    if user.is_empty() || user.contains(['/', '\0']) || user.starts_with('.') {
        return Err("the user name cannot name a file".to_owned());
    }
    let shown = dir.display();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {shown}: {e}"))?;
    let meta = fs::symlink_metadata(dir).map_err(|e| format!("cannot stat {shown}: {e}"))?;
    if !meta.is_dir() || meta.uid() != 0 || meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{shown} must be a directory owned by root and closed to others (mode 0700)"
        ));
    }
    let (mut out, to) = (1..=1000)
        .find_map(|n| {
            let name = if n == 1 {
                format!("{user}.google_authenticator")
            } else {
                format!("{user}.google_authenticator.{n}")
            };
            let to = dir.join(name);
            match create_new(&to) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => None,
                created => Some(created.map(|f| (f, to))),
            }
        })
        .unwrap_or_else(|| Err(io::Error::from(io::ErrorKind::AlreadyExists)))
        .map_err(|e| format!("cannot create a new file in {shown}: {e}"))?;
    out.write_all(&read.bytes)
        .and_then(|()| out.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    // The same inode, and still what was read: a file removed and
    // created again may get the freed inode number back, so the identity
    // alone does not show that it is the file that was read.
    let still = fs::symlink_metadata(read.path())
        .map(|m| m.file_type().is_file() && (m.dev(), m.ino()) == read.id)
        .unwrap_or(false)
        && fs::read(read.path()).is_ok_and(|now| *Zeroizing::new(now) == *read.bytes);
    if !still {
        return Err(format!(
            "copied to {}, but {} changed since it was read: left in place",
            to.display(),
            file.display()
        ));
    }
    fs::remove_file(read.path()).map_err(|e| {
        format!(
            "copied to {}, but cannot remove {}: {e}",
            to.display(),
            file.display()
        )
    })?;
    Ok(to)
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// One line of a passwd file.
#[derive(Debug, PartialEq, Eq)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    home: &'a str,
}

/// The well-formed lines of a passwd file (`name:pw:uid:gid:gecos:home:shell`);
/// comments, NIS `+`/`-` lines and malformed lines are left out.
fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let [name, _, uid, _, _, home, _] = fields[..] else {
            return None;
        };
        if name.is_empty() || name.starts_with(['#', '+', '-']) || home.is_empty() {
            return None;
        }
        Some(PasswdEntry {
            name,
            uid: uid.parse().ok()?,
            home,
        })
    })
}

/// pam_google_authenticator's `secret=` expansion: `${USER}`, `${HOME}`,
/// and a leading `~` for the home.
fn expand(template: &str, user: &str, home: &str) -> String {
    let template = match template.strip_prefix('~') {
        Some(rest) => format!("{home}{rest}"),
        None => template.to_owned(),
    };
    template.replace("${USER}", user).replace("${HOME}", home)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_and_templates() {
        let text = "root:x:0:0:root:/root:/bin/bash\n# c\n+nis::::::\nbad:line\n\
                    alice:x:1000:1000:Alice,,,:/home/alice:/bin/sh\nnouid:x:z:0::/h:/bin/sh\n";
        let got: Vec<_> = passwd_entries(text).collect();
        assert_eq!(
            got,
            [
                PasswdEntry {
                    name: "root",
                    uid: 0,
                    home: "/root"
                },
                PasswdEntry {
                    name: "alice",
                    uid: 1000,
                    home: "/home/alice"
                }
            ]
        );
        assert_eq!(
            expand(DEFAULT_TEMPLATE, "alice", "/home/alice"),
            "/home/alice/.google_authenticator"
        );
        assert_eq!(
            expand("/var/ga/${USER}/.ga", "alice", "/home/alice"),
            "/var/ga/alice/.ga"
        );
        assert_eq!(expand("~/.ga", "alice", "/home/alice"), "/home/alice/.ga");
    }

    #[test]
    fn removal_goes_through_the_directory_that_was_read() {
        let root = tempfile::tempdir().unwrap();
        let (home, originals) = (root.path().join("home"), root.path().join("imported"));
        fs::create_dir(&home).unwrap();
        let path = home.join("ga");
        fs::write(&path, b"key").unwrap();
        let read = read_file(&path, None).unwrap();
        // The path now leads elsewhere: the home moved, a link in its place.
        let (moved, other) = (root.path().join("moved"), root.path().join("other"));
        fs::rename(&home, &moved).unwrap();
        fs::create_dir(&other).unwrap();
        fs::write(other.join("ga"), b"victim").unwrap();
        std::os::unix::fs::symlink(&other, &home).unwrap();
        let to = move_aside(&path, &read, &originals, "alice").unwrap();
        assert_eq!(to, originals.join("alice.google_authenticator"));
        assert_eq!(fs::read(&to).unwrap(), b"key");
        assert!(!moved.join("ga").exists());
        assert_eq!(fs::read(other.join("ga")).unwrap(), b"victim");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&to), mode(&originals)), (0o600, 0o700));

        // A file replaced since it was read stays; the copy gets a new name.
        let read = read_file(&other.join("ga"), None).unwrap();
        fs::remove_file(other.join("ga")).unwrap();
        fs::write(other.join("ga"), b"new").unwrap();
        let e = move_aside(&path, &read, &originals, "alice").unwrap_err();
        assert!(e.contains("changed since it was read"), "{e}");
        assert_eq!(fs::read(other.join("ga")).unwrap(), b"new");
        assert!(originals.join("alice.google_authenticator.2").exists());
    }

    #[test]
    fn refuses_symlinks_fifos_and_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::write(&real, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(read_file(&link, None), Err(ReadError::Symlink)));
        assert!(matches!(
            read_file(dir.path(), None),
            Err(ReadError::NotRegular)
        ));
        let big = dir.path().join("big");
        fs::write(&big, vec![b'A'; ga::MAX_FILE_LEN + 1]).unwrap();
        assert!(matches!(read_file(&big, None), Err(ReadError::TooLarge)));
        assert!(matches!(
            read_file(&dir.path().join("none"), None),
            Err(ReadError::Missing)
        ));
        assert!(matches!(
            read_file(&real, Some(4242)),
            Err(ReadError::WrongOwner(_))
        ));
        assert_eq!(read_file(&real, None).unwrap().bytes.as_slice(), b"x");
        // A FIFO is refused at once (O_NONBLOCK), not waited on.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        assert!(matches!(read_file(&fifo, None), Err(ReadError::NotRegular)));
    }
}

//! `otpctl restore FILE`: opens an encrypted backup here with the
//! passphrase, shows what it holds, and restores it through otpd in
//! batches. Replay watermarks never move backwards (otpd keeps the larger
//! of the stored and the backup's), and users otpd has but the backup does
//! not are left alone and listed.

use std::collections::HashSet;
use std::io::{self, BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;

use otpd_core::backup::{self as document, Summary};
use otpd_proto::v1 as pb;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::cli::RestoreArgs;
use crate::client::Client;
use crate::commands::backup::{BackupFile, derive_identity};
use crate::error::Error;
use crate::output::{Printer, rfc3339};
use crate::passphrase::{self, Source};

/// Bytes of records per RestoreUsers request: well under otpd's 16 KiB
/// request limit, with room for the names and the framing.
const BATCH_BYTES: usize = 12 * 1024;

/// The most one user's entry may take: a request holding only it stays
/// under otpd's 16 KiB limit with room for the framing.
const REQUEST_MAX: usize = 16 * 1024 - 256;

#[derive(Serialize)]
struct Failed {
    user: String,
    error: String,
}

#[derive(Serialize)]
struct Report {
    file: String,
    created: Option<String>,
    host: String,
    backup: Summary,
    dry_run: bool,
    restored: usize,
    replaced: usize,
    watermarks_kept: usize,
    backup_codes_kept_used: usize,
    failed: Vec<Failed>,
    not_in_backup: Vec<String>,
}

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: RestoreArgs,
) -> Result<ExitCode, Error> {
    let file = BackupFile::read(&args.file)?;
    let source = Source::new(args.passphrase_file.as_deref());
    let pass = passphrase::read_existing(&source, "Backup passphrase: ")
        .map_err(Error::BackupPassphrase)?;
    let identity = derive_identity(&pass, &file.stanza)?;
    drop(pass);
    let plain = file.decrypt(&identity)?;
    let backup = document::parse(&plain).map_err(|e| Error::BackupFile {
        path: args.file.clone(),
        reason: e.to_string(),
    })?;
    drop(plain);
    let summary = backup.summary();
    let created = rfc3339(i64::try_from(backup.created).unwrap_or(i64::MAX));
    let head = format!(
        "backup of {} from {}: {} user(s), {} device(s), {} app password(s), {} unused backup \
         code(s)",
        if backup.host.is_empty() {
            "?"
        } else {
            &backup.host
        },
        created.as_deref().unwrap_or("?"),
        summary.users,
        summary.devices,
        summary.app_passwords,
        summary.backup_codes
    );
    if !args.yes && !args.dry_run {
        confirm(p, &head, summary.users)?;
    }

    // Users otpd has that the backup does not: left alone, reported.
    let in_backup: HashSet<&str> = backup.users.iter().map(|(u, _)| u.as_str()).collect();
    let mut not_in_backup = Vec::new();
    let mut after = String::new();
    loop {
        let page = client
            .list_users(pb::ListUsersRequest {
                after: after.clone(),
                limit: 1000,
                ..pb::ListUsersRequest::default()
            })
            .await?
            .into_inner();
        not_in_backup.extend(
            page.users
                .iter()
                .map(|u| u.user.clone())
                .chain(page.unreadable.iter().cloned())
                .filter(|u| !in_backup.contains(u.as_str())),
        );
        if page.next_after.is_empty() || page.next_after <= after {
            break;
        }
        after = page.next_after;
    }

    let mut report = Report {
        file: args.file.display().to_string(),
        created,
        host: backup.host.clone(),
        backup: summary,
        dry_run: args.dry_run,
        restored: 0,
        replaced: 0,
        watermarks_kept: 0,
        backup_codes_kept_used: 0,
        failed: Vec::new(),
        not_in_backup,
    };
    let mut batch: Vec<pb::RestoreUser> = Vec::new();
    let mut size = 0;
    for (user, record) in backup.users {
        let json = Zeroizing::new(serde_json::to_vec(&record).map_err(|e| Error::BackupFile {
            path: args.file.clone(),
            reason: format!("cannot encode the record of {user}: {e}"),
        })?);
        let entry = json.len() + user.as_str().len() + 16;
        if !batch.is_empty() && size + entry > BATCH_BYTES {
            send(
                client,
                std::mem::take(&mut batch),
                args.dry_run,
                &mut report,
            )
            .await?;
            size = 0;
        }
        if entry > REQUEST_MAX {
            // Alone it is still more than otpd takes in one request: report
            // it and go on with the others, rather than fail them all.
            report.failed.push(Failed {
                user: user.as_str().to_owned(),
                error: format!(
                    "its record is {} bytes, more than otpd accepts in one request \
                     ({REQUEST_MAX}); nothing of it was restored",
                    json.len()
                ),
            });
            continue;
        }
        size += entry;
        batch.push(pb::RestoreUser {
            user: user.as_str().as_bytes().to_vec().into(),
            record: json.to_vec().into(),
        });
    }
    if !batch.is_empty() {
        send(client, batch, args.dry_run, &mut report).await?;
    }

    let verb = if args.dry_run {
        "would restore"
    } else {
        "restored"
    };
    let mut h = format!("{head}\n{verb} {} user(s)", report.restored);
    if report.replaced > 0 {
        h.push_str(&format!(" ({} replacing a stored record)", report.replaced));
    }
    h.push('\n');
    if report.watermarks_kept > 0 {
        h.push_str(&format!(
            "kept the newer stored replay watermark of {} device(s): codes used after the \
             backup stay used\n",
            report.watermarks_kept
        ));
    }
    if report.backup_codes_kept_used > 0 {
        h.push_str(&format!(
            "{} backup code(s) used after the backup stay used\n",
            report.backup_codes_kept_used
        ));
    }
    for f in &report.failed {
        h.push_str(&format!("{}: failed: {}\n", f.user, f.error));
    }
    if !report.not_in_backup.is_empty() {
        h.push_str(&format!(
            "left alone (in otpd, not in the backup): {}\n",
            report.not_in_backup.join(", ")
        ));
    }
    let failed = !report.failed.is_empty();
    p.report(&report, &h)?;
    Ok(if failed {
        ExitCode::from(crate::error::exit::OTHER)
    } else {
        ExitCode::SUCCESS
    })
}

async fn send(
    client: &mut Client,
    users: Vec<pb::RestoreUser>,
    dry_run: bool,
    report: &mut Report,
) -> Result<(), Error> {
    let response = client
        .restore_users(pb::RestoreUsersRequest { users, dry_run })
        .await?;
    for o in response.into_inner().outcomes {
        if o.error.is_empty() {
            report.restored += 1;
            report.replaced += usize::from(o.replaced);
            report.watermarks_kept += o.watermarks_kept as usize;
            report.backup_codes_kept_used += o.backup_codes_kept_used as usize;
        } else {
            report.failed.push(Failed {
                user: o.user,
                error: o.error,
            });
        }
    }
    Ok(())
}

/// Asks before restoring (on the terminal; refused without one).
fn confirm(p: &mut Printer<'_>, head: &str, users: usize) -> Result<(), Error> {
    if p.is_json() || !io::stdin().is_terminal() {
        return Err(Error::Backup(
            "restore asks for confirmation on a terminal; pass --yes to restore without \
             asking (or --dry-run to see what would happen)"
                .into(),
        ));
    }
    let mut err = io::stderr().lock();
    write!(
        err,
        "{head}\nRestore these {users} user(s) into otpd? Stored records of the same users are \
         replaced (replay watermarks never move back). Type yes: "
    )?;
    err.flush()?;
    let mut answer = String::new();
    io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        return Err(Error::Backup("not confirmed; nothing was restored".into()));
    }
    Ok(())
}

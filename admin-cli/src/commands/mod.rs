//! One module per subcommand; each turns its arguments into one or two RPCs
//! and hands the answer to the [`Printer`].

pub mod app_password;
pub mod backup;
pub mod backup_codes;
pub mod confirm;
pub mod device;
pub mod doctor;
pub mod enroll;
pub mod export;
pub mod generate;
pub mod import;
pub mod rekey;
pub mod reset;
pub mod restore;
pub mod status;
pub mod unlock;
pub mod verify;

use std::process::ExitCode;

use crate::cli::{BackupCommand, Cli, Command};
use crate::client;
use crate::error::Error;
use crate::output::Printer;

/// Connects to otpd and runs the command.
pub async fn run(cli: Cli, p: &mut Printer<'_>) -> Result<ExitCode, Error> {
    // Needs no daemon: opens a backup file here.
    let command = match cli.command {
        Command::Backup(BackupCommand::Identity(args)) => return backup::identity(p, args),
        // Works without a daemon: a daemon that does not answer is a finding.
        Command::Doctor(args) => return doctor::run(&cli.socket, p, args).await,
        // Writes files made from the clap definitions; no daemon involved.
        Command::Generate(command) => return generate::run(command),
        other => other,
    };
    crate::proof::init(cli.code.clone(), cli.json);
    let mut client = client::connect(&cli.socket).await?;
    match command {
        Command::Enroll(args) => enroll::run(&mut client, p, args).await,
        Command::Confirm(args) => confirm::run(&mut client, p, args).await,
        Command::Device(command) => device::run(&mut client, p, command).await,
        Command::AppPassword(command) => app_password::run(&mut client, p, command).await,
        Command::Rekey => rekey::run(&mut client, p).await,
        Command::Import(command) => import::run(&mut client, p, command).await,
        Command::Backup(command) => backup::run(&mut client, p, command).await,
        Command::Restore(args) => restore::run(&mut client, p, args).await,
        Command::Export(args) => export::run(&mut client, p, args).await,
        Command::Status {
            user,
            must_enroll,
            filters,
            all,
        } => status::run(&mut client, p, user, must_enroll, filters, all).await,
        Command::BackupCodes(args) => backup_codes::run(&mut client, p, args).await,
        Command::Unlock(args) => unlock::run(&mut client, p, args).await,
        Command::Reset(args) => reset::run(&mut client, p, args).await,
        Command::Verify(args) => verify::run(&mut client, p, args).await,
        // Handled above, before connecting.
        Command::Doctor(args) => doctor::run(&cli.socket, p, args).await,
        Command::Generate(command) => generate::run(command),
    }
}

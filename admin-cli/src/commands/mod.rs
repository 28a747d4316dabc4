//! One module per subcommand; each turns its arguments into one or two RPCs
//! and hands the answer to the [`Printer`].

pub mod app_password;
pub mod backup_codes;
pub mod confirm;
pub mod device;
pub mod enroll;
pub mod export;
pub mod import;
pub mod rekey;
pub mod reset;
pub mod status;
pub mod unlock;
pub mod verify;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::client;
use crate::error::Error;
use crate::output::Printer;

/// Connects to otpd and runs the command.
pub async fn run(cli: Cli, p: &mut Printer<'_>) -> Result<ExitCode, Error> {
    let mut client = client::connect(&cli.socket).await?;
    match cli.command {
        Command::Enroll(args) => enroll::run(&mut client, p, args).await,
        Command::Confirm(args) => confirm::run(&mut client, p, args).await,
        Command::Device(command) => device::run(&mut client, p, command).await,
        Command::AppPassword(command) => app_password::run(&mut client, p, command).await,
        Command::Rekey => rekey::run(&mut client, p).await,
        Command::Import(command) => import::run(&mut client, p, command).await,
        Command::Export(args) => export::run(&mut client, p, args).await,
        Command::Status { user } => status::run(&mut client, p, user).await,
        Command::BackupCodes(args) => backup_codes::run(&mut client, p, args).await,
        Command::Unlock(args) => unlock::run(&mut client, p, args).await,
        Command::Reset(args) => reset::run(&mut client, p, args).await,
        Command::Verify(args) => verify::run(&mut client, p, args).await,
    }
}

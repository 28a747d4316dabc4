//! otpctl: the admin CLI of otpd. See `otpctl --help` for the commands and
//! the exit codes.

mod account;
mod cli;
mod client;
mod commands;
mod error;
mod output;
mod passphrase;
mod proof;
mod qr;
mod qr_image;

use std::io;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::error::Error;
use crate::output::Printer;

fn main() -> ExitCode {
    // Exits 2 itself on a usage error (0 for --help and --version).
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            output::error(&mut io::stderr().lock(), &e, json);
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let (mut stdout, mut stderr) = (io::stdout().lock(), io::stderr().lock());
    let mut printer = Printer::new(&mut stdout, &mut stderr, cli.json);
    runtime.block_on(commands::run(cli, &mut printer))
}

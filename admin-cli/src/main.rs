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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(e),
    };
    let json = cli.json;
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            output::error(&mut io::stderr().lock(), &e, json);
            ExitCode::from(e.exit_code())
        }
    }
}

/// A command line clap refused: clap's own text and exit code (0 for
/// --help and --version, else 2), or with `--json` the JSON error object.
fn usage(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    let shown = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if !json || shown {
        e.exit()
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    let e = Error::Usage(first.strip_prefix("error: ").unwrap_or(first).to_owned());
    output::error(&mut io::stderr().lock(), &e, true);
    ExitCode::from(e.exit_code())
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

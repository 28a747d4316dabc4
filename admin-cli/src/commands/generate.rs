//! `otpctl generate` (hidden): the man pages and the shell completions,
//! made from the clap definitions in `cli.rs` by clap_mangen and
//! clap_complete, so that they say what `--help` says. `make install` and
//! `make deb` (dist/deb/build-deb) run it on the otpctl they install.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, CompletionShell, GenerateCommand};
use crate::error::Error;

/// Administration commands: section 8, as for otpd and pam_otpd.
const SECTION: &str = "8";

/// Runs `generate man` or `generate completions`.
pub fn run(command: GenerateCommand) -> Result<ExitCode, Error> {
    match command {
        GenerateCommand::Man { dir } => man_pages(&dir)?,
        GenerateCommand::Completions { shell, dir } => completions(shell, &dir)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The command as clap sees it at run time, without the hidden commands
/// (this one): clap_complete would offer them. Built, so that the global
/// options (`--socket`, `--json`, `--code`) appear in every subcommand.
fn command() -> clap::Command {
    let full = Cli::command();
    // clap cannot remove a subcommand: a copy with the visible ones.
    let mut cmd = clap::Command::new("otpctl")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .disable_help_subcommand(true)
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    if let Some(about) = full.get_long_about() {
        cmd = cmd.long_about(about.clone());
    }
    if let Some(text) = full.get_after_help() {
        cmd = cmd.after_help(text.clone());
    }
    cmd.build();
    cmd
}

/// otpctl.8, and one page per visible command (otpctl-device-add.8 ...):
/// one page for everything would list the commands without their options.
fn man_pages(dir: &Path) -> Result<(), Error> {
    fn write_tree(cmd: &clap::Command, dir: &Path) -> Result<(), Error> {
        // After build(), a subcommand's display name is "otpctl-device-add".
        let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
        let path = dir.join(format!("{name}.{SECTION}"));
        let mut page = Vec::new();
        render(cmd, &name, &mut page).map_err(|source| Error::OutputWrite {
            path: path.clone(),
            source,
        })?;
        write_file(&path, &page)?;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            write_tree(sub, dir)?;
        }
        Ok(())
    }
    write_tree(&command(), dir)
}

/// One page: clap_mangen's sections, but the text after `--help`
/// ("Exit codes:" ...) as sections of its own with its lines kept, where
/// clap_mangen would fill its columns into one paragraph.
fn render(cmd: &clap::Command, name: &str, w: &mut Vec<u8>) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section(SECTION)
        .date(date())
        .source(format!("otpd {}", env!("CARGO_PKG_VERSION")))
        .manual("System Administration");
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(w)?;
    }
    if let Some(text) = cmd.get_after_help() {
        w.extend_from_slice(after_help_roff(&text.to_string()).as_bytes());
    }
    // Only otpctl itself has a version (clap_mangen panics without one).
    if cmd.get_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
}

/// Blocks of `Heading:` and indented lines as `.SH` sections in no-fill
/// mode ("Exit codes" becomes EXIT STATUS, the man pages' name for it).
fn after_help_roff(text: &str) -> String {
    let mut roff = String::new();
    for block in text.split("\n\n") {
        let (head, body) = block.split_once('\n').unwrap_or((block, ""));
        let head = head.trim().trim_end_matches(':');
        let head = if head == "Exit codes" {
            "EXIT STATUS".to_owned()
        } else {
            head.to_uppercase()
        };
        roff.push_str(&format!(".SH \"{head}\"\n.nf\n"));
        for line in body.lines() {
            let line = line.replace('\\', "\\e").replace('-', "\\-");
            // A line starting with . or ' would be a request.
            roff.push_str("\\&");
            roff.push_str(&line);
            roff.push('\n');
        }
        roff.push_str(".fi\n");
    }
    roff
}

/// The pages' date: SOURCE_DATE_EPOCH when set (reproducible builds:
/// dist/deb/build-deb sets it to the last commit's), else today; UTC.
/// (otpd's `--man-page` in daemon/src/main.rs does the same.)
fn date() -> String {
    let when = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        // Years up to 9999, which RFC 3339 can spell.
        .filter(|&secs| secs < 253_402_300_800)
        .and_then(|secs| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs)))
        .unwrap_or_else(std::time::SystemTime::now);
    let mut day = humantime::format_rfc3339(when).to_string();
    day.truncate("YYYY-MM-DD".len());
    day
}

/// The completion script under the name the shell's loader looks for.
fn completions(shell: CompletionShell, dir: &Path) -> Result<(), Error> {
    let (shell, file) = match shell {
        CompletionShell::Bash => (Shell::Bash, "otpctl"),
        CompletionShell::Zsh => (Shell::Zsh, "_otpctl"),
        CompletionShell::Fish => (Shell::Fish, "otpctl.fish"),
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), "otpctl", &mut script);
    write_file(&dir.join(file), &script)
}

fn write_file(path: &PathBuf, bytes: &[u8]) -> Result<(), Error> {
    let mut file = std::fs::File::create(path).map_err(|source| Error::OutputCreate {
        path: path.clone(),
        source,
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| Error::OutputWrite {
            path: path.clone(),
            source,
        })
}

//! Passphrases for backups and encrypted exports: where they are read
//! from, and the strength a new one must have.
//!
//! A backup or an encrypted export may be copied anywhere (offsite
//! storage, a colleague's laptop), and then an attacker can guess its
//! passphrase offline, as fast as their hardware allows, for as long as
//! they like; no lockout protects it. So a new passphrase must be long and
//! hard to guess: at least [`MIN_CHARS`] characters, and at least
//! 10^[`MIN_GUESSES_LOG10`] guesses by zxcvbn's estimate (which knows
//! dictionaries, names, keyboard walks, dates, repeats and l33t
//! substitutions). Five random words from a large word list pass; a
//! password with a digit and a symbol appended does not. See
//! [`years_to_search`] for what the floor means against an attacker.
//!
//! Passphrases come from the terminal (not echoed; a new one is asked
//! twice) or, for scripts, from a file given with `--passphrase-file`
//! that only its owner can read (first line, without its line break).
//! Never from the command line or the environment, which other users of
//! the machine can read.

use std::io::{self, BufRead, IsTerminal, Read as _};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Fewest characters (Unicode scalar values) of a new passphrase.
pub const MIN_CHARS: usize = 20;

/// Fewest guesses, as a power of ten, zxcvbn must estimate for a new
/// passphrase.
pub const MIN_GUESSES_LOG10: f64 = 16.0;

/// Longest passphrase read, in bytes (a guard against reading a wrong,
/// huge file; far above any memorable passphrase).
pub const MAX_BYTES: usize = 1024;

/// Guesses per second assumed for a well-funded offline attacker against
/// one memory-hard (Argon2id, hundreds of MiB) passphrase hash: a farm of
/// GPUs or a botnet. The figure is generous on purpose.
#[cfg_attr(not(test), allow(dead_code))] // the README's arithmetic (tested)
pub const ATTACKER_GUESSES_PER_SECOND: f64 = 1e5;

/// Years for that attacker to try as many guesses as the strength floor:
/// a passphrase at the floor is expected to fall in half of that.
#[cfg_attr(not(test), allow(dead_code))] // the README's arithmetic (tested)
pub fn years_to_search(guesses_log10: f64) -> f64 {
    10f64.powf(guesses_log10) / ATTACKER_GUESSES_PER_SECOND / (365.25 * 24.0 * 3600.0)
}

/// Why a new passphrase was refused. The passphrase itself is never part
/// of it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Weak {
    /// Too short.
    #[error(
        "the passphrase has {chars} characters; use at least {MIN_CHARS} (several random \
         words, e.g. five words picked with dice): a backup can be guessed at offline, \
         without any lockout"
    )]
    TooShort { chars: usize },
    /// Long enough, but easy to guess.
    #[error(
        "the passphrase is too easy to guess (about 10^{log10:.0} guesses; at least \
         10^{MIN_GUESSES_LOG10:.0} are needed){hint}: a backup can be guessed at offline, \
         without any lockout; use several random words"
    )]
    Guessable { log10: f64, hint: String },
}

/// Checks a new passphrase against the floor. `context` are words an
/// attacker would try first (the host name, user names, "otpd").
pub fn check_strength(passphrase: &str, context: &[&str]) -> Result<(), Weak> {
    let chars = passphrase.chars().count();
    if chars < MIN_CHARS {
        return Err(Weak::TooShort { chars });
    }
    let estimate = zxcvbn::zxcvbn(passphrase, context);
    let log10 = estimate.guesses_log10();
    if log10 < MIN_GUESSES_LOG10 {
        let hint = estimate
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| format!(" ({})", w.to_string().trim_end_matches('.')))
            .unwrap_or_default();
        return Err(Weak::Guessable { log10, hint });
    }
    Ok(())
}

/// Where a passphrase is read from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The controlling terminal, without echo.
    Terminal,
    /// The first line of this file (only its owner may read it).
    File(PathBuf),
}

impl Source {
    /// `--passphrase-file` if given, else the terminal.
    pub fn new(file: Option<&Path>) -> Self {
        match file {
            Some(p) => Source::File(p.to_owned()),
            None => Source::Terminal,
        }
    }
}

/// Why no passphrase could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No terminal to ask on, and no file given.
    #[error(
        "a passphrase is needed and there is no terminal to ask on; give it in a file \
         that only you can read with --passphrase-file"
    )]
    NoTerminal,
    /// The terminal could not be read.
    #[error("cannot read the passphrase from the terminal: {0}")]
    Terminal(io::Error),
    /// The two entries of a new passphrase differ.
    #[error("the two passphrases differ; nothing was changed")]
    Mismatch,
    /// The file cannot be read.
    #[error("cannot read the passphrase file {}: {source}", .path.display())]
    File { path: PathBuf, source: io::Error },
    /// The file is readable by others.
    #[error(
        "refusing the passphrase file {}: it is readable by other users (mode {mode:o}); \
         'chmod 600' it",
        .path.display()
    )]
    FileOpen { path: PathBuf, mode: u32 },
    /// Empty, too long, or not UTF-8.
    #[error("the passphrase {0}")]
    Invalid(&'static str),
    /// A new passphrase below the floor.
    #[error(transparent)]
    Weak(#[from] Weak),
}

/// Reads an existing passphrase (to open a backup or an export).
pub fn read_existing(source: &Source, prompt: &str) -> Result<Zeroizing<String>, ReadError> {
    match source {
        Source::File(path) => read_file(path),
        Source::Terminal => ask(prompt),
    }
}

/// Reads a new passphrase (asked twice on a terminal) and checks its
/// strength against `context` (see [`check_strength`]).
pub fn read_new(
    source: &Source,
    prompt: &str,
    context: &[&str],
) -> Result<Zeroizing<String>, ReadError> {
    let first = match source {
        Source::File(path) => read_file(path)?,
        Source::Terminal => {
            let first = ask(prompt)?;
            check_strength(&first, context)?;
            let again = ask("Repeat it: ")?;
            if first.as_bytes() != again.as_bytes() {
                return Err(ReadError::Mismatch);
            }
            first
        }
    };
    check_strength(&first, context)?;
    Ok(first)
}

fn ask(prompt: &str) -> Result<Zeroizing<String>, ReadError> {
    if !io::stdin().is_terminal() && std::fs::File::open("/dev/tty").is_err() {
        return Err(ReadError::NoTerminal);
    }
    let typed = Zeroizing::new(rpassword::prompt_password(prompt).map_err(ReadError::Terminal)?);
    validate(typed)
}

fn read_file(path: &Path) -> Result<Zeroizing<String>, ReadError> {
    let file_err = |source| ReadError::File {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(file_err)?;
    let mode = file.metadata().map_err(file_err)?.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ReadError::FileOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let mut line = Zeroizing::new(Vec::new());
    io::BufReader::new(file)
        .take(MAX_BYTES as u64 + 2)
        .read_until(b'\n', &mut line)
        .map_err(file_err)?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    let text = std::str::from_utf8(&line).map_err(|_| ReadError::Invalid("is not UTF-8"))?;
    validate(Zeroizing::new(text.to_owned()))
}

fn validate(p: Zeroizing<String>) -> Result<Zeroizing<String>, ReadError> {
    if p.is_empty() {
        return Err(ReadError::Invalid("is empty"));
    }
    if p.len() > MAX_BYTES {
        return Err(ReadError::Invalid("is longer than 1024 bytes"));
    }
    if p.contains('\0') {
        return Err(ReadError::Invalid("contains a NUL byte"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn short_passwords_and_guessable_phrases_are_refused() {
        assert!(matches!(
            check_strength("Tr0ub4dor&3", &[]),
            Err(Weak::TooShort { chars: 11 })
        ));
        for weak in [
            "aaaaaaaaaaaaaaaaaaaaaaaa",
            "Summer2026!Summer2026!",
            "12345678901234567890",
            "qwertyuiopasdfghjklzxcvbnm",
            "passwordpasswordpassword",
        ] {
            assert!(
                matches!(check_strength(weak, &[]), Err(Weak::Guessable { .. })),
                "{weak} passed"
            );
        }
    }

    #[test]
    fn the_host_name_and_otpd_count_as_guessable() {
        let phrase = "backupserver01backupserver01";
        assert!(check_strength(phrase, &["backupserver01"]).is_err());
    }

    #[test]
    fn random_words_pass() {
        for ok in [
            "mellow cabin ripple orbit fancy",
            "sled wind otter clay march nine",
            "lunar-tidal-basket-frozen-quiet",
        ] {
            assert_eq!(check_strength(ok, &["otpd"]), Ok(()), "{ok}");
        }
    }

    #[test]
    fn the_message_never_holds_the_passphrase() {
        let p = "Summer2026!Summer2026!";
        let e = check_strength(p, &[]).err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| !m.contains("Summer")));
    }

    /// The README's "Backup passphrase" arithmetic: at the floor, the
    /// assumed attacker needs this many years to try as many guesses.
    #[test]
    fn the_floor_holds_for_millennia_against_the_assumed_attacker() {
        let years = years_to_search(MIN_GUESSES_LOG10);
        assert!((3_100.0..3_200.0).contains(&years), "{years}");
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains("10^16 guesses") && readme.contains("3,168 years"),
            "README must state the floor (10^16 guesses) and its 3,168 years"
        );
        assert_eq!(years.floor(), 3_168.0);
    }

    #[test]
    fn a_file_readable_by_others_is_refused_and_a_private_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        std::fs::write(&path, "mellow cabin ripple orbit fancy\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let src = Source::new(Some(&path));
        assert!(matches!(
            read_existing(&src, ""),
            Err(ReadError::FileOpen { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_new(&src, "", &[]).unwrap().as_str(),
            "mellow cabin ripple orbit fancy"
        );
        std::fs::write(&path, "short\r\n").unwrap();
        assert!(matches!(read_new(&src, "", &[]), Err(ReadError::Weak(_))));
        assert_eq!(read_existing(&src, "").unwrap().as_str(), "short");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            read_existing(&src, ""),
            Err(ReadError::Invalid("is empty"))
        ));
    }
}

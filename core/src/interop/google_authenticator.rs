//! google-authenticator-libpam's `~/.google_authenticator` file, as the
//! `google-authenticator` CLI writes it and pam_google_authenticator
//! updates it:
//!
//! ```text
//! 7JKPNIJG7L3BRWTPGYPWTJZ45E          <- the key, RFC 4648 base32
//! " RATE_LIMIT 3 30 [timestamps...]   <- option lines start with `" `
//! " WINDOW_SIZE 3
//! " DISALLOW_REUSE [used steps...]
//! " TOTP_AUTH                         <- or `" HOTP_COUNTER n`
//! " STEP_SIZE 60                      <- absent: 30 seconds
//! 30327460                            <- scratch codes, 8 digits each
//! ```
//!
//! The parser takes untrusted bytes and never panics. Its errors name the
//! line number and what is wrong with the line, never the line itself (it
//! may hold the key or a scratch code). Leniency, only where it cannot
//! change what the file means: the key may be in lower case, grouped with
//! spaces or `-`, and padded with `=` (pam_google_authenticator's own
//! decoder skips spaces and `-` too); lines may end in `\r\n`; blank lines
//! are skipped; the option lines and the scratch codes may come in any
//! order, as the module searches the whole file for them. Everything else
//! (an unknown option, a duplicate option, an option with bad values, a
//! line that is neither option nor scratch code) is refused.

use std::fmt;

use crate::secret::{Code, TotpSecret};

/// Longest file accepted, in bytes. The CLI writes about 200 bytes; the
/// module's own limit is 64 KiB as well.
pub const MAX_FILE_LEN: usize = 64 * 1024;

/// Shortest and longest key accepted, in bytes (the range otpd imports).
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 10..=64;

/// Digits of a scratch code.
pub const SCRATCH_CODE_LEN: usize = 8;

/// Most scratch codes accepted (the CLI writes at most 10; otpd keeps at
/// most 40 backup codes).
pub const MAX_SCRATCH_CODES: usize = 40;

/// Step size when the file has no `STEP_SIZE` line.
pub const DEFAULT_STEP_SIZE: u64 = 30;

/// A parsed file.
#[derive(Debug)]
pub struct GoogleAuthenticatorFile {
    /// The key.
    pub secret: TotpSecret,
    /// Time-based or counter-based.
    pub kind: Kind,
    /// `WINDOW_SIZE` (codes accepted around the current one), if given.
    pub window_size: Option<u32>,
    /// `DISALLOW_REUSE`: whether a used code is refused.
    pub disallow_reuse: bool,
    /// The highest time step listed after `DISALLOW_REUSE` (steps the
    /// module saw used), if any.
    pub last_used_step: Option<u64>,
    /// `RATE_LIMIT`, if given.
    pub rate_limit: Option<RateLimit>,
    /// The scratch codes, 8 digits each, in file order, without repeats.
    pub scratch_codes: Vec<Code>,
}

/// What kind of device the file describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TOTP (RFC 6238) with this step in seconds.
    Totp {
        /// Seconds per code.
        step_size: u64,
    },
    /// HOTP (RFC 4226) at this counter.
    Hotp {
        /// The next counter value.
        counter: u64,
    },
}

/// `RATE_LIMIT attempts seconds`: at most `attempts` logins per `seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Logins allowed per interval.
    pub attempts: u32,
    /// The interval in seconds.
    pub seconds: u32,
}

/// Why a file was refused. `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The file is larger than [`MAX_FILE_LEN`].
    #[error("the file is larger than {MAX_FILE_LEN} bytes")]
    TooLarge,
    /// The file holds a NUL byte.
    #[error("line {line}: the file contains a NUL byte")]
    Nul {
        /// Where.
        line: usize,
    },
    /// The file is empty: no key.
    #[error("the file is empty: no key on line 1")]
    Empty,
    /// A line is wrong.
    #[error("line {line}: {reason}")]
    Line {
        /// Where.
        line: usize,
        /// What is wrong, never what the line says.
        reason: LineError,
    },
}

impl ParseError {
    /// The 1-based line the error is about, if it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ParseError::Nul { line } | ParseError::Line { line, .. } => Some(*line),
            ParseError::TooLarge | ParseError::Empty => None,
        }
    }
}

/// What is wrong with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// Not UTF-8 text.
    NotText,
    /// The key is not base32.
    KeyNotBase32,
    /// The key decodes to fewer than 10 or more than 64 bytes.
    KeyLength,
    /// An option this parser does not know.
    UnknownOption,
    /// An option given twice.
    DuplicateOption,
    /// An option with a missing, extra or out-of-range value.
    BadOptionValue,
    /// Both `TOTP_AUTH` and `HOTP_COUNTER`.
    TotpAndHotp,
    /// Neither an option nor an 8-digit scratch code.
    NotScratchCode,
    /// More than [`MAX_SCRATCH_CODES`] scratch codes.
    TooManyScratchCodes,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LineError::NotText => "not UTF-8 text",
            LineError::KeyNotBase32 => "the key is not base32 (RFC 4648)",
            LineError::KeyLength => "the key must be 10 to 64 bytes (16 to 103 base32 characters)",
            LineError::UnknownOption => "unknown option",
            LineError::DuplicateOption => "the option is given twice",
            LineError::BadOptionValue => "the option's value is missing, extra or out of range",
            LineError::TotpAndHotp => "HOTP_COUNTER and TOTP_AUTH together",
            LineError::NotScratchCode => "neither an option (\" NAME) nor an 8-digit scratch code",
            LineError::TooManyScratchCodes => "more than 40 scratch codes",
        })
    }
}

/// Parses a `~/.google_authenticator` file.
pub fn parse(input: &[u8]) -> Result<GoogleAuthenticatorFile, ParseError> {
    if input.len() > MAX_FILE_LEN {
        return Err(ParseError::TooLarge);
    }
    if let Some(at) = input.iter().position(|&b| b == 0) {
        let line = 1 + input[..at].iter().filter(|&&b| b == b'\n').count();
        return Err(ParseError::Nul { line });
    }
    let mut lines = input
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l));
    let (_, first) = lines.next().ok_or(ParseError::Empty)?;
    if first.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    let err = |line, reason| ParseError::Line { line, reason };
    let secret = decode_key(first).map_err(|r| err(1, r))?;

    let mut o = Options::default();
    let mut scratch_codes: Vec<Code> = Vec::new();
    for (n, raw) in lines {
        let text = std::str::from_utf8(raw).map_err(|_| err(n, LineError::NotText))?;
        if text.trim().is_empty() {
            continue;
        }
        if let Some(option) = text.strip_prefix("\" ") {
            o.apply(option, n).map_err(|r| err(n, r))?;
            continue;
        }
        let code = text.trim_end();
        if code.len() != SCRATCH_CODE_LEN || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(n, LineError::NotScratchCode));
        }
        let code = Code::parse(code.as_bytes()).map_err(|_| err(n, LineError::NotScratchCode))?;
        if scratch_codes.iter().any(|c| c.ct_matches(code.as_bytes())) {
            continue;
        }
        if scratch_codes.len() == MAX_SCRATCH_CODES {
            return Err(err(n, LineError::TooManyScratchCodes));
        }
        scratch_codes.push(code);
    }
    let kind = match (o.totp, o.hotp_counter) {
        (Some(_), Some((n, _))) => return Err(err(n, LineError::TotpAndHotp)),
        (_, Some((_, counter))) => Kind::Hotp { counter },
        // Files without TOTP_AUTH (older CLIs) are time-based, as the
        // module treats them.
        (_, None) => Kind::Totp {
            step_size: o.step_size.unwrap_or(DEFAULT_STEP_SIZE),
        },
    };
    Ok(GoogleAuthenticatorFile {
        secret,
        kind,
        window_size: o.window_size,
        disallow_reuse: o.disallow_reuse.is_some(),
        last_used_step: o.disallow_reuse.flatten(),
        rate_limit: o.rate_limit,
        scratch_codes,
    })
}

/// The option lines seen so far.
#[derive(Default)]
struct Options {
    rate_limit: Option<RateLimit>,
    window_size: Option<u32>,
    /// Seen, with the highest used step listed.
    disallow_reuse: Option<Option<u64>>,
    totp: Option<()>,
    /// The counter and the line it was on.
    hotp_counter: Option<(usize, u64)>,
    step_size: Option<u64>,
    time_skew: Option<()>,
    resetting_time_skew: Option<()>,
}

impl Options {
    fn apply(&mut self, option: &str, line: usize) -> Result<(), LineError> {
        let mut words = option.split_ascii_whitespace();
        let name = words.next().ok_or(LineError::UnknownOption)?;
        let mut args = words;
        match name {
            "RATE_LIMIT" => {
                once(&self.rate_limit)?;
                let attempts = number(args.next(), 1, 100)?;
                let seconds = number(args.next(), 1, 3600)?;
                // The module appends the times of recent logins.
                for t in args {
                    number(Some(t), 0, u64::MAX)?;
                }
                self.rate_limit = Some(RateLimit {
                    attempts: u32::try_from(attempts).map_err(|_| LineError::BadOptionValue)?,
                    seconds: u32::try_from(seconds).map_err(|_| LineError::BadOptionValue)?,
                });
            }
            "WINDOW_SIZE" => {
                once(&self.window_size)?;
                let w = only(number(args.next(), 1, 100)?, args)?;
                self.window_size = Some(u32::try_from(w).map_err(|_| LineError::BadOptionValue)?);
            }
            "DISALLOW_REUSE" => {
                once(&self.disallow_reuse)?;
                let mut highest = None;
                for step in args {
                    let step = number(Some(step), 0, u64::MAX)?;
                    highest = highest.max(Some(step));
                }
                self.disallow_reuse = Some(highest);
            }
            "TOTP_AUTH" => {
                once(&self.totp)?;
                self.totp = Some(only((), args)?);
            }
            "HOTP_COUNTER" => {
                once(&self.hotp_counter)?;
                let c = only(number(args.next(), 0, u64::MAX)?, args)?;
                self.hotp_counter = Some((line, c));
            }
            "STEP_SIZE" => {
                once(&self.step_size)?;
                // The module accepts 1..=60 seconds.
                self.step_size = Some(only(number(args.next(), 1, 60)?, args)?);
            }
            // Clock-skew bookkeeping of the module: nothing to import (otpd
            // keeps its own), but checked for shape.
            "TIME_SKEW" => {
                once(&self.time_skew)?;
                let skew = args.next().ok_or(LineError::BadOptionValue)?;
                let skew = skew.strip_prefix('-').unwrap_or(skew);
                only(number(Some(skew), 0, u64::from(u32::MAX))?, args)?;
                self.time_skew = Some(());
            }
            "RESETTING_TIME_SKEW" => {
                once(&self.resetting_time_skew)?;
                for pair in args {
                    let ok = pair.split_once(['+', '-']).is_some_and(|(t, s)| {
                        number(Some(t), 0, u64::MAX).is_ok()
                            && number(Some(s), 0, u64::from(u32::MAX)).is_ok()
                    });
                    if !ok {
                        return Err(LineError::BadOptionValue);
                    }
                }
                self.resetting_time_skew = Some(());
            }
            _ => return Err(LineError::UnknownOption),
        }
        Ok(())
    }
}

fn once<T>(seen: &Option<T>) -> Result<(), LineError> {
    if seen.is_some() {
        Err(LineError::DuplicateOption)
    } else {
        Ok(())
    }
}

/// `value`, if nothing follows it on the line.
fn only<'a, T>(value: T, mut rest: impl Iterator<Item = &'a str>) -> Result<T, LineError> {
    match rest.next() {
        None => Ok(value),
        Some(_) => Err(LineError::BadOptionValue),
    }
}

/// A decimal number (digits only, at most 20) in `min..=max`.
fn number(word: Option<&str>, min: u64, max: u64) -> Result<u64, LineError> {
    let word = word.ok_or(LineError::BadOptionValue)?;
    if word.is_empty() || word.len() > 20 || !word.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LineError::BadOptionValue);
    }
    let n: u64 = word.parse().map_err(|_| LineError::BadOptionValue)?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(LineError::BadOptionValue)
    }
}

/// Decodes the key line: base32, case-insensitive, spaces and `-` skipped,
/// trailing `=` padding allowed; leftover bits (fewer than 8) are dropped,
/// as the module's decoder does.
fn decode_key(line: &[u8]) -> Result<TotpSecret, LineError> {
    let mut bytes: Vec<u8> = Vec::with_capacity(line.len() * 5 / 8 + 1);
    let mut buffer: u16 = 0;
    let mut bits: u32 = 0;
    let mut padding = false;
    for &c in line {
        let value = match c {
            b' ' | b'\t' | b'-' => continue,
            b'=' => {
                padding = true;
                continue;
            }
            _ if padding => return Err(LineError::KeyNotBase32),
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return Err(LineError::KeyNotBase32),
        };
        if bytes.len() > *SECRET_LEN.end() {
            return Err(LineError::KeyLength);
        }
        buffer = (buffer << 5) | u16::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push(((buffer >> bits) & 0xff) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    if !SECRET_LEN.contains(&bytes.len()) {
        zeroize::Zeroize::zeroize(&mut bytes);
        return Err(LineError::KeyLength);
    }
    Ok(TotpSecret::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `google-authenticator -t -d -f -r 3 -R 30 -w 3 -e 5 -q -s FILE`
    /// (libpam-google-authenticator 20191231, Debian); a throwaway key.
    const REAL_TOTP: &str = "7JKPNIJG7L3BRWTPGYPWTJZ45E\n\
\" RATE_LIMIT 3 30\n\
\" WINDOW_SIZE 3\n\
\" DISALLOW_REUSE\n\
\" TOTP_AUTH\n\
30327460\n\
41735884\n\
59585519\n\
26604521\n\
16767425\n";

    /// `google-authenticator -t -d -f -u -S 60 -W -e 2 -q -s FILE`.
    const REAL_STEP_60: &str = "CKPNWZPSLZDXQTBPQNNQI4ZFII\n\
\" WINDOW_SIZE 3\n\
\" STEP_SIZE 60\n\
\" DISALLOW_REUSE\n\
\" TOTP_AUTH\n\
15094770\n\
63401661\n";

    /// `google-authenticator -c -f -w 3 -r 3 -R 30 -e 3 -q -C -s FILE`.
    const REAL_HOTP: &str = "S2J4A7MC6MKCUWNOYFZEXVB2PE\n\
\" RATE_LIMIT 3 30\n\
\" WINDOW_SIZE 3\n\
\" HOTP_COUNTER 1\n\
90386859\n\
60340695\n\
59113249\n";

    fn ok(text: &str) -> GoogleAuthenticatorFile {
        match parse(text.as_bytes()) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    fn line_error(text: &[u8]) -> (usize, LineError) {
        match parse(text) {
            Err(ParseError::Line { line, reason }) => (line, reason),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_a_file_of_the_real_cli() {
        let f = ok(REAL_TOTP);
        assert_eq!(
            f.secret.to_base32().as_str(),
            "7JKPNIJG7L3BRWTPGYPWTJZ45E",
            "16 bytes; the 2 leftover bits are zero"
        );
        assert_eq!(f.secret.expose().len(), 16);
        assert_eq!(f.kind, Kind::Totp { step_size: 30 });
        assert_eq!(f.window_size, Some(3));
        assert!(f.disallow_reuse);
        assert_eq!(f.last_used_step, None);
        assert_eq!(
            f.rate_limit,
            Some(RateLimit {
                attempts: 3,
                seconds: 30
            })
        );
        let codes: Vec<&[u8]> = f.scratch_codes.iter().map(Code::as_bytes).collect();
        assert_eq!(
            codes,
            [
                &b"30327460"[..],
                b"41735884",
                b"59585519",
                b"26604521",
                b"16767425"
            ]
        );
    }

    #[test]
    fn reads_step_size_and_hotp() {
        let f = ok(REAL_STEP_60);
        assert_eq!(f.kind, Kind::Totp { step_size: 60 });
        assert_eq!(f.rate_limit, None);
        assert_eq!(f.scratch_codes.len(), 2);
        let f = ok(REAL_HOTP);
        assert_eq!(f.kind, Kind::Hotp { counter: 1 });
        assert!(!f.disallow_reuse);
        assert_eq!(f.scratch_codes.len(), 3);
    }

    #[test]
    fn reads_the_state_the_module_writes_back() {
        // After logins: used steps, login times, a clock-skew record; a
        // scratch code used (removed), the file without a final newline.
        let text = "7JKPNIJG7L3BRWTPGYPWTJZ45E\n\
\" RATE_LIMIT 3 30 1764450000 1764450031\n\
\" WINDOW_SIZE 17\n\
\" DISALLOW_REUSE 58815000 58815002 58815001\n\
\" TOTP_AUTH\n\
\" TIME_SKEW -1\n\
\" RESETTING_TIME_SKEW 58815000+1 58815003-2\n\
41735884";
        let f = ok(text);
        assert_eq!(f.last_used_step, Some(58_815_002));
        assert_eq!(f.window_size, Some(17));
        assert_eq!(f.scratch_codes.len(), 1);
    }

    #[test]
    fn lenient_where_the_meaning_cannot_change() {
        let f =
            ok("7jkp nijg-7l3b rwtp gypw tjz4 5e==\r\n\r\n\" TOTP_AUTH\r\n30327460\r\n30327460\n");
        assert_eq!(f.secret.expose(), ok(REAL_TOTP).secret.expose());
        assert_eq!(f.scratch_codes.len(), 1, "a repeated code counts once");
        assert!(!f.disallow_reuse);
        // No TOTP_AUTH at all: time-based, as the module reads it.
        assert_eq!(
            ok("7JKPNIJG7L3BRWTPGYPWTJZ45E\n").kind,
            Kind::Totp { step_size: 30 }
        );
    }

    #[test]
    fn errors_name_the_line_and_never_its_content() {
        let cases: &[(&[u8], usize, LineError)] = &[
            (b"7JKPNIJG7L3BRWTPGYPWTJZ45!\n", 1, LineError::KeyNotBase32),
            (b"7JKPNIJG7L3BR=WTPGYPW\n", 1, LineError::KeyNotBase32),
            (b"7JKPNIJG\n", 1, LineError::KeyLength),
            (
                b"7JKPNIJG7L3BRWTPGYPWTJZ45E\n\" NOPE\n",
                2,
                LineError::UnknownOption,
            ),
            (
                b"7JKPNIJG7L3BRWTPGYPWTJZ45E\n\" \n",
                2,
                LineError::UnknownOption,
            ),
            (
                b"7JKPNIJG7L3BRWTPGYPWTJZ45E\n\" TOTP_AUTH\n\" TOTP_AUTH\n",
                3,
                LineError::DuplicateOption,
            ),
            (
                b"7JKPNIJG7L3BRWTPGYPWTJZ45E\n\" WINDOW_SIZE 0\n",
                2,
                LineError::BadOptionValue,
            ),
            (
                b"7JKPNIJG7L3BRWTPGYPWTJZ45E\n\" WINDOW_SIZE 3 4\n",
                2,
                LineError::BadOptionValue,
            ),
            (
                b"7JKPNIJG7L3BRWTPGYPWTJZ45E\n\" STEP_SIZE 61\n",
                2,
                LineError::BadOptionValue,
            ),
            (
                b"7JKPNIJG7L3BRWTPGYPWTJZ45E\n\" HOTP_COUNTER -1\n",
                2,
                LineError::BadOptionValue,
            ),
            (
                b"7JKPNIJG7L3BRWTPGYPWTJZ45E\n\" DISALLOW_REUSE 1 99999999999999999999\n",
                2,
                LineError::BadOptionValue,
            ),
            (
                b"7JKPNIJG7L3BRWTPGYPWTJZ45E\n\" RATE_LIMIT 3\n",
                2,
                LineError::BadOptionValue,
            ),
            (
                b"7JKPNIJG7L3BRWTPGYPWTJZ45E\n\" TOTP_AUTH\n\" HOTP_COUNTER 4\n",
                3,
                LineError::TotpAndHotp,
            ),
            (
                b"7JKPNIJG7L3BRWTPGYPWTJZ45E\n\" TOTP_AUTH\n1234567\n",
                3,
                LineError::NotScratchCode,
            ),
            (
                b"7JKPNIJG7L3BRWTPGYPWTJZ45E\n\" TOTP_AUTH\n30327460 x\n",
                3,
                LineError::NotScratchCode,
            ),
            (
                b"7JKPNIJG7L3BRWTPGYPWTJZ45E\nTOTP_AUTH\n",
                2,
                LineError::NotScratchCode,
            ),
            (b"7JKPNIJG7L3BRWTPGYPWTJZ45E\n\xff\n", 2, LineError::NotText),
        ];
        for (text, line, reason) in cases {
            assert_eq!(line_error(text), (*line, *reason), "{text:?}");
            let message = parse(text).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(message.starts_with(&format!("line {line}: ")), "{message}");
            assert!(!message.contains("7JKP"), "{message}");
        }
        // A scratch code in a bad line never reaches the message.
        let message = parse(b"7JKPNIJG7L3BRWTPGYPWTJZ45E\n30327460 41735884\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!message.contains("3032"), "{message}");
    }

    #[test]
    fn refuses_empty_oversized_and_nul() {
        assert_eq!(parse(b"").err(), Some(ParseError::Empty));
        assert_eq!(parse(b"\n\" TOTP_AUTH\n").err(), Some(ParseError::Empty));
        let mut big = REAL_TOTP.as_bytes().to_vec();
        big.resize(MAX_FILE_LEN + 1, b'\n');
        assert_eq!(parse(&big).err(), Some(ParseError::TooLarge));
        assert_eq!(
            parse(b"7JKPNIJG7L3BRWTPGYPWTJZ45E\n\" TOTP_AUTH\n3032\x007460\n").err(),
            Some(ParseError::Nul { line: 3 })
        );
        // A key longer than 64 bytes is refused, not truncated.
        let long = "A".repeat(200);
        assert_eq!(line_error(long.as_bytes()), (1, LineError::KeyLength));
        // Exactly 64 bytes (103 characters, leftover bits dropped) is fine.
        assert_eq!(ok(&"A".repeat(103)).secret.expose().len(), 64);
        let many: String = std::iter::once("7JKPNIJG7L3BRWTPGYPWTJZ45E".to_owned())
            .chain((0..41).map(|i| format!("{}", 10_000_000 + i)))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            line_error(many.as_bytes()),
            (42, LineError::TooManyScratchCodes)
        );
    }

    proptest::proptest! {
        /// Arbitrary bytes, and the real file with bytes changed: never a
        /// panic; a refusal names a line the input has.
        #[test]
        fn never_panics_and_names_real_lines(
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            edits in proptest::collection::vec((0usize..135, proptest::num::u8::ANY), 0..6),
        ) {
            let mut real = REAL_TOTP.as_bytes().to_vec();
            for (at, b) in edits {
                real[at % REAL_TOTP.len()] = b;
            }
            for input in [&noise[..], &real[..]] {
                if let Err(e) = parse(input) {
                    let lines = 1 + input.iter().filter(|&&b| b == b'\n').count();
                    proptest::prop_assert!(e.line().is_none_or(|l| (1..=lines).contains(&l)));
                }
            }
        }
    }

    #[test]
    fn debug_hides_the_key_and_codes() {
        let shown = format!("{:?}", ok(REAL_TOTP));
        assert!(!shown.contains("7JKP"), "{shown}");
        assert!(!shown.contains("30327460"), "{shown}");
    }
}

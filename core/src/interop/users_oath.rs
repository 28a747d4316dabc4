//! pam_oath's users file (`/etc/users.oath`, liboath's "usersfile", also
//! read by `oathtool`-based setups).
//!
//! # The format, as liboath 2.6 reads and writes it
//!
//! One credential per line, fields separated by spaces, tabs or `\r`:
//!
//! ```text
//! TYPE USER PIN SECRET [COUNTER [LASTOTP [TIME]]]
//! HOTP/T30   alice  -     3132333435363738393031323334353637383930
//! HOTP/E/8   bob    1234  3132333435363738393031323334353637383930 7 12345678 2026-11-29T12:00:00L
//! ```
//!
//! - `TYPE`: `HOTP`, `HOTP/E`, `HOTP/E/6`, `HOTP/E/7`, `HOTP/E/8` (counter
//!   based, RFC 4226) or `HOTP/T30`, `HOTP/T60`, each optionally followed by
//!   `/6`, `/7` or `/8` (time based, RFC 6238, 30 or 60 second steps). These
//!   thirteen spellings are the only ones liboath knows; SHA-1 always.
//! - `USER`: the login name. A user may have several lines (tokens); every
//!   line is returned.
//! - `PIN`: `-` for none, `+` for a password checked by another PAM module,
//!   anything else is a static password typed before the code. Only which
//!   of the three it is survives parsing, never the value ([`Pin`]).
//! - `SECRET`: the key in hex (either case, even length).
//! - `COUNTER`: decimal. For a counter token, the counter of the last
//!   accepted code once `LASTOTP` is present, else the first counter to
//!   accept. For a time token liboath stores a meaningless running sum of
//!   window offsets there: it is validated and ignored.
//! - `LASTOTP`: the last accepted code, as typed.
//! - `TIME`: when it was accepted, `%Y-%m-%dT%H:%M:%SL` in the *server's
//!   local time zone* (the `L`).
//! - Anything after `TIME` is ignored, as liboath does.
//!
//! liboath has no comment syntax: it skips every line whose first field is
//! not a known type. Here a line whose first field starts with `#`, and a
//! blank line, are skipped; any other line that is not a valid credential
//! is an error naming its line, so nothing is dropped without a word.
//!
//! # Results per line
//!
//! [`parse`] returns one `Result` per credential line: a bad line imports
//! nothing from itself ([`LineError`] says which line and why, never with
//! the secret, the PIN or the last code), and every other line still
//! imports. Only a file over [`MAX_FILE_LEN`], or one with more than
//! [`MAX_BAD_LINES`] bad lines, is refused as a whole ([`FileError`]).
//! [`parse_line`] does the same for one line, for a caller that streams.
//!
//! Stricter than liboath, on purpose: a key of fewer than
//! [`MIN_KEY_LEN`] bytes, a 7-digit token (otpd takes 6 or 8 digits), a
//! line over [`MAX_LINE_LEN`] bytes, a NUL byte, a user name otpd cannot
//! hold, a counter with a sign, and a `TIME` not in exactly liboath's
//! format are errors.

use std::fmt;

use subtle::ConstantTimeEq;

use crate::Error;
use crate::record::UserName;
use crate::secret::TotpSecret;
use crate::totp::{Algorithm, TotpParams, code_at_step};

/// Largest file [`parse`] reads: 256 MiB. A million users written by
/// liboath take about 80 to 130 bytes a line (type, name, PIN, a 20 to
/// 32-byte key in hex, counter, last code, time), so the bulk import of
/// 10^6 users fits with room to spare.
///
/// Memory: the shortest credential line is 30 bytes (`HOTP a - ` and a
/// 10-byte key) and becomes about 190 bytes (the 120-byte result, the
/// name's and the key's allocations), so [`parse`] holds at most about
/// 6.5 times the file (under 1.7 GiB at this bound; about 190 MB for a
/// million users), plus at most [`MAX_BAD_LINES`] errors. A caller that
/// wants less streams the lines through [`parse_line`] itself.
pub const MAX_FILE_LEN: usize = 256 * 1024 * 1024;

/// Most bad lines [`parse`] reports before it refuses the whole file (a
/// file of `x` lines must not become a hundred million error values).
pub const MAX_BAD_LINES: usize = 10_000;

/// Longest line, in bytes (without its `\n`): 4 KiB.
pub const MAX_LINE_LEN: usize = 4096;

/// Shortest key accepted, in bytes: 80 bits, RFC 4226's minimum
/// (oathtool accepts shorter ones; otpd does not import them).
pub const MIN_KEY_LEN: usize = 10;

/// Longest key accepted, in bytes (liboath itself stops at 32).
pub const MAX_KEY_LEN: usize = 64;

/// Widest look-around [`Entry::last_used_step`] searches, in steps each way.
pub const MAX_WINDOW: u64 = 64;

/// Which kind of token a line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Time based (`HOTP/T30`, `HOTP/T60`, ...).
    Totp {
        /// Seconds per step: 30 or 60.
        period: u64,
    },
    /// Counter based (`HOTP`, `HOTP/E`, ...).
    Hotp {
        /// The first counter otpd may accept: the stored counter, plus one
        /// when the line records a last accepted code (liboath stores the
        /// counter of that code and refuses it again only because it equals
        /// `LASTOTP`).
        next_counter: u64,
    },
}

/// The `PIN` field, without its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// `-`: the code alone logs in.
    None,
    /// `+`: a password checked by another module (liboath accepts any).
    External,
    /// A static password typed before the code; otpd does not take it over.
    Set,
}

/// A timestamp in the server's local time, as liboath writes it
/// (`2026-11-29T12:00:00L`): which instant it is depends on the time zone
/// of the machine that wrote it, which a pure parser does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalTimestamp {
    /// Seconds from 1970-01-01T00:00:00 to the wall-clock time, counted as
    /// if the wall clock were UTC.
    wall_secs: i64,
}

impl LocalTimestamp {
    /// The Unix time, given the offset of the local time zone from UTC in
    /// seconds (east positive: +3600 for CET) at that moment.
    pub fn to_unix(self, utc_offset_secs: i64) -> Option<i64> {
        self.wall_secs.checked_sub(utc_offset_secs)
    }
}

/// The last accepted code: a spent code, not a secret, but nothing to print.
#[derive(Clone, PartialEq, Eq)]
struct LastOtp {
    digits: [u8; 8],
    len: usize,
}

impl LastOtp {
    fn as_bytes(&self) -> &[u8] {
        self.digits.get(..self.len).unwrap_or_default()
    }
}

impl fmt::Debug for LastOtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LastOtp(<redacted>)")
    }
}

/// One credential line, ready to become a device.
#[derive(Debug, Clone)]
pub struct Entry {
    /// 1-based line number in the file.
    pub line: usize,
    /// The user.
    pub user: UserName,
    /// Time or counter based, with its state.
    pub kind: Kind,
    /// Code length: 6 or 8.
    pub digits: u8,
    /// Whether the user also had a static password.
    pub pin: Pin,
    /// The key.
    pub secret: TotpSecret,
    /// When the last code was accepted, if the line says.
    pub last_login: Option<LocalTimestamp>,
    last_otp: Option<LastOtp>,
}

impl Entry {
    /// Whether the line records a last accepted code.
    pub fn has_last_otp(&self) -> bool {
        self.last_otp.is_some()
    }

    /// The time step of the last accepted code of a time token, so that
    /// replay protection carries over: the latest step within `window`
    /// steps (pam_oath's `window=`, at most [`MAX_WINDOW`]) of `TIME` whose
    /// code is `LASTOTP`. `utc_offset_secs` is the offset of the server's
    /// time zone when the line was written (see [`LocalTimestamp`]).
    ///
    /// `None` for a counter token, a line without `LASTOTP` and `TIME`, or
    /// when no step in the window has that code (wrong offset or window):
    /// the caller then needs another, conservative watermark.
    pub fn last_used_step(&self, utc_offset_secs: i64, window: u64) -> Option<u64> {
        let Kind::Totp { period } = self.kind else {
            return None;
        };
        let last = self.last_otp.as_ref()?;
        let unix = u64::try_from(self.last_login?.to_unix(utc_offset_secs)?).ok()?;
        let params = TotpParams {
            algorithm: Algorithm::Sha1,
            digits: self.digits,
            period,
        };
        let centre = unix / period;
        let window = window.min(MAX_WINDOW);
        let first = centre.saturating_sub(window);
        let last_step = centre.saturating_add(window);
        (first..=last_step).rev().find(|&step| {
            let code = code_at_step(&self.secret, params, step);
            bool::from(code.as_bytes().ct_eq(last.as_bytes()))
        })
    }
}

/// Why a file is refused as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// Over [`MAX_FILE_LEN`].
    #[error("the file is {len} bytes long; at most {max} bytes are read", max = MAX_FILE_LEN)]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// More than [`MAX_BAD_LINES`] lines are not credentials: not a users
    /// file, or one damaged beyond a line-by-line report.
    #[error(
        "more than {max} lines are not valid users.oath lines (the last one read is line {line}); \
         is this a users.oath file?",
        max = MAX_BAD_LINES
    )]
    TooManyBadLines {
        /// The line at which the limit was passed.
        line: usize,
    },
}

/// Why one line imports nothing. No variant carries the secret, the PIN or
/// a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// Over [`MAX_LINE_LEN`] bytes.
    #[error("the line is longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    /// A NUL byte (liboath would cut the line there).
    #[error("the line contains a NUL byte")]
    NulByte,
    /// The first field is none of liboath's types.
    #[error(
        "unknown token type (liboath knows HOTP, HOTP/E, HOTP/E/6, HOTP/E/7, HOTP/E/8, \
         HOTP/T30, HOTP/T60, and the last two with /6, /7 or /8)"
    )]
    UnknownType,
    /// A 7-digit token: otpd accepts 6 or 8 digits.
    #[error("7-digit codes are not supported (otpd accepts 6 or 8 digits)")]
    SevenDigits,
    /// Only the type.
    #[error("the user field is missing")]
    MissingUser,
    /// A user name otpd cannot hold.
    #[error("invalid user name: {0}")]
    InvalidUser(&'static str),
    /// No PIN field.
    #[error("the PIN field is missing (use '-' for none)")]
    MissingPin,
    /// No key field.
    #[error("the secret field is missing")]
    MissingSecret,
    /// The key has a character that is not a hex digit.
    #[error("the secret is not hexadecimal")]
    SecretNotHex,
    /// The key has an odd number of hex digits.
    #[error("the secret has an odd number of hex digits")]
    SecretOddLength,
    /// The key is too short to be safe.
    #[error("the secret is {bytes} bytes long; at least {MIN_KEY_LEN} are required")]
    SecretTooShort {
        /// Its length in bytes.
        bytes: usize,
    },
    /// The key is longer than any HMAC key otpd stores.
    #[error("the secret is {bytes} bytes long; at most {MAX_KEY_LEN} are accepted")]
    SecretTooLong {
        /// Its length in bytes.
        bytes: usize,
    },
    /// The counter is not a decimal number.
    #[error("the counter is not a decimal number")]
    InvalidCounter,
    /// The counter does not fit 64 bits, or cannot be moved past the last code.
    #[error("the counter is too large")]
    CounterOverflow,
    /// The last code is not as many digits as the token's codes.
    #[error("the last code is not a code of this token")]
    InvalidLastOtp,
    /// The time is not liboath's `YYYY-MM-DDTHH:MM:SSL`.
    #[error("the time is not in liboath's format YYYY-MM-DDTHH:MM:SSL")]
    InvalidTimestamp,
}

/// A line that imports nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// The user, when that field was valid (to report whom it concerns).
    pub user: Option<UserName>,
    /// What is wrong.
    pub reason: Reason,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(user) = &self.user {
            write!(f, " (user {:?})", user.as_str())?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for LineError {}

/// Parses a whole users file: one result per credential line, in file
/// order; comments and blank lines yield nothing.
pub fn parse(bytes: &[u8]) -> Result<Vec<Result<Entry, LineError>>, FileError> {
    parse_bounded(bytes, MAX_FILE_LEN)
}

fn parse_bounded(bytes: &[u8], max_len: usize) -> Result<Vec<Result<Entry, LineError>>, FileError> {
    if bytes.len() > max_len {
        return Err(FileError::TooLarge { len: bytes.len() });
    }
    // No capacity up front: a file of blank lines reserves nothing.
    let mut out = Vec::new();
    let mut bad = 0usize;
    for (raw, line) in bytes.split(|&b| b == b'\n').zip(1..) {
        let Some(result) = parse_line(line, raw) else {
            continue;
        };
        if result.is_err() {
            bad += 1;
            if bad > MAX_BAD_LINES {
                return Err(FileError::TooManyBadLines { line });
            }
        }
        out.push(result);
    }
    Ok(out)
}

/// Parses one line (without its `\n`; a trailing `\r` is whitespace):
/// `None` for a comment or a blank line.
pub fn parse_line(line: usize, raw: &[u8]) -> Option<Result<Entry, LineError>> {
    let mut fields = raw
        .split(|&b| matches!(b, b' ' | b'\t' | b'\r'))
        .filter(|f| !f.is_empty());
    let first = fields.next()?;
    if first.starts_with(b"#") {
        return None;
    }
    Some(parse_fields(line, raw, first, fields))
}

fn parse_fields<'a>(
    line: usize,
    raw: &[u8],
    first: &[u8],
    mut fields: impl Iterator<Item = &'a [u8]>,
) -> Result<Entry, LineError> {
    let fail = |user, reason| LineError { line, user, reason };
    if raw.len() > MAX_LINE_LEN {
        return Err(fail(None, Reason::LineTooLong));
    }
    if raw.contains(&0) {
        return Err(fail(None, Reason::NulByte));
    }
    let (period, digits) = parse_type(first).map_err(|r| fail(None, r))?;
    let user = fields
        .next()
        .ok_or(Reason::MissingUser)
        .and_then(|f| {
            UserName::parse(f).map_err(|e| match e {
                Error::InvalidUser(why) => Reason::InvalidUser(why),
                _ => Reason::InvalidUser("not acceptable"),
            })
        })
        .map_err(|r| fail(None, r))?;
    match parse_credential(period, digits, fields) {
        Ok((kind, pin, secret, last_otp, last_login)) => Ok(Entry {
            line,
            user,
            kind,
            digits,
            pin,
            secret,
            last_login,
            last_otp,
        }),
        Err(reason) => Err(fail(Some(user), reason)),
    }
}

type Credential = (
    Kind,
    Pin,
    TotpSecret,
    Option<LastOtp>,
    Option<LocalTimestamp>,
);

/// The fields after the user: `PIN SECRET [COUNTER [LASTOTP [TIME]]]`.
fn parse_credential<'a>(
    period: Option<u64>,
    digits: u8,
    mut fields: impl Iterator<Item = &'a [u8]>,
) -> Result<Credential, Reason> {
    let pin = match fields.next().ok_or(Reason::MissingPin)? {
        b"-" => Pin::None,
        b"+" => Pin::External,
        _ => Pin::Set,
    };
    let secret = parse_secret(fields.next().ok_or(Reason::MissingSecret)?)?;
    let counter = fields.next().map(parse_counter).transpose()?.unwrap_or(0);
    let last_otp = fields
        .next()
        .map(|f| parse_last_otp(f, digits))
        .transpose()?;
    let last_login = fields.next().map(parse_timestamp).transpose()?;
    let kind = match period {
        Some(period) => Kind::Totp { period },
        None => Kind::Hotp {
            next_counter: if last_otp.is_some() {
                counter.checked_add(1).ok_or(Reason::CounterOverflow)?
            } else {
                counter
            },
        },
    };
    Ok((kind, pin, secret, last_otp, last_login))
}

/// `(Some(period) for a time token, digits)`.
fn parse_type(field: &[u8]) -> Result<(Option<u64>, u8), Reason> {
    let (period, rest) = if let Some(rest) = field.strip_prefix(b"HOTP/T30") {
        (Some(30), rest)
    } else if let Some(rest) = field.strip_prefix(b"HOTP/T60") {
        (Some(60), rest)
    } else if let Some(rest) = field.strip_prefix(b"HOTP/E") {
        (None, rest)
    } else if field == b"HOTP" {
        (None, &b""[..])
    } else {
        return Err(Reason::UnknownType);
    };
    match rest {
        b"" | b"/6" => Ok((period, 6)),
        b"/8" => Ok((period, 8)),
        b"/7" => Err(Reason::SevenDigits),
        _ => Err(Reason::UnknownType),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn parse_secret(field: &[u8]) -> Result<TotpSecret, Reason> {
    if !field.iter().all(|&b| hex_value(b).is_some()) {
        return Err(Reason::SecretNotHex);
    }
    if !field.len().is_multiple_of(2) {
        return Err(Reason::SecretOddLength);
    }
    let bytes = field.len() / 2;
    if bytes < MIN_KEY_LEN {
        return Err(Reason::SecretTooShort { bytes });
    }
    if bytes > MAX_KEY_LEN {
        return Err(Reason::SecretTooLong { bytes });
    }
    let key = field
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => (hex_value(*hi).unwrap_or(0) << 4) | hex_value(*lo).unwrap_or(0),
            _ => 0,
        })
        .collect();
    Ok(TotpSecret::from_bytes(key))
}

fn parse_counter(field: &[u8]) -> Result<u64, Reason> {
    if !field.iter().all(u8::is_ascii_digit) {
        return Err(Reason::InvalidCounter);
    }
    field.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or(Reason::CounterOverflow)
    })
}

fn parse_last_otp(field: &[u8], digits: u8) -> Result<LastOtp, Reason> {
    if field.len() != usize::from(digits) || !field.iter().all(u8::is_ascii_digit) {
        return Err(Reason::InvalidLastOtp);
    }
    let mut out = LastOtp {
        digits: [0; 8],
        len: field.len(),
    };
    out.digits
        .get_mut(..field.len())
        .ok_or(Reason::InvalidLastOtp)?
        .copy_from_slice(field);
    Ok(out)
}

/// Exactly `YYYY-MM-DDTHH:MM:SSL` (what liboath's `strftime` writes).
fn parse_timestamp(field: &[u8]) -> Result<LocalTimestamp, Reason> {
    let bad = Reason::InvalidTimestamp;
    let [
        y0,
        y1,
        y2,
        y3,
        b'-',
        mo0,
        mo1,
        b'-',
        d0,
        d1,
        b'T',
        h0,
        h1,
        b':',
        mi0,
        mi1,
        b':',
        s0,
        s1,
        b'L',
    ] = *field
    else {
        return Err(bad);
    };
    let num = |ds: &[u8]| -> Result<i64, Reason> {
        ds.iter().try_fold(0i64, |acc, &d| {
            if d.is_ascii_digit() {
                Ok(acc * 10 + i64::from(d - b'0'))
            } else {
                Err(bad)
            }
        })
    };
    let year = num(&[y0, y1, y2, y3])?;
    let month = num(&[mo0, mo1])?;
    let day = num(&[d0, d1])?;
    let hour = num(&[h0, h1])?;
    let minute = num(&[mi0, mi1])?;
    let second = num(&[s0, s1])?;
    if year < 1970
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad);
    }
    let days = days_from_civil(year, month, day);
    Ok(LocalTimestamp {
        wall_secs: days * 86_400 + hour * 3600 + minute * 60 + second,
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`), for years 1970..=9999.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238's SHA-1 test key ("12345678901234567890"), in hex.
    const RFC_KEY: &str = "3132333435363738393031323334353637383930";

    /// Produced by hand with oathtool 2.6.7 (the one in /usr/bin):
    /// `oathtool --totp -s 30 -d 6 3132333435363738393031323334353637383930 -N @<time>`
    /// and the same with `-d 8` and with `-s 60 -d 6`:
    /// (unix time, 30 s / 6 digits, 30 s / 8 digits, 60 s / 6 digits).
    const OATHTOOL_TOTP: [(u64, &str, &str, &str); 4] = [
        (59, "287082", "94287082", "755224"),
        (1_111_111_109, "081804", "07081804", "360094"),
        (1_234_567_890, "005924", "89005924", "713351"),
        (2_000_000_000, "279037", "69279037", "864010"),
    ];

    /// `oathtool -d 6 -c <counter> 3132...3930` for counters 0, 1 and 9, and
    /// `oathtool -d 8 -c 1 3132...3930` (RFC 4226 appendix D's values).
    const OATHTOOL_HOTP: [(u64, u8, &str); 4] = [
        (0, 6, "755224"),
        (1, 6, "287082"),
        (9, 6, "520489"),
        (1, 8, "94287082"),
    ];

    fn one(text: &str) -> Result<Entry, LineError> {
        let mut all = parse(text.as_bytes()).unwrap();
        assert_eq!(all.len(), 1, "{text:?}");
        all.pop().unwrap()
    }

    fn ok(text: &str) -> Entry {
        one(text).unwrap()
    }

    fn reason(text: &str) -> Reason {
        one(text).unwrap_err().reason
    }

    #[test]
    fn every_type_spelling_of_liboath() {
        let cases: [(&str, Option<u64>, u8); 13] = [
            ("HOTP", None, 6),
            ("HOTP/E", None, 6),
            ("HOTP/E/6", None, 6),
            ("HOTP/E/8", None, 8),
            ("HOTP/T30", Some(30), 6),
            ("HOTP/T30/6", Some(30), 6),
            ("HOTP/T30/8", Some(30), 8),
            ("HOTP/T60", Some(60), 6),
            ("HOTP/T60/6", Some(60), 6),
            ("HOTP/T60/8", Some(60), 8),
            ("HOTP/E/7", None, 7),
            ("HOTP/T30/7", Some(30), 7),
            ("HOTP/T60/7", Some(60), 7),
        ];
        for (ty, period, digits) in cases {
            let line = format!("{ty} alice - {RFC_KEY}");
            if digits == 7 {
                assert_eq!(reason(&line), Reason::SevenDigits, "{ty}");
                continue;
            }
            let e = ok(&line);
            assert_eq!(e.digits, digits, "{ty}");
            match (period, e.kind) {
                (Some(p), Kind::Totp { period }) => assert_eq!(p, period, "{ty}"),
                (None, Kind::Hotp { next_counter }) => assert_eq!(next_counter, 0, "{ty}"),
                other => panic!("{ty}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_types_are_errors_not_skipped() {
        for ty in [
            "TOTP",
            "hotp",
            "HOTP/T",
            "HOTP/T45",
            "HOTP/T30/9",
            "HOTP/E/",
            "HOTP/E/6x",
            "HOTP/T300",
            "HOTP/T30/",
            "HOTP/",
            "HOTPX",
        ] {
            assert_eq!(
                reason(&format!("{ty} alice - {RFC_KEY}")),
                Reason::UnknownType,
                "{ty}"
            );
        }
    }

    #[test]
    fn pin_none_external_or_set_without_its_value() {
        assert_eq!(ok(&format!("HOTP/T30 a - {RFC_KEY}")).pin, Pin::None);
        assert_eq!(ok(&format!("HOTP/T30 a + {RFC_KEY}")).pin, Pin::External);
        let e = ok(&format!("HOTP/T30 a s3cr3tPIN {RFC_KEY}"));
        assert_eq!(e.pin, Pin::Set);
        assert!(!format!("{e:?}").contains("s3cr3tPIN"));
        assert!(!format!("{e:?}").contains(RFC_KEY));
    }

    #[test]
    fn hotp_counter_moves_past_the_last_code() {
        let fresh = ok(&format!("HOTP alice - {RFC_KEY} 7"));
        assert_eq!(fresh.kind, Kind::Hotp { next_counter: 7 });
        assert!(!fresh.has_last_otp());
        let used = ok(&format!(
            "HOTP\talice\t-\t{RFC_KEY}\t7\t162583\t2026-11-29T12:00:00L"
        ));
        assert_eq!(used.kind, Kind::Hotp { next_counter: 8 });
        assert!(used.has_last_otp());
        assert_eq!(used.last_used_step(0, 10), None);
        let max = u64::MAX;
        assert_eq!(
            ok(&format!("HOTP a - {RFC_KEY} {max}")).kind,
            Kind::Hotp { next_counter: max }
        );
        assert_eq!(
            reason(&format!("HOTP a - {RFC_KEY} {max} 123456")),
            Reason::CounterOverflow
        );
        assert_eq!(
            reason(&format!("HOTP a - {RFC_KEY} 18446744073709551616")),
            Reason::CounterOverflow
        );
        for bad in ["-1", "+1", "1a", "0x10", "١"] {
            assert_eq!(
                reason(&format!("HOTP a - {RFC_KEY} {bad}")),
                Reason::InvalidCounter,
                "{bad}"
            );
        }
    }

    #[test]
    fn hotp_codes_match_oathtool() {
        for (counter, digits, expected) in OATHTOOL_HOTP {
            let ty = if digits == 8 { "HOTP/E/8" } else { "HOTP" };
            let e = ok(&format!("{ty} alice - {RFC_KEY} {counter}"));
            let Kind::Hotp { next_counter } = e.kind else {
                panic!("not HOTP")
            };
            let params = TotpParams {
                algorithm: Algorithm::Sha1,
                digits: e.digits,
                period: 1,
            };
            assert_eq!(
                code_at_step(&e.secret, params, next_counter).as_str(),
                expected
            );
        }
    }

    #[test]
    fn totp_codes_match_oathtool() {
        for (time, six, eight, sixty) in OATHTOOL_TOTP {
            for (ty, expected) in [
                ("HOTP/T30", six),
                ("HOTP/T30/8", eight),
                ("HOTP/T60", sixty),
            ] {
                let e = ok(&format!("{ty} alice - {RFC_KEY}"));
                let Kind::Totp { period } = e.kind else {
                    panic!("not TOTP")
                };
                let params = TotpParams {
                    algorithm: Algorithm::Sha1,
                    digits: e.digits,
                    period,
                };
                assert_eq!(
                    code_at_step(&e.secret, params, time / period).as_str(),
                    expected,
                    "{ty} @{time}"
                );
            }
        }
    }

    #[test]
    fn totp_last_used_step_from_last_code_and_local_time() {
        // 1111111109 = 2005-03-18T01:58:29Z; step 37037036, code 081804.
        let line = format!("HOTP/T30 alice - {RFC_KEY} 3 081804 2005-03-18T01:58:29L");
        let e = ok(&line);
        assert_eq!(e.last_used_step(0, 5), Some(1_111_111_109 / 30));
        // Written in CET (+1h): the wall clock read 02:58:29.
        let cet = ok(&format!(
            "HOTP/T30 alice - {RFC_KEY} 3 081804 2005-03-18T02:58:29L"
        ));
        assert_eq!(cet.last_used_step(3600, 5), Some(1_111_111_109 / 30));
        // Logged in two steps after the code's own step: still found.
        let late = ok(&format!(
            "HOTP/T30 alice - {RFC_KEY} 3 081804 2005-03-18T01:59:29L"
        ));
        assert_eq!(late.last_used_step(0, 3), Some(1_111_111_109 / 30));
        assert_eq!(late.last_used_step(0, 1), None);
        // Wrong offset: not found, so the caller must fall back.
        assert_eq!(cet.last_used_step(0, 5), None);
        // 8 digits, 60 s steps.
        let e8 = ok(&format!(
            "HOTP/T30/8 bob - {RFC_KEY} 0 89005924 2009-02-13T23:31:30L"
        ));
        assert_eq!(e8.last_used_step(0, 0), Some(1_234_567_890 / 30));
        let e60 = ok(&format!(
            "HOTP/T60 bob - {RFC_KEY} 0 864010 2033-05-18T03:33:20L"
        ));
        assert_eq!(e60.last_used_step(0, 0), Some(2_000_000_000 / 60));
        // Without time or last code: nothing to carry over.
        let no_time = ok(&format!("HOTP/T30 alice - {RFC_KEY} 3 081804"));
        assert_eq!(no_time.last_login, None);
        assert_eq!(no_time.last_used_step(0, 5), None);
        assert_eq!(
            ok(&format!("HOTP/T30 a - {RFC_KEY}")).last_used_step(0, 5),
            None
        );
    }

    /// A file written by liboath 2.6.7 itself (also the fuzz seed
    /// `fuzz/corpus/users_oath/liboath_written`): six lines in tab-separated
    /// form, then `oath_authenticate_usersfile(file, user, code, 5, pin)`
    /// from a small C program linked to /usr/lib/x86_64-linux-gnu/liboath.so.0,
    /// at Unix time 1795990373 (2026-11-29T22:12:53Z), codes from oathtool:
    /// alice (run with TZ=Europe/Berlin) with the code of the step before,
    /// bob (8 digits), carol (60 s, PIN `+`), dave with counter 2 then 3
    /// (a replay of 2 in between was refused), erin (PIN 1234) with counter
    /// 0; alice's second token was not used.
    const LIBOATH_WRITTEN: &str = "\
# users.oath written by liboath 2.6.7 (oath_authenticate_usersfile)
HOTP/T30\talice\t-\t3132333435363738393031323334353637383930\t1\t008819\t2026-11-29T23:12:53L
HOTP/T30/8\tbob\t-\t3132333435363738393031323334353637383930\t0\t23646363\t2026-11-29T22:12:53L
HOTP/T60\tcarol\t+\t3132333435363738393031323334353637383930\t0\t054934\t2026-11-29T22:12:53L
HOTP\tdave\t-\t3132333435363738393031323334353637383930\t3\t969429\t2026-11-29T22:12:53L
HOTP/E/8\terin\t1234\t3132333435363738393031323334353637383930\t0\t84755224\t2026-11-29T22:12:53L
HOTP/T30\talice\t-\t3132333435363738393031323334353637383931
";

    #[test]
    fn a_file_written_by_liboath() {
        const NOW: u64 = 1_795_990_373;
        let all: Vec<Entry> = parse(LIBOATH_WRITTEN.as_bytes())
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let users: Vec<&str> = all.iter().map(|e| e.user.as_str()).collect();
        assert_eq!(users, ["alice", "bob", "carol", "dave", "erin", "alice"]);
        let [alice, bob, carol, dave, erin, alice2] = &all[..] else {
            panic!("six entries")
        };
        // Berlin is UTC+1 in November; the code was the previous step's.
        assert_eq!(alice.last_used_step(3600, 5), Some((NOW - 30) / 30));
        assert_eq!(alice.last_used_step(0, 5), None);
        assert_eq!(bob.digits, 8);
        assert_eq!(bob.last_used_step(0, 5), Some(NOW / 30));
        assert_eq!(carol.pin, Pin::External);
        assert_eq!(carol.last_used_step(0, 5), Some(NOW / 60));
        // liboath stored counter 3 with code(3): the next code is counter 4.
        assert_eq!(dave.kind, Kind::Hotp { next_counter: 4 });
        assert_eq!((erin.pin, erin.digits), (Pin::Set, 8));
        assert_eq!(erin.kind, Kind::Hotp { next_counter: 1 });
        assert_eq!((alice2.line, alice2.last_login), (7, None));
        assert_ne!(alice2.secret.expose(), alice.secret.expose());
    }

    #[test]
    fn timestamps_exactly_as_liboath_writes_them() {
        let t = |s: &str| parse_timestamp(s.as_bytes());
        assert_eq!(t("1970-01-01T00:00:00L").unwrap().to_unix(0), Some(0));
        assert_eq!(
            t("2009-02-13T23:31:30L").unwrap().to_unix(0),
            Some(1_234_567_890)
        );
        assert_eq!(
            t("2024-02-29T00:00:00L").unwrap().to_unix(-3600),
            Some(1_709_164_800 + 3600)
        );
        for bad in [
            "2023-02-29T00:00:00L",
            "2026-13-01T00:00:00L",
            "2026-00-01T00:00:00L",
            "2026-04-31T00:00:00L",
            "2026-11-29T24:00:00L",
            "2026-11-29T12:60:00L",
            "2026-11-29T12:00:61L",
            "2026-11-29T12:00:00",
            "2026-11-29T12:00:00Z",
            "2026-11-29 12:00:00L",
            "1969-12-31T23:59:59L",
            "+026-11-29T12:00:00L",
            "2026-11-29T12:00:00LL",
        ] {
            assert_eq!(t(bad), Err(Reason::InvalidTimestamp), "{bad}");
        }
        assert_eq!(
            reason(&format!("HOTP/T30 a - {RFC_KEY} 0 123456 yesterday")),
            Reason::InvalidTimestamp
        );
    }

    #[test]
    fn last_code_must_be_a_code_of_the_token() {
        for bad in ["12345", "1234567", "12345678", "12345a"] {
            assert_eq!(
                reason(&format!("HOTP/T30 a - {RFC_KEY} 0 {bad}")),
                Reason::InvalidLastOtp,
                "{bad}"
            );
        }
        assert!(ok(&format!("HOTP/T30/8 a - {RFC_KEY} 0 12345678")).has_last_otp());
    }

    #[test]
    fn hex_either_case_and_its_errors() {
        let key = [0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd];
        for hex in [
            "abcdef0123456789abcd",
            "ABCDEF0123456789ABCD",
            "aBcDeF0123456789AbCd",
        ] {
            assert_eq!(
                ok(&format!("HOTP/T30 a - {hex}")).secret.expose(),
                key,
                "{hex}"
            );
        }
        assert_eq!(
            ok(&format!("HOTP/T30 a - {RFC_KEY}")).secret.expose(),
            b"12345678901234567890"
        );
        assert_eq!(
            reason("HOTP/T30 a - 3132333435363738393g"),
            Reason::SecretNotHex
        );
        assert_eq!(
            reason("HOTP/T30 a - 0x3132333435363738393031"),
            Reason::SecretNotHex
        );
        assert_eq!(
            reason("HOTP/T30 a - 31323334353637383930313"),
            Reason::SecretOddLength
        );
        assert_eq!(
            reason("HOTP/T30 a - 313233343536373839"),
            Reason::SecretTooShort { bytes: 9 }
        );
        assert_eq!(
            reason(&format!("HOTP/T30 a - {}", "ab".repeat(65))),
            Reason::SecretTooLong { bytes: 65 }
        );
        assert_eq!(
            ok(&format!("HOTP/T30 a - {}", "ab".repeat(64)))
                .secret
                .expose()
                .len(),
            64
        );
    }

    #[test]
    fn errors_never_show_the_secret_or_the_pin() {
        let text = "HOTP/T30 alice hunter2 313233343536373839303132333435363738393g\n\
                    HOTP/T30 alice hunter2 3132333435363738393031323334353637383930 0 12x\n";
        for result in parse(text.as_bytes()).unwrap() {
            let err = result.unwrap_err();
            for shown in [format!("{err}"), format!("{err:?}")] {
                assert!(!shown.contains("hunter2"), "{shown}");
                assert!(!shown.contains("31323334"), "{shown}");
                assert!(shown.contains("alice"), "{shown}");
            }
        }
        let e = ok(&format!(
            "HOTP/T30 a - {RFC_KEY} 0 081804 2005-03-18T01:58:29L"
        ));
        assert!(!format!("{e:?}").contains("081804"));
    }

    #[test]
    fn missing_fields() {
        assert_eq!(reason("HOTP"), Reason::MissingUser);
        assert_eq!(reason("HOTP/T30 alice"), Reason::MissingPin);
        assert_eq!(reason("HOTP/T30 alice -"), Reason::MissingSecret);
        let err = one("HOTP/T30 alice -").unwrap_err();
        assert_eq!(err.line, 1);
        assert_eq!(err.user.as_ref().map(UserName::as_str), Some("alice"));
        assert_eq!(one("HOTP").unwrap_err().user, None);
    }

    #[test]
    fn trailing_fields_after_time_are_ignored_like_liboath() {
        let e = ok(&format!(
            "HOTP/T30 a - {RFC_KEY} 0 081804 2005-03-18T01:58:29L extra more"
        ));
        assert_eq!(e.last_used_step(0, 0), Some(1_111_111_109 / 30));
    }

    #[test]
    fn comments_blank_lines_crlf_and_line_numbers() {
        let text = format!(
            "# users.oath\r\n\r\n   \t\n#HOTP/T30 ghost - {RFC_KEY}\n\
             HOTP/T30\talice\t-\t{RFC_KEY}\r\n\
             \tHOTP/E/8  bob  +  {RFC_KEY}  5  94287082  2026-11-29T12:00:00L\r\n\
             bogus line\n\
             HOTP/T60 alice 1234 {RFC_KEY}\r\n"
        );
        let all = parse(text.as_bytes()).unwrap();
        assert_eq!(all.len(), 4);
        let alice = all[0].as_ref().unwrap();
        assert_eq!((alice.line, alice.user.as_str()), (5, "alice"));
        let bob = all[1].as_ref().unwrap();
        assert_eq!(
            (bob.line, bob.user.as_str(), bob.pin),
            (6, "bob", Pin::External)
        );
        assert_eq!(bob.kind, Kind::Hotp { next_counter: 6 });
        assert!(bob.last_login.is_some());
        let bogus = all[2].as_ref().unwrap_err();
        assert_eq!((bogus.line, bogus.reason), (7, Reason::UnknownType));
        // The same user on a second line (a second token) is kept.
        let alice2 = all[3].as_ref().unwrap();
        assert_eq!(
            (alice2.line, alice2.user.as_str(), alice2.pin),
            (8, "alice", Pin::Set)
        );
        assert_eq!(alice2.kind, Kind::Totp { period: 60 });
        assert!(parse(b"").unwrap().is_empty());
        assert!(parse(b"\n\n# only comments\n").unwrap().is_empty());
    }

    #[test]
    fn nul_bytes_and_bad_user_names() {
        let nul = format!("HOTP/T30 al\0ice - {RFC_KEY}");
        assert_eq!(reason(&nul), Reason::NulByte);
        let nul_end = format!("HOTP/T30 alice - {RFC_KEY}\0");
        assert_eq!(reason(&nul_end), Reason::NulByte);
        assert!(matches!(
            reason(&format!("HOTP/T30 al\x0bice - {RFC_KEY}")),
            Reason::InvalidUser(_)
        ));
        assert!(matches!(
            reason(&format!("HOTP/T30 -alice - {RFC_KEY}")),
            Reason::InvalidUser(_)
        ));
        let mut latin1 = b"HOTP/T30 j\xfcrgen - ".to_vec();
        latin1.extend_from_slice(RFC_KEY.as_bytes());
        let all = parse(&latin1).unwrap();
        assert!(matches!(
            all[0].as_ref().unwrap_err().reason,
            Reason::InvalidUser(_)
        ));
        assert_eq!(
            ok(&format!("HOTP/T30 jürgen - {RFC_KEY}")).user.as_str(),
            "jürgen"
        );
    }

    #[test]
    fn oversize_line_and_file() {
        let long = format!("HOTP/T30 alice - {RFC_KEY} 0 {}", " ".repeat(MAX_LINE_LEN));
        assert_eq!(reason(&long), Reason::LineTooLong);
        let exact = format!("HOTP/T30 alice - {RFC_KEY}");
        let padded = format!("{exact}{}", " ".repeat(MAX_LINE_LEN - exact.len()));
        assert_eq!(padded.len(), MAX_LINE_LEN);
        assert!(one(&padded).is_ok());
        // A long comment line is still only a comment.
        assert!(
            parse(format!("# {}", "x".repeat(10 * MAX_LINE_LEN)).as_bytes())
                .unwrap()
                .is_empty()
        );
        let text = format!("HOTP/T30 alice - {RFC_KEY}\n");
        assert_eq!(
            parse_bounded(text.as_bytes(), text.len() - 1).unwrap_err(),
            FileError::TooLarge { len: text.len() }
        );
        assert_eq!(parse_bounded(text.as_bytes(), text.len()).unwrap().len(), 1);
        assert_eq!(MAX_FILE_LEN, 1 << 28);
    }

    #[test]
    fn memory_stays_bounded_for_junk() {
        // Blank lines and comments reserve nothing.
        let blank = "\n \r\n# c\n".repeat(100_000);
        assert_eq!(parse(blank.as_bytes()).unwrap().capacity(), 0);
        // Bad lines are reported up to MAX_BAD_LINES, then the file is refused.
        let junk = "x\n".repeat(MAX_BAD_LINES);
        assert_eq!(parse(junk.as_bytes()).unwrap().len(), MAX_BAD_LINES);
        let more = format!("HOTP/T30 alice - {RFC_KEY}\n{junk}x\n");
        assert_eq!(
            parse(more.as_bytes()).unwrap_err(),
            FileError::TooManyBadLines {
                line: MAX_BAD_LINES + 2
            }
        );
    }

    #[test]
    fn hundred_thousand_generated_lines() {
        let mut text = String::from("# generated\n");
        for i in 0..100_000u64 {
            let key = format!("{i:040x}");
            match i % 3 {
                0 => text.push_str(&format!("HOTP/T30\tuser{i}\t-\t{key}\n")),
                1 => text.push_str(&format!(
                    "HOTP/E/8 user{i} + {key} {i} 12345678 2026-11-29T12:00:00L\n"
                )),
                _ => text.push_str(&format!(
                    "HOTP/T60/6 user{i} pin{i} {key} 4 123456 2026-11-29T12:00:00L\r\n"
                )),
            }
        }
        let all = parse(text.as_bytes()).unwrap();
        assert_eq!(all.len(), 100_000);
        for (i, entry) in (0u64..).zip(&all) {
            let e = entry.as_ref().unwrap();
            assert_eq!(e.line, usize::try_from(i).unwrap() + 2);
            assert_eq!(e.user.as_str(), format!("user{i}"));
            assert_eq!(e.secret.expose()[12..], i.to_be_bytes());
            match i % 3 {
                0 => assert_eq!(
                    (e.kind, e.digits, e.pin),
                    (Kind::Totp { period: 30 }, 6, Pin::None)
                ),
                1 => assert_eq!(
                    (e.kind, e.digits, e.pin),
                    (
                        Kind::Hotp {
                            next_counter: i + 1
                        },
                        8,
                        Pin::External
                    )
                ),
                _ => assert_eq!(
                    (e.kind, e.digits, e.pin),
                    (Kind::Totp { period: 60 }, 6, Pin::Set)
                ),
            }
        }
    }
}

//! Google Authenticator's "Transfer accounts" export:
//! `otpauth-migration://offline?data=DATA`, where DATA is a percent-encoded
//! base64 protobuf `MigrationPayload`. The app shows one QR code per batch
//! of accounts; a large export is several QR codes of one `batch_id`, with
//! `batch_index` 0..`batch_size`.
//!
//! The schema, as the app writes it (checked against the `.proto` files of
//! the public decoders, e.g. Aegis' `google_auth.proto`):
//!
//! ```text
//! message MigrationPayload {
//!   repeated OtpParameters otp_parameters = 1;
//!   int32 version = 2; int32 batch_size = 3; int32 batch_index = 4; int32 batch_id = 5;
//! }
//! message OtpParameters {
//!   bytes secret = 1; string name = 2; string issuer = 3;
//!   Algorithm algorithm = 4;   // 0 unspecified (SHA1), 1 SHA1, 2 SHA256, 3 SHA512, 4 MD5
//!   DigitCount digits = 5;     // 0 unspecified (6), 1 six, 2 eight
//!   OtpType type = 6;          // 0 unspecified (TOTP), 1 HOTP, 2 TOTP
//!   int64 counter = 7;
//! }
//! ```
//!
//! The protobuf is decoded here by hand, strictly bounded: every length is
//! checked against what is left, varints stop at ten bytes, unknown fields
//! are skipped by their wire type (groups are refused), and the payload
//! buffer is zeroized after use. A bad payload is refused whole
//! ([`PayloadError`]); an account otpd cannot use (MD5, seven digits, an
//! empty key...) is refused alone ([`AccountError`]), its name kept so the
//! report can say which. No error holds a byte of a secret. Fuzzed:
//! `fuzz/fuzz_targets/google_migration.rs`.

use zeroize::Zeroizing;

use crate::interop::otpauth::{Kind, OtpAuth};
use crate::secret::TotpSecret;
use crate::totp::{Algorithm, TotpParams};

/// Longest URI looked at (a QR code holds at most 2953 bytes; a URI typed
/// into a file may be longer, not much).
pub const MAX_URI_LEN: usize = 16 * 1024;

/// Most accounts in one payload.
pub const MAX_ACCOUNTS: usize = 1000;

/// Most QR codes (batches) in one export.
pub const MAX_BATCHES: u32 = 1000;

/// Longest account name or issuer kept.
pub const MAX_NAME_LEN: usize = 256;

/// One decoded QR code of an export.
#[derive(Debug)]
pub struct Payload {
    /// The payload's format version (1 today; not checked).
    pub version: i32,
    /// Which QR code of the export this is.
    pub batch: Batch,
    /// The accounts, in order: each usable, or refused with the reason.
    pub accounts: Vec<Account>,
}

/// Where one QR code stands in its export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Batch {
    /// How many QR codes the export has (1 when the payload does not say).
    pub size: u32,
    /// This one's place, from 0.
    pub index: u32,
    /// Shared by the QR codes of one export (the app's random number).
    pub id: i32,
}

/// One account of a payload.
#[derive(Debug)]
pub struct Account {
    /// The account's name as the app stored it (`Issuer:account` or
    /// `account`), for the report; empty if it was not valid text.
    pub name: String,
    /// The account, or why it cannot be imported.
    pub result: Result<OtpAuth, AccountError>,
}

/// Why a payload was refused as a whole. Never holds the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Longer than [`MAX_URI_LEN`].
    #[error("longer than {MAX_URI_LEN} bytes")]
    TooLong,
    /// Not `otpauth-migration://offline?...`.
    #[error("not an otpauth-migration://offline URI")]
    NotMigration,
    /// No `data` parameter, or an empty one.
    #[error("no data parameter")]
    MissingData,
    /// Two `data` parameters.
    #[error("the data parameter appears twice")]
    RepeatedData,
    /// A bad percent escape in the data.
    #[error("badly percent-encoded data")]
    Encoding,
    /// The data is not base64.
    #[error("the data is not base64")]
    Base64,
    /// The data is not a migration payload (truncated, or not protobuf).
    #[error("the data is not a Google Authenticator export: {0}")]
    Protobuf(&'static str),
    /// Batch fields that do not fit together.
    #[error("bad batch numbers (QR code {index} of {size})")]
    BadBatch {
        /// batch_index as sent.
        index: i64,
        /// batch_size as sent.
        size: i64,
    },
    /// Holds no account.
    #[error("holds no account")]
    NoAccounts,
    /// More than [`MAX_ACCOUNTS`] accounts.
    #[error("more than {MAX_ACCOUNTS} accounts")]
    TooManyAccounts,
}

/// Why one account of a payload cannot be imported. Never holds the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// MD5, which the app lists but no standard (and not otpd) supports.
    #[error("uses MD5: otpd supports SHA1, SHA256 and SHA512")]
    Md5,
    /// An algorithm number not in the schema.
    #[error("unknown algorithm {0}")]
    UnknownAlgorithm(i64),
    /// A digit count otpd does not support (only 6 and 8).
    #[error("unsupported digit count {0} (otpd supports 6 and 8 digits)")]
    Digits(i64),
    /// An OTP type not in the schema.
    #[error("unknown OTP type {0}")]
    UnknownType(i64),
    /// The key is missing, or not 10 to 64 bytes long.
    #[error("key of {0} bytes (otpd takes 10 to 64)")]
    SecretLength(usize),
    /// An HOTP counter below zero.
    #[error("negative HOTP counter")]
    Counter,
    /// The name or issuer is not text (invalid UTF-8, control characters, too long).
    #[error("badly encoded {0}")]
    Encoding(&'static str),
}

/// Parses one URI (surrounding whitespace ignored).
pub fn parse(uri: &str) -> Result<Payload, PayloadError> {
    let uri = uri.trim();
    if uri.len() > MAX_URI_LEN {
        return Err(PayloadError::TooLong);
    }
    let rest = strip_prefix_ignore_case(uri, "otpauth-migration://offline")
        .ok_or(PayloadError::NotMigration)?;
    let query = match rest.strip_prefix('?') {
        Some(q) => q,
        None if rest.is_empty() => return Err(PayloadError::MissingData),
        None => return Err(PayloadError::NotMigration),
    };
    let mut data = None;
    for pair in query.split('&') {
        let Some(value) = pair.strip_prefix("data=") else {
            continue;
        };
        if data.replace(value).is_some() {
            return Err(PayloadError::RepeatedData);
        }
    }
    let data = data
        .filter(|d| !d.is_empty())
        .ok_or(PayloadError::MissingData)?;
    let bytes = decode_base64(&percent_decode(data)?)?;
    decode_payload(&bytes)
}

/// Whether a line is meant as an export URI (to pick the parser).
pub fn is_migration_uri(line: &str) -> bool {
    strip_prefix_ignore_case(line.trim_start(), "otpauth-migration:").is_some()
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Percent-decodes the data (`%2B`, `%2F`, `%3D`...); what comes out must
/// be ASCII.
fn percent_decode(s: &str) -> Result<Zeroizing<Vec<u8>>, PayloadError> {
    let bytes = s.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PayloadError::Encoding)?;
            let hi = hex_value(hex[0]).ok_or(PayloadError::Encoding)?;
            let lo = hex_value(hex[1]).ok_or(PayloadError::Encoding)?;
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Base64 as the exports are found: the standard alphabet or the URL-safe
/// one, padded or not, and a `+` that a form decoder turned into a space.
fn decode_base64(text: &[u8]) -> Result<Zeroizing<Vec<u8>>, PayloadError> {
    let mut cleaned: Zeroizing<Vec<u8>> = Zeroizing::new(
        text.iter()
            .map(|&c| match c {
                b'-' | b' ' => b'+',
                b'_' => b'/',
                c => c,
            })
            .collect(),
    );
    while cleaned.last() == Some(&b'=') {
        cleaned.pop();
    }
    let len = data_encoding::BASE64_NOPAD
        .decode_len(cleaned.len())
        .map_err(|_| PayloadError::Base64)?;
    let mut out = Zeroizing::new(vec![0; len]);
    let written = data_encoding::BASE64_NOPAD
        .decode_mut(&cleaned, &mut out)
        .map_err(|_| PayloadError::Base64)?;
    out.truncate(written);
    Ok(out)
}

/// The protobuf wire types this schema uses, and how to skip the others.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed32 or fixed64 field (not in the schema; skipped).
    Fixed,
}

/// Reads a protobuf message field by field, never past its end.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, PayloadError> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or(PayloadError::Protobuf("truncated"))?;
            self.buf = rest;
            if i == 9 && b > 1 {
                return Err(PayloadError::Protobuf("varint out of range"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(PayloadError::Protobuf("varint out of range"))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], PayloadError> {
        let n = usize::try_from(n).map_err(|_| PayloadError::Protobuf("truncated"))?;
        if n > self.buf.len() {
            return Err(PayloadError::Protobuf("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field: its number and value; `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, PayloadError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number > 0x1FFF_FFFF {
            return Err(PayloadError::Protobuf("bad field number"));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            _ => return Err(PayloadError::Protobuf("unsupported wire type")),
        };
        Ok(Some((number, value)))
    }
}

/// An int32 or enum field: protobuf keeps the low 32 bits (a negative
/// number is sent sign-extended to ten bytes).
fn int32(v: u64) -> i32 {
    v as u32 as i32
}

fn decode_payload(bytes: &[u8]) -> Result<Payload, PayloadError> {
    let mut r = Reader { buf: bytes };
    let mut accounts = Vec::new();
    let (mut version, mut size, mut index, mut id) = (0, 0, 0, 0);
    while let Some((number, value)) = r.field()? {
        match (number, value) {
            (1, Value::Bytes(b)) => {
                if accounts.len() == MAX_ACCOUNTS {
                    return Err(PayloadError::TooManyAccounts);
                }
                accounts.push(decode_account(b)?);
            }
            (2, Value::Varint(v)) => version = int32(v),
            (3, Value::Varint(v)) => size = int32(v),
            (4, Value::Varint(v)) => index = int32(v),
            (5, Value::Varint(v)) => id = int32(v),
            (1..=5, _) => return Err(PayloadError::Protobuf("a field has the wrong type")),
            _ => {}
        }
    }
    if accounts.is_empty() {
        return Err(PayloadError::NoAccounts);
    }
    let bad = PayloadError::BadBatch {
        index: index.into(),
        size: size.into(),
    };
    // An export of one QR code may leave the batch fields out.
    let size = if size == 0 { 1 } else { size };
    let (Ok(size), Ok(index)) = (u32::try_from(size), u32::try_from(index)) else {
        return Err(bad);
    };
    if index >= size || size > MAX_BATCHES {
        return Err(bad);
    }
    Ok(Payload {
        version,
        batch: Batch { size, index, id },
        accounts,
    })
}

/// The raw fields of one OtpParameters.
#[derive(Default)]
struct RawAccount<'a> {
    secret: &'a [u8],
    name: &'a [u8],
    issuer: &'a [u8],
    algorithm: i32,
    digits: i32,
    kind: i32,
    counter: i64,
}

fn decode_account(bytes: &[u8]) -> Result<Account, PayloadError> {
    let mut r = Reader { buf: bytes };
    let mut raw = RawAccount::default();
    while let Some((number, value)) = r.field()? {
        match (number, value) {
            (1, Value::Bytes(b)) => raw.secret = b,
            (2, Value::Bytes(b)) => raw.name = b,
            (3, Value::Bytes(b)) => raw.issuer = b,
            (4, Value::Varint(v)) => raw.algorithm = int32(v),
            (5, Value::Varint(v)) => raw.digits = int32(v),
            (6, Value::Varint(v)) => raw.kind = int32(v),
            (7, Value::Varint(v)) => raw.counter = v as i64,
            (1..=7, _) => return Err(PayloadError::Protobuf("a field has the wrong type")),
            _ => {}
        }
    }
    let name = text(raw.name);
    Ok(Account {
        name: name.clone().unwrap_or_default(),
        result: account(&raw, name),
    })
}

/// A name or issuer as text: UTF-8, no control characters, not too long.
fn text(bytes: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(bytes).ok()?;
    (s.len() <= MAX_NAME_LEN && !s.chars().any(char::is_control)).then(|| s.to_owned())
}

fn account(raw: &RawAccount<'_>, name: Option<String>) -> Result<OtpAuth, AccountError> {
    let name = name.ok_or(AccountError::Encoding("name"))?;
    let issuer = text(raw.issuer).ok_or(AccountError::Encoding("issuer"))?;
    let algorithm = match raw.algorithm {
        0 | 1 => Algorithm::Sha1,
        2 => Algorithm::Sha256,
        3 => Algorithm::Sha512,
        4 => return Err(AccountError::Md5),
        n => return Err(AccountError::UnknownAlgorithm(n.into())),
    };
    let digits = match raw.digits {
        0 | 1 => 6,
        2 => 8,
        // Some decoders list SEVEN = 3: the app has no such setting.
        n => return Err(AccountError::Digits(n.into())),
    };
    let kind = match raw.kind {
        0 | 2 => Kind::Totp,
        1 => Kind::Hotp {
            counter: u64::try_from(raw.counter).map_err(|_| AccountError::Counter)?,
        },
        n => return Err(AccountError::UnknownType(n.into())),
    };
    if !(10..=64).contains(&raw.secret.len()) {
        return Err(AccountError::SecretLength(raw.secret.len()));
    }
    let (issuer, account) = split_name(&name, issuer);
    Ok(OtpAuth {
        kind,
        secret: TotpSecret::from_bytes(raw.secret.to_vec()),
        // The app has a 30-second step only.
        params: TotpParams {
            algorithm,
            digits,
            period: 30,
        },
        issuer,
        account,
    })
}

/// The app stores an otpauth label as the name (`Issuer:account`) and the
/// issuer parameter apart. The prefix is the issuer when it agrees with
/// the issuer field, or when that field is empty; a name whose prefix
/// differs from the issuer field is kept whole as the account (otpauth
/// URIs refuse that case; an export cannot be fixed, so nothing is lost).
fn split_name(name: &str, issuer: String) -> (Option<String>, String) {
    let issuer = Some(issuer.trim().to_owned()).filter(|i| !i.is_empty());
    match (name.split_once(':'), issuer) {
        (Some((prefix, account)), None) if !prefix.trim().is_empty() => {
            (Some(prefix.trim().to_owned()), account.trim().to_owned())
        }
        (Some((prefix, account)), Some(issuer)) if prefix.trim() == issuer => {
            (Some(issuer), account.trim().to_owned())
        }
        (_, issuer) => (issuer, name.trim().to_owned()),
    }
}

#[cfg(test)]
mod tests;

//! otpd's own export document (`otpctl export --encrypted`), the JSON
//! inside the age file: one user's devices with their keys, for moving
//! them to another otpd (`otpctl import otpd-export`) or, in a disaster,
//! into any authenticator by hand.
//!
//! ```json
//! {"format":"otpd-export","version":1,"user":"alice","exported_at":1800000000,
//!  "devices":[{"name":"phone","kind":"totp","secret":"GEZDGNBV...",
//!    "algorithm":"SHA1","digits":6,"period":30,"issuer":"ACME",
//!    "last_used_step":60000000},
//!   {"name":"token","kind":"hotp","secret":"...","algorithm":"SHA1",
//!    "digits":6,"counter":7,"issuer":"ACME"}]}
//! ```
//!
//! - `format` is `"otpd-export"`, `version` 1; `exported_at` (Unix
//!   seconds) is optional.
//! - Each device: `name` (an otpd device name), `kind` `"totp"` or
//!   `"hotp"`, `secret` (RFC 4648 base32, padding optional, 10..=64 bytes
//!   decoded), `algorithm` (`SHA1`, `SHA256`, `SHA512`), `digits` (6 or 8),
//!   `issuer` (optional). TOTP: `period` (15..=300 seconds) and optionally
//!   `last_used_step` (codes of that step and earlier are refused after an
//!   import). HOTP: `counter`, the next counter value the token shows.
//!
//! The parser is strict (unknown or missing fields, a wrong type, a value
//! out of range or a repeated device name refuse the whole document) and
//! bounded ([`MAX_LEN`] bytes, [`MAX_DEVICES`] devices); it never panics
//! (fuzzed: `fuzz/fuzz_targets/otpd_export.rs`) and its errors name the
//! field, never a value of the document.

use serde::Serialize;
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::device::{DeviceName, MAX_DEVICES};
use crate::record::UserName;
use crate::secret::TotpSecret;
use crate::totp::{Algorithm, TotpParams};

/// The `format` field.
pub const FORMAT: &str = "otpd-export";

/// The `version` written and read.
pub const VERSION: u64 = 1;

/// Largest document read, in bytes (16 devices take about 5 KiB).
pub const MAX_LEN: usize = 64 * 1024;

/// Accepted key lengths, in bytes (as ImportDevice takes them).
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 10..=64;

/// Accepted TOTP periods, in seconds (as ImportDevice takes them).
pub const PERIOD: std::ops::RangeInclusive<u64> = 15..=300;

/// TOTP or HOTP, with the replay state of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Time-based; the last step used, if known.
    Totp {
        /// Codes of this step and earlier were used.
        last_used_step: Option<u64>,
    },
    /// Counter-based.
    Hotp {
        /// The next counter value the token shows.
        counter: u64,
    },
}

/// One exported device. The key is redacted in `Debug`, zeroized on drop.
#[derive(Debug, Clone)]
pub struct Token {
    /// Its name.
    pub name: DeviceName,
    /// TOTP or HOTP.
    pub kind: Kind,
    /// The key.
    pub secret: TotpSecret,
    /// Algorithm, digits and (TOTP) period; HOTP: the period is 30, unused.
    pub params: TotpParams,
    /// The issuer shown in the app.
    pub issuer: Option<String>,
}

/// A whole export: one user's devices.
#[derive(Debug, Clone)]
pub struct Export {
    /// Whose devices.
    pub user: UserName,
    /// When it was written, Unix seconds.
    pub exported_at: Option<u64>,
    /// The devices, at least one.
    pub devices: Vec<Token>,
}

/// Why a document was refused: the field, and what is wrong with it. Never
/// a value of the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// Larger than [`MAX_LEN`].
    #[error("larger than {MAX_LEN} bytes")]
    TooLarge,
    /// Not JSON at all.
    #[error("not JSON ({0})")]
    Json(String),
    /// A field is wrong: its path (`devices[0].secret`) and why.
    #[error("{field}: {why}")]
    Field {
        /// Where, e.g. `devices[1].digits`.
        field: String,
        /// What is wrong.
        why: &'static str,
    },
}

fn bad<T>(field: impl Into<String>, why: &'static str) -> Result<T, ExportError> {
    Err(ExportError::Field {
        field: field.into(),
        why,
    })
}

/// Reads a document (the decrypted bytes).
pub fn parse(bytes: &[u8]) -> Result<Export, ExportError> {
    if bytes.len() > MAX_LEN {
        return Err(ExportError::TooLarge);
    }
    // serde_json's syntax errors give a position, never the text.
    let mut value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ExportError::Json(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let parsed = from_value(&value);
    wipe(&mut value);
    parsed
}

/// Zeroizes every string of the parsed tree (the keys among them).
fn wipe(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(o) => o.values_mut().for_each(wipe),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// An object whose keys are all among `allowed`.
fn object<'a>(
    v: &'a Value,
    path: &str,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, ExportError> {
    let Value::Object(map) = v else {
        return bad(path, "must be an object");
    };
    if map.keys().any(|k| !allowed.contains(&k.as_str())) {
        return bad(path, "has an unknown field");
    }
    Ok(map)
}

fn field<'a>(map: &'a Map<String, Value>, path: &str, key: &str) -> Result<&'a Value, ExportError> {
    map.get(key).ok_or_else(|| ExportError::Field {
        field: join(path, key),
        why: "is missing",
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn string<'a>(map: &'a Map<String, Value>, path: &str, key: &str) -> Result<&'a str, ExportError> {
    match field(map, path, key)? {
        Value::String(s) => Ok(s),
        _ => bad(join(path, key), "must be a string"),
    }
}

fn number(map: &Map<String, Value>, path: &str, key: &str) -> Result<u64, ExportError> {
    match field(map, path, key)? {
        Value::Number(n) => n.as_u64().ok_or_else(|| ExportError::Field {
            field: join(path, key),
            why: "must be a whole number from 0 to 2^64-1",
        }),
        _ => bad(join(path, key), "must be a number"),
    }
}

/// An optional field: absent and `null` are `None`.
fn optional<T>(
    map: &Map<String, Value>,
    key: &str,
    read: impl FnOnce() -> Result<T, ExportError>,
) -> Result<Option<T>, ExportError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => read().map(Some),
    }
}

fn from_value(v: &Value) -> Result<Export, ExportError> {
    let top = object(
        v,
        "document",
        &["format", "version", "user", "exported_at", "devices"],
    )?;
    if string(top, "", "format")? != FORMAT {
        return bad("format", "is not \"otpd-export\"");
    }
    if number(top, "", "version")? != VERSION {
        return bad("version", "is not 1 (written by a newer otpctl?)");
    }
    let user =
        UserName::parse(string(top, "", "user")?.as_bytes()).map_err(|_| ExportError::Field {
            field: "user".into(),
            why: "is not a valid user name",
        })?;
    let exported_at = optional(top, "exported_at", || number(top, "", "exported_at"))?;
    let Value::Array(list) = field(top, "", "devices")? else {
        return bad("devices", "must be an array");
    };
    if list.is_empty() {
        return bad("devices", "is empty");
    }
    if list.len() > MAX_DEVICES {
        return bad("devices", "holds more than 16 devices");
    }
    let mut devices: Vec<Token> = Vec::with_capacity(list.len());
    for (i, d) in list.iter().enumerate() {
        let token = device(d, &format!("devices[{i}]"))?;
        if devices.iter().any(|t| t.name == token.name) {
            return bad(
                format!("devices[{i}].name"),
                "repeats an earlier device's name",
            );
        }
        devices.push(token);
    }
    Ok(Export {
        user,
        exported_at,
        devices,
    })
}

fn device(v: &Value, path: &str) -> Result<Token, ExportError> {
    let d = object(
        v,
        path,
        &[
            "name",
            "kind",
            "secret",
            "algorithm",
            "digits",
            "period",
            "counter",
            "last_used_step",
            "issuer",
        ],
    )?;
    let name = DeviceName::parse(string(d, path, "name")?).map_err(|_| ExportError::Field {
        field: join(path, "name"),
        why: "is not a valid device name (1..=32 letters, digits, '-', '_', '.')",
    })?;
    let secret = secret(string(d, path, "secret")?, path)?;
    let algorithm = match string(d, path, "algorithm")?.to_ascii_uppercase().as_str() {
        "SHA1" => Algorithm::Sha1,
        "SHA256" => Algorithm::Sha256,
        "SHA512" => Algorithm::Sha512,
        _ => return bad(join(path, "algorithm"), "is not SHA1, SHA256 or SHA512"),
    };
    let digits = match number(d, path, "digits")? {
        6 => 6,
        8 => 8,
        _ => return bad(join(path, "digits"), "is not 6 or 8"),
    };
    let issuer = optional(d, "issuer", || string(d, path, "issuer").map(str::to_owned))?;
    if issuer
        .as_deref()
        .is_some_and(|s| s.len() > 256 || s.contains(':') || s.chars().any(char::is_control))
    {
        return bad(
            join(path, "issuer"),
            "must be at most 256 bytes, without ':' or control characters",
        );
    }
    let (kind, period) = match string(d, path, "kind")? {
        "totp" => {
            if d.contains_key("counter") {
                return bad(join(path, "counter"), "is for HOTP devices only");
            }
            let period = number(d, path, "period")?;
            if !PERIOD.contains(&period) {
                return bad(join(path, "period"), "is not from 15 to 300 seconds");
            }
            let last_used_step =
                optional(d, "last_used_step", || number(d, path, "last_used_step"))?;
            (Kind::Totp { last_used_step }, period)
        }
        "hotp" => {
            for key in ["period", "last_used_step"] {
                if d.contains_key(key) {
                    return bad(join(path, key), "is for TOTP devices only");
                }
            }
            let counter = number(d, path, "counter")?;
            (Kind::Hotp { counter }, 30)
        }
        _ => return bad(join(path, "kind"), "is not \"totp\" or \"hotp\""),
    };
    Ok(Token {
        name,
        kind,
        secret,
        params: TotpParams {
            algorithm,
            digits,
            period,
        },
        issuer,
    })
}

/// Base32 (RFC 4648, upper or lower case, padding optional) of an
/// acceptable length.
fn secret(text: &str, path: &str) -> Result<TotpSecret, ExportError> {
    let upper = Zeroizing::new(text.trim_end_matches('=').to_ascii_uppercase());
    let bytes = data_encoding::BASE32_NOPAD
        .decode(upper.as_bytes())
        .map_err(|_| ExportError::Field {
            field: join(path, "secret"),
            why: "is not base32",
        })?;
    let bytes = Zeroizing::new(bytes);
    if !SECRET_LEN.contains(&bytes.len()) {
        return bad(join(path, "secret"), "is not 10 to 64 bytes long");
    }
    Ok(TotpSecret::from_bytes(bytes.to_vec()))
}

#[derive(Serialize)]
struct DocOut<'a> {
    format: &'static str,
    version: u64,
    user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exported_at: Option<u64>,
    devices: Vec<DeviceOut<'a>>,
}

#[derive(Serialize)]
struct DeviceOut<'a> {
    name: &'a str,
    kind: &'static str,
    secret: &'a str,
    algorithm: &'static str,
    digits: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    period: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    counter: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used_step: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
}

/// The upper-case algorithm name of the document and otpauth URIs.
pub fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Sha1 => "SHA1",
        Algorithm::Sha256 => "SHA256",
        Algorithm::Sha512 => "SHA512",
    }
}

/// Writes the document (pretty-printed, so that a person can read it in a
/// disaster). The result holds the keys: it is zeroized when dropped.
pub fn render(export: &Export) -> Result<Zeroizing<Vec<u8>>, ExportError> {
    let keys: Vec<Zeroizing<String>> = export
        .devices
        .iter()
        .map(|t| t.secret.to_base32())
        .collect();
    let doc = DocOut {
        format: FORMAT,
        version: VERSION,
        user: export.user.as_str(),
        exported_at: export.exported_at,
        devices: export
            .devices
            .iter()
            .zip(&keys)
            .map(|(t, key)| {
                let (kind, period, counter, last_used_step) = match t.kind {
                    Kind::Totp { last_used_step } => {
                        ("totp", Some(t.params.period), None, last_used_step)
                    }
                    Kind::Hotp { counter } => ("hotp", None, Some(counter), None),
                };
                DeviceOut {
                    name: t.name.as_str(),
                    kind,
                    secret: key.as_str(),
                    algorithm: algorithm_name(t.params.algorithm),
                    digits: t.params.digits,
                    period,
                    counter,
                    last_used_step,
                    issuer: t.issuer.as_deref(),
                }
            })
            .collect(),
    };
    // Enough room up front: a reallocation would leave a copy behind.
    let mut out = Zeroizing::new(Vec::with_capacity(MAX_LEN));
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(|e| ExportError::Json(e.to_string()))?;
    out.push(b'\n');
    if out.len() > MAX_LEN {
        return Err(ExportError::TooLarge);
    }
    Ok(out)
}

impl Token {
    /// The otpauth:// URI of this device for `account` (Google's Key Uri
    /// Format, every parameter spelled out). Holds the key.
    pub fn otpauth_uri(&self, account: &str) -> Zeroizing<String> {
        let issuer = self.issuer.as_deref().unwrap_or_default();
        let label = if issuer.is_empty() {
            percent(account)
        } else {
            format!("{}:{}", percent(issuer), percent(account))
        };
        let (kind, last) = match self.kind {
            Kind::Totp { .. } => ("totp", format!("period={}", self.params.period)),
            Kind::Hotp { counter } => ("hotp", format!("counter={counter}")),
        };
        let issuer_param = if issuer.is_empty() {
            String::new()
        } else {
            format!("&issuer={}", percent(issuer))
        };
        Zeroizing::new(format!(
            "otpauth://{kind}/{label}?secret={}{issuer_param}&algorithm={}&digits={}&{last}",
            self.secret.to_base32().as_str(),
            algorithm_name(self.params.algorithm),
            self.params.digits,
        ))
    }
}

/// RFC 3986 percent-encoding of everything but unreserved characters and
/// `@` (common in account names).
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"12345678901234567890";
    const KEY_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    fn export() -> Export {
        Export {
            user: UserName::test("alice"),
            exported_at: Some(1_800_000_000),
            devices: vec![
                Token {
                    name: DeviceName::parse("phone").unwrap(),
                    kind: Kind::Totp {
                        last_used_step: Some(60_000_000),
                    },
                    secret: TotpSecret::from_bytes(KEY.to_vec()),
                    params: TotpParams::default(),
                    issuer: Some("ACME Corp".into()),
                },
                Token {
                    name: DeviceName::parse("token").unwrap(),
                    kind: Kind::Hotp { counter: 7 },
                    secret: TotpSecret::from_bytes(KEY.to_vec()),
                    params: TotpParams {
                        algorithm: Algorithm::Sha256,
                        digits: 8,
                        period: 30,
                    },
                    issuer: None,
                },
            ],
        }
    }

    #[test]
    fn a_rendered_document_parses_back_to_the_same_devices() {
        let bytes = render(&export()).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.contains("\"format\": \"otpd-export\""), "{text}");
        assert!(text.contains(KEY_B32));
        let back = parse(&bytes).unwrap();
        assert_eq!(back.user.as_str(), "alice");
        assert_eq!(back.exported_at, Some(1_800_000_000));
        assert_eq!(back.devices.len(), 2);
        let (a, b) = (&back.devices[0], &back.devices[1]);
        assert_eq!(a.name.as_str(), "phone");
        assert_eq!(a.secret.expose(), KEY);
        assert_eq!(
            a.kind,
            Kind::Totp {
                last_used_step: Some(60_000_000)
            }
        );
        assert_eq!(a.issuer.as_deref(), Some("ACME Corp"));
        assert_eq!(b.kind, Kind::Hotp { counter: 7 });
        assert_eq!(
            (b.params.algorithm, b.params.digits),
            (Algorithm::Sha256, 8)
        );
        assert!(!format!("{back:?}").contains(KEY_B32));
    }

    #[test]
    fn otpauth_uris_spell_out_every_parameter() {
        let e = export();
        assert_eq!(
            e.devices[0].otpauth_uri("alice").as_str(),
            format!(
                "otpauth://totp/ACME%20Corp:alice?secret={KEY_B32}&issuer=ACME%20Corp\
                 &algorithm=SHA1&digits=6&period=30"
            )
        );
        let hotp = e.devices[1].otpauth_uri("alice");
        let parsed = crate::interop::otpauth::parse(&hotp).unwrap();
        assert_eq!(
            parsed.kind,
            crate::interop::otpauth::Kind::Hotp { counter: 7 }
        );
        assert_eq!(parsed.secret.expose(), KEY);
    }

    fn doc(device: &str) -> String {
        format!(r#"{{"format":"otpd-export","version":1,"user":"alice","devices":[{device}]}}"#)
    }

    const TOTP: &str = r#""name":"phone","kind":"totp","algorithm":"SHA1","digits":6,"period":30"#;

    #[test]
    fn errors_name_the_field_and_never_the_key() {
        let secret = format!(r#""secret":"{KEY_B32}""#);
        let cases: Vec<(String, &str)> = vec![
            ("[".into(), "not JSON"),
            ("{}".into(), "format: is missing"),
            (r#"{"x":1}"#.into(), "document: has an unknown field"),
            (r#"{"format":"x"}"#.into(), "format: is not"),
            (
                doc(&format!("{{{TOTP},{secret},\"digits2\":1}}")),
                "devices[0]: has an unknown field",
            ),
            (doc(&format!("{{{TOTP}}}")), "devices[0].secret: is missing"),
            (
                doc(&format!(r#"{{{}, "secret":"{KEY_B32}!"}}"#, TOTP)),
                "devices[0].secret: is not base32",
            ),
            (
                doc(&format!(r#"{{{}, "secret":"GEZDGNBV"}}"#, TOTP)),
                "devices[0].secret: is not 10 to 64 bytes long",
            ),
            (
                doc(&format!("{{{},{secret}}}", TOTP.replace("30", "3000"))),
                "devices[0].period: is not from 15 to 300",
            ),
            (
                doc(&format!(
                    "{{{},{secret}}}",
                    TOTP.replace("\"digits\":6", "\"digits\":\"6\"")
                )),
                "devices[0].digits: must be a number",
            ),
            (
                doc(&format!("{{{},{secret},\"counter\":3}}", TOTP)),
                "devices[0].counter: is for HOTP devices only",
            ),
            (
                doc(&format!("{{{TOTP},{secret}}},{{{TOTP},{secret}}}")),
                "devices[1].name: repeats",
            ),
            (doc(""), "devices: is empty"),
            (
                r#"{"format":"otpd-export","version":2,"user":"a","devices":[]}"#.into(),
                "version: is not 1",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains(KEY_B32) && !e.contains("GEZDGNBV"), "{e}");
        }
        // The secret put where a name belongs is not echoed either.
        let e = parse(doc(&format!(r#"{{"name":"{KEY_B32}!"}}"#)).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(!e.contains(KEY_B32), "{e}");
        assert!(parse(&vec![b' '; MAX_LEN + 1]).is_err());
    }
}

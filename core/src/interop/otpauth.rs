//! `otpauth://` URIs (Google's Key Uri Format), as authenticator apps
//! export them and otpd prints them: `otpauth://TYPE/LABEL?PARAMETERS`
//! with TYPE `totp` or `hotp`, LABEL `issuer:account` (percent-encoded),
//! and the parameters `secret` (base32, required), `issuer`, `algorithm`
//! (SHA1, SHA256, SHA512), `digits` (6 or 8), `period` (TOTP) and
//! `counter` (HOTP, required).
//!
//! Parsed here rather than with totp-rs, whose `from_url` panics on a URI
//! without a host (`otpauth:x`) and puts the secret into its error; this
//! parser never panics (fuzzed: `fuzz/fuzz_targets/otpauth.rs`) and its
//! errors never hold the secret.

use crate::secret::TotpSecret;
use crate::totp::{Algorithm, TotpParams};

/// Longest URI looked at.
pub const MAX_URI_LEN: usize = 4096;

/// Which kind of one-time password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Time-based (RFC 6238).
    Totp,
    /// Counter-based (RFC 4226), with the next counter value.
    Hotp {
        /// The counter.
        counter: u64,
    },
}

/// One parsed URI.
#[derive(Debug, Clone)]
pub struct OtpAuth {
    /// TOTP or HOTP.
    pub kind: Kind,
    /// The key.
    pub secret: TotpSecret,
    /// Algorithm, digits, period (the period is 30 for HOTP; unused).
    pub params: TotpParams,
    /// The issuer (from the parameter, else the label's prefix).
    pub issuer: Option<String>,
    /// The account part of the label.
    pub account: String,
}

/// Why a URI was refused. Never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Longer than [`MAX_URI_LEN`].
    #[error("longer than {MAX_URI_LEN} bytes")]
    TooLong,
    /// Not `otpauth://totp/...` or `otpauth://hotp/...`.
    #[error("not an otpauth://totp/ or otpauth://hotp/ URI")]
    NotOtpAuth,
    /// A percent escape or the text is not valid (UTF-8, control characters).
    #[error("badly encoded {0}")]
    Encoding(&'static str),
    /// A parameter is missing.
    #[error("no {0} parameter")]
    Missing(&'static str),
    /// A parameter appears twice.
    #[error("the {0} parameter appears twice")]
    Repeated(&'static str),
    /// A parameter's value is not acceptable.
    #[error("bad {0} parameter")]
    Bad(&'static str),
    /// The label's issuer and the issuer parameter differ.
    #[error("the label's issuer and the issuer parameter differ")]
    IssuerMismatch,
}

/// Parses one URI (surrounding whitespace ignored).
pub fn parse(uri: &str) -> Result<OtpAuth, UriError> {
    let uri = uri.trim();
    if uri.len() > MAX_URI_LEN {
        return Err(UriError::TooLong);
    }
    let rest = strip_prefix_ignore_case(uri, "otpauth://").ok_or(UriError::NotOtpAuth)?;
    let (kind, rest) = if let Some(r) = strip_prefix_ignore_case(rest, "totp/") {
        ("totp", r)
    } else if let Some(r) = strip_prefix_ignore_case(rest, "hotp/") {
        ("hotp", r)
    } else {
        return Err(UriError::NotOtpAuth);
    };
    let (label, query) = rest.split_once('?').unwrap_or((rest, ""));
    let label = decode(label, "label")?;
    let (label_issuer, account) = match label.split_once(':') {
        Some((i, a)) => (Some(i.trim().to_owned()), a.trim().to_owned()),
        None => (None, label.trim().to_owned()),
    };

    let mut secret = None;
    let mut issuer = None;
    let mut algorithm = None;
    let mut digits = None;
    let mut period = None;
    let mut counter = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key, "parameter name")?.to_ascii_lowercase();
        let slot = match key.as_str() {
            "secret" => &mut secret,
            "issuer" => &mut issuer,
            "algorithm" => &mut algorithm,
            "digits" => &mut digits,
            "period" => &mut period,
            "counter" => &mut counter,
            // Other parameters (image, color...) are not ours.
            _ => continue,
        };
        if slot.is_some() {
            return Err(UriError::Repeated(name_of(&key)));
        }
        *slot = Some(decode(value, name_of(&key))?);
    }

    let secret = secret.ok_or(UriError::Missing("secret"))?;
    let secret = decode_base32(&secret).ok_or(UriError::Bad("secret"))?;
    if !(10..=64).contains(&secret.len()) {
        return Err(UriError::Bad("secret"));
    }
    let algorithm = match algorithm.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("SHA1") => Algorithm::Sha1,
        Some("SHA256") => Algorithm::Sha256,
        Some("SHA512") => Algorithm::Sha512,
        Some(_) => return Err(UriError::Bad("algorithm")),
    };
    let digits = match digits.as_deref() {
        None | Some("6") => 6,
        Some("8") => 8,
        Some(_) => return Err(UriError::Bad("digits")),
    };
    let period = match period {
        None => 30,
        Some(p) => p
            .parse::<u64>()
            .ok()
            .filter(|p| (15..=300).contains(p))
            .ok_or(UriError::Bad("period"))?,
    };
    let kind = match kind {
        "hotp" => Kind::Hotp {
            counter: counter
                .ok_or(UriError::Missing("counter"))?
                .parse()
                .map_err(|_| UriError::Bad("counter"))?,
        },
        _ => Kind::Totp,
    };
    let issuer = match (label_issuer.filter(|i| !i.is_empty()), issuer) {
        (Some(l), Some(p)) if l != p => return Err(UriError::IssuerMismatch),
        (l, p) => p.or(l),
    };
    Ok(OtpAuth {
        kind,
        secret: TotpSecret::from_bytes(secret),
        params: TotpParams {
            algorithm,
            digits,
            period,
        },
        issuer,
        account,
    })
}

fn name_of(key: &str) -> &'static str {
    match key {
        "secret" => "secret",
        "issuer" => "issuer",
        "algorithm" => "algorithm",
        "digits" => "digits",
        "period" => "period",
        _ => "counter",
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Percent-decodes (`+` stays `+`, as in a path); refuses invalid escapes,
/// invalid UTF-8 and control characters.
fn decode(s: &str, what: &'static str) -> Result<String, UriError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(UriError::Encoding(what))?;
            let hex = std::str::from_utf8(hex).map_err(|_| UriError::Encoding(what))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UriError::Encoding(what))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).map_err(|_| UriError::Encoding(what))?;
    if text.chars().any(char::is_control) {
        return Err(UriError::Encoding(what));
    }
    Ok(text)
}

/// RFC 4648 base32, upper or lower case, padding and spaces ignored.
fn decode_base32(s: &str) -> Option<Vec<u8>> {
    let cleaned: String = s
        .chars()
        .filter(|c| *c != '=' && *c != ' ')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    data_encoding::BASE32_NOPAD.decode(cleaned.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(uri: &str) -> OtpAuth {
        match parse(uri) {
            Ok(p) => p,
            Err(e) => panic!("{uri}: {e}"),
        }
    }

    #[test]
    fn the_key_uri_format() {
        let p = ok(
            "otpauth://totp/ACME%20Co:john.doe@email.com?secret=HXDMVJECJJWSRB3HWIZR4IFUGFTMXBOZ&issuer=ACME%20Co&algorithm=SHA1&digits=6&period=30",
        );
        assert_eq!(p.kind, Kind::Totp);
        assert_eq!(p.issuer.as_deref(), Some("ACME Co"));
        assert_eq!(p.account, "john.doe@email.com");
        assert_eq!(p.params, TotpParams::default());
        assert_eq!(p.secret.expose().len(), 20);

        let p = ok(
            "otpauth://hotp/alice?secret=gezdgnbvgy3tqojqgezdgnbvgy3tqojq&counter=42&digits=8&algorithm=sha256",
        );
        assert_eq!(p.kind, Kind::Hotp { counter: 42 });
        assert_eq!(
            (p.params.digits, p.params.algorithm),
            (8, Algorithm::Sha256)
        );
        assert_eq!(p.issuer, None);
        assert_eq!(p.secret.expose(), b"12345678901234567890");

        // What otpd itself prints (totp-rs), padding and all.
        let p = ok(
            "  OTPAUTH://TOTP/otpd:bob?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ====&issuer=otpd&period=60&image=x  ",
        );
        assert_eq!((p.params.period, p.account.as_str()), (60, "bob"));
    }

    #[test]
    fn refusals_name_the_problem_and_never_the_secret() {
        let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        for (uri, err) in [
            ("https://example.com", UriError::NotOtpAuth),
            ("otpauth:x", UriError::NotOtpAuth),
            ("otpauth://steam/x?secret=AAAA", UriError::NotOtpAuth),
            ("otpauth://totp/x", UriError::Missing("secret")),
            ("otpauth://totp/x?secret=GEZDGNBV", UriError::Bad("secret")),
            (
                &format!("otpauth://totp/x?secret={secret}1"),
                UriError::Bad("secret"),
            ),
            (
                &format!("otpauth://totp/x?secret={secret}&digits=7"),
                UriError::Bad("digits"),
            ),
            (
                &format!("otpauth://totp/x?secret={secret}&period=5"),
                UriError::Bad("period"),
            ),
            (
                &format!("otpauth://totp/x?secret={secret}&algorithm=MD5"),
                UriError::Bad("algorithm"),
            ),
            (
                &format!("otpauth://hotp/x?secret={secret}"),
                UriError::Missing("counter"),
            ),
            (
                &format!("otpauth://hotp/x?secret={secret}&counter=-1"),
                UriError::Bad("counter"),
            ),
            (
                &format!("otpauth://totp/x?secret={secret}&secret={secret}"),
                UriError::Repeated("secret"),
            ),
            (
                &format!("otpauth://totp/A:x?secret={secret}&issuer=B"),
                UriError::IssuerMismatch,
            ),
            (
                &format!("otpauth://totp/x%zz?secret={secret}"),
                UriError::Encoding("label"),
            ),
            (
                &format!("otpauth://totp/x%0a?secret={secret}"),
                UriError::Encoding("label"),
            ),
            (
                &format!("otpauth://totp/x%?secret={secret}"),
                UriError::Encoding("label"),
            ),
        ] {
            let got = parse(uri).err();
            assert_eq!(got.as_ref(), Some(&err), "{uri}");
            assert!(
                !got.map(|e| e.to_string())
                    .unwrap_or_default()
                    .contains("GEZD")
            );
        }
        assert_eq!(
            parse(&"a".repeat(MAX_URI_LEN + 1)).err(),
            Some(UriError::TooLong)
        );
    }
}

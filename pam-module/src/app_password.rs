//! The shape of an app password, as typed at a prompt.
//!
//! otpd generates app passwords of 24 characters from the alphabet
//! `0123456789abcdefghjkmnpqrstvwxyz` (Crockford base32: no `i`, `l`, `o`,
//! `u`) and prints them as six groups of four separated by `-`, e.g.
//! `k7qm-3xa9-h2pc-vw4d-8ent-rb6s`; the first group is the app password's
//! public id.
//!
//! An answer has the shape of an app password when, after leading and
//! trailing ASCII whitespace is removed, it is six groups of four
//! characters of that alphabet, in upper or lower case, with nothing, one
//! `-`, or a run of spaces and tabs between two groups. Nothing else
//! matches: a separator inside a group, two dashes, `-` next to a space, a
//! missing or extra character, `i`/`l`/`o`/`u` or any other byte. TOTP
//! and backup codes (6 or 8 digits) never have this shape.
//!
//! The shape decides only *how* otpd is asked (with `allow_app_password`
//! and the whole answer instead of a split code); whether the app password
//! is right, and for which service, is otpd's decision.

use crate::secret::Secret;

/// Characters in one group.
pub const GROUP_LEN: usize = 4;
/// Groups in an app password.
pub const GROUPS: usize = 6;
/// Characters in an app password, separators left out.
pub const CHARS: usize = GROUP_LEN * GROUPS;
/// The alphabet, in the case otpd prints it.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// True when `input` has the shape of an app password (see the module
/// documentation). Pure, total, never panics.
#[must_use]
pub fn looks_like_app_password(input: &[u8]) -> bool {
    groups(input).is_some()
}

/// The app password in the form otpd prints it (lower case, groups joined
/// by `-`), or `None` when `input` does not have the shape. This is what
/// the module sends to otpd: the whole answer, never a split of it.
#[must_use]
pub fn canonical(input: &[u8]) -> Option<Secret> {
    let chars = groups(input)?;
    let mut out = Vec::with_capacity(CHARS + GROUPS);
    for (i, group) in chars.chunks(GROUP_LEN).enumerate() {
        if i > 0 {
            out.push(b'-');
        }
        out.extend_from_slice(group);
    }
    Some(Secret::new(out))
}

/// The 24 characters in lower case, or `None` when the shape is wrong.
fn groups(input: &[u8]) -> Option<zeroize::Zeroizing<[u8; CHARS]>> {
    let mut rest = input.trim_ascii();
    let mut chars = zeroize::Zeroizing::new([0u8; CHARS]);
    for group in 0..GROUPS {
        if group > 0 {
            rest = skip_separator(rest);
        }
        let (head, tail) = rest.split_at_checked(GROUP_LEN)?;
        for (k, &b) in head.iter().enumerate() {
            let lower = b.to_ascii_lowercase();
            if !ALPHABET.contains(&lower) {
                return None;
            }
            chars[group * GROUP_LEN + k] = lower;
        }
        rest = tail;
    }
    rest.is_empty().then_some(chars)
}

/// Drops what may stand between two groups: one `-`, or a run of spaces
/// and tabs, or nothing.
fn skip_separator(rest: &[u8]) -> &[u8] {
    match rest.first() {
        Some(b'-') => &rest[1..],
        Some(b' ' | b'\t') => rest.trim_ascii_start(),
        _ => rest,
    }
}

/// The public id of an app password (its first group), as otpd reports it
/// in `VerifyResponse.app_password_id`. Kept only when it is made of the
/// alphabet, so that a log line cannot carry anything else.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AppPasswordId([u8; GROUP_LEN]);

impl AppPasswordId {
    /// Parses the id from otpd's answer; `None` when empty or malformed.
    #[must_use]
    pub fn parse(id: &str) -> Option<Self> {
        let bytes: [u8; GROUP_LEN] = id.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| ALPHABET.contains(b))
            .then_some(Self(bytes))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only alphabet bytes are ever stored: always ASCII.
        std::str::from_utf8(&self.0).unwrap_or("?")
    }
}

impl std::fmt::Debug for AppPasswordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AppPasswordId({})", self.as_str())
    }
}

impl std::fmt::Display for AppPasswordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PRINTED: &str = "k7qm-3xa9-h2pc-vw4d-8ent-rb6s";

    fn canon(s: &str) -> Option<String> {
        canonical(s.as_bytes()).map(|c| String::from_utf8(c.as_bytes().to_vec()).unwrap())
    }

    #[test]
    fn the_printed_form_and_its_variants_match() {
        for typed in [
            PRINTED,
            "k7qm3xa9h2pcvw4d8entrb6s",
            "k7qm 3xa9 h2pc vw4d 8ent rb6s",
            "k7qm  3xa9\th2pc vw4d 8ent rb6s",
            "K7QM-3XA9-H2PC-VW4D-8ENT-RB6S",
            "K7qm-3xA9 h2pc8ENTvw4d-rb6s",
            "  k7qm-3xa9-h2pc-vw4d-8ent-rb6s\n",
        ] {
            assert!(looks_like_app_password(typed.as_bytes()), "{typed:?}");
        }
        assert_eq!(canon(PRINTED).as_deref(), Some(PRINTED));
        assert_eq!(
            canon("K7QM 3XA9 H2PC VW4D 8ENT RB6S").as_deref(),
            Some(PRINTED)
        );
        assert_eq!(canon("k7qm3xa9h2pcvw4d8entrb6s").as_deref(), Some(PRINTED));
        // 24 digits are 24 characters of the alphabet.
        assert!(looks_like_app_password(b"000000000000000000000000"));
    }

    #[test]
    fn codes_and_other_answers_do_not_match() {
        for typed in [
            // TOTP and backup codes.
            "123456",
            "12345678",
            "123 456",
            "1234 5678",
            "",
            "   ",
            // Wrong length.
            "k7qm-3xa9-h2pc-vw4d-8ent-rb6",
            "k7qm-3xa9-h2pc-vw4d-8ent-rb6s7",
            "k7qm-3xa9-h2pc-vw4d-8ent",
            "k7qm-3xa9-h2pc-vw4d-8ent-rb6s-",
            "k7qm3xa9h2pcvw4d8entrb6",
            "k7qm3xa9h2pcvw4d8entrb6sx",
            // Not in the alphabet (i, l, o, u, punctuation, non-ASCII).
            "i7qm-3xa9-h2pc-vw4d-8ent-rb6s",
            "l7qm-3xa9-h2pc-vw4d-8ent-rb6s",
            "k7qm-3xo9-h2pc-vw4d-8ent-rb6s",
            "k7qm-3xa9-h2pc-vw4d-8ent-rb6u",
            "k7qm-3xa9-h2pc-vw4d-8ent-rb6!",
            "k7qm-3xa9-h2pc-vw4d-8ent-rb6\u{e9}",
            // Separators in the wrong place, doubled or mixed.
            "k7q-m3xa9-h2pc-vw4d-8ent-rb6s",
            "k7qm--3xa9-h2pc-vw4d-8ent-rb6s",
            "k7qm- 3xa9-h2pc-vw4d-8ent-rb6s",
            "k7qm_3xa9_h2pc_vw4d_8ent_rb6s",
            "k7qm\n3xa9-h2pc-vw4d-8ent-rb6s",
            // A password followed by a code, with a separator.
            "hunter2 123456",
        ] {
            assert!(!looks_like_app_password(typed.as_bytes()), "{typed:?}");
            assert!(canon(typed).is_none(), "{typed:?}");
        }
        assert!(!looks_like_app_password(b"k7qm-3xa9-h2pc-vw4d-8ent-rb6\0"));
        assert!(!looks_like_app_password(
            b"k7qm-3xa9-h2pc-vw4d-8ent-rb6\xff"
        ));
    }

    #[test]
    fn ids() {
        assert_eq!(AppPasswordId::parse("k7qm").unwrap().as_str(), "k7qm");
        assert_eq!(AppPasswordId::parse("k7qm").unwrap().to_string(), "k7qm");
        for bad in ["", "k7q", "k7qmx", "K7QM", "k7q\n", "ioul", "k7q\u{e9}"] {
            assert!(AppPasswordId::parse(bad).is_none(), "{bad:?}");
        }
    }
}

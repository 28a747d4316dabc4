//! HOTP (RFC 4226): counter-based codes, for hardware OATH tokens (YubiKey
//! OATH-HOTP, Feitian) and the users of pam_oath and google-authenticator
//! who chose counters.
//!
//! A device keeps the last counter value it accepted (its watermark, as a
//! TOTP device keeps its last time step). A code is checked against the
//! next [`LOOK_AHEAD`] counter values (the token may have been pressed
//! without a login); a match there is accepted and moves the watermark,
//! so no code is ever accepted twice. A code that matches further ahead,
//! up to [`RESYNC_WINDOW`], is not accepted: it is remembered (the latest
//! such counter), and a later code of the very next counter is accepted:
//! two consecutive codes resynchronise a token that drifted far (RFC 4226,
//! section 7.4). Every attempt that is not accepted counts as a
//! failure, like a wrong TOTP code.
//!
//! Guessing: a random 6-digit guess matches one of the [`LOOK_AHEAD`]
//! values with probability 10 / 10^6; a far match only arms the
//! resynchronisation, which then needs an exact guess of the next code.

use crate::secret::{Code, TotpSecret};
use crate::totp::{self, TotpParams, UsedSteps};

/// Counter values after the watermark a code may match.
pub const LOOK_AHEAD: u64 = 10;

/// How far ahead a code may match to arm a resynchronisation.
pub const RESYNC_WINDOW: u64 = 100;

/// The HOTP value of `counter` (RFC 4226: TOTP is HOTP of the time step).
pub fn code_at(
    secret: &TotpSecret,
    params: TotpParams,
    counter: u64,
) -> zeroize::Zeroizing<String> {
    totp::code_at_step(secret, params, counter)
}

/// What an HOTP check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotpMatch {
    /// Valid: `counter` is now used.
    Accepted {
        /// The matched counter.
        counter: u64,
    },
    /// The code of a counter already used.
    Replayed,
    /// Matches far ahead: remember `counter`; the next code must be its
    /// successor's.
    OutOfSync {
        /// The matched counter.
        counter: u64,
    },
    /// Matches nothing.
    NoMatch,
}

/// Checks `code` against the device's counters: `last` is the last
/// accepted counter (`None`: none yet, the first code is counter 0),
/// `resync` a counter armed by an earlier far match.
pub fn check(
    secret: &TotpSecret,
    params: TotpParams,
    code: &Code,
    last: Option<u64>,
    resync: Option<u64>,
) -> HotpMatch {
    if code.len() != usize::from(params.digits) {
        return HotpMatch::NoMatch;
    }
    let matches = |c: u64| code.ct_matches(code_at(secret, params, c).as_bytes());
    let next = last.map_or(0, |l| l.saturating_add(1));
    // The second of two consecutive codes.
    if let Some(armed) = resync
        && armed >= next
        && let Some(successor) = armed.checked_add(1)
        && matches(successor)
    {
        return HotpMatch::Accepted { counter: successor };
    }
    for c in next..next.saturating_add(LOOK_AHEAD) {
        if matches(c) {
            return HotpMatch::Accepted { counter: c };
        }
    }
    if let Some(l) = last {
        let used = UsedSteps {
            watermark: Some(l),
            ahead: &[],
        };
        let recent = l.saturating_sub(LOOK_AHEAD)..=l;
        if recent.clone().any(|c| used.contains(c) && matches(c)) {
            return HotpMatch::Replayed;
        }
    }
    for c in next.saturating_add(LOOK_AHEAD)..next.saturating_add(RESYNC_WINDOW) {
        if matches(c) {
            return HotpMatch::OutOfSync { counter: c };
        }
    }
    HotpMatch::NoMatch
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4226, Appendix D: the secret "12345678901234567890" and the
    /// HOTP values of counters 0 to 9.
    const RFC4226: [&str; 10] = [
        "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871",
        "520489",
    ];

    fn secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890".to_vec())
    }

    fn code(s: &str) -> Code {
        match Code::parse(s.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn rfc_4226_appendix_d() {
        for (c, want) in RFC4226.iter().enumerate() {
            assert_eq!(
                code_at(&secret(), TotpParams::default(), c as u64).as_str(),
                *want
            );
        }
    }

    #[test]
    fn look_ahead_replay_and_resync() {
        let p = TotpParams::default();
        let s = secret();
        let at = |c: u64| code(&code_at(&s, p, c));
        assert_eq!(
            check(&s, p, &at(0), None, None),
            HotpMatch::Accepted { counter: 0 }
        );
        assert_eq!(
            check(&s, p, &at(9), None, None),
            HotpMatch::Accepted { counter: 9 }
        );
        assert_eq!(check(&s, p, &at(3), Some(3), None), HotpMatch::Replayed);
        assert_eq!(
            check(&s, p, &at(4), Some(3), None),
            HotpMatch::Accepted { counter: 4 }
        );
        // Far ahead: armed, not accepted; then only its successor is.
        assert_eq!(
            check(&s, p, &at(50), Some(3), None),
            HotpMatch::OutOfSync { counter: 50 }
        );
        assert_eq!(
            check(&s, p, &at(52), Some(3), Some(50)),
            HotpMatch::OutOfSync { counter: 52 }
        );
        assert_eq!(
            check(&s, p, &at(51), Some(3), Some(50)),
            HotpMatch::Accepted { counter: 51 }
        );
        assert_eq!(check(&s, p, &at(200), Some(3), None), HotpMatch::NoMatch);
        assert_eq!(
            check(&s, p, &code("12345678"), Some(3), None),
            HotpMatch::NoMatch
        );
    }
}

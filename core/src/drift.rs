//! Clock drift learned per device.
//!
//! A phone whose clock runs late shows codes of earlier steps. Rather than
//! widening the acceptance window for everyone (`[totp] window`), each TOTP
//! device keeps a learned offset, in steps: its window is the configured
//! one, centred on the current step plus that offset. The offset moves
//! slowly: one step, toward where the codes matched, only after
//! [`EVIDENCE`] accepted codes in a row matched off the centre on the same
//! side (one code typed just before its step ended teaches nothing), and
//! never beyond ±`max_drift_steps`. The code that confirms an enrollment
//! teaches nothing either.
//!
//! Why this is safe:
//! - The window never widens: it has the configured width at every
//!   offset; it is only shifted, by at most `max_drift_steps`.
//! - Only accepted codes move it, and a code is accepted only inside the
//!   current window: nobody without valid codes of the device can steer it,
//!   and it moves by one step per three accepted codes at most.
//! - Replay protection is exact: used steps are absolute time steps, kept
//!   per device whatever the offset; a code accepted in a shifted window is
//!   refused after use like any other.

use crate::secret::{Code, TotpSecret};
use crate::totp::{self, TotpMatch, TotpParams, UsedSteps};

/// Default bound of a learned offset: ±2 steps (±60 s with 30 s steps).
pub const DEFAULT_MAX_DRIFT_STEPS: u32 = 2;

/// Largest configurable bound.
pub const MAX_DRIFT_STEPS_LIMIT: u32 = 10;

/// Checks `code` in the window of ±`window` steps centred on the current
/// step plus `drift` steps. The skews in the answer are relative to the
/// current step (not to the centre). A `drift` that cannot be applied at
/// `now` (the start of time) is ignored.
pub fn check(
    secret: &TotpSecret,
    params: TotpParams,
    code: &Code,
    now: u64,
    window: u32,
    drift: i32,
    used: UsedSteps<'_>,
) -> TotpMatch {
    let period = i64::try_from(params.period.max(1)).unwrap_or(i64::MAX);
    let (centre_now, drift) = match now.checked_add_signed(i64::from(drift).saturating_mul(period))
    {
        Some(t) => (t, i64::from(drift)),
        None => (now, 0),
    };
    match totp::check(secret, params, code, centre_now, window, used) {
        TotpMatch::Accepted { step, skew_steps } => TotpMatch::Accepted {
            step,
            skew_steps: skew_steps.saturating_add(drift),
        },
        TotpMatch::ClockSkew { step, skew_steps } => TotpMatch::ClockSkew {
            step,
            skew_steps: skew_steps.saturating_add(drift),
        },
        m @ (TotpMatch::Replayed | TotpMatch::NoMatch) => m,
    }
}

/// Accepted codes in a row, off the centre on the same side, before the
/// offset moves one step: one slow typist (a code read just before its
/// step ended) or one phone briefly off must not move the window.
pub const EVIDENCE: i32 = 3;

/// The offset and the streak after a code was accepted `skew_steps` from
/// the current step. A code at the centre ends the streak; one off the
/// centre extends it on its side (or starts it anew when it was on the
/// other); after [`EVIDENCE`] of them in a row the offset moves one step
/// toward them, within ±`max`, and the streak starts over.
pub fn learn(drift: i32, streak: i32, skew_steps: i64, max: u32) -> (i32, i32) {
    let max = i32::try_from(max).unwrap_or(i32::MAX);
    let side = match skew_steps.cmp(&i64::from(drift)) {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => 1,
    };
    let streak = if side == 0 {
        0
    } else if streak.signum() == side {
        streak.saturating_add(side)
    } else {
        side
    };
    if max == 0 {
        return (0, 0);
    }
    if streak.abs() >= EVIDENCE {
        (drift.saturating_add(side).clamp(-max, max), 0)
    } else {
        (drift.clamp(-max, max), streak)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const T0: u64 = 1_800_000_000;

    fn secret() -> TotpSecret {
        TotpSecret::from_bytes(vec![7; 20])
    }

    fn code_at(step: u64) -> Code {
        let c = totp::code_at_step(&secret(), TotpParams::default(), step);
        match Code::parse(c.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("test code: {e}"),
        }
    }

    #[test]
    fn learning_moves_one_step_after_three_off_centre_codes_and_stops_at_the_bound() {
        assert_eq!(learn(0, 0, -1, 2), (0, -1), "one slow code: evidence only");
        assert_eq!(learn(0, -1, -1, 2), (0, -2));
        assert_eq!(learn(0, -2, -1, 2), (-1, 0), "the third in a row moves it");
        assert_eq!(learn(0, -2, 0, 2), (0, 0), "a centred code ends the streak");
        assert_eq!(learn(0, -2, 1, 2), (0, 1), "the other side starts anew");
        assert_eq!(learn(-1, -1, -1, 2), (-1, 0), "centred: stays");
        assert_eq!(learn(-1, -2, -3, 2), (-2, 0), "one step at a time");
        assert_eq!(learn(-2, -2, -3, 2), (-2, 0), "bounded");
        assert_eq!(learn(-2, 2, 0, 2), (-1, 0), "back toward the centre");
        assert_eq!(learn(0, 2, 1, 0), (0, 0), "0: no learning");
        assert_eq!(
            learn(5, 0, 5, 2),
            (2, 0),
            "an offset beyond a lowered bound"
        );
    }

    #[test]
    fn the_window_is_shifted_never_wider() {
        let step = T0 / 30;
        for drift in -2i32..=2 {
            for off in -6i64..=6 {
                let s = step.checked_add_signed(off).unwrap_or(0);
                let m = check(
                    &secret(),
                    TotpParams::default(),
                    &code_at(s),
                    T0,
                    1,
                    drift,
                    UsedSteps::NONE,
                );
                let inside = (off - i64::from(drift)).abs() <= 1;
                assert_eq!(
                    matches!(m, TotpMatch::Accepted { skew_steps, .. } if skew_steps == off),
                    inside,
                    "drift {drift}, code {off} steps off: {m:?}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn the_offset_stays_within_the_bound(
            max in 0u32..=10,
            skews in proptest::collection::vec(-20i64..=20, 0..50),
        ) {
            let (mut drift, mut streak) = (0, 0);
            let mut since_move = 0;
            for s in skews {
                let (next, next_streak) = learn(drift, streak, s, max);
                prop_assert!((next - drift).abs() <= 1);
                prop_assert!(next.unsigned_abs() <= max);
                prop_assert!(next_streak.abs() < EVIDENCE);
                since_move += 1;
                if next != drift {
                    // Slowly: a move needs EVIDENCE accepted codes since the last.
                    prop_assert!(since_move >= EVIDENCE, "moved after {since_move}");
                    since_move = 0;
                }
                drift = next;
                streak = next_streak;
            }
        }
    }
}

//! Every text the user sees, in one place.

use crate::flow::Enforcement;

/// Shown when the lockout refused the attempt unchecked (after repeated
/// failures; lasts minutes to hours, an administrator can lift it).
#[must_use]
pub fn locked(retry_after_seconds: u64) -> String {
    let when = if retry_after_seconds == 0 {
        "later".to_owned()
    } else {
        format!("in {}", human_duration(retry_after_seconds))
    };
    format!(
        "Locked after too many failed attempts; try again {when}, or ask your \
         administrator to unlock."
    )
}

/// Shown when the throttle refused the attempt unchecked (too many
/// failures in a short window; lasts seconds).
#[must_use]
pub fn throttled(retry_after_seconds: u64) -> String {
    if retry_after_seconds == 0 {
        "Too many attempts in a short time; wait a moment, then try again.".to_owned()
    } else {
        format!(
            "Too many attempts in a short time; wait {}, then try again.",
            human_duration(retry_after_seconds)
        )
    }
}

/// Shown after a backup code was accepted.
#[must_use]
pub fn backup_code_accepted(left: u32) -> String {
    format!("Backup code accepted; {left} left.")
}

/// Shown after a backup code was accepted: a backup code stands in for a
/// lost or broken device, which should be replaced at once. `user` is
/// already printable.
#[must_use]
pub fn re_enroll_after_backup_code(user: &str) -> String {
    format!(
        "If you used a backup code because your device is lost or broken, have a new \
         one enrolled now: ask your administrator (otpctl enroll {user})."
    )
}

/// Shown when few backup codes are left (`left`), or none. `user` is
/// already printable.
#[must_use]
pub fn backup_codes_low(user: &str, left: u32) -> String {
    if left == 0 {
        format!(
            "No backup codes left: without your device you cannot log in. Ask your \
             administrator for new ones (otpctl backup-codes {user})."
        )
    } else {
        format!(
            "Running low on backup codes: ask your administrator for new ones \
             (otpctl backup-codes {user})."
        )
    }
}

/// Shown at each login of a user whom the enforcement policy requires a
/// second factor of, before its deadline, while they have none.
#[must_use]
pub fn enrollment_due(e: &Enforcement) -> String {
    let when = if e.deadline_date.is_empty() {
        String::new()
    } else {
        format!(" from {}", e.deadline_date)
    };
    let what = if e.self_enroll {
        "Run `otpctl enroll` now.".to_owned()
    } else {
        format!("Ask {} to enroll you.", e.contact)
    };
    format!("Two-factor authentication is required{when}. {what}")
}

/// Shown when such a user is refused after the deadline. `user` is
/// already printable.
#[must_use]
pub fn enrollment_overdue(e: &Enforcement, user: &str) -> String {
    let since = if e.deadline_date.is_empty() {
        String::new()
    } else {
        format!(" since {}", e.deadline_date)
    };
    format!(
        "Login refused: two-factor authentication is required{since} and none is set up \
         for {user}. Ask {} to enroll you (otpctl enroll {user}), then log in with a code.",
        e.contact
    )
}

/// Shown, at most once a day, to a user who has no way back in if they
/// lose their only device. `user` is already printable.
#[must_use]
pub fn no_recovery_path(user: &str, contact: &str) -> String {
    format!(
        "You have a single device and no backup codes left: if you lose it, you cannot \
         log in. Ask {contact} for new backup codes (otpctl backup-codes {user}) or to add \
         a spare device (otpctl device add {user} NAME)."
    )
}

/// Shown when the code fits a time step outside the window. Positive skew:
/// the device is ahead.
#[must_use]
pub fn clock_skew(skew_seconds: i64) -> String {
    let direction = if skew_seconds >= 0 { "ahead" } else { "behind" };
    format!(
        "Wrong code: your authenticator's clock seems off by about {} seconds \
         ({direction}); check the time on the device.",
        skew_seconds.unsigned_abs()
    )
}

/// Shown when otpd refused the answer as malformed (letters, wrong
/// length). `digits`: the user's TOTP digits when the module already knows
/// them (a `nullok` line, which asked otpd before the prompt); otherwise
/// the text is the same for every user, enrolled or not.
#[must_use]
pub fn not_a_code(digits: Option<u32>) -> String {
    let digits = digits.map_or_else(|| "6 or 8".to_owned(), |d| d.to_string());
    format!(
        "That is not a code: enter the {digits} digits your authenticator app shows \
         (spaces are fine), or an 8-digit backup code."
    )
}

/// Shown when the code was right but already used.
pub const REPLAYED: &str = "This code has already been used; wait for the next one.";

/// Shown when otpd cannot be reached and the module fails closed.
pub const SERVICE_UNAVAILABLE: &str =
    "The verification service is unavailable; please contact your administrator.";

/// Rounds up to whole units: "45 s", "12 min", "3 h".
fn human_duration(seconds: u64) -> String {
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    if seconds < MIN {
        format!("{seconds} s")
    } else if seconds < 2 * HOUR {
        format!("{} min", seconds.div_ceil(MIN))
    } else {
        format!("{} h", seconds.div_ceil(HOUR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_and_throttle_say_which_and_how_long() {
        assert_eq!(
            locked(720),
            "Locked after too many failed attempts; try again in 12 min, or ask your \
             administrator to unlock."
        );
        assert!(locked(661).contains("try again in 12 min,"));
        assert!(locked(3 * 3600).contains("try again in 3 h,"));
        assert!(locked(0).contains("try again later,"));
        assert_eq!(
            throttled(30),
            "Too many attempts in a short time; wait 30 s, then try again."
        );
        assert_eq!(
            throttled(0),
            "Too many attempts in a short time; wait a moment, then try again."
        );
    }

    #[test]
    fn the_reminder_says_who_enrolls() {
        let mut e = Enforcement {
            must_enroll: true,
            refused: false,
            deadline_date: "2026-12-15".into(),
            contact: "the help desk".into(),
            self_enroll: false,
        };
        assert_eq!(
            enrollment_due(&e),
            "Two-factor authentication is required from 2026-12-15. Ask the help desk to enroll you."
        );
        e.self_enroll = true;
        e.deadline_date.clear();
        assert_eq!(
            enrollment_due(&e),
            "Two-factor authentication is required. Run `otpctl enroll` now."
        );
    }

    #[test]
    fn backup_texts() {
        assert_eq!(backup_code_accepted(3), "Backup code accepted; 3 left.");
        assert_eq!(
            backup_codes_low("alice", 2),
            "Running low on backup codes: ask your administrator for new ones \
             (otpctl backup-codes alice)."
        );
        assert_eq!(
            backup_codes_low("alice", 0),
            "No backup codes left: without your device you cannot log in. Ask your \
             administrator for new ones (otpctl backup-codes alice)."
        );
        assert!(re_enroll_after_backup_code("alice").ends_with("(otpctl enroll alice)."));
    }

    #[test]
    fn a_malformed_code_gets_its_shape() {
        assert_eq!(
            not_a_code(None),
            "That is not a code: enter the 6 or 8 digits your authenticator app shows \
             (spaces are fine), or an 8-digit backup code."
        );
        assert!(not_a_code(Some(8)).contains("enter the 8 digits"));
    }

    #[test]
    fn skew_texts() {
        assert!(clock_skew(90).contains("about 90 seconds (ahead)"));
        assert!(clock_skew(-120).contains("about 120 seconds (behind)"));
    }
}

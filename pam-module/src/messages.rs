//! Every text the user sees, in one place.

use crate::flow::Enforcement;

/// Shown when the account is locked out or throttled.
#[must_use]
pub fn too_many_attempts(retry_after_seconds: u64) -> String {
    if retry_after_seconds == 0 {
        "Too many failed attempts; try again later".to_owned()
    } else {
        format!(
            "Too many failed attempts; try again in {}",
            human_duration(retry_after_seconds)
        )
    }
}

/// Shown after a backup code was accepted.
#[must_use]
pub fn backup_code_accepted(left: u32) -> String {
    format!("Backup code accepted; {left} left.")
}

/// Shown when few backup codes are left. `user` is already printable.
#[must_use]
pub fn backup_codes_low(user: &str) -> String {
    format!(
        "Running low on backup codes: ask your administrator for new ones \
         (otpctl backup-codes {user})."
    )
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
    fn retry_times() {
        assert_eq!(
            too_many_attempts(720),
            "Too many failed attempts; try again in 12 min"
        );
        assert_eq!(
            too_many_attempts(661),
            "Too many failed attempts; try again in 12 min"
        );
        assert_eq!(
            too_many_attempts(45),
            "Too many failed attempts; try again in 45 s"
        );
        assert_eq!(
            too_many_attempts(3 * 3600),
            "Too many failed attempts; try again in 3 h"
        );
        assert_eq!(
            too_many_attempts(0),
            "Too many failed attempts; try again later"
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
            backup_codes_low("alice"),
            "Running low on backup codes: ask your administrator for new ones \
             (otpctl backup-codes alice)."
        );
    }

    #[test]
    fn skew_texts() {
        assert!(clock_skew(90).contains("about 90 seconds (ahead)"));
        assert!(clock_skew(-120).contains("about 120 seconds (behind)"));
    }
}

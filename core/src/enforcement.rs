//! Who must use a second factor, from when, and when to remind users who
//! have no way back in: pure decisions of the enforcement policy
//! (`[enforcement]` in otpd.toml).
//!
//! The daemon looks up the user's groups in the name service (NSS, so
//! SSSD and LDAP groups count) and passes the answer in, with `now`; the
//! PAM line's `nullok` does not enter the decision.

use serde::{Deserialize, Serialize};

/// Seconds per day.
pub const DAY: u64 = 86_400;

/// Who the policy covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Require {
    /// Nobody: 2FA stays opt-in (each PAM line's `nullok` decides).
    #[default]
    Nobody,
    /// Every user, except the exempt ones and system accounts (uid below
    /// `min_uid`, root among them, and `nobody`).
    Everyone,
    /// Members of the listed groups, except the exempt ones.
    Groups,
}

/// The enforcement policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforcement {
    /// Who is covered.
    pub require: Require,
    /// With [`Require::Groups`]: the groups whose members are covered.
    pub groups: Vec<String>,
    /// Users never covered (service accounts).
    pub exempt_users: Vec<String>,
    /// Members of these groups are never covered.
    pub exempt_groups: Vec<String>,
    /// Unix seconds from which covered users without a device are
    /// refused; before it they are told to enroll. `None`: at once.
    pub deadline: Option<u64>,
    /// Who to ask, in the messages users see.
    pub contact: String,
    /// At most one reminder per this many seconds to a user without a
    /// recovery path; 0: no reminders.
    pub nudge_interval: u64,
    /// Accounts with a lower uid (root, system and service accounts) are
    /// system accounts: [`Require::Everyone`] does not cover them, a
    /// listed group does.
    pub min_uid: u32,
}

/// Debian's `UID_MIN`: the first uid `adduser` gives a person.
pub const DEFAULT_MIN_UID: u32 = 1000;
/// The kernel's overflow uid, `nobody`: a system account at any `min_uid`.
pub const NOBODY_UID: u32 = 65_534;

/// Login shells of accounts nobody logs in to.
pub const NO_LOGIN_SHELLS: [&str; 4] = ["nologin", "false", "sync", "halt"];

/// Whether a passwd entry is a person's login account: a uid from
/// `min_uid` (and not `nobody`) and a shell one can log in with. What
/// `require = "everyone"` covers, and what `otpctl status --all` lists.
pub fn is_login_account(uid: u32, shell: &str, min_uid: u32) -> bool {
    uid >= min_uid && uid != NOBODY_UID && !NO_LOGIN_SHELLS.iter().any(|s| shell.ends_with(s))
}

/// What the name service said about a user's groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// The names of every group the user is in (primary and
    /// supplementary).
    Groups(Vec<String>),
    /// A system account (uid below the policy's `min_uid`, or `nobody`)
    /// and its groups: `everyone` does not cover it, a listed group does.
    System(Vec<String>),
    /// The lookup failed or took too long: the policy fails closed (the
    /// user is covered unless exempt by name).
    Unknown,
}

impl Default for Enforcement {
    fn default() -> Self {
        Self {
            require: Require::Nobody,
            groups: Vec::new(),
            exempt_users: Vec::new(),
            exempt_groups: Vec::new(),
            deadline: None,
            contact: String::new(),
            nudge_interval: 0,
            min_uid: DEFAULT_MIN_UID,
        }
    }
}

impl Enforcement {
    /// Whether the policy covers anyone (and group lookups are needed).
    pub fn is_active(&self) -> bool {
        self.require != Require::Nobody
    }

    /// Whether the policy covers `user`, a member of `membership`.
    pub fn covers(&self, user: &str, membership: &Membership) -> bool {
        if self.require == Require::Nobody || self.exempt_users.iter().any(|u| u == user) {
            return false;
        }
        let (groups, system) = match membership {
            // Fail closed: an unknown membership exempts nobody and puts
            // everyone in scope.
            Membership::Unknown => return true,
            Membership::Groups(g) => (g, false),
            Membership::System(g) => (g, true),
        };
        let member_of = |list: &[String]| groups.iter().any(|g| list.contains(g));
        if member_of(&self.exempt_groups) {
            return false;
        }
        match self.require {
            Require::Nobody => false,
            Require::Everyone => !system,
            Require::Groups => member_of(&self.groups),
        }
    }

    /// What the policy says about `user` at `now`, given whether they have
    /// an active device.
    pub fn requirement(
        &self,
        user: &str,
        membership: &Membership,
        enrolled: bool,
        now: u64,
    ) -> Requirement {
        if !self.covers(user, membership) {
            return Requirement::NotRequired;
        }
        if enrolled {
            return Requirement::Enrolled;
        }
        match self.deadline {
            Some(deadline) if now < deadline => Requirement::Due { deadline },
            deadline => Requirement::Overdue { deadline },
        }
    }
}

/// The policy's verdict on one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Not covered: today's behaviour (`nullok` decides).
    NotRequired,
    /// Covered and enrolled.
    Enrolled,
    /// Covered, not enrolled, the deadline ahead: logins go on as before,
    /// with a reminder each time.
    Due {
        /// Unix seconds.
        deadline: u64,
    },
    /// Covered, not enrolled, the deadline passed (or none): refused,
    /// even on a `nullok` line.
    Overdue {
        /// Unix seconds; `None`: required at once.
        deadline: Option<u64>,
    },
}

impl Requirement {
    /// Covered by the policy.
    pub fn must_enroll(&self) -> bool {
        !matches!(self, Self::NotRequired)
    }

    /// Covered and not enrolled.
    pub fn missing(&self) -> bool {
        matches!(self, Self::Due { .. } | Self::Overdue { .. })
    }
}

/// Whether a user with `devices` active devices and `backup_codes_left`
/// unused backup codes can still get in after losing one device. A user
/// without a device needs none.
pub fn has_recovery_path(devices: usize, backup_codes_left: usize) -> bool {
    devices != 1 || backup_codes_left > 0
}

/// Whether a user without a recovery path is reminded at `now`, the last
/// reminder having been at `last`.
pub fn nudge_due(last: Option<u64>, now: u64, interval: u64) -> bool {
    if interval == 0 {
        return false;
    }
    last.is_none_or(|last| now.saturating_sub(last) >= interval || last > now)
}

/// Decides at a successful login whether to remind the user that they
/// have no recovery path (one active device, no backup code left), at
/// most once per `interval`; when so, notes `now` in the record, which
/// the caller then saves.
pub fn nudge(rec: &mut crate::record::UserRecord, now: u64, interval: u64) -> bool {
    let codes = rec.backup_codes.as_ref().map_or(0, |c| c.remaining());
    if has_recovery_path(rec.devices.len(), codes)
        || !nudge_due(rec.recovery_nudged_at, now, interval)
    {
        return false;
    }
    rec.recovery_nudged_at = Some(now);
    true
}

/// Parses a deadline date, `YYYY-MM-DD`, into Unix seconds at 00:00 UTC
/// of that day.
pub fn parse_date(text: &str) -> Option<u64> {
    let mut parts = text.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || y.len() != 4
        || m.len() != 2
        || d.len() != 2
        || !text.bytes().all(|b| b.is_ascii_digit() || b == b'-')
    {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if y < 1970 || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    u64::try_from(days).ok()?.checked_mul(DAY)
}

/// `YYYY-MM-DD` (UTC) of Unix seconds.
pub fn format_date(seconds: u64) -> String {
    let days = i64::try_from(seconds / DAY).unwrap_or(i64::MAX / 2);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_accounts_are_people_with_a_shell() {
        assert!(is_login_account(1000, "/bin/bash", 1000));
        assert!(!is_login_account(999, "/bin/bash", 1000));
        assert!(is_login_account(999, "/bin/bash", 0));
        assert!(!is_login_account(NOBODY_UID, "/bin/sh", 0));
        for shell in ["/usr/sbin/nologin", "/bin/false", "/bin/sync", "/sbin/halt"] {
            assert!(!is_login_account(1000, shell, 1000), "{shell}");
        }
    }

    const DEADLINE: u64 = 1_797_292_800; // 2026-12-15

    fn groups(names: &[&str]) -> Membership {
        Membership::Groups(names.iter().map(|s| (*s).to_owned()).collect())
    }

    fn policy(require: Require) -> Enforcement {
        Enforcement {
            require,
            groups: vec!["staff".into()],
            exempt_users: vec!["backup".into()],
            exempt_groups: vec!["robots".into()],
            deadline: Some(DEADLINE),
            contact: "the help desk".into(),
            nudge_interval: DAY,
            min_uid: DEFAULT_MIN_UID,
        }
    }

    #[test]
    fn dates_round_trip_and_bad_ones_are_refused() {
        assert_eq!(parse_date("2026-12-15"), Some(DEADLINE));
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(format_date(DEADLINE), "2026-12-15");
        assert_eq!(format_date(DEADLINE + DAY - 1), "2026-12-15");
        assert_eq!(parse_date("2024-02-29"), Some(1_709_164_800));
        for day in (0..200_000).step_by(37) {
            let s = format_date(day * DAY);
            assert_eq!(parse_date(&s), Some(day * DAY), "{s}");
        }
        for bad in [
            "",
            "2026-12",
            "2026-13-01",
            "2026-02-29",
            "2026-12-15T00:00",
            "26-12-15",
            "+026-12-15",
            "2026-1-15",
            "1969-12-31",
            "2026-12-00",
            "2026-12-32",
            "２０２６-12-15",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn nobody_covers_nobody() {
        let p = Enforcement::default();
        assert!(!p.is_active());
        assert_eq!(
            p.requirement("alice", &Membership::Unknown, false, 0),
            Requirement::NotRequired
        );
    }

    #[test]
    fn groups_cover_their_members_except_the_exempt() {
        let p = policy(Require::Groups);
        assert!(p.covers("alice", &groups(&["users", "staff"])));
        assert!(!p.covers("bob", &groups(&["users"])));
        assert!(!p.covers("backup", &groups(&["staff"])), "exempt user");
        assert!(
            !p.covers("ci", &groups(&["staff", "robots"])),
            "exempt group wins"
        );
        let e = policy(Require::Everyone);
        assert!(e.covers("bob", &groups(&["users"])));
        assert!(e.covers("nogroups", &groups(&[])));
        assert!(!e.covers("ci", &groups(&["robots"])));
        assert!(!e.covers("backup", &groups(&[])));
        // root and system accounts: not "everyone", but a listed group
        // covers them.
        let system = |g: &[&str]| Membership::System(g.iter().map(|s| (*s).to_owned()).collect());
        assert!(!e.covers("root", &system(&["root"])));
        assert!(!e.covers("www-data", &system(&["staff"])));
        assert!(p.covers("root", &system(&["root", "staff"])));
        assert!(!p.covers("root", &system(&["root"])));
    }

    #[test]
    fn an_unknown_membership_fails_closed() {
        for require in [Require::Groups, Require::Everyone] {
            let p = policy(require);
            assert!(p.covers("alice", &Membership::Unknown), "{require:?}");
            // Exempt by name needs no lookup.
            assert!(!p.covers("backup", &Membership::Unknown));
        }
    }

    #[test]
    fn before_the_deadline_due_after_it_overdue() {
        let p = policy(Require::Everyone);
        let m = groups(&["users"]);
        assert_eq!(
            p.requirement("alice", &m, false, DEADLINE - 1),
            Requirement::Due { deadline: DEADLINE }
        );
        assert_eq!(
            p.requirement("alice", &m, false, DEADLINE),
            Requirement::Overdue {
                deadline: Some(DEADLINE)
            }
        );
        assert_eq!(
            p.requirement("alice", &m, true, DEADLINE + 1),
            Requirement::Enrolled
        );
        let at_once = Enforcement {
            deadline: None,
            ..p
        };
        let r = at_once.requirement("alice", &m, false, 0);
        assert_eq!(r, Requirement::Overdue { deadline: None });
        assert!(r.must_enroll() && r.missing());
        assert!(Requirement::Enrolled.must_enroll() && !Requirement::Enrolled.missing());
        assert!(!Requirement::NotRequired.must_enroll());
    }

    #[test]
    fn recovery_path_needs_a_spare_device_or_a_backup_code() {
        assert!(!has_recovery_path(1, 0));
        assert!(has_recovery_path(1, 1));
        assert!(has_recovery_path(2, 0));
        assert!(has_recovery_path(0, 0), "not enrolled: nothing to recover");
    }

    #[test]
    fn nudges_at_most_once_per_interval() {
        let t = 1_800_000_000;
        assert!(nudge_due(None, t, DAY));
        assert!(!nudge_due(Some(t), t + DAY - 1, DAY));
        assert!(nudge_due(Some(t), t + DAY, DAY));
        assert!(!nudge_due(None, t, 0), "0: reminders off");
        // A reminder dated in the future (the clock went back) does not
        // silence reminders for ever.
        assert!(nudge_due(Some(t + 10 * DAY), t, DAY));
    }
}

//! Grace for sudo/su after a login (off by default): a code accepted for a
//! user is remembered for `seconds`, for the same user and the same origin
//! (remote host, tty, or both, as configured), so that `sudo` right after
//! an SSH login does not need the next code. Only the listed PAM services
//! may use it (never sshd unless the admin lists it).
//!
//! The grants live in the daemon's memory only: a restart ends every
//! grace, which is the safer failure. The trade-off: within the window, a
//! process running as that user from that origin (a terminal of the same
//! SSH connection's host, or the same tty) can authenticate without a code;
//! the origin match is what limits it.

use std::collections::HashMap;

use serde::Deserialize;

use crate::ops::LoginContext;
use crate::record::UserName;

/// Most remembered grants; the oldest are forgotten beyond this.
pub const MAX_GRANTS: usize = 10_000;

/// What makes two logins come from the same origin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// The same PAM_RHOST (an empty one is the local machine).
    #[default]
    RemoteHost,
    /// The same PAM_TTY (required: a login without a tty gets no grace).
    Tty,
    /// Both the same.
    Both,
}

/// `[grace]` as the decisions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// How long a code is remembered; 0: never (the default).
    pub seconds: u64,
    /// What the origin is.
    pub by: Match,
    /// PAM services that may use a grace.
    pub services: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            seconds: 0,
            by: Match::RemoteHost,
            services: vec!["sudo".into(), "su".into()],
        }
    }
}

impl Policy {
    /// The origin of a login, or `None` when it cannot be told (a tty
    /// match without a tty): such a login neither gives nor gets a grace.
    fn origin(&self, ctx: &LoginContext) -> Option<String> {
        match self.by {
            Match::RemoteHost => Some(format!("rhost={}", ctx.remote_host)),
            Match::Tty if ctx.tty.is_empty() => None,
            Match::Tty => Some(format!("tty={}", ctx.tty)),
            Match::Both if ctx.tty.is_empty() => None,
            Match::Both => Some(format!("rhost={}\ttty={}", ctx.remote_host, ctx.tty)),
        }
    }
}

/// The remembered grants: (user, origin) → time of the accepted code.
#[derive(Debug, Default)]
pub struct Graces {
    grants: HashMap<(String, String), u64>,
}

impl Graces {
    /// Remembers an accepted code of `user` from `ctx` at `now`.
    pub fn remember(&mut self, policy: &Policy, user: &UserName, ctx: &LoginContext, now: u64) {
        if policy.seconds == 0 {
            return;
        }
        let Some(origin) = policy.origin(ctx) else {
            return;
        };
        self.grants
            .retain(|_, at| now < at.saturating_add(policy.seconds));
        let oldest = (self.grants.len() >= MAX_GRANTS)
            .then(|| {
                self.grants
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone())
            })
            .flatten();
        if let Some(oldest) = oldest {
            self.grants.remove(&oldest);
        }
        self.grants.insert((user.as_str().to_owned(), origin), now);
    }

    /// Whether a login of `user` from `ctx` at `now` is within a grace:
    /// an allowed service, the same origin, fewer than `seconds` since the
    /// remembered code (a clock that went back gives none).
    pub fn admits(&self, policy: &Policy, user: &UserName, ctx: &LoginContext, now: u64) -> bool {
        if policy.seconds == 0 || !policy.services.contains(&ctx.service) {
            return false;
        }
        let Some(origin) = policy.origin(ctx) else {
            return false;
        };
        self.grants
            .get(&(user.as_str().to_owned(), origin))
            .is_some_and(|&at| at <= now && now < at.saturating_add(policy.seconds))
    }

    /// Forgets every grant of `user` (reset, new enrollment).
    pub fn forget(&mut self, user: &UserName) {
        self.grants.retain(|(u, _), _| u != user.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn ctx(service: &str, rhost: &str, tty: &str) -> LoginContext {
        LoginContext {
            service: service.into(),
            remote_host: rhost.into(),
            tty: tty.into(),
            requester: None,
        }
    }

    fn on(by: Match) -> Policy {
        Policy {
            seconds: 300,
            by,
            ..Policy::default()
        }
    }

    #[test]
    fn off_by_default() {
        let p = Policy::default();
        let mut g = Graces::default();
        let alice = UserName::test("alice");
        g.remember(&p, &alice, &ctx("sshd", "192.0.2.7", "ssh"), T0);
        assert!(!g.admits(&p, &alice, &ctx("sudo", "192.0.2.7", "ssh"), T0 + 1));
    }

    #[test]
    fn same_user_same_origin_allowed_service_within_the_window() {
        let p = on(Match::RemoteHost);
        let mut g = Graces::default();
        let alice = UserName::test("alice");
        g.remember(&p, &alice, &ctx("sshd", "192.0.2.7", "pts/1"), T0);
        let sudo = ctx("sudo", "192.0.2.7", "pts/4");
        assert!(g.admits(&p, &alice, &sudo, T0));
        assert!(g.admits(&p, &alice, &sudo, T0 + 299));
        assert!(!g.admits(&p, &alice, &sudo, T0 + 300), "expired");
        assert!(!g.admits(&p, &alice, &sudo, T0 - 1), "clock went back");
        assert!(!g.admits(&p, &alice, &ctx("sudo", "192.0.2.8", "pts/4"), T0 + 1));
        assert!(!g.admits(&p, &UserName::test("bob"), &sudo, T0 + 1));
        assert!(
            !g.admits(&p, &alice, &ctx("sshd", "192.0.2.7", "pts/1"), T0 + 1),
            "sshd is not listed"
        );
        g.forget(&alice);
        assert!(!g.admits(&p, &alice, &sudo, T0 + 1));
    }

    #[test]
    fn a_tty_match_needs_the_same_tty() {
        let p = on(Match::Tty);
        let mut g = Graces::default();
        let alice = UserName::test("alice");
        g.remember(&p, &alice, &ctx("login", "", "tty1"), T0);
        assert!(g.admits(&p, &alice, &ctx("su", "", "tty1"), T0 + 5));
        assert!(!g.admits(&p, &alice, &ctx("su", "", "tty2"), T0 + 5));
        // No tty: never.
        g.remember(&p, &alice, &ctx("sshd", "192.0.2.7", ""), T0);
        assert!(!g.admits(&p, &alice, &ctx("sudo", "192.0.2.7", ""), T0 + 5));
        let both = on(Match::Both);
        g.remember(&both, &alice, &ctx("sshd", "192.0.2.7", "pts/1"), T0);
        assert!(g.admits(&both, &alice, &ctx("sudo", "192.0.2.7", "pts/1"), T0 + 5));
        assert!(!g.admits(&both, &alice, &ctx("sudo", "", "pts/1"), T0 + 5));
    }

    #[test]
    fn grants_are_bounded() {
        let p = on(Match::RemoteHost);
        let mut g = Graces::default();
        for i in 0..(MAX_GRANTS + 5) {
            let u = UserName::test(&format!("u{i}"));
            g.remember(&p, &u, &ctx("sshd", "h", ""), T0);
        }
        assert!(g.grants.len() <= MAX_GRANTS);
    }
}

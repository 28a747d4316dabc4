//! Grace for sudo/su after a login (off by default): a code accepted for a
//! user is remembered for `seconds`, for the same user and the same origin,
//! so that `sudo` right after an SSH login does not need the next code.
//! Only the listed PAM services may use it (never sshd unless the admin
//! lists it).
//!
//! The origin is, by default, the login session: the nearest session
//! leader among the processes that ran the PAM stack of the accepted code
//! (for an SSH login, sshd's process for that connection; for the console,
//! `login`; for sudo or su, the user's shell). A later login gets the grace
//! only while that very process (pid and start time) is still running and
//! is one of its own ancestors. The kernel keeps the parent chain; a user
//! cannot make a process of another session descend from this one. The
//! remote host (PAM_RHOST) or the tty (PAM_TTY) can be chosen instead, but
//! sshd and sudo report different ones for the same session (the client's
//! address and `ssh` at the SSH login, none and the terminal at sudo), so
//! those serve sudo or su again from the same place, not the SSH login.
//!
//! The grants live in the daemon's memory only: a restart ends every
//! grace, which is the safer failure. The trade-off: within the window, a
//! process running as that user inside that session (or from that origin)
//! can authenticate without a code; the origin match is what limits it.

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
    /// The same login session: the later login runs inside the session
    /// (a descendant of its leader process) the code was typed in.
    #[default]
    Session,
    /// The same PAM_RHOST (an empty one is the local machine).
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
            by: Match::Session,
            services: vec!["sudo".into(), "su".into()],
        }
    }
}

impl Policy {
    /// The origin a code accepted in `ctx` is remembered for, or `None`
    /// when it cannot be told (a tty match without a tty, a session match
    /// without a known session): such a login gives no grace.
    fn origin(&self, ctx: &LoginContext) -> Option<String> {
        match self.by {
            Match::Session => ctx.lineage.session().map(|p| p.key()),
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
    /// an allowed service, the same origin (for a session match: a grant
    /// anchored at one of the caller's own ancestors), fewer than `seconds`
    /// since the remembered code (a clock that went back gives none).
    pub fn admits(&self, policy: &Policy, user: &UserName, ctx: &LoginContext, now: u64) -> bool {
        if policy.seconds == 0 || !policy.services.contains(&ctx.service) {
            return false;
        }
        let origins: Vec<String> = match policy.by {
            Match::Session => ctx.lineage.processes().iter().map(Process::key).collect(),
            _ => policy.origin(ctx).into_iter().collect(),
        };
        origins.into_iter().any(|origin| {
            self.grants
                .get(&(user.as_str().to_owned(), origin))
                .is_some_and(|&at| at <= now && now < at.saturating_add(policy.seconds))
        })
    }

    /// Forgets every grant of `user` (reset, new enrollment).
    pub fn forget(&mut self, user: &UserName) {
        self.grants.retain(|(u, _), _| u != user.as_str());
    }
}

/// Deepest ancestor chain read: a deeper one is cut (and its far end
/// then gives no grace).
pub const MAX_LINEAGE: usize = 64;

/// One process among those that ran a PAM stack, as the daemon read it
/// from `/proc/PID/stat`: enough to tell a login session, and the start
/// time so that a pid used again by a later process is not taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Start time (clock ticks after boot).
    pub start: u64,
    /// Whether it leads its session (session id = pid).
    pub session_leader: bool,
}

impl Process {
    fn key(&self) -> String {
        format!("session={}@{}", self.pid, self.start)
    }
}

/// The process that runs the PAM stack (the daemon's peer) and its
/// ancestors, nearest first, without init (pid 1). Empty when unknown (not
/// a root caller, grace off, `/proc` not readable): no session grace then.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage(Vec<Process>);

impl Lineage {
    /// Builds a lineage from `(pid, stat)` pairs read from the caller
    /// upwards (see [`Stat::parse`]). The chain ends at the first entry
    /// that is not the parent the previous one named, that started after
    /// its child (a pid taken again by a newer process), that is init, or
    /// after [`MAX_LINEAGE`] entries.
    pub fn from_stats(stats: impl IntoIterator<Item = Stat>) -> Self {
        let mut out: Vec<Process> = Vec::new();
        let mut expect: Option<u32> = None;
        let mut child_start = u64::MAX;
        for s in stats.into_iter().take(MAX_LINEAGE) {
            if s.pid <= 1 || expect.is_some_and(|p| p != s.pid) || s.start > child_start {
                break;
            }
            out.push(Process {
                pid: s.pid,
                start: s.start,
                session_leader: s.session == s.pid,
            });
            expect = Some(s.ppid);
            child_start = s.start;
        }
        Self(out)
    }

    /// Nearest first.
    pub fn processes(&self) -> &[Process] {
        &self.0
    }

    /// The login session: the nearest session leader.
    pub fn session(&self) -> Option<&Process> {
        self.0.iter().find(|p| p.session_leader)
    }
}

/// The fields of `/proc/PID/stat` a lineage needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 1.
    pub pid: u32,
    /// Field 4: the parent.
    pub ppid: u32,
    /// Field 6: the session id.
    pub session: u32,
    /// Field 22: start time in clock ticks after boot.
    pub start: u64,
}

impl Stat {
    /// Parses one `/proc/PID/stat` line. The command name (field 2) is
    /// chosen by the process's owner and may hold spaces and parentheses,
    /// so the fields after it are found after the last `)`. `None` for
    /// anything else than the kernel's format.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let open = bytes.iter().position(|&b| b == b'(')?;
        let close = bytes.iter().rposition(|&b| b == b')')?;
        if close < open {
            return None;
        }
        let pid = std::str::from_utf8(&bytes[..open]).ok()?.trim_end();
        let rest = std::str::from_utf8(bytes.get(close + 1..)?).ok()?;
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        // fields[0] is field 3 (state).
        let field = |n: usize| fields.get(n - 3).copied();
        Some(Self {
            pid: pid.parse().ok()?,
            ppid: field(4)?.parse().ok()?,
            session: field(6)?.parse().ok()?,
            start: field(22)?.parse().ok()?,
        })
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
            ..LoginContext::default()
        }
    }

    fn stat(pid: u32, ppid: u32, session: u32, start: u64) -> Stat {
        Stat {
            pid,
            ppid,
            session,
            start,
        }
    }

    /// A process tree as an SSH login and a later sudo in it see it:
    /// sshd's listener 100 (its own session), the connection's process 200
    /// (session leader), its PAM auth child 201; later the user's session
    /// process 210, their shell 300 (leader of a new session), sudo 301.
    fn at_ssh_login() -> LoginContext {
        LoginContext {
            service: "sshd".into(),
            remote_host: "192.0.2.7".into(),
            tty: "ssh".into(),
            lineage: Lineage::from_stats([
                stat(201, 200, 200, 5001),
                stat(200, 100, 200, 5000),
                stat(100, 1, 100, 10),
            ]),
            ..LoginContext::default()
        }
    }

    fn sudo_in(shell: u32, shell_start: u64, session_proc: u32) -> LoginContext {
        LoginContext {
            service: "sudo".into(),
            tty: "/dev/pts/3".into(),
            lineage: Lineage::from_stats([
                stat(shell + 1, shell, shell, shell_start + 50),
                stat(shell, session_proc, shell, shell_start),
                stat(session_proc, 200, 200, 5100),
                stat(200, 100, 200, 5000),
                stat(100, 1, 100, 10),
            ]),
            ..LoginContext::default()
        }
    }

    #[test]
    fn a_session_match_carries_the_ssh_login_to_sudo_inside_that_session_only() {
        let p = on(Match::Session);
        let mut g = Graces::default();
        let alice = UserName::test("alice");
        g.remember(&p, &alice, &at_ssh_login(), T0);
        assert!(g.admits(&p, &alice, &sudo_in(300, 6000, 210), T0 + 10));
        assert!(
            !g.admits(&p, &alice, &sudo_in(300, 6000, 210), T0 + 300),
            "expired"
        );
        assert!(!g.admits(
            &p,
            &UserName::test("bob"),
            &sudo_in(300, 6000, 210),
            T0 + 10
        ));

        // Another SSH connection of the same user, from the same host:
        // its own connection process 400, not a descendant of 200.
        let other = LoginContext {
            service: "sudo".into(),
            remote_host: "192.0.2.7".into(),
            lineage: Lineage::from_stats([
                stat(501, 500, 500, 9050),
                stat(500, 410, 500, 9000),
                stat(410, 400, 400, 8900),
                stat(400, 100, 400, 8800),
                stat(100, 1, 100, 10),
            ]),
            ..LoginContext::default()
        };
        assert!(!g.admits(&p, &alice, &other, T0 + 10));

        // The connection process gone and its pid used again later: the
        // start time differs, no grace.
        let reused = LoginContext {
            service: "sudo".into(),
            lineage: Lineage::from_stats([
                stat(301, 300, 300, 9950),
                stat(300, 200, 300, 9900),
                stat(200, 100, 200, 9800),
                stat(100, 1, 100, 10),
            ]),
            ..LoginContext::default()
        };
        assert!(!g.admits(&p, &alice, &reused, T0 + 10));

        // Unknown lineage (not read): nothing given, nothing taken.
        assert!(!g.admits(&p, &alice, &ctx("sudo", "192.0.2.7", "ssh"), T0 + 10));
        let mut g2 = Graces::default();
        g2.remember(&p, &alice, &ctx("sshd", "192.0.2.7", "ssh"), T0);
        assert!(g2.grants.is_empty());
    }

    #[test]
    fn sudo_again_in_the_same_shell_is_the_same_session_and_the_shells_listener_is_not() {
        let p = on(Match::Session);
        let mut g = Graces::default();
        let alice = UserName::test("alice");
        // A sudo with a code in shell 300: the grant is the shell's.
        g.remember(&p, &alice, &sudo_in(300, 6000, 210), T0);
        assert!(g.admits(&p, &alice, &sudo_in(300, 6000, 210), T0 + 5));
        // Another shell of the same SSH connection (another session): no.
        assert!(!g.admits(&p, &alice, &sudo_in(320, 6100, 211), T0 + 5));
    }

    #[test]
    fn a_lineage_stops_at_a_broken_link() {
        // A parent that started after its child is a pid taken again.
        let l = Lineage::from_stats([stat(50, 40, 40, 100), stat(40, 30, 30, 200)]);
        assert_eq!(l.processes().len(), 1);
        assert_eq!(l.session(), None);
        // An entry that is not the named parent.
        let l = Lineage::from_stats([stat(50, 40, 50, 100), stat(41, 30, 30, 50)]);
        assert_eq!(l.processes().len(), 1);
        assert_eq!(l.session().map(|p| p.pid), Some(50));
        // init is never part of it.
        let l = Lineage::from_stats([stat(50, 1, 1, 100), stat(1, 0, 1, 0)]);
        assert_eq!(l.processes().len(), 1);
        let deep = (0..200u32).map(|i| stat(1000 - i, 999 - i, 7, 5000 - u64::from(i)));
        assert_eq!(Lineage::from_stats(deep).processes().len(), MAX_LINEAGE);
    }

    #[test]
    fn stat_lines_parse_with_any_command_name() {
        let line = b"4242 (sshd: al) (x) S 4200 4242 4200 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 2 3\n";
        assert_eq!(Stat::parse(line), Some(stat(4242, 4200, 4200, 987_654)));
        assert_eq!(Stat::parse(b""), None);
        assert_eq!(Stat::parse(b"12 (x"), None);
        assert_eq!(Stat::parse(b"12 x) S 1 1 1"), None);
        assert_eq!(Stat::parse(b"12 (x) S 1 2 3"), None);
        assert_eq!(
            Stat::parse(b"-1 (x) S 1 1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5"),
            None
        );
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

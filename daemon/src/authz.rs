//! Who may call what, from the socket peer's kernel-checked credentials.
//!
//! * root (uid 0) and members of the admin group: everything;
//! * any other local user: Verify and GetStatus for their own account, and
//!   the self-service changes of their own account (see
//!   [`otpd_core::ops::self_service`]: a proof of possession in the same
//!   request, decided by the engine; `[self_service]` in otpd.toml).
//!
//! Everything is judged from what the kernel recorded when the peer
//! connected: uid, gid and pid (`SO_PEERCRED`) and the supplementary groups
//! (`SO_PEERGROUPS`) of the process that opened the connection, not from
//! what /etc/group says the user would get at a new login. A connection's
//! rights are those of the process that opened it: whoever is handed the
//! descriptor gets them.

use std::os::fd::AsFd;
use std::sync::Arc;

use nix::unistd::{Gid, Group};

use otpd_core::ops::self_service::Policy as SelfServicePolicy;

use crate::accounts::Accounts;
use crate::error::Error;
use crate::record::UserName;

/// What the kernel says about a connection's peer, read once when the
/// connection is accepted.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Effective uid at connect time.
    pub uid: Option<u32>,
    /// Effective gid at connect time.
    pub gid: Option<u32>,
    /// Process id at connect time.
    pub pid: Option<i32>,
    /// Supplementary groups at connect time (empty if the kernel could not
    /// say: then only the primary group counts).
    pub groups: Arc<[u32]>,
}

impl Peer {
    /// Reads the peer credentials of an accepted connection.
    pub fn of(stream: &tokio::net::UnixStream) -> Self {
        let cred = stream.peer_cred().ok();
        let groups = match otpd_peercred::peer_groups(stream.as_fd()) {
            Ok(groups) => Arc::from(groups),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the peer's groups (SO_PEERGROUPS); only its primary group counts");
                Arc::from([])
            }
        };
        Self {
            uid: cred.map(|c| c.uid()),
            gid: cred.map(|c| c.gid()),
            pid: cred.and_then(|c| c.pid()),
            groups,
        }
    }
}

/// The authorisation policy.
#[derive(Debug, Default)]
pub struct Authz {
    admin_gid: Option<u32>,
    accounts: Accounts,
    /// What plain users may do on their own account (`[self_service]`).
    self_service: SelfServicePolicy,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Peer uid.
    pub uid: u32,
    /// Peer pid (for the audit trail).
    pub pid: Option<i32>,
    /// Login name of `uid`, if it has one.
    pub name: Option<String>,
    /// Root or admin-group member.
    pub admin: bool,
}

impl Authz {
    /// Resolves the admin group (it must exist).
    pub fn new(admin_group: Option<&str>) -> Result<Self, Error> {
        let admin_gid = match admin_group {
            None => None,
            Some(name) => {
                let group = Group::from_name(name)
                    .map_err(|e| Error::Config {
                        path: "admin_group".into(),
                        reason: format!("cannot look up group {name:?}: {e}"),
                    })?
                    .ok_or_else(|| Error::Config {
                        path: "admin_group".into(),
                        reason: format!("group {name:?} does not exist"),
                    })?;
                Some(Gid::as_raw(group.gid))
            }
        };
        Ok(Self {
            admin_gid,
            accounts: Accounts::default(),
            self_service: SelfServicePolicy::default(),
        })
    }

    /// Lets plain users change their own account as `policy` says.
    pub fn with_self_service(mut self, policy: SelfServicePolicy) -> Self {
        self.self_service = policy;
        self
    }

    /// What plain users may do on their own account.
    pub fn self_service(&self) -> &SelfServicePolicy {
        &self.self_service
    }

    /// Identifies the caller from its credentials. No credentials, no
    /// access. The login name comes from the name service, off the async
    /// workers and cached briefly ([`crate::accounts`]).
    pub async fn caller(&self, peer: Option<&Peer>) -> Result<Caller, Error> {
        let Some((uid, gid)) = peer.and_then(|p| Some((p.uid?, p.gid?))) else {
            return Err(Error::PermissionDenied(
                "the caller's credentials are unknown".into(),
            ));
        };
        let pid = peer.and_then(|p| p.pid);
        if uid == 0 {
            // Every login calls as root: no name-service lookup for it.
            return Ok(Caller {
                uid,
                pid,
                name: Some("root".into()),
                admin: true,
            });
        }
        let groups = peer.map(|p| Arc::clone(&p.groups)).unwrap_or_default();
        let name = self.accounts.name_of(uid).await;
        Ok(Caller {
            uid,
            pid,
            name,
            admin: self.is_admin(uid, gid, &groups),
        })
    }

    /// Root, or a process whose primary or supplementary groups (as the
    /// kernel recorded them) include the admin group.
    pub fn is_admin(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        uid == 0
            || self
                .admin_gid
                .is_some_and(|admin| gid == admin || groups.contains(&admin))
    }
}

impl Caller {
    /// Allows admins only.
    pub fn require_admin(&self, what: &str) -> Result<(), Error> {
        if self.admin {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "{what} is for root and the admin group; uid {} may only verify codes \
                 for and read the status of its own account",
                self.uid
            )))
        }
    }

    /// Allows admins, and a user acting on their own account.
    pub fn require_self_or_admin(&self, user: &UserName, what: &str) -> Result<(), Error> {
        if self.admin || self.name.as_deref() == Some(user.as_str()) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "uid {} may {what} only for its own account",
                self.uid
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid: Some(uid),
            gid: Some(gid),
            pid: None,
            groups: Arc::from(groups),
        }
    }

    #[tokio::test]
    async fn root_is_admin_nobody_is_not() -> Result<(), Error> {
        let a = Authz::new(None)?;
        let root = a.caller(Some(&peer(0, 0, &[]))).await?;
        assert!(root.admin);
        assert!(root.require_admin("reset").is_ok());
        let nobody = a.caller(Some(&peer(65534, 65534, &[]))).await?;
        assert!(!nobody.admin);
        assert!(nobody.require_admin("reset").is_err());
        assert!(
            nobody
                .require_self_or_admin(&UserName::test("nobody"), "verify")
                .is_ok()
        );
        assert!(
            nobody
                .require_self_or_admin(&UserName::test("root"), "verify")
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn admin_group_by_primary_or_supplementary_gid_of_the_process() -> Result<(), Error> {
        // Group "nogroup" (65534) exists on Debian; use it as the admin group.
        let a = Authz::new(Some("nogroup"))?;
        assert!(a.is_admin(65534, 65534, &[]));
        assert!(a.is_admin(1, 1, &[4, 65534]));
        assert!(!a.is_admin(1, 1, &[4, 27]));
        assert!(!Authz::new(None)?.is_admin(1, 65534, &[65534]));
        Ok(())
    }

    #[tokio::test]
    async fn missing_credentials_or_group_are_refused() {
        let a = Authz::default();
        assert!(a.caller(None).await.is_err());
        let no_gid = Peer {
            uid: Some(0),
            ..Peer::default()
        };
        assert!(a.caller(Some(&no_gid)).await.is_err());
        assert!(Authz::new(Some("no-such-group-otpd")).is_err());
    }
}

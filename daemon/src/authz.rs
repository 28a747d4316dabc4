//! Who may call what, from the socket peer's kernel-checked credentials.
//!
//! * root (uid 0) and members of the admin group: everything;
//! * any other local user: Verify and GetStatus for their own account only.

use nix::unistd::{Gid, Group, Uid, User};

use crate::error::Error;
use crate::record::UserName;

/// The authorisation policy.
#[derive(Debug, Clone, Default)]
pub struct Authz {
    admin_group: Option<(String, Gid)>,
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
        let admin_group = match admin_group {
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
                Some((name.to_owned(), group.gid))
            }
        };
        Ok(Self { admin_group })
    }

    /// Identifies the caller from its credentials. No credentials, no access.
    pub fn caller(
        &self,
        uid: Option<u32>,
        gid: Option<u32>,
        pid: Option<i32>,
    ) -> Result<Caller, Error> {
        let (Some(uid), Some(gid)) = (uid, gid) else {
            return Err(Error::PermissionDenied(
                "the caller's credentials are unknown".into(),
            ));
        };
        if uid == 0 {
            // Every login calls as root: no name-service lookup for it.
            return Ok(Caller {
                uid,
                pid,
                name: Some("root".into()),
                admin: true,
            });
        }
        let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        let name = user.as_ref().map(|u| u.name.clone());
        let admin = uid == 0 || self.in_admin_group(user.as_ref(), Gid::from_raw(gid));
        Ok(Caller {
            uid,
            pid,
            name,
            admin,
        })
    }

    fn in_admin_group(&self, user: Option<&User>, primary: Gid) -> bool {
        let Some((_, admin_gid)) = &self.admin_group else {
            return false;
        };
        if primary == *admin_gid {
            return true;
        }
        let Some(user) = user else { return false };
        let Ok(name) = std::ffi::CString::new(user.name.as_bytes()) else {
            return false;
        };
        nix::unistd::getgrouplist(&name, user.gid)
            .map(|groups| groups.contains(admin_gid))
            .unwrap_or(false)
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

    #[test]
    fn root_is_admin_nobody_is_not() -> Result<(), Error> {
        let a = Authz::new(None)?;
        let root = a.caller(Some(0), Some(0), None)?;
        assert!(root.admin);
        assert!(root.require_admin("reset").is_ok());
        let nobody = a.caller(Some(65534), Some(65534), None)?;
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
    fn admin_group_by_primary_gid() -> Result<(), Error> {
        // Group "nogroup" (65534) exists on Debian; use it as the admin group.
        let a = Authz::new(Some("nogroup"))?;
        assert!(a.caller(Some(65534), Some(65534), None)?.admin);
        assert!(!a.caller(Some(1), Some(1), None)?.admin);
        Ok(())
    }

    #[test]
    fn missing_credentials_or_group_are_refused() {
        assert!(Authz::default().caller(None, None, None).is_err());
        assert!(Authz::new(Some("no-such-group-otpd")).is_err());
    }
}

//! Group membership from the name service (NSS: local files, SSSD, LDAP),
//! for the enforcement policy: the groups a user is in, and the users a
//! policy may cover (for `otpctl status --must-enroll`).
//!
//! Lookups run on the blocking pool and are bounded by [`LOOKUP_TIMEOUT`]:
//! a slow or failed directory gives [`Membership::Unknown`], and the policy
//! then fails closed (the user is covered unless exempt by name).

use std::collections::BTreeSet;
use std::ffi::CString;
use std::time::Duration;

use nix::unistd::{Gid, Group, User};
use otpd_core::enforcement::{self, Enforcement, Membership, NOBODY_UID, Require};

/// How long one user's group lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the inventory of covered users may take.
pub const INVENTORY_TIMEOUT: Duration = Duration::from_secs(30);

/// The groups `user` is in (primary and supplementary), by name; a system
/// account (uid below `min_uid`, or `nobody`) as such.
pub async fn of(user: &str, min_uid: u32) -> Membership {
    let name = user.to_owned();
    let lookup = tokio::task::spawn_blocking(move || lookup(&name, min_uid));
    match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
        Ok(Ok(Ok(m))) => m,
        Ok(Ok(Err(e))) => {
            tracing::warn!(user, error = %e, "cannot look up the user's groups; policy fails closed");
            Membership::Unknown
        }
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(
                user,
                "the user's group lookup did not finish in time; policy fails closed"
            );
            Membership::Unknown
        }
    }
}

fn is_system(uid: u32, min_uid: u32) -> bool {
    uid < min_uid || uid == NOBODY_UID
}

fn lookup(user: &str, min_uid: u32) -> Result<Membership, String> {
    let Some(account) = User::from_name(user).map_err(|e| e.to_string())? else {
        // No such account: a member of no group.
        return Ok(Membership::Groups(Vec::new()));
    };
    let cname = CString::new(user).map_err(|e| e.to_string())?;
    let gids = nix::unistd::getgrouplist(&cname, account.gid).map_err(|e| e.to_string())?;
    let mut names = Vec::with_capacity(gids.len());
    for gid in gids {
        match Group::from_gid(gid).map_err(|e| e.to_string())? {
            Some(g) => names.push(g.name),
            // A gid without a name matches no configured group.
            None => continue,
        }
    }
    if is_system(account.uid.as_raw(), min_uid) {
        Ok(Membership::System(names))
    } else {
        Ok(Membership::Groups(names))
    }
}

/// The users `policy` may cover, for the inventory: the listed members of
/// its groups, and from `/etc/passwd` the accounts whose primary group is
/// one of them (or, with `require = "everyone"`, every regular account:
/// uid from `min_uid`, not `nobody`, a login shell). Directory users who are in no listed
/// group by name cannot be enumerated; they appear once otpd knows them.
/// Blocking; bounded by [`INVENTORY_TIMEOUT`] when run through
/// [`candidates_bounded`].
pub fn candidates(policy: &Enforcement) -> Result<BTreeSet<String>, String> {
    let mut users = BTreeSet::new();
    let mut gids: Vec<Gid> = Vec::new();
    if policy.require == Require::Groups {
        for name in &policy.groups {
            if let Some(g) = Group::from_name(name).map_err(|e| e.to_string())? {
                gids.push(g.gid);
                users.extend(g.mem);
            }
        }
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        let [name, _, uid, gid, _, _, shell] = fields[..] else {
            continue;
        };
        let (Ok(uid), Ok(gid)) = (uid.parse::<u32>(), gid.parse::<u32>()) else {
            continue;
        };
        let takes = match policy.require {
            Require::Nobody => false,
            Require::Groups => gids.contains(&Gid::from_raw(gid)),
            Require::Everyone => enforcement::is_login_account(uid, shell, policy.min_uid),
        };
        if takes {
            users.insert(name.to_owned());
        }
    }
    Ok(users)
}

/// [`candidates`] off the async workers, within [`INVENTORY_TIMEOUT`].
pub async fn candidates_bounded(policy: Enforcement) -> Result<BTreeSet<String>, String> {
    let job = tokio::task::spawn_blocking(move || candidates(&policy));
    match tokio::time::timeout(INVENTORY_TIMEOUT, job).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the name service did not answer in time".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn root_is_in_the_root_group_and_strangers_in_none() {
        match of("root", 1000).await {
            Membership::System(g) => assert!(g.iter().any(|n| n == "root"), "{g:?}"),
            other => panic!("root is a system account in group root: {other:?}"),
        }
        // With min_uid 0, root is a user like any other.
        assert!(matches!(of("root", 0).await, Membership::Groups(_)));
        assert_eq!(
            of("no-such-user-otpd-test", 1000).await,
            Membership::Groups(Vec::new())
        );
    }

    #[test]
    fn groups_policy_takes_primary_members() {
        let p = Enforcement {
            require: Require::Groups,
            groups: vec!["root".into()],
            ..Enforcement::default()
        };
        let c = candidates(&p).unwrap_or_default();
        assert!(c.contains("root"), "{c:?}");
        assert!(
            candidates(&Enforcement::default())
                .unwrap_or_default()
                .is_empty()
        );
    }
}

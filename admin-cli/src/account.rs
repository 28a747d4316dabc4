//! Whether a login name can be, and is, an account on this machine, for
//! `otpctl enroll`: a typo must not leave a record (and a pending secret)
//! for a user who does not exist.

use nix::unistd::User;

use crate::error::Error;

/// Why `name` cannot be the name of any account, if it cannot: what otpd
/// refuses for every request (empty, over 256 bytes, NUL or control
/// characters, ':', a leading '-'), and what no passwd entry can hold
/// ('/', "." and "..", only digits, which tools take for a uid, and blanks
/// at either end).
pub fn impossible(name: &str) -> Option<String> {
    if let Err(e) = otpd_core::record::UserName::parse(name.as_bytes()) {
        return Some(e.to_string());
    }
    if name.contains('/') {
        return Some("contains '/'".into());
    }
    if name == "." || name == ".." {
        return Some(format!("is {name:?}"));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Some("is all digits (a uid, not a name)".into());
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Some("starts or ends with a blank".into());
    }
    None
}

/// What the name service says about an account name.
#[derive(Debug, PartialEq, Eq)]
pub enum Known {
    Yes,
    No,
    /// The lookup failed (a directory that does not answer).
    Unknown(String),
}

/// Looks `name` up in the name service (files, LDAP, SSSD: whatever
/// nsswitch.conf says).
pub fn lookup(name: &str) -> Known {
    match User::from_name(name) {
        Ok(Some(_)) => Known::Yes,
        Ok(None) => Known::No,
        Err(e) => Known::Unknown(e.to_string()),
    }
}

/// Refuses a name no account can have, and (without `force`) one the name
/// service does not know. `Ok(true)`: enroll anyway, though the name service
/// does not know it (the caller warns).
pub fn check(name: &str, force: bool) -> Result<bool, Error> {
    if let Some(why) = impossible(name) {
        return Err(Error::ImpossibleUser {
            user: name.to_owned(),
            why,
        });
    }
    match (lookup(name), force) {
        (Known::Yes, _) => Ok(false),
        (Known::No | Known::Unknown(_), true) => Ok(true),
        (Known::No, false) => Err(Error::UnknownAccount {
            user: name.to_owned(),
        }),
        (Known::Unknown(reason), false) => Err(Error::AccountLookup {
            user: name.to_owned(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_no_account_can_have() {
        for (name, why) in [
            ("", "invalid user name: empty"),
            ("a:b", "invalid user name: contains ':'"),
            ("-rf", "invalid user name: starts with '-'"),
            ("a\nb", "invalid user name: contains a control character"),
            ("../etc", "contains '/'"),
            ("..", "is \"..\""),
            ("1000", "is all digits (a uid, not a name)"),
            (" alice", "starts or ends with a blank"),
        ] {
            assert_eq!(impossible(name).as_deref(), Some(why), "{name:?}");
        }
        let long = "a".repeat(257);
        assert!(impossible(&long).is_some());
        // Directory names: realm and domain forms, a machine account.
        for name in [
            "alice",
            "a.b-c_d",
            "alice@example.com",
            "EXAMPLE\\alice",
            "host$",
            "2fa",
        ] {
            assert_eq!(impossible(name), None, "{name:?}");
        }
    }

    #[test]
    fn the_name_service_knows_root_and_not_a_typo() {
        assert_eq!(lookup("root"), Known::Yes);
        assert_eq!(lookup("ghostuser-typo"), Known::No);
        assert!(matches!(check("root", false), Ok(false)));
        assert!(matches!(
            check("ghostuser-typo", false),
            Err(Error::UnknownAccount { .. })
        ));
        assert!(matches!(check("ghostuser-typo", true), Ok(true)));
        assert!(matches!(
            check("a/b", true),
            Err(Error::ImpossibleUser { .. })
        ));
    }
}

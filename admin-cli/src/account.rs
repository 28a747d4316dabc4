//! Whether a login name can be, and is, an account on this machine, for
//! `otpctl enroll`: a typo must not leave a record (and a pending secret)
//! for a user who does not exist.

use std::collections::BTreeSet;
use std::path::Path;

use nix::unistd::User;
use otpd_core::enforcement;

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

/// The login accounts of a passwd file (see
/// [`otpd_core::enforcement::is_login_account`]), by name.
pub fn login_accounts(passwd: &Path, min_uid: u32) -> Result<BTreeSet<String>, Error> {
    let text = std::fs::read_to_string(passwd).map_err(|source| Error::Read {
        path: passwd.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let [name, _, uid, _, _, _, shell] = fields[..] else {
                return None;
            };
            let uid = uid.parse::<u32>().ok()?;
            enforcement::is_login_account(uid, shell, min_uid).then(|| name.to_owned())
        })
        .collect())
}

/// otpd's `[enforcement] min_uid` from its config file: `config`, else
/// [`DEFAULT_CONFIG`] when it exists; the default when neither says.
pub fn min_uid(config: Option<&Path>) -> Result<u32, Error> {
    let (path, explicit) = match config {
        Some(path) => (path, true),
        None => (Path::new(DEFAULT_CONFIG), false),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(enforcement::DEFAULT_MIN_UID);
        }
        Err(source) => {
            return Err(Error::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let table = text.parse::<toml::Table>().map_err(|e| {
        Error::InvalidInput(format!(
            "{}: not valid TOML: {}",
            path.display(),
            e.message()
        ))
    })?;
    match table.get("enforcement").and_then(|e| e.get("min_uid")) {
        None => Ok(enforcement::DEFAULT_MIN_UID),
        Some(value) => value
            .as_integer()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "{}: [enforcement] min_uid is not a uid",
                    path.display()
                ))
            }),
    }
}

/// otpd's config file unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/otpd/otpd.toml";

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
    fn login_accounts_of_a_passwd_file_and_min_uid_of_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0:root:/root:/bin/bash\n\
             alice:x:1001:1001::/home/alice:/bin/bash\n\
             svc:x:1002:1002::/srv:/usr/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n\
             broken line\n\
             sys:x:900:900::/:/bin/sh\n",
        )
        .unwrap();
        let names = |min| {
            login_accounts(&passwd, min)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(names(1000), ["alice"]);
        assert_eq!(names(0), ["alice", "root", "sys"]);
        let config = dir.path().join("otpd.toml");
        std::fs::write(&config, "[enforcement]\nmin_uid = 900\n").unwrap();
        assert_eq!(min_uid(Some(&config)).unwrap(), 900);
        std::fs::write(&config, "issuer = \"x\"\n").unwrap();
        assert_eq!(min_uid(Some(&config)).unwrap(), 1000);
        std::fs::write(&config, "[enforcement]\nmin_uid = -1\n").unwrap();
        assert!(min_uid(Some(&config)).is_err());
        assert!(min_uid(Some(&dir.path().join("missing"))).is_err());
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

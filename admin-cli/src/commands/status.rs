//! `otpctl status [USER]`: GetStatus for one user, ListUsers page by page
//! for all, printed as each page arrives (`--locked`, `--pending`,
//! `--low-backup-codes[=N]`, `--no-recovery`: filtered by otpd);
//! `--must-enroll`: ListMustEnroll.

use std::process::ExitCode;

use std::collections::BTreeSet;
use std::path::Path;

use otpd_proto::v1::{
    GetStatusRequest, ListMustEnrollRequest, ListUsersRequest, State, UserStatus,
};

use tonic::Code;

use crate::cli::{AllAccounts, StatusFilters};
use crate::client::Client;
use crate::error::Error;
use crate::output::Printer;

/// Users asked for per ListUsers call.
pub const PAGE: u32 = 1000;

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    user: Option<String>,
    must_enroll: bool,
    filters: StatusFilters,
    all: AllAccounts,
) -> Result<ExitCode, Error> {
    if must_enroll {
        let reply = client
            .list_must_enroll(ListMustEnrollRequest {})
            .await?
            .into_inner();
        p.must_enroll(&reply)?;
        return Ok(ExitCode::SUCCESS);
    }
    // --all: the login accounts otpd has no record of are listed too.
    let mut accounts = if all.all {
        let min_uid = crate::account::min_uid(all.config.as_deref())?;
        let passwd = all.passwd.as_deref().unwrap_or(Path::new("/etc/passwd"));
        crate::account::login_accounts(passwd, min_uid)?
    } else {
        BTreeSet::new()
    };
    match user {
        Some(user) => one(client, p, user).await?,
        None => {
            // Page by page, printing as it goes: memory stays bounded by
            // one page however many users there are. A filtered page may
            // be empty while more follow (otpd reads a bounded number of
            // records per call).
            let mut after = String::new();
            let mut page = match client
                .list_users(list_request(after.clone(), filters))
                .await
            {
                Ok(page) => page.into_inner(),
                // A plain user may not list everyone: their own account.
                Err(s) if s.code() == Code::PermissionDenied && filters.is_empty() && !all.all => {
                    one(client, p, crate::proof::own_name()).await?;
                    return Ok(ExitCode::SUCCESS);
                }
                Err(s) => return Err(s.into()),
            };
            let mut listing = p.status_listing()?;
            loop {
                let next = next_page(&after, page.next_after)?;
                let mut users = page.users;
                users.extend(without_record(
                    &mut accounts,
                    &users,
                    &page.unreadable,
                    next.as_deref(),
                ));
                listing.page(&users, &page.unreadable)?;
                if listing.stdout_closed() {
                    // `| head` has what it wanted.
                    break;
                }
                match next {
                    Some(next) => after = next,
                    None => break,
                }
                let request = list_request(after.clone(), filters);
                page = client.list_users(request).await?.into_inner();
            }
            listing.finish()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Takes from `accounts` those that the listing has shown to have no
/// record: every one up to `next` (the last name of this page; `None`:
/// the listing is complete) that is not among this page's `users` or
/// `unreadable`. Their state is not enrolled.
fn without_record(
    accounts: &mut BTreeSet<String>,
    users: &[UserStatus],
    unreadable: &[String],
    next: Option<&str>,
) -> Vec<UserStatus> {
    for name in users.iter().map(|u| &u.user).chain(unreadable) {
        accounts.remove(name);
    }
    let rest = match next {
        Some(next) => accounts.split_off(next),
        None => BTreeSet::new(),
    };
    std::mem::replace(accounts, rest)
        .into_iter()
        // split_off keeps `next` itself on the right: it had a record or is
        // shown with a later page.
        .map(|user| UserStatus {
            user,
            state: State::NotEnrolled.into(),
            ..UserStatus::default()
        })
        .collect()
}

/// The status of one user.
async fn one(client: &mut Client, p: &mut Printer<'_>, user: String) -> Result<(), Error> {
    let request = GetStatusRequest {
        user: user.into_bytes().into(),
    };
    let status = client.get_status(request).await?.into_inner();
    let mut listing = p.status_listing()?;
    listing.page(&[status], &[])?;
    listing.finish()?;
    Ok(())
}

/// The ListUsers call for the page after `after`, with the filters.
fn list_request(after: String, f: StatusFilters) -> ListUsersRequest {
    ListUsersRequest {
        after,
        limit: PAGE,
        locked: f.locked,
        pending: f.pending,
        low_backup_codes: f.low_backup_codes.is_some(),
        backup_codes_at_most: f.low_backup_codes.flatten(),
        no_recovery_path: f.no_recovery,
    }
}

/// Where the listing goes on after a page that ended at `next_after`:
/// `None` when it is complete. Names only grow: a daemon that does not move
/// on would have us ask for the same page forever.
fn next_page(after: &str, next_after: String) -> Result<Option<String>, Error> {
    if next_after.is_empty() {
        Ok(None)
    } else if next_after.as_str() <= after {
        Err(Error::ListingStuck {
            after: after.to_owned(),
        })
    } else {
        Ok(Some(next_after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_ends_on_an_empty_next_after_and_never_goes_back() {
        assert!(matches!(next_page("", String::new()), Ok(None)));
        assert!(matches!(next_page("bob", String::new()), Ok(None)));
        assert_eq!(
            next_page("", "bob".into()).ok().flatten().as_deref(),
            Some("bob")
        );
        assert_eq!(
            next_page("bob", "carol".into()).ok().flatten().as_deref(),
            Some("carol")
        );
        for stuck in ["bob", "alice"] {
            let e = next_page("bob", stuck.into()).err();
            assert!(matches!(e, Some(Error::ListingStuck { .. })), "{stuck}");
        }
    }

    #[test]
    fn accounts_without_a_record_fill_the_gaps_of_each_page() {
        let status = |name: &str| UserStatus {
            user: name.into(),
            state: State::Active.into(),
            ..UserStatus::default()
        };
        let names = |v: Vec<UserStatus>| v.into_iter().map(|u| u.user).collect::<Vec<_>>();
        let mut accounts: BTreeSet<String> = ["alice", "bob", "carol", "dave", "erin"]
            .map(String::from)
            .into();
        // Page 1 ends at "carol" (bob is unreadable); alice has a record.
        let extra = without_record(
            &mut accounts,
            &[status("alice"), status("carol")],
            &["bob".into()],
            Some("carol"),
        );
        assert!(extra.is_empty(), "{:?}", names(extra));
        // Page 2 (the last) has "zed", a directory user: dave and erin
        // have no record.
        let extra = without_record(&mut accounts, &[status("zed")], &[], None);
        assert_eq!(names(extra), ["dave", "erin"]);
        assert!(extra_is_not_enrolled(&mut accounts));
    }

    fn extra_is_not_enrolled(accounts: &mut BTreeSet<String>) -> bool {
        accounts.insert("x".into());
        let extra = without_record(accounts, &[], &[], None);
        accounts.is_empty() && extra.iter().all(|u| u.state() == State::NotEnrolled)
    }

    #[test]
    fn filters_go_to_otpd() {
        let r = list_request("bob".into(), StatusFilters::default());
        assert_eq!(
            r,
            ListUsersRequest {
                after: "bob".into(),
                limit: PAGE,
                ..ListUsersRequest::default()
            }
        );
        let low = |n| StatusFilters {
            low_backup_codes: Some(n),
            ..StatusFilters::default()
        };
        let r = list_request(String::new(), low(None));
        assert!(r.low_backup_codes && r.backup_codes_at_most.is_none());
        let r = list_request(String::new(), low(Some(0)));
        assert!(r.low_backup_codes && r.backup_codes_at_most == Some(0));
        let all = StatusFilters {
            locked: true,
            pending: true,
            low_backup_codes: None,
            no_recovery: true,
        };
        let r = list_request(String::new(), all);
        assert!(r.locked && r.pending && r.no_recovery_path && !r.low_backup_codes);
    }
}

//! `otpctl status [USER]`: GetStatus for one user, ListUsers page by page
//! for all.

use std::process::ExitCode;

use otpd_proto::v1::{GetStatusRequest, ListUsersRequest};

use crate::client::Client;
use crate::error::Error;
use crate::output::Printer;

/// Users asked for per ListUsers call.
pub const PAGE: u32 = 1000;

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    user: Option<String>,
) -> Result<ExitCode, Error> {
    match user {
        Some(user) => {
            let request = GetStatusRequest {
                user: user.into_bytes().into(),
            };
            let status = client.get_status(request).await?.into_inner();
            let mut listing = p.status_listing()?;
            listing.page(&[status], &[])?;
            listing.finish()?;
        }
        None => {
            // Page by page, printing as it goes: memory stays bounded by
            // one page however many users there are.
            let mut listing = p.status_listing()?;
            let mut after = String::new();
            loop {
                let request = ListUsersRequest {
                    after: after.clone(),
                    limit: PAGE,
                };
                let page = client.list_users(request).await?.into_inner();
                listing.page(&page.users, &page.unreadable)?;
                if page.next_after.is_empty() {
                    break;
                }
                // Names only grow: a daemon that does not move on would
                // have us ask for the same page forever.
                if page.next_after <= after {
                    return Err(Error::ListingStuck { after });
                }
                after = page.next_after;
            }
            listing.finish()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

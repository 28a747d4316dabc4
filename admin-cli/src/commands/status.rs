//! `otpctl status [USER]`: GetStatus for one user, ListUsers for all.

use std::process::ExitCode;

use otpd_proto::v1::{GetStatusRequest, ListUsersRequest};

use crate::client::Client;
use crate::error::Error;
use crate::output::Printer;

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
            p.status(&[status], &[])?;
        }
        None => {
            let list = client
                .list_users(ListUsersRequest::default())
                .await?
                .into_inner();
            p.status(&list.users, &list.unreadable)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

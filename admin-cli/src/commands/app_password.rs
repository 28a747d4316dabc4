//! `otpctl app-password add|list|revoke`: a user's app passwords.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use otpd_proto::v1::{AddAppPasswordRequest, ListAppPasswordsRequest, RevokeAppPasswordRequest};
use tonic::Code;
use zeroize::Zeroizing;

use crate::cli::AppPasswordCommand;
use crate::client::Client;
use crate::error::Error;
use crate::output::Printer;

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    command: AppPasswordCommand,
) -> Result<ExitCode, Error> {
    match command {
        AppPasswordCommand::Add(args) => {
            let mut response = crate::proof::with_proof(|proof| {
                let request = AddAppPasswordRequest {
                    user: args.user.as_bytes().to_vec().into(),
                    service: args.service.clone(),
                    label: args.label.clone(),
                    expires_in_seconds: args.expires.unwrap_or(0),
                    proof_code: proof.into(),
                };
                let mut client = client.clone();
                async move { client.add_app_password(request).await }
            })
            .await?
            .into_inner();
            let password = Zeroizing::new(std::mem::take(&mut response.password));
            let issued = response.app_password.unwrap_or_default();
            p.app_password_added(&args.user, &password, &issued)?;
        }
        AppPasswordCommand::List(args) => {
            let request = ListAppPasswordsRequest {
                user: args.user.as_bytes().to_vec().into(),
            };
            let list = client.list_app_passwords(request).await?.into_inner();
            p.app_passwords(&args.user, &list.app_passwords, unix_now())?;
        }
        AppPasswordCommand::Revoke(args) => {
            crate::proof::with_proof(|proof| {
                let request = RevokeAppPasswordRequest {
                    user: args.user.as_bytes().to_vec().into(),
                    id: args.id.clone(),
                    proof_code: proof.into(),
                };
                let mut client = client.clone();
                async move { client.revoke_app_password(request).await }
            })
            .await
            .map_err(|s| match s.code() {
                Code::NotFound => Error::NoSuchAppPassword {
                    user: args.user.clone(),
                    id: args.id.clone(),
                },
                _ => Error::Status(s),
            })?;
            p.app_password_revoked(&args.user, &args.id)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Unix seconds now (0 if the clock is before 1970): only to mark expired
/// app passwords in the list.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

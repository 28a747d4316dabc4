//! `otpctl confirm USER CODE`: EnrollConfirm, then show the backup codes.

use std::process::ExitCode;

use otpd_proto::v1::EnrollConfirmRequest;
use zeroize::Zeroizing;

use crate::cli::UserCodeArgs;
use crate::client::Client;
use crate::error::Error;
use crate::output::Printer;

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: UserCodeArgs,
) -> Result<ExitCode, Error> {
    let codes = confirm(client, &args.user, args.code.into_bytes()).await?;
    p.backup_codes(&args.user, &codes)?;
    Ok(ExitCode::SUCCESS)
}

/// Confirms the pending enrollment of `user` with `code`; returns the new
/// backup codes. A wrong code is the daemon's UNAUTHENTICATED status.
pub async fn confirm(
    client: &mut Client,
    user: &str,
    code: Vec<u8>,
) -> Result<Zeroizing<Vec<String>>, Error> {
    let request = EnrollConfirmRequest {
        user: user.as_bytes().to_vec().into(),
        code: code.into(),
    };
    let response = client.enroll_confirm(request).await?.into_inner();
    Ok(Zeroizing::new(response.backup_codes))
}

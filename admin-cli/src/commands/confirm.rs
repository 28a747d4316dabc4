//! `otpctl confirm USER CODE`: EnrollConfirm, then show the backup codes
//! (or, for a device added beside others, that the codes are unchanged).

use std::process::ExitCode;

use otpd_proto::v1::EnrollConfirmRequest;
use zeroize::Zeroizing;

use crate::cli::UserCodeArgs;
use crate::client::Client;
use crate::error::Error;
use crate::output::Printer;

/// A confirmed enrollment.
pub struct Confirmation {
    /// The device now active (empty from an older otpd).
    pub device: String,
    /// true: added beside the other devices, the backup codes unchanged;
    /// false: a (re-)enrollment with the new `backup_codes`.
    pub added_device: bool,
    pub backup_codes: Zeroizing<Vec<String>>,
}

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: UserCodeArgs,
) -> Result<ExitCode, Error> {
    let confirmation = confirm(client, &args.user, args.code.into_bytes()).await?;
    p.confirmed(&args.user, &confirmation)?;
    Ok(ExitCode::SUCCESS)
}

/// Confirms the pending enrollment of `user` with `code`. A wrong code is
/// the daemon's UNAUTHENTICATED status.
pub async fn confirm(
    client: &mut Client,
    user: &str,
    code: Vec<u8>,
) -> Result<Confirmation, Error> {
    let request = EnrollConfirmRequest {
        user: user.as_bytes().to_vec().into(),
        code: code.into(),
    };
    let response = client.enroll_confirm(request).await?.into_inner();
    Ok(Confirmation {
        device: response.device,
        added_device: response.added_device,
        backup_codes: Zeroizing::new(response.backup_codes),
    })
}

//! `otpctl backup-codes USER`: RegenerateBackupCodes.

use std::process::ExitCode;

use otpd_proto::v1::RegenerateBackupCodesRequest;
use zeroize::Zeroizing;

use crate::cli::UserArgs;
use crate::client::Client;
use crate::error::Error;
use crate::output::Printer;

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: UserArgs,
) -> Result<ExitCode, Error> {
    let request = RegenerateBackupCodesRequest {
        user: args.user.as_bytes().to_vec().into(),
    };
    let response = client.regenerate_backup_codes(request).await?.into_inner();
    let codes = Zeroizing::new(response.backup_codes);
    p.backup_codes(&args.user, &codes)?;
    Ok(ExitCode::SUCCESS)
}

//! `otpctl backup-codes USER`: RegenerateBackupCodes.

use std::process::ExitCode;

use otpd_proto::v1::RegenerateBackupCodesRequest;
use zeroize::Zeroizing;

use crate::cli::OwnUserArgs;
use crate::client::Client;
use crate::error::Error;
use crate::output::Printer;

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: OwnUserArgs,
) -> Result<ExitCode, Error> {
    let response = crate::proof::with_proof(|proof| {
        let request = RegenerateBackupCodesRequest {
            user: args.user.as_bytes().to_vec().into(),
            proof_code: proof.into(),
        };
        let mut client = client.clone();
        async move { client.regenerate_backup_codes(request).await }
    })
    .await?
    .into_inner();
    let codes = Zeroizing::new(response.backup_codes);
    p.backup_codes(&args.user, &codes)?;
    Ok(ExitCode::SUCCESS)
}

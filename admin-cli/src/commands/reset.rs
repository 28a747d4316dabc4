//! `otpctl reset USER`: remove everything otpd keeps about the user.

use std::process::ExitCode;

use otpd_proto::v1::ResetRequest;

use crate::cli::UserArgs;
use crate::client::Client;
use crate::error::Error;
use crate::output::Printer;

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: UserArgs,
) -> Result<ExitCode, Error> {
    crate::proof::with_proof(|proof| {
        let request = ResetRequest {
            user: args.user.as_bytes().to_vec().into(),
            proof_code: proof.into(),
        };
        let mut client = client.clone();
        async move { client.reset(request).await }
    })
    .await?;
    p.reset(&args.user)?;
    Ok(ExitCode::SUCCESS)
}

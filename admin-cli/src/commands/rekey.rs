//! `otpctl rekey`: re-seal every record under a new master key.

use std::process::ExitCode;

use otpd_proto::v1::RekeyRequest;

use crate::client::Client;
use crate::error::Error;
use crate::output::Printer;

pub async fn run(client: &mut Client, p: &mut Printer<'_>) -> Result<ExitCode, Error> {
    let response = client.rekey(RekeyRequest {}).await?.into_inner();
    p.rekeyed(response.records)?;
    Ok(ExitCode::SUCCESS)
}

//! `otpctl unlock USER`: clear a lockout, the throttle and the counters.

use std::process::ExitCode;

use otpd_proto::v1::UnlockRequest;

use crate::cli::UserArgs;
use crate::client::Client;
use crate::error::Error;
use crate::output::Printer;

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: UserArgs,
) -> Result<ExitCode, Error> {
    let request = UnlockRequest {
        user: args.user.as_bytes().to_vec().into(),
    };
    client.unlock(request).await?;
    p.unlocked(&args.user)?;
    Ok(ExitCode::SUCCESS)
}

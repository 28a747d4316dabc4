//! `otpctl verify USER CODE`: check a code as the PAM module would.

use std::process::ExitCode;

use otpd_proto::v1::{Decision, VerifyRequest};

use crate::cli::VerifyArgs;
use crate::client::Client;
use crate::error::{Error, exit};
use crate::output::Printer;

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: VerifyArgs,
) -> Result<ExitCode, Error> {
    let request = VerifyRequest {
        user: args.user.as_bytes().to_vec().into(),
        code: args.code.into_bytes().into(),
        service: args.service,
        remote_host: String::new(),
        tty: String::new(),
        local_requester: None,
        allow_app_password: false,
        grace_only: false,
    };
    let response = client.verify(request).await?.into_inner();
    p.verify(&args.user, &response)?;
    Ok(if response.decision() == Decision::Accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::REJECTED)
    })
}

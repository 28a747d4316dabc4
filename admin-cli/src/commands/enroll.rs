//! `otpctl enroll USER`: EnrollStart, show the QR code and key, and on a
//! terminal ask for the first code and confirm.

use std::io::{self, BufRead, IsTerminal};
use std::mem;
use std::process::ExitCode;

use otpd_proto::v1::{self as pb, EnrollStartRequest, EnrollStartResponse};
use zeroize::Zeroizing;

use crate::cli::{Algorithm, Digits, EnrollArgs};
use crate::client::Client;
use crate::commands::confirm::confirm;
use crate::error::Error;
use crate::output::Printer;
use crate::qr::{PngFile, Qr};

/// A started enrollment. The secret and the URI (which holds it) are wiped
/// from memory when dropped.
pub struct Enrollment {
    pub user: String,
    pub issuer: String,
    pub secret: Zeroizing<String>,
    pub otpauth_uri: Zeroizing<String>,
    pub algorithm: pb::Algorithm,
    pub digits: u32,
    pub period: u32,
}

impl From<EnrollStartResponse> for Enrollment {
    fn from(mut r: EnrollStartResponse) -> Self {
        Enrollment {
            algorithm: r.algorithm(),
            user: mem::take(&mut r.user),
            issuer: mem::take(&mut r.issuer),
            secret: Zeroizing::new(mem::take(&mut r.secret_base32)),
            otpauth_uri: Zeroizing::new(mem::take(&mut r.otpauth_uri)),
            digits: r.digits,
            period: r.period,
        }
    }
}

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: EnrollArgs,
) -> Result<ExitCode, Error> {
    // Create the PNG first: a bad path must not leave a pending enrollment.
    let png = args.qr_png.as_deref().map(PngFile::create).transpose()?;
    let (enrollment, qr) = match start(client, &args).await {
        Ok(started) => started,
        Err(e) => {
            if let Some(png) = png {
                png.discard();
            }
            return Err(e);
        }
    };
    if let Some(png) = png {
        qr.write_png(png)?;
    }
    let terminal = (!p.is_json()).then(|| qr.to_terminal());
    p.enrollment(
        &enrollment,
        terminal.as_deref().map(String::as_str),
        args.qr_png.as_deref(),
    )?;
    drop(terminal);

    if p.is_json() || !io::stdin().is_terminal() {
        p.confirm_hint(&args.user, false)?;
        return Ok(ExitCode::SUCCESS);
    }
    p.confirm_prompt()?;
    let code = match read_code()? {
        Some(code) if !code.is_empty() => code,
        Some(_) => {
            p.confirm_hint(&args.user, false)?;
            return Ok(ExitCode::SUCCESS);
        }
        None => {
            p.confirm_hint(&args.user, true)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let codes = confirm(client, &args.user, code.as_bytes().to_vec()).await?;
    p.confirmed_at_prompt(&args.user, &codes)?;
    Ok(ExitCode::SUCCESS)
}

async fn start(client: &mut Client, args: &EnrollArgs) -> Result<(Enrollment, Qr), Error> {
    let request = EnrollStartRequest {
        user: args.user.as_bytes().to_vec().into(),
        issuer: args.issuer.clone().unwrap_or_default(),
        device: String::new(),
        add_device: false,
        algorithm: match args.algorithm {
            None => pb::Algorithm::Unspecified,
            Some(Algorithm::Sha1) => pb::Algorithm::Sha1,
            Some(Algorithm::Sha256) => pb::Algorithm::Sha256,
            Some(Algorithm::Sha512) => pb::Algorithm::Sha512,
        }
        .into(),
        digits: match args.digits {
            None => 0,
            Some(Digits::Six) => 6,
            Some(Digits::Eight) => 8,
        },
        period: args.period.unwrap_or(0),
    };
    let enrollment = Enrollment::from(client.enroll_start(request).await?.into_inner());
    let qr = Qr::new(&enrollment.otpauth_uri)?;
    Ok((enrollment, qr))
}

/// Reads one line from stdin; `None` at end of input. Apps show codes as
/// "123 456", so all whitespace is dropped.
fn read_code() -> Result<Option<Zeroizing<String>>, Error> {
    let mut line = Zeroizing::new(String::new());
    let n = io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(Error::Prompt)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(Zeroizing::new(
        line.chars().filter(|c| !c.is_whitespace()).collect(),
    )))
}

//! `otpctl enroll USER` (and `otpctl device add USER NAME`): EnrollStart,
//! show the QR code and key, and on a terminal ask for the first code and
//! confirm.

use std::io::{self, BufRead, IsTerminal};
use std::mem;
use std::process::ExitCode;

use otpd_proto::v1::{
    self as pb, EnrollStartRequest, EnrollStartResponse, GetStatusRequest, UserStatus,
};
use tonic::Code;
use zeroize::Zeroizing;

use crate::cli::{Algorithm, Digits, EnrollArgs, TotpOptions};
use crate::client::Client;
use crate::commands::confirm::confirm;
use crate::error::Error;
use crate::output::Printer;
use crate::qr::{PngFile, Qr};

/// Codes asked for at the prompt of an interactive enroll before giving
/// up (the enrollment then stays pending for `otpctl confirm`).
pub const CONFIRM_TRIES: u32 = 3;

/// A started enrollment. The secret and the URI (which holds it) are wiped
/// from memory when dropped.
pub struct Enrollment {
    pub user: String,
    pub device: String,
    pub issuer: String,
    pub secret: Zeroizing<String>,
    pub otpauth_uri: Zeroizing<String>,
    pub algorithm: pb::Algorithm,
    pub digits: u32,
    pub period: u32,
}

impl Enrollment {
    /// From the daemon's answer to a start for device `requested` (the
    /// name shown when an older otpd does not echo it).
    fn new(mut r: EnrollStartResponse, requested: &str) -> Self {
        let device = match mem::take(&mut r.device) {
            name if name.is_empty() => requested.to_owned(),
            name => name,
        };
        Enrollment {
            algorithm: r.algorithm(),
            user: mem::take(&mut r.user),
            device,
            issuer: mem::take(&mut r.issuer),
            secret: Zeroizing::new(mem::take(&mut r.secret_base32)),
            otpauth_uri: Zeroizing::new(mem::take(&mut r.otpauth_uri)),
            digits: r.digits,
            period: r.period,
        }
    }
}

/// What to enroll: a first (or replacing) device, or one beside the others.
pub struct NewDevice<'a> {
    pub user: &'a str,
    pub device: &'a str,
    /// true: `device add` (beside the active devices); false: `enroll`.
    pub add_device: bool,
    pub totp: &'a TotpOptions,
    /// What the enrollment replaces once confirmed (`enroll` of a user who
    /// has devices or a pending enrollment).
    pub replacing: Option<Replacing>,
}

/// A re-enrollment: what the user has now, and which parameters of the new
/// device were taken from the device it replaces.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replacing {
    /// The active devices: name and parameters ("sha256/8/60s").
    pub devices: Vec<(String, String)>,
    /// The device whose enrollment awaits confirmation (dropped now).
    pub pending: Option<String>,
    /// The device the parameters were kept from, and which ones (those
    /// not given on the command line).
    pub kept_from: Option<String>,
    pub kept: Vec<&'static str>,
}

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    mut args: EnrollArgs,
) -> Result<ExitCode, Error> {
    if crate::account::check(&args.user, args.force)? {
        p.warn(&format!(
            "the name service does not know {:?}; enrolling it anyway (--force)",
            args.user
        ))?;
    }
    // What the user has now; an error is left to EnrollStart to report.
    let request = GetStatusRequest {
        user: args.user.as_bytes().to_vec().into(),
    };
    let replacing = match client.get_status(request).await {
        Ok(status) => replacing(&status.into_inner(), &mut args.totp),
        Err(_) => None,
    };
    let new = NewDevice {
        user: &args.user,
        device: &args.device,
        add_device: false,
        totp: &args.totp,
        replacing,
    };
    enroll(client, p, &new).await
}

/// What enrolling replaces for a user in state `s`, if anything; the
/// parameters not given in `totp` are set to those of the user's first
/// active device, so that a re-enrollment keeps them.
fn replacing(s: &UserStatus, totp: &mut TotpOptions) -> Option<Replacing> {
    let pending = (!s.pending_device.is_empty()).then(|| s.pending_device.clone());
    if s.devices.is_empty() && pending.is_none() {
        return None;
    }
    let devices = s
        .devices
        .iter()
        .map(|d| (d.name.clone(), crate::output::device_totp_text(d)))
        .collect();
    let mut kept = Vec::new();
    let first = s.devices.first();
    if let Some(d) = first {
        if totp.algorithm.is_none() {
            totp.algorithm = match d.algorithm() {
                pb::Algorithm::Sha1 => Some(Algorithm::Sha1),
                pb::Algorithm::Sha256 => Some(Algorithm::Sha256),
                pb::Algorithm::Sha512 => Some(Algorithm::Sha512),
                pb::Algorithm::Unspecified => None,
            };
            if totp.algorithm.is_some() {
                kept.push("algorithm");
            }
        }
        if totp.digits.is_none() {
            totp.digits = match d.digits {
                6 => Some(Digits::Six),
                8 => Some(Digits::Eight),
                _ => None,
            };
            if totp.digits.is_some() {
                kept.push("digits");
            }
        }
        if totp.period.is_none() && !d.hotp && d.period > 0 && !totp.hotp {
            totp.period = Some(d.period);
            kept.push("period");
        }
        if totp.issuer.is_none() && !d.issuer.is_empty() {
            totp.issuer = Some(d.issuer.clone());
            kept.push("issuer");
        }
    }
    Some(Replacing {
        devices,
        pending,
        kept_from: first.filter(|_| !kept.is_empty()).map(|d| d.name.clone()),
        kept,
    })
}

/// The whole flow of `enroll` and `device add`: start, QR code and key,
/// then (on a terminal, without --json) the first code and confirmation.
pub async fn enroll(
    client: &mut Client,
    p: &mut Printer<'_>,
    new: &NewDevice<'_>,
) -> Result<ExitCode, Error> {
    let user = new.user;
    // Create the PNG first: a bad path must not leave a pending enrollment.
    let png = new
        .totp
        .qr_png
        .as_deref()
        .map(PngFile::create)
        .transpose()?;
    let (enrollment, qr) = match start(client, new).await {
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
        new.totp.qr_png.as_deref(),
        new.replacing.as_ref(),
    )?;
    drop(terminal);

    // A closed stdout (`| head`) would hide the prompt: the enrollment is
    // started, confirm it with `otpctl confirm`.
    if p.is_json() || !io::stdin().is_terminal() || p.stdout_closed() {
        p.confirm_hint(user, false)?;
        return Ok(ExitCode::SUCCESS);
    }
    for tries_left in (0..CONFIRM_TRIES).rev() {
        p.confirm_prompt()?;
        let code = match read_code()? {
            Some(code) if !code.is_empty() => code,
            Some(_) => {
                p.confirm_hint(user, false)?;
                return Ok(ExitCode::SUCCESS);
            }
            None => {
                p.confirm_hint(user, true)?;
                return Ok(ExitCode::SUCCESS);
            }
        };
        match confirm(client, user, code.as_bytes().to_vec()).await {
            Ok(confirmation) => {
                p.confirmed_at_prompt(user, &confirmation)?;
                return Ok(ExitCode::SUCCESS);
            }
            // A wrong code: the enrollment stays pending; try again.
            Err(Error::Status(s)) if s.code() == Code::Unauthenticated => {
                if tries_left > 0 {
                    p.confirm_retry(s.message(), tries_left)?;
                    continue;
                }
                return Err(Error::NotConfirmed {
                    user: user.to_owned(),
                    tries: CONFIRM_TRIES,
                    reason: s.message().to_owned(),
                    expires_at: pending_expiry(client, user).await,
                    again: if new.add_device {
                        format!("otpctl device add {user} {}", new.device)
                    } else {
                        format!("otpctl enroll {user}")
                    },
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Until when `user`'s pending enrollment can be confirmed (RFC 3339), if
/// otpd says.
async fn pending_expiry(client: &mut Client, user: &str) -> Option<String> {
    let request = GetStatusRequest {
        user: user.as_bytes().to_vec().into(),
    };
    let status = client.get_status(request).await.ok()?.into_inner();
    crate::output::rfc3339(status.pending_expires_at)
}

async fn start(client: &mut Client, new: &NewDevice<'_>) -> Result<(Enrollment, Qr), Error> {
    let totp = new.totp;
    let request = EnrollStartRequest {
        user: new.user.as_bytes().to_vec().into(),
        issuer: totp.issuer.clone().unwrap_or_default(),
        device: new.device.to_owned(),
        add_device: new.add_device,
        algorithm: match totp.algorithm {
            None => pb::Algorithm::Unspecified,
            Some(Algorithm::Sha1) => pb::Algorithm::Sha1,
            Some(Algorithm::Sha256) => pb::Algorithm::Sha256,
            Some(Algorithm::Sha512) => pb::Algorithm::Sha512,
        }
        .into(),
        digits: match totp.digits {
            None => 0,
            Some(Digits::Six) => 6,
            Some(Digits::Eight) => 8,
        },
        period: totp.period.unwrap_or(0),
        hotp: totp.hotp,
        proof_code: Default::default(),
    };
    let response = crate::proof::with_proof(|proof| {
        let request = EnrollStartRequest {
            proof_code: proof.into(),
            ..request.clone()
        };
        let mut client = client.clone();
        async move { client.enroll_start(request).await }
    })
    .await
    .map_err(|s| Error::for_device(s, new.user, None, Some(new.device)))?
    .into_inner();
    let enrollment = Enrollment::new(response, new.device);
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

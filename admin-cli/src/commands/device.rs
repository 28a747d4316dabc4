//! `otpctl device add|list|rename|remove`: a user's devices.

use std::process::ExitCode;

use otpd_proto::v1::{GetStatusRequest, RemoveDeviceRequest, RenameDeviceRequest, UserStatus};
use tonic::Code;

use crate::cli::{DeviceCommand, DeviceRemoveArgs};
use crate::client::Client;
use crate::commands::enroll::{self, NewDevice};
use crate::error::Error;
use crate::output::Printer;

pub async fn run(
    client: &mut Client,
    p: &mut Printer<'_>,
    command: DeviceCommand,
) -> Result<ExitCode, Error> {
    match command {
        DeviceCommand::Add(args) => {
            let new = NewDevice {
                user: &args.user,
                device: &args.name,
                add_device: true,
                totp: &args.totp,
                replacing: None,
            };
            return enroll::enroll(client, p, &new).await;
        }
        DeviceCommand::List(args) => {
            let status = get_status(client, &args.user).await?;
            p.devices(&status)?;
        }
        DeviceCommand::Rename(args) => {
            crate::proof::with_proof(|proof| {
                let request = RenameDeviceRequest {
                    user: args.user.as_bytes().to_vec().into(),
                    name: args.old.clone(),
                    new_name: args.new.clone(),
                    proof_code: proof.into(),
                };
                let mut client = client.clone();
                async move { client.rename_device(request).await }
            })
            .await
            .map_err(|s| Error::for_device(s, &args.user, Some(&args.old), Some(&args.new)))?;
            p.device_renamed(&args.user, &args.old, &args.new)?;
        }
        DeviceCommand::Remove(args) => remove(client, p, args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn get_status(client: &mut Client, user: &str) -> Result<UserStatus, Error> {
    let request = GetStatusRequest {
        user: user.as_bytes().to_vec().into(),
    };
    Ok(client.get_status(request).await?.into_inner())
}

/// Removes a device; the user's last active one only with `--force`. The
/// check here gives the explanation before anything changes; the daemon
/// checks again (FAILED_PRECONDITION), which decides a race.
async fn remove(
    client: &mut Client,
    p: &mut Printer<'_>,
    args: DeviceRemoveArgs,
) -> Result<(), Error> {
    if !args.force && is_last_active(&get_status(client, &args.user).await?, &args.name) {
        return Err(Error::LastDevice {
            user: args.user,
            device: args.name,
        });
    }
    let response = crate::proof::with_proof(|proof| {
        let request = RemoveDeviceRequest {
            user: args.user.as_bytes().to_vec().into(),
            name: args.name.clone(),
            allow_last: args.force,
            proof_code: proof.into(),
        };
        let mut client = client.clone();
        async move { client.remove_device(request).await }
    })
    .await
    .map_err(|s| remove_error(s, &args))?
    .into_inner();
    Ok(p.device_removed(&args.user, &args.name, response.devices_left)?)
}

/// The error of a RemoveDevice call: without `--force`, FAILED_PRECONDITION
/// is the daemon's "last device" refusal (it decides when a device came or
/// went since our check), with the same explanation.
fn remove_error(status: tonic::Status, args: &DeviceRemoveArgs) -> Error {
    match status.code() {
        Code::FailedPrecondition if !args.force => Error::LastDevice {
            user: args.user.clone(),
            device: args.name.clone(),
        },
        _ => Error::for_device(status, &args.user, Some(&args.name), None),
    }
}

/// Whether `name` is the only active device of the user.
fn is_last_active(status: &UserStatus, name: &str) -> bool {
    matches!(status.devices.as_slice(), [only] if only.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpd_proto::v1::Device;

    fn with(devices: &[&str], pending: &str) -> UserStatus {
        UserStatus {
            devices: devices
                .iter()
                .map(|n| Device {
                    name: (*n).to_owned(),
                    ..Default::default()
                })
                .collect(),
            pending_device: pending.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn the_daemons_refusal_gets_the_same_explanation() {
        let mut args = DeviceRemoveArgs {
            user: "alice".into(),
            name: "phone".into(),
            force: false,
        };
        let refused = || tonic::Status::failed_precondition("last device");
        let e = remove_error(refused(), &args);
        assert!(matches!(e, Error::LastDevice { .. }), "{e}");
        assert_eq!(e.exit_code(), 5);
        assert!(e.to_string().contains("--force"), "{e}");
        let e = remove_error(tonic::Status::not_found("no such device"), &args);
        assert!(matches!(e, Error::NoSuchDevice { .. }), "{e}");
        // With --force a refusal is something else: the daemon's words.
        args.force = true;
        let e = remove_error(refused(), &args);
        assert_eq!(e.to_string(), "failed precondition: last device");
    }

    #[test]
    fn only_the_last_active_device_needs_force() {
        assert!(is_last_active(&with(&["phone"], ""), "phone"));
        assert!(is_last_active(&with(&["phone"], "tablet"), "phone"));
        // The pending device, another device, or one of several: no.
        assert!(!is_last_active(&with(&["phone"], "tablet"), "tablet"));
        assert!(!is_last_active(&with(&["phone"], ""), "nope"));
        assert!(!is_last_active(&with(&["phone", "spare"], ""), "phone"));
        assert!(!is_last_active(&with(&[], ""), "phone"));
    }
}

//! ImportDevice over gRPC: a device moved over from another tool logs in
//! at once; a dry run, a refused import and bad input write nothing.

use otpd::secret::TotpSecret;
use otpd::totp::{TotpParams, code_at_step, step_of};
use otpd_proto::v1 as pb;
use otpd_tests::*;
use tonic::Code;

const KEY: &[u8] = b"12345678901234567890";

fn import(user: &str) -> pb::ImportDeviceRequest {
    pb::ImportDeviceRequest {
        user: user.as_bytes().to_vec().into(),
        device: "phone".into(),
        secret: KEY.to_vec().into(),
        backup_codes: vec!["12345678".into(), "23456789".into()],
        source: "test".into(),
        ..pb::ImportDeviceRequest::default()
    }
}

fn code_at(t: u64) -> String {
    let secret = TotpSecret::from_bytes(KEY.to_vec());
    let p = TotpParams::default();
    code_at_step(&secret, p, step_of(p, t)).to_string()
}

fn state(s: &pb::UserStatus) -> pb::State {
    s.state()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_writes_nothing_then_the_import_logs_in_at_once() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let r = c
        .import_device(pb::ImportDeviceRequest {
            dry_run: true,
            ..import("alice")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.dry_run && !r.replaced);
    assert_eq!((r.device.as_str(), r.backup_codes), ("phone", 2));
    assert_eq!(
        state(&status(&mut c, "alice").await),
        pb::State::NotEnrolled
    );

    let r = c.import_device(import("alice")).await.unwrap().into_inner();
    assert!(!r.dry_run);
    let s = status(&mut c, "alice").await;
    assert_eq!(state(&s), pb::State::Active);
    assert_eq!(s.backup_codes_left, 2);
    assert_eq!(s.devices.len(), 1);
    assert_eq!(s.devices[0].name, "phone");
    let v = verify(&mut c, "alice", &code_at(T0)).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
    assert_eq!(v.device, "phone");
    let v = verify(&mut c, "alice", "23456789").await;
    assert_eq!(v.method(), pb::Method::BackupCode, "{v:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enrolled_user_is_refused_without_replace_and_replaced_with_it() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let (app, _) = enroll(&mut c, "bob", T0).await;
    let err = c.import_device(import("bob")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("--replace"), "{err}");
    // Still the old device.
    d.clock.advance(30);
    let v = verify(&mut c, "bob", &app.code_at(T0 + 30)).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");

    let r = c
        .import_device(pb::ImportDeviceRequest {
            replace: true,
            ..import("bob")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.replaced);
    d.clock.advance(30);
    let v = verify(&mut c, "bob", &app.code_at(T0 + 60)).await;
    assert_eq!(
        v.decision(),
        pb::Decision::Rejected,
        "the replaced device still works"
    );
    let v = verify(&mut c, "bob", &code_at(T0 + 60)).await;
    assert_eq!(v.decision(), pb::Decision::Accepted, "{v:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_replay_state_of_the_old_tool_is_kept() {
    let d = InProcess::start();
    let mut c = d.client().await;
    let step = step_of(TotpParams::default(), T0);
    c.import_device(pb::ImportDeviceRequest {
        last_used_step: step,
        ..import("carol")
    })
    .await
    .unwrap();
    let v = verify(&mut c, "carol", &code_at(T0)).await;
    assert_eq!(v.reason(), pb::Reason::Replayed, "{v:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_writes_nothing() {
    let d = InProcess::start();
    let mut c = d.client().await;
    for bad in [
        pb::ImportDeviceRequest {
            secret: b"short".to_vec().into(),
            ..import("dave")
        },
        pb::ImportDeviceRequest {
            backup_codes: vec!["123".into()],
            ..import("dave")
        },
        pb::ImportDeviceRequest {
            digits: 7,
            ..import("dave")
        },
        pb::ImportDeviceRequest {
            device: "no spaces".into(),
            ..import("dave")
        },
        pb::ImportDeviceRequest {
            user: b"da\0ve".to_vec().into(),
            ..import("dave")
        },
    ] {
        let err = c.import_device(bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(
            !err.message().contains("1234567890"),
            "the key in an error: {err}"
        );
    }
    assert_eq!(state(&status(&mut c, "dave").await), pb::State::NotEnrolled);
}

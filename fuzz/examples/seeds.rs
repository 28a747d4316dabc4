//! Writes the seed corpora under fuzz/corpus/<target>/: small, meaningful
//! inputs (valid ones and near misses) for each target. Re-run after a
//! format change:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seeds
//!
//! Seeds are named after what they hold; the fuzzer's own finds go into
//! the same directories under hash names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use otpd::record::UserRecord;
use otpd::secret::TotpSecret;
use otpd::totp::{TotpParams, code_at_step, step_of};
use otpd_fuzz::{ALICE_SECRET, T0, key, user};
use otpd_proto::v1 as pb;
use prost::Message;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    for (name, code) in [
        ("six", &b"123456"[..]),
        ("eight", b"12345678"),
        ("five", b"12345"),
        ("nine", b"123456789"),
        ("space", b"123 456"),
        ("letter", b"12345a"),
        ("nul", b"123\x00456"),
        ("utf8", "١٢٣٤٥٦".as_bytes()),
    ] {
        write("code", name, code);
    }

    for (name, user) in [
        ("plain", &b"alice"[..]),
        ("utf8", "jürgen".as_bytes()),
        ("domain", b"DOMAIN\\john smith"),
        ("colon", b"a:b"),
        ("dash", b"-rf"),
        ("newline", b"a\nb"),
        ("bidi", "a\u{202e}b".as_bytes()),
        ("invalid_utf8", b"\xff\xfe"),
        ("max", &[b'a'; 256]),
        ("too_long", &[b'a'; 257]),
    ] {
        write("user_name", name, user);
    }

    let example =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../otpd.toml.example")).unwrap();
    write("config", "example", &example);
    write("config", "empty", b"");
    write(
        "config",
        "sections",
        b"socket = \"/run/otpd/otpd.sock\"\nsocket_mode = 0o666\n[totp]\ndigits = 8\nperiod = 60\nwindow = 2\n[lockout]\nthreshold = 3\nduration_seconds = 60\nmax_duration_seconds = 3600\n",
    );
    write("config", "unknown_key", b"[totp]\ndigitz = 6\n");
    write("config", "bad_value", b"[totp]\nperiod = 0\n");

    for (name, answer) in [
        ("password_code", &b"hunter2123456"[..]),
        ("password_backup", b"hunter212345678"),
        ("trailing_newline", b"pw123456 \n"),
        ("code_only", b"123456"),
        ("too_short", b"12345"),
        ("letter_in_code", b"pw12345a"),
        ("space_in_code", b"pw123 456"),
        ("empty", b""),
    ] {
        write("pam_answer", name, answer);
    }

    // Sealed records under the fixed key: `0` + sealed bytes, `1` + plaintext.
    let secret = TotpSecret::from_bytes(ALICE_SECRET.to_vec());
    let (_codes, backup) = otpd::backup_codes::BackupCodeSet::generate(
        otpd::kdf::KdfParams {
            m_kib: 8,
            t: 1,
            p: 1,
        },
        &mut rand::rngs::OsRng,
        &otpd::kdf::Fresh,
    )
    .unwrap();
    let record = UserRecord {
        devices: vec![otpd::device::Device {
            id: T0,
            name: otpd::device::DeviceName::default_name(),
            secret,
            params: TotpParams::default(),
            issuer: "otpd-fuzz".into(),
            enrolled_at: T0,
            last_used_step: Some(T0 / 30),
            spent_ahead: Vec::new(),
            clock_skew_seconds: 0,
            last_used_at: None,
            kind: otpd::device::Kind::Totp,
            hotp_resync: None,
            drift_steps: 0,
            drift_streak: 0,
        }],
        backup_codes: Some(backup),
        ..UserRecord::new()
    };
    let sealed = record.seal(key(), user(), &mut rand::rngs::OsRng).unwrap();
    let plain = otpd::crypto::open(key(), user().as_str(), &sealed).unwrap();
    write("sealed_record", "sealed", &[&[0u8][..], &sealed].concat());
    write("sealed_record", "plain", &[&[1u8][..], &plain].concat());
    write("sealed_record", "plain_empty_record", b"\x01{}");
    let mut flipped = sealed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    write(
        "sealed_record",
        "sealed_flipped_tag",
        &[&[0u8][..], &flipped].concat(),
    );
    write(
        "sealed_record",
        "sealed_truncated",
        &[&[0u8][..], &sealed[..20]].concat(),
    );

    // One request per RPC, first byte = RPC number in otpd.proto order.
    let params = TotpParams::default();
    let good = code_at_step(
        &TotpSecret::from_bytes(ALICE_SECRET.to_vec()),
        params,
        step_of(params, T0),
    );
    let rpc = |n: u8, m: &dyn Fn() -> Vec<u8>| [&[n][..], &m()].concat();
    let verify = |code: &[u8]| {
        pb::VerifyRequest {
            allow_app_password: false,
            user: b"alice".to_vec().into(),
            code: code.to_vec().into(),
            service: "sshd".into(),
            remote_host: "192.0.2.7".into(),
            tty: "ssh".into(),
            local_requester: None,
            grace_only: false,
        }
        .encode_to_vec()
    };
    write(
        "grpc_request",
        "verify_accepted",
        &rpc(0, &|| verify(good.as_bytes())),
    );
    write(
        "grpc_request",
        "verify_wrong",
        &rpc(0, &|| verify(b"000000")),
    );
    write(
        "grpc_request",
        "verify_backup",
        &rpc(0, &|| verify(b"12345678")),
    );
    write(
        "grpc_request",
        "verify_long_context",
        &rpc(0, &|| {
            pb::VerifyRequest {
                allow_app_password: false,
                user: b"alice".to_vec().into(),
                code: b"000000".to_vec().into(),
                service: "é".repeat(200),
                remote_host: "x".repeat(300),
                tty: "\u{2028}".into(),
                local_requester: None,
                grace_only: false,
            }
            .encode_to_vec()
        }),
    );
    write(
        "grpc_request",
        "enroll_start_options",
        &rpc(1, &|| {
            pb::EnrollStartRequest {
                device: String::new(),
                add_device: false,
                hotp: false,
                user: b"carol".to_vec().into(),
                issuer: "Example".into(),
                algorithm: pb::Algorithm::Sha256 as i32,
                digits: 8,
                period: 60,
                proof_code: Default::default(),
            }
            .encode_to_vec()
        }),
    );
    write(
        "grpc_request",
        "enroll_start_bad_options",
        &rpc(1, &|| {
            pb::EnrollStartRequest {
                device: String::new(),
                add_device: false,
                hotp: false,
                user: b"carol".to_vec().into(),
                issuer: "a:b".into(),
                algorithm: 9,
                digits: 300,
                period: 1,
                proof_code: Default::default(),
            }
            .encode_to_vec()
        }),
    );
    write(
        "grpc_request",
        "enroll_confirm",
        &rpc(2, &|| {
            pb::EnrollConfirmRequest {
                user: b"bob".to_vec().into(),
                code: good.as_bytes().to_vec().into(),
            }
            .encode_to_vec()
        }),
    );
    let user_only = |n: u8, name: &str, u: &[u8]| {
        // Every other request is `bytes user = 1`.
        let body = pb::GetStatusRequest {
            user: u.to_vec().into(),
        }
        .encode_to_vec();
        write("grpc_request", name, &[&[n][..], &body].concat());
    };
    user_only(3, "status", b"alice");
    write("grpc_request", "list", &[4]);
    user_only(5, "regenerate", b"alice");
    user_only(6, "unlock", b"alice");
    user_only(7, "reset", b"alice");
    user_only(3, "status_unknown", b"nobody-here");
}

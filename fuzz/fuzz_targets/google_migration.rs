//! `otpd::interop::google_migration::parse`: Google Authenticator's
//! transfer export (`otpauth-migration://offline?data=...`) given to
//! `otpctl import otpauth`, from a file or a photographed QR code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::interop::google_migration::{MAX_ACCOUNTS, MAX_BATCHES, MAX_NAME_LEN, parse};
use otpd::interop::otpauth::Kind;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Also feed the raw bytes as the payload, so the protobuf decoder is
    // reached without the fuzzer having to learn base64.
    let wrapped = format!(
        "otpauth-migration://offline?data={}",
        data_encoding_free_base64(data)
    );
    for uri in [text, wrapped.as_str()] {
        let Ok(p) = parse(uri) else {
            continue;
        };
        assert!(!p.accounts.is_empty() && p.accounts.len() <= MAX_ACCOUNTS);
        assert!(p.batch.index < p.batch.size && p.batch.size <= MAX_BATCHES);
        for a in &p.accounts {
            assert!(a.name.len() <= MAX_NAME_LEN);
            let Ok(a) = &a.result else {
                continue;
            };
            // Accepted means a key otpd can use and parameters it supports.
            assert!((10..=64).contains(&a.secret.expose().len()));
            assert!(a.params.digits == 6 || a.params.digits == 8);
            assert_eq!(a.params.period, 30);
            assert!(!a.account.chars().any(char::is_control));
            if let Kind::Hotp { counter } = a.kind {
                assert!(i64::try_from(counter).is_ok());
            }
        }
    }
});

/// Standard base64 with padding (no dependency just for the harness).
fn data_encoding_free_base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

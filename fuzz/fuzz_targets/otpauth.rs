//! `otpd::interop::otpauth::parse`: otpauth:// URIs given to `otpctl
//! import` (from a file, stdin or a QR code).
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::interop::otpauth::{Kind, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = parse(text) {
        // Accepted means a key otpd can use and parameters it supports.
        assert!((10..=64).contains(&p.secret.expose().len()));
        assert!(p.params.digits == 6 || p.params.digits == 8);
        assert!((15..=300).contains(&p.params.period));
        if let Kind::Hotp { counter } = p.kind {
            let _ = counter;
        }
    }
});

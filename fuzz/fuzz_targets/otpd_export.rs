//! `otpd::interop::otpd_export::parse`: the document inside an encrypted
//! export (`otpctl import otpd-export`), once decrypted: JSON of any shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::interop::otpd_export::{Kind, parse, render};

fuzz_target!(|data: &[u8]| {
    let Ok(export) = parse(data) else {
        return;
    };
    // Accepted means keys and parameters otpd can import.
    assert!((1..=16).contains(&export.devices.len()));
    for d in &export.devices {
        assert!((10..=64).contains(&d.secret.expose().len()));
        assert!(d.params.digits == 6 || d.params.digits == 8);
        if let Kind::Totp { .. } = d.kind {
            assert!((15..=300).contains(&d.params.period));
        }
    }
    // What is accepted writes back and reads back the same.
    let again = render(&export).map(|bytes| parse(&bytes));
    let Ok(Ok(again)) = again else {
        panic!("an accepted document does not write back");
    };
    assert_eq!(again.user, export.user);
    assert_eq!(again.devices.len(), export.devices.len());
    for (a, b) in again.devices.iter().zip(&export.devices) {
        assert_eq!(a.secret.expose(), b.secret.expose());
        assert_eq!((a.kind, a.params, &a.name), (b.kind, b.params, &b.name));
        assert_eq!(a.issuer, b.issuer);
    }
});

//! `otpd::app_password::AppPasswordInput::parse` (the daemon's reading of a
//! Verify credential when the PAM line allows app passwords) and
//! `pam_otpd`'s shape check, which must agree with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::app_password::{AppPasswordInput, LEN, looks_like};

fuzz_target!(|data: &[u8]| {
    let parsed = AppPasswordInput::parse(data);
    assert_eq!(parsed.is_some(), looks_like(data));
    if let Some(p) = parsed {
        // The id is the first group, in the alphabet.
        assert_eq!(p.id().len(), 4);
        // Never a code: a code is 6 or 8 digits.
        assert!(data.len() >= LEN);
    }
});

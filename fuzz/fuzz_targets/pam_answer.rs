//! `pam_otpd::flow::split`: the answer typed at the prompt, as a password
//! followed by a 6- or 8-digit code (`forward_pass`, `use_first_pass`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pam_otpd::flow::split;

fuzz_target!(|data: &[u8]| {
    for digits in [6, 8] {
        if let Some((password, code)) = split(data, digits) {
            // The two parts are the answer (trailing whitespace aside), in
            // order, and the code is exactly `digits` ASCII digits.
            assert_eq!(code.len(), digits);
            assert!(code.iter().all(u8::is_ascii_digit));
            let trimmed = data.trim_ascii_end();
            assert_eq!(trimmed.len(), password.len() + code.len());
            assert!(trimmed.starts_with(password) && trimmed.ends_with(code));
        }
    }
});

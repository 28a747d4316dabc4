//! `otpd::interop::google_authenticator::parse`: a `~/.google_authenticator`
//! file read by `otpctl import google-authenticator` (untrusted: the user
//! wrote it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::interop::google_authenticator::{
    Kind, MAX_FILE_LEN, MAX_SCRATCH_CODES, ParseError, SECRET_LEN, parse,
};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(f) => {
            // Accepted means a key otpd can import, sane options and at
            // most 40 distinct 8-digit scratch codes.
            assert!(data.len() <= MAX_FILE_LEN && !data.contains(&0));
            assert!(SECRET_LEN.contains(&f.secret.expose().len()));
            if let Kind::Totp { step_size } = f.kind {
                assert!((1..=60).contains(&step_size));
            }
            assert!(f.window_size.is_none_or(|w| (1..=100).contains(&w)));
            assert!(f.disallow_reuse || f.last_used_step.is_none());
            assert!(f.scratch_codes.len() <= MAX_SCRATCH_CODES);
            for (i, c) in f.scratch_codes.iter().enumerate() {
                assert_eq!(c.len(), 8);
                assert!(c.as_bytes().iter().all(u8::is_ascii_digit));
                assert!(
                    f.scratch_codes[..i]
                        .iter()
                        .all(|d| d.as_bytes() != c.as_bytes())
                );
            }
        }
        Err(e) => {
            // Refusals name a line that exists.
            if let Some(line) = e.line() {
                assert!(line >= 1 && line <= 1 + data.iter().filter(|&&b| b == b'\n').count());
            }
            if data.len() > MAX_FILE_LEN {
                assert_eq!(e, ParseError::TooLarge);
            }
        }
    }
});

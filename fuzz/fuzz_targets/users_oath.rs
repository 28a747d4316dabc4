//! `otpd::interop::users_oath::parse`: pam_oath's `/etc/users.oath`, read
//! by `otpctl import` from a file an admin points it at.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::interop::users_oath::{Kind, MAX_KEY_LEN, MIN_KEY_LEN, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(lines) = parse(data) else {
        return;
    };
    let line_count = data.split(|&b| b == b'\n').count();
    let mut previous = 0;
    for result in &lines {
        // One result per line at most, in file order, numbered from 1.
        let line = match result {
            Ok(entry) => {
                assert!(entry.digits == 6 || entry.digits == 8);
                let key = entry.secret.expose().len();
                assert!((MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key));
                if let Kind::Totp { period } = entry.kind {
                    assert!(period == 30 || period == 60);
                    // Bounded work, never a panic, whatever the time says.
                    let _ = entry.last_used_step(i64::MIN, u64::MAX);
                    let _ = entry.last_used_step(i64::MAX, 1);
                }
                entry.line
            }
            Err(error) => {
                // The message is built without panicking.
                let _ = error.to_string();
                error.line
            }
        };
        assert!(line > previous && line <= line_count);
        previous = line;
    }
});

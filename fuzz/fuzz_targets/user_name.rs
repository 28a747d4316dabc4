//! `otpd::record::UserName::parse`: the user of every request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::record::{MAX_USER_LEN, UserName};

fuzz_target!(|data: &[u8]| {
    if let Ok(user) = UserName::parse(data) {
        // Accepted means the bytes as given, within the documented rules.
        let s = user.as_str();
        assert_eq!(s.as_bytes(), data);
        assert!(!s.is_empty() && s.len() <= MAX_USER_LEN);
        assert!(!s.chars().any(char::is_control));
        assert!(!s.contains(':') && !s.starts_with('-'));
    }
});

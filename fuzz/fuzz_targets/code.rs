//! `otpd::secret::Code::parse`: the code of every Verify and EnrollConfirm.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::secret::Code;

fuzz_target!(|data: &[u8]| {
    if let Ok(code) = Code::parse(data) {
        // Accepted means exactly 6 or 8 ASCII digits, kept as given.
        assert!(code.len() == 6 || code.len() == 8);
        assert_eq!(code.as_bytes(), data);
        assert!(data.iter().all(u8::is_ascii_digit));
    }
});

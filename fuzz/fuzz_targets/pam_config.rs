//! `otpd_core::doctor::pam::parse` and the stack checks of `otpctl doctor`
//! on a PAM file (the bytes as the `sshd` file and as `common-auth`, so
//! includes and loops are expanded), and the sshd config and `sshd -T`
//! readers on the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd_core::doctor::{pam, sshd};

fuzz_target!(|data: &[u8]| {
    // otpctl reads PAM files as lossy UTF-8, as libpam reads bytes.
    let text = String::from_utf8_lossy(data);
    let lines = pam::parse(&text);
    assert!(lines.iter().all(|l| l.line >= 1));
    let mut files = pam::Files::new();
    files.insert("sshd".into(), lines.clone());
    files.insert("common-auth".into(), lines);
    for finding in pam::check(&files, "/etc/pam.d", "/run/otpd/pam.sock") {
        assert!(finding.line.is_some_and(|l| l >= 1));
    }
    let _ = pam::nullok_after_deadline(&files, "/etc/pam.d", "2026-12-15");
    let _ = sshd::check(&sshd::parse_config(&text), "/etc/ssh/sshd_config");
    let _ = sshd::check(&sshd::parse_dump(&text), "/etc/ssh/sshd_config");
});

//! What pam_otpd reads from otpd's socket: `pam_otpd::hpack::Decoder` on a
//! header block, and a whole reply (HTTP/2 frames) read by
//! `pam_otpd::h2::Connection::unary` from a socket pair whose other end
//! sent these bytes and then closed for writing.
#![no_main]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pam_otpd::h2::{Connection, MAX_REPLY};
use pam_otpd::hpack::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::default();
    if let Ok(fields) = d.decode(data) {
        let total: usize = fields.iter().map(|(n, v)| n.len() + v.len()).sum();
        assert!(total <= pam_otpd::hpack::MAX_HEADER_LIST);
    }
    // Under the socket buffer, so that the write never blocks.
    let data = &data[..data.len().min(64 * 1024)];
    let Ok((ours, mut theirs)) = UnixStream::pair() else {
        return;
    };
    if theirs.write_all(data).is_err() || theirs.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let mut c = Connection::new(ours);
    let deadline = Instant::now() + Duration::from_secs(2);
    if let Ok(reply) = c.unary("/otpd.v1.Otpd/Verify", b"request", deadline) {
        assert!(reply.body.len() <= MAX_REPLY);
    }
    drop(theirs);
});

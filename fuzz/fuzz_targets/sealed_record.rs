//! `otpd::record::UserRecord::open` with a fixed key. The first byte picks
//! what the rest is: even, sealed bytes as read from the store (garbled
//! header, nonce, ciphertext or tag); odd, the plaintext of a record, sealed
//! here first so that the record parser behind the AEAD is reached too (an
//! authentic record written by another version, or damaged before sealing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::record::UserRecord;
use otpd_fuzz::{key, user};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let sealed = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        match otpd::crypto::seal(key(), user().as_str(), rest, &mut rand::rngs::OsRng) {
            Ok(sealed) => sealed,
            Err(_) => return,
        }
    };
    let _ = UserRecord::open(key(), user(), &sealed);
});

//! The otpd.v1 requests as the daemon decodes them: the first byte picks the
//! RPC, the rest is its protobuf request message, decoded with prost and
//! handed to the service's handler (field validation, authorisation, the
//! engine) on an in-memory store, as root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&rpc, body)) = data.split_first() {
        otpd_fuzz::service().call(rpc, body);
    }
});

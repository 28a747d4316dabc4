//! `otpd_core::grace::Stat::parse` on a `/proc/PID/stat` line (its command
//! name is chosen by the process's owner) and a lineage built from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd_core::grace::{Lineage, MAX_LINEAGE, Stat};

fuzz_target!(|data: &[u8]| {
    let parsed: Vec<Stat> = data
        .split(|&b| b == b'\n')
        .filter_map(Stat::parse)
        .collect();
    let lineage = Lineage::from_stats(parsed);
    assert!(lineage.processes().len() <= MAX_LINEAGE);
    assert!(lineage.processes().iter().all(|p| p.pid > 1));
});

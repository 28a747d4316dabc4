//! `otpd::config::Config::parse`: the configuration file (TOML).
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::Config;

fuzz_target!(|data: &[u8]| {
    // The daemon reads the file as UTF-8 text; other bytes never reach the
    // parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text, "fuzz.toml") {
        // A configuration that validates converts to engine settings.
        let _ = config.engine_config();
    }
});

//! `otpd::backup_document::parse`: the plaintext inside an encrypted
//! backup (`otpctl restore`), once decrypted: JSON of any shape; and the
//! key derivation stanza of a backup's age header (space-separated
//! arguments).
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use otpd::backup_document::{KdfStanza, parse};
use otpd::device::MAX_DEVICES;
use otpd::record::RECORD_VERSION;

fuzz_target!(|data: &[u8]| {
    if let Ok(backup) = parse(data) {
        // Accepted means distinct valid users, records of this version,
        // within the bounds otpd keeps.
        let mut seen = HashSet::new();
        for (user, record) in &backup.users {
            assert!(seen.insert(user.clone()));
            assert_eq!(record.version, RECORD_VERSION);
            assert!(record.devices.len() <= MAX_DEVICES);
        }
        assert_eq!(backup.summary().users, backup.users.len());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let args: Vec<String> = text.split(' ').take(8).map(str::to_owned).collect();
        if let Ok(stanza) = KdfStanza::parse(&args) {
            assert!(stanza.kdf.check().is_ok());
            assert_eq!(KdfStanza::parse(&stanza.args()).ok(), Some(stanza));
        }
    }
});

//! The start-up store check reads at most its bound of users and only
//! says whether more were left unchecked: it never walks every key (at a
//! million users that walk left about 100 MiB resident in sled).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use otpd::clock::ManualClock;
use otpd::crypto::MasterKey;
use otpd::engine::{Engine, EngineConfig, EnrollOptions};
use otpd::record::UserName;
use otpd::store::MemoryStore;

#[test]
fn the_start_check_reads_at_most_its_bound_and_says_whether_more_are_left() {
    let engine = Engine::new(
        Box::new(MemoryStore::new()),
        MasterKey::generate(&mut rand::rngs::OsRng),
        Arc::new(ManualClock::new(1_800_000_000)),
        EngineConfig::default(),
    );
    for name in ["alice", "bob", "carol", "dave", "erin"] {
        let user = UserName::parse(name.as_bytes()).unwrap();
        engine
            .enroll_start(&user, EnrollOptions::default())
            .unwrap();
    }
    for (bound, checked, more) in [(3, 3, true), (4, 4, true), (5, 5, false), (10, 5, false)] {
        let check = engine.check_store(bound).unwrap();
        assert_eq!(
            (check.checked, check.more_unchecked),
            (checked, more),
            "bound {bound}"
        );
        assert!(check.rolled_back.is_empty() && check.unreadable.is_empty());
    }
}

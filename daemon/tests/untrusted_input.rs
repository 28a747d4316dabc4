//! Property tests: every parser of untrusted input returns an error instead
//! of panicking, whatever the bytes, and accepts exactly what it documents.

use otpd::config::Config;
use otpd::crypto::{self, MasterKey};
use otpd::policy::{Counters, Gate, Policy};
use otpd::record::{UserName, UserRecord};
use otpd::secret::Code;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn code_parse_accepts_exactly_6_or_8_ascii_digits(input in proptest::collection::vec(any::<u8>(), 0..80)) {
        let ok = (input.len() == 6 || input.len() == 8) && input.iter().all(u8::is_ascii_digit);
        prop_assert_eq!(Code::parse(&input).is_ok(), ok);
    }

    #[test]
    fn code_parse_digit_strings(s in "[0-9]{0,12}") {
        prop_assert_eq!(Code::parse(s.as_bytes()).is_ok(), s.len() == 6 || s.len() == 8);
    }

    #[test]
    fn user_name_parse_never_panics_and_round_trips(input in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(user) = UserName::parse(&input) {
            prop_assert_eq!(user.as_str().as_bytes(), &input[..]);
            prop_assert!(!input.contains(&0) && !input.contains(&b':') && input.len() <= 256);
        }
    }

    #[test]
    fn sealed_record_from_arbitrary_bytes_never_opens(input in proptest::collection::vec(any::<u8>(), 0..200)) {
        let key = MasterKey::generate(&mut rand::rngs::OsRng);
        let user = UserName::parse(b"alice").map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(UserRecord::open(&key, &user, &input).is_err());
    }

    #[test]
    fn sealed_record_with_any_byte_changed_never_opens(pos in 0usize..4096, flip in 1u8..=255) {
        let key = MasterKey::generate(&mut rand::rngs::OsRng);
        let user = UserName::parse(b"alice").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let sealed = UserRecord::new().seal(&key, &user, &mut rand::rngs::OsRng).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut t = sealed.clone();
        let i = pos % t.len();
        t[i] ^= flip;
        prop_assert!(UserRecord::open(&key, &user, &t).is_err());
        prop_assert!(crypto::open(&key, "alice", &sealed).is_ok());
    }

    #[test]
    fn config_parse_never_panics(text in "\\PC{0,200}") {
        let _ = Config::parse(&text, "fuzz");
    }

    #[test]
    fn config_parse_never_panics_on_toml_shapes(
        key in "(socket|socket_mode|state_dir|issuer|window|digits|period|threshold|max_failures)",
        value in "(-?[0-9]{1,20}|\"[^\"]{0,10}\"|true|0o[0-7]{1,12}|\\[\\])",
        section in "(|\\[totp\\]|\\[lockout\\]|\\[rate_limit\\]|\\[backup_codes\\])",
    ) {
        let _ = Config::parse(&format!("{section}\n{key} = {value}\n"), "fuzz");
    }

    /// Whatever the sequence of failures and successes, a user is never
    /// checked more than `max_failures` times per window and never while
    /// locked, and a success always reopens the gate.
    #[test]
    fn policy_never_checks_more_than_allowed(steps in proptest::collection::vec((0u64..120, any::<bool>()), 1..200)) {
        let p = Policy::default();
        let mut c = Counters::default();
        let mut now = 1_700_000_000u64;
        let mut checked_failures: Vec<u64> = Vec::new();
        for (dt, success) in steps {
            now += dt;
            if p.gate(&c, now) != Gate::Open {
                prop_assert!(c.locked_until > now || checked_failures.iter().filter(|&&t| t + p.window > now).count() >= p.max_failures as usize);
                continue;
            }
            if success {
                p.record_success(&mut c);
                checked_failures.clear();
                prop_assert_eq!(p.gate(&c, now), Gate::Open);
            } else {
                p.record_failure(&mut c, now);
                checked_failures.push(now);
                let in_window = checked_failures.iter().filter(|&&t| t + p.window > now).count();
                prop_assert!(in_window <= p.max_failures as usize);
            }
        }
    }
}

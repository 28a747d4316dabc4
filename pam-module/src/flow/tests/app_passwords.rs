//! `app_passwords` and `app_passwords_only` in the flow: what is sent to
//! otpd (the whole answer, `allow_app_password`), what the PAM stack gets
//! back (result, `PAM_AUTHTOK`).

use super::*;

/// As otpd prints it.
const APP: &str = "k7qm-3xa9-h2pc-vw4d-8ent-rb6s";
/// The same, typed in upper case with spaces and a trailing newline.
const APP_TYPED: &str = "K7QM 3XA9 H2PC VW4D 8ENT RB6S\n";

fn app_accepted() -> Verdict {
    Verdict {
        method: Method::AppPassword,
        app_password_id: AppPasswordId::parse("k7qm"),
        ..verdict(Decision::Accepted, Reason::Ok)
    }
}

/// Like `run`, for option sets that draw a warning.
fn run_warned(
    args: &[&str],
    req: Request,
    answers: Vec<Result<Option<&'static str>, Error>>,
    statuses: Vec<Result<Status, Error>>,
    verdicts: Vec<Result<Verdict, Error>>,
) -> Run {
    let (opts, _warnings) = parse(args);
    let mut conv = FakeConv {
        answers: answers.into(),
        ..FakeConv::default()
    };
    let mut daemon = FakeDaemon {
        statuses: statuses.into(),
        verdicts: verdicts.into(),
        ..FakeDaemon::default()
    };
    let mut log = FakeLog::default();
    let out = authenticate(&opts, req, &mut conv, &mut daemon, &mut log);
    assert!(conv.answers.is_empty() && daemon.verdicts.is_empty());
    assert!(daemon.statuses.is_empty());
    Run {
        out,
        conv,
        daemon,
        log,
    }
}

#[test]
fn without_the_option_nothing_is_ever_allowed() {
    // A shaped answer at a code prompt goes to otpd as a code (whitespace
    // removed, as before), never as an app password.
    let r = run(
        &[],
        request(),
        vec![Ok(Some(APP))],
        vec![],
        vec![Err(st(Code::InvalidArgument))],
    );
    assert_eq!(r.out.result, PamError::AUTH_ERR);
    assert_eq!(r.daemon.allowed, vec![false]);
    assert_eq!(r.codes(), vec![APP]);
    r.assert_not_logged(&[APP]);

    // With forward_pass it does not end in a code: refused before otpd.
    let r = run(
        &["forward_pass"],
        request(),
        vec![Ok(Some(APP))],
        vec![Ok(status(State::Active))],
        vec![],
    );
    assert_eq!(r.out.result, PamError::AUTH_ERR);
    assert!(r.daemon.attempts.is_empty());

    // Codes, password + code, backup fallback: all without the flag.
    let r = run(
        &["forward_pass"],
        request(),
        vec![Ok(Some("secret12345678"))],
        vec![Ok(status(State::Active))],
        vec![Ok(wrong()), Ok(wrong())],
    );
    assert_eq!(r.daemon.allowed, vec![false, false]);
}

#[test]
fn a_code_at_an_app_passwords_line_is_still_a_code() {
    for answer in ["123456", " 123 456 ", "12345678"] {
        let r = run(
            &["app_passwords"],
            request(),
            vec![Ok(Some(answer))],
            vec![],
            vec![Ok(accepted())],
        );
        assert_eq!(r.out.result, PamError::SUCCESS, "{answer:?}");
        assert_eq!(r.daemon.allowed, vec![false], "{answer:?}");
        assert_eq!(r.codes(), vec![answer.replace(' ', "")]);
        // The code prompt, echo off.
        assert_eq!(
            r.conv.prompts,
            vec![(crate::options::DEFAULT_PROMPT.to_owned(), false)]
        );
    }
}

#[test]
fn a_shaped_answer_is_sent_whole_with_the_flag_and_the_service() {
    let r = run(
        &["app_passwords", "debug"],
        Request {
            service: "dovecot".into(),
            ..request()
        },
        vec![Ok(Some(APP_TYPED))],
        vec![],
        vec![Ok(app_accepted())],
    );
    assert_eq!(r.out.result, PamError::SUCCESS);
    assert!(r.out.authtok.is_none());
    assert_eq!(r.daemon.allowed, vec![true]);
    assert_eq!(
        r.daemon.attempts,
        vec![(
            "alice".into(),
            APP.into(),
            "dovecot".into(),
            "192.0.2.7".into(),
            "ssh".into()
        )]
    );
    assert!(
        r.log
            .0
            .iter()
            .any(|(l, m)| *l == Level::Info && m == "user alice: app password k7qm accepted"),
        "{:?}",
        r.log.0
    );
    // Nothing is shown for an accepted app password.
    assert!(r.conv.infos.is_empty() && r.conv.errors.is_empty());
    // The id (first group) comes from otpd's answer; the rest never shows.
    r.assert_not_logged(&[APP, "3xa9", "rb6s", "3XA9", "RB6S"]);
}

#[test]
fn forward_pass_with_an_app_password_sends_the_whole_text_not_a_split() {
    // The last group is all digits, so a split would be possible: it must
    // not happen when the whole answer is accepted.
    const DIGITS_AT_THE_END: &str = "k7qm-3xa9-h2pc-vw4d-8e12-3456";
    let r = run(
        &["forward_pass", "app_passwords"],
        request(),
        vec![Ok(Some(DIGITS_AT_THE_END))],
        vec![],
        vec![Ok(app_accepted())],
    );
    assert_eq!(r.out.result, PamError::SUCCESS);
    assert_eq!(r.codes(), vec![DIGITS_AT_THE_END]);
    assert_eq!(r.daemon.allowed, vec![true]);
    // No GetStatus (no digits to split off), no password handed on: an
    // app password is not the account password.
    assert_eq!(r.daemon.status_calls, 0);
    assert!(r.out.authtok.is_none());
    assert_eq!(
        r.conv.prompts,
        vec![("Password & verification code: ".to_owned(), false)]
    );

    // use_first_pass and try_first_pass take it from PAM_AUTHTOK.
    for mode in ["use_first_pass", "try_first_pass"] {
        let r = run(
            &[mode, "app_passwords"],
            Request {
                authtok: Some(Secret::from_slice(APP_TYPED.as_bytes())),
                ..request()
            },
            vec![],
            vec![],
            vec![Ok(app_accepted())],
        );
        assert_eq!(r.out.result, PamError::SUCCESS, "{mode}");
        assert_eq!(r.codes(), vec![APP], "{mode}");
        assert!(r.conv.prompts.is_empty());
    }

    // Password + code that is not shaped: the usual split, no flag.
    let r = run(
        &["forward_pass", "app_passwords"],
        request(),
        vec![Ok(Some("hunter2 x123456"))],
        vec![Ok(status(State::Active))],
        vec![Ok(accepted())],
    );
    assert_eq!(r.out.result, PamError::SUCCESS);
    assert_eq!(r.codes(), vec!["123456"]);
    assert_eq!(r.daemon.allowed, vec![false]);
    assert_eq!(r.authtok().as_deref(), Some("hunter2 x"));
}

#[test]
fn a_password_and_code_that_look_like_an_app_password_still_work() {
    // 18 characters of the alphabet and a 6-digit code: 24 in all.
    const PW: &str = "p4ssw0rdp4ssw0rdxy";
    const ANSWER: &str = "p4ssw0rdp4ssw0rdxy123456";
    assert!(crate::app_password::looks_like_app_password(
        ANSWER.as_bytes()
    ));
    let r = run(
        &["forward_pass", "app_passwords"],
        request(),
        vec![Ok(Some(ANSWER))],
        vec![Ok(status(State::Active))],
        vec![Ok(wrong()), Ok(accepted())],
    );
    assert_eq!(r.out.result, PamError::SUCCESS);
    assert_eq!(r.codes(), vec!["p4ss-w0rd-p4ss-w0rd-xy12-3456", "123456"]);
    assert_eq!(r.daemon.allowed, vec![true, false]);
    assert_eq!(r.authtok().as_deref(), Some(PW));
    r.assert_not_logged(&[PW, "123456", "p4ss"]);

    // An otpd without app passwords calls the whole answer malformed.
    let r = run(
        &["forward_pass", "app_passwords"],
        request(),
        vec![Ok(Some(ANSWER))],
        vec![Ok(status(State::Active))],
        vec![Err(st(Code::InvalidArgument)), Ok(accepted())],
    );
    assert_eq!(r.out.result, PamError::SUCCESS);
    assert_eq!(r.daemon.allowed, vec![true, false]);

    // Locked: no second attempt.
    let r = run(
        &["forward_pass", "app_passwords"],
        request(),
        vec![Ok(Some(ANSWER))],
        vec![],
        vec![Ok(verdict(Decision::Locked, Reason::Other))],
    );
    assert_eq!(r.out.result, PamError::AUTH_ERR);
    assert_eq!(r.daemon.attempts.len(), 1);

    // A code-only prompt has no password to split off: one attempt.
    let r = run(
        &["app_passwords"],
        request(),
        vec![Ok(Some(ANSWER))],
        vec![],
        vec![Ok(wrong())],
    );
    assert_eq!(r.out.result, PamError::AUTH_ERR);
    assert_eq!(r.daemon.attempts.len(), 1);

    // app_passwords_only decides on the app password alone.
    let r = run(
        &["forward_pass", "app_passwords_only"],
        request(),
        vec![Ok(Some(ANSWER))],
        vec![],
        vec![Ok(wrong())],
    );
    assert_eq!(r.out.result, PamError::AUTH_ERR);
    assert!(r.out.authtok.is_none());
    assert_eq!(r.daemon.attempts.len(), 1);
}

#[test]
fn every_verdict_on_an_app_password_maps_like_a_code() {
    let locked = Verdict {
        retry_after_seconds: 720,
        ..verdict(Decision::Locked, Reason::Other)
    };
    let throttled = Verdict {
        retry_after_seconds: 30,
        ..verdict(Decision::Throttled, Reason::Other)
    };
    let cases: Vec<(Result<Verdict, Error>, PamError, PamError)> = vec![
        // (answer, with fail_mode=closed, with fail_mode=open)
        (Ok(app_accepted()), PamError::SUCCESS, PamError::SUCCESS),
        (Ok(wrong()), PamError::AUTH_ERR, PamError::AUTH_ERR),
        (Ok(locked), PamError::AUTH_ERR, PamError::AUTH_ERR),
        (Ok(throttled), PamError::AUTH_ERR, PamError::AUTH_ERR),
        (
            Ok(verdict(Decision::NotEnrolled, Reason::Other)),
            PamError::AUTH_ERR,
            PamError::AUTH_ERR,
        ),
        (
            Ok(verdict(Decision::Unknown, Reason::Other)),
            PamError::AUTH_ERR,
            PamError::AUTH_ERR,
        ),
        (
            Err(unreachable()),
            PamError::AUTHINFO_UNAVAIL,
            PamError::IGNORE,
        ),
        (
            Err(Error::Timeout { ms: 5000 }),
            PamError::AUTHINFO_UNAVAIL,
            PamError::AUTHINFO_UNAVAIL,
        ),
        (
            Err(st(Code::Unavailable)),
            PamError::AUTHINFO_UNAVAIL,
            PamError::AUTHINFO_UNAVAIL,
        ),
        (
            Err(st(Code::InvalidArgument)),
            PamError::AUTH_ERR,
            PamError::AUTH_ERR,
        ),
        (
            Err(st(Code::PermissionDenied)),
            PamError::AUTH_ERR,
            PamError::AUTH_ERR,
        ),
        (
            Err(Error::Local(std::io::Error::other("x"))),
            PamError::SYSTEM_ERR,
            PamError::SYSTEM_ERR,
        ),
    ];
    let copy = |v: &Result<Verdict, Error>| match v {
        Ok(v) => Ok(v.clone()),
        Err(Error::Unreachable { .. }) => Err(unreachable()),
        Err(Error::Timeout { ms }) => Err(Error::Timeout { ms: *ms }),
        Err(Error::Status(s)) => Err(st(s.code())),
        Err(_) => Err(Error::Local(std::io::Error::other("x"))),
    };
    for mode in ["app_passwords", "app_passwords_only"] {
        for (answer, closed, open) in &cases {
            for (fail_mode, expected) in [("fail_mode=closed", closed), ("fail_mode=open", open)] {
                let r = run(
                    &[mode, fail_mode],
                    request(),
                    vec![Ok(Some(APP))],
                    vec![],
                    vec![copy(answer)],
                );
                assert_eq!(
                    r.out.result,
                    *expected,
                    "{mode} {fail_mode} {:?}",
                    answer.as_ref().map(|v| v.decision)
                );
                assert_eq!(r.daemon.allowed, vec![true]);
                r.assert_not_logged(&[APP, "3xa9"]);
                // Handed on only when this line steps aside, and only by an
                // app_passwords_only line (a code prompt hands nothing on).
                let handed_on = *expected == PamError::IGNORE && mode == "app_passwords_only";
                assert_eq!(
                    r.authtok().as_deref(),
                    handed_on.then_some(APP),
                    "{mode} {fail_mode}"
                );
            }
        }
    }
}

#[test]
fn refusals_of_app_passwords_are_logged_and_shown_like_codes() {
    let r = run(
        &["app_passwords"],
        request(),
        vec![Ok(Some(APP))],
        vec![],
        vec![Ok(wrong())],
    );
    assert!(
        r.log
            .0
            .iter()
            .any(|(l, m)| *l == Level::Notice && m == "user alice: wrong app password; refused"),
        "{:?}",
        r.log.0
    );
    assert!(r.conv.errors.is_empty());

    let r = run(
        &["app_passwords_only"],
        request(),
        vec![Ok(Some(APP))],
        vec![],
        vec![Ok(Verdict {
            retry_after_seconds: 720,
            ..verdict(Decision::Locked, Reason::Other)
        })],
    );
    assert_eq!(r.conv.errors, vec![crate::messages::locked(720)]);
}

#[test]
fn app_passwords_only_steps_aside_for_anything_else_without_asking_otpd() {
    for (answer, handed_on) in [
        // The account password, exactly as typed.
        (Some("hunter2"), "hunter2"),
        (Some(" pass word "), " pass word "),
        // A code alone is never sent by this line.
        (Some("123456"), "123456"),
        (Some("12345678"), "12345678"),
        // Almost an app password.
        (
            Some("k7qm-3xa9-h2pc-vw4d-8ent-rb6"),
            "k7qm-3xa9-h2pc-vw4d-8ent-rb6",
        ),
        (Some(""), ""),
        (None, ""),
    ] {
        let r = run(
            &["app_passwords_only", "debug"],
            request(),
            vec![Ok(answer)],
            vec![],
            vec![],
        );
        assert_eq!(r.out.result, PamError::IGNORE, "{answer:?}");
        assert!(r.daemon.attempts.is_empty(), "{answer:?}");
        assert_eq!(r.daemon.status_calls, 0);
        assert_eq!(r.authtok().as_deref(), Some(handed_on), "{answer:?}");
        assert_eq!(r.conv.prompts, vec![("Password: ".to_owned(), false)]);
        if let Some(a) = answer.filter(|a| a.trim().len() >= 6) {
            r.assert_not_logged(&[a.trim()]);
        }
    }

    // nullok has no effect here: no GetStatus, same decision.
    let r = run_warned(
        &["app_passwords_only", "nullok"],
        request(),
        vec![Ok(Some("hunter2"))],
        vec![],
        vec![],
    );
    assert_eq!(r.out.result, PamError::IGNORE);
    assert_eq!(r.daemon.status_calls, 0);
    let r = run_warned(
        &["app_passwords_only", "nullok"],
        request(),
        vec![Ok(Some(APP))],
        vec![],
        vec![Ok(verdict(Decision::NotEnrolled, Reason::Other))],
    );
    assert_eq!(r.out.result, PamError::AUTH_ERR);

    // use_first_pass: PAM_AUTHTOK from an earlier module, handed back.
    let r = run(
        &["app_passwords_only", "use_first_pass"],
        Request {
            authtok: Some(Secret::from_slice(b"hunter2")),
            ..request()
        },
        vec![],
        vec![],
        vec![],
    );
    assert_eq!(r.out.result, PamError::IGNORE);
    assert_eq!(r.authtok().as_deref(), Some("hunter2"));
    // ...and without one, refused as before.
    let r = run(
        &["app_passwords_only", "use_first_pass"],
        request(),
        vec![],
        vec![],
        vec![],
    );
    assert_eq!(r.out.result, PamError::AUTH_ERR);

    // forward_pass: the combined prompt, the whole answer handed on (the
    // next pam_otpd line with use_first_pass splits it).
    let r = run(
        &["app_passwords_only", "forward_pass"],
        request(),
        vec![Ok(Some("hunter2123456"))],
        vec![],
        vec![],
    );
    assert_eq!(r.out.result, PamError::IGNORE);
    assert_eq!(r.authtok().as_deref(), Some("hunter2123456"));
    assert!(r.daemon.attempts.is_empty());

    // Oversized: refused, as at any prompt.
    let long: &'static str = Box::leak("x".repeat(MAX_INPUT + 1).into_boxed_str());
    let r = run(
        &["app_passwords_only"],
        request(),
        vec![Ok(Some(long))],
        vec![],
        vec![],
    );
    assert_eq!(r.out.result, PamError::AUTH_ERR);
    assert!(r.out.authtok.is_none());
}

#[test]
fn app_passwords_only_success_hands_nothing_on() {
    let r = run(
        &["app_passwords_only"],
        Request {
            service: "su".into(),
            ..request()
        },
        vec![Ok(Some(APP_TYPED))],
        vec![],
        vec![Ok(app_accepted())],
    );
    assert_eq!(r.out.result, PamError::SUCCESS);
    assert!(r.out.authtok.is_none());
    assert_eq!(r.codes(), vec![APP]);
    assert_eq!(r.daemon.allowed, vec![true]);
    assert_eq!(r.daemon.attempts[0].2, "su");
}

#[test]
fn nullok_with_app_passwords_asks_about_enrollment_first() {
    // Not enrolled: no prompt, as without app_passwords.
    let r = run(
        &["app_passwords", "nullok"],
        request(),
        vec![],
        vec![Ok(status(State::NotEnrolled))],
        vec![],
    );
    assert_eq!(r.out.result, PamError::IGNORE);
    // Enrolled: an app password is checked as one.
    let r = run(
        &["app_passwords", "nullok"],
        request(),
        vec![Ok(Some(APP))],
        vec![Ok(status(State::Active))],
        vec![Ok(app_accepted())],
    );
    assert_eq!(r.out.result, PamError::SUCCESS);
    assert_eq!(r.daemon.allowed, vec![true]);
}

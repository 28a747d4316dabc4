use super::*;

const PAM_SOCKET: &str = "/run/otpd/pam.sock";

const COMMON_AUTH: &str = "\
# Debian's common-auth
auth\t[success=1 default=ignore]\tpam_unix.so nullok
auth\trequisite\t\t\tpam_deny.so
auth\trequired\t\t\tpam_permit.so
auth\toptional\t\t\tpam_cap.so
";

fn dir(files: &[(&str, &str)]) -> Files {
    files
        .iter()
        .map(|(name, text)| ((*name).to_owned(), parse(text)))
        .collect()
}

fn ids(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.id).collect()
}

#[test]
fn the_parser_reads_what_libpam_reads() {
    let lines = parse(
        "auth [success=2 default=ignore] pam_unix.so nullok # comment\n\
         -auth optional pam_gnome_keyring.so\n\
         @include common-auth\n\
         auth required pam_otpd.so [prompt=One-time code: ] \\\n  nullok\n\
         garbage\n\
         Auth SUBSTACK other\n",
    );
    assert_eq!(lines.len(), 5);
    assert_eq!(
        lines[0].entry,
        Entry::Rule {
            ty: "auth".into(),
            optional: false,
            control: Control::Actions(vec![
                ("success".into(), Action::Jump(2)),
                ("default".into(), Action::Ignore)
            ]),
            module: "pam_unix.so".into(),
            args: vec!["nullok".into()],
        }
    );
    assert!(matches!(
        &lines[1].entry,
        Entry::Rule { optional: true, .. }
    ));
    assert_eq!(
        lines[2].entry,
        Entry::IncludeAll {
            file: "common-auth".into()
        }
    );
    assert_eq!(lines[3].line, 4);
    let Entry::Rule { args, .. } = &lines[3].entry else {
        panic!("{:?}", lines[3]);
    };
    assert_eq!(args, &["prompt=One-time code: ", "nullok"]);
    assert_eq!(lines[4].line, 7);
    assert!(matches!(
        &lines[4].entry,
        Entry::Rule {
            control: Control::Substack,
            ..
        }
    ));
}

#[test]
fn stacks_expand_includes_and_stop_at_loops() {
    let files = dir(&[
        ("common-auth", COMMON_AUTH),
        ("sshd", "@include common-auth\nauth required pam_otpd.so\n"),
        ("loop", "auth include loop\nauth substack sshd\n"),
    ]);
    let stack = auth_stack(&files, "sshd");
    let modules: Vec<_> = stack.iter().map(|r| r.module).collect();
    assert_eq!(
        modules,
        [
            "pam_unix.so",
            "pam_deny.so",
            "pam_permit.so",
            "pam_cap.so",
            "pam_otpd.so"
        ]
    );
    assert_eq!((stack[4].file, stack[4].line), ("sshd", 2));
    let stack = auth_stack(&files, "loop");
    assert_eq!(stack.len(), 5);
    assert!(stack.iter().all(|r| r.in_substack));
    assert!(reaches_otpd(&files, "loop"));
    assert!(!reaches_otpd(&files, "common-auth"));
}

#[test]
fn the_readme_key_and_code_stack_is_clean() {
    let files = dir(&[
        ("common-auth", COMMON_AUTH),
        (
            "sshd",
            "# @include common-auth\nauth required pam_otpd.so\n@include common-account\n",
        ),
        ("common-account", "account required pam_unix.so\n"),
    ]);
    assert_eq!(check(&files, "/etc/pam.d", PAM_SOCKET), vec![]);
}

#[test]
fn requisite_before_pam_otpd_is_named_once_for_every_stack() {
    let files = dir(&[
        ("common-auth", COMMON_AUTH),
        (
            "sudo",
            "@include common-auth\nauth required pam_otpd.so nullok\n",
        ),
        (
            "su",
            "@include common-auth\nauth required pam_otpd.so nullok\n",
        ),
    ]);
    let found = check(&files, "/etc/pam.d/", PAM_SOCKET);
    assert_eq!(ids(&found), ["requisite"]);
    assert_eq!(found[0].file, "/etc/pam.d/common-auth");
    assert_eq!(found[0].line, Some(3));
    assert!(
        found[0].what.ends_with("(stack: su, sudo)"),
        "{}",
        found[0].what
    );
}

#[test]
fn sufficient_or_a_jump_over_pam_otpd_is_an_error() {
    let files = dir(&[(
        "sshd",
        "auth sufficient pam_unix.so\nauth required pam_otpd.so\n",
    )]);
    assert_eq!(ids(&check(&files, "d", PAM_SOCKET)), ["skips-otpd"]);
    let files = dir(&[(
        "sshd",
        "auth [success=1 default=ignore] pam_unix.so\nauth required pam_otpd.so\n\
         auth required pam_permit.so\n",
    )]);
    let found = check(&files, "d", PAM_SOCKET);
    assert_eq!(ids(&found), ["skips-otpd"]);
    assert_eq!(found[0].line, Some(1));
    let files = dir(&[(
        "sshd",
        "auth [success=done default=die] pam_unix.so\nauth required pam_otpd.so\n",
    )]);
    assert_eq!(ids(&check(&files, "d", PAM_SOCKET)), ["skips-otpd"]);
}

#[test]
fn pam_otpd_in_common_auth_fail_open_and_socket_are_named() {
    let files = dir(&[
        (
            "common-auth",
            "auth required pam_unix.so\nauth required pam_otpd.so fail_mode=open \
             socket=/run/otpd/otpd.sock\n",
        ),
        ("login", "@include common-auth\n"),
    ]);
    let found = check(&files, "/etc/pam.d", PAM_SOCKET);
    assert_eq!(
        ids(&found),
        ["fail-open", "otpd-in-common-auth", "pam-socket-option"]
    );
    assert!(found.iter().all(|f| f.line == Some(2)));
    assert!(found[1].what.contains("(stack: common-auth, login)"));
}

#[test]
fn socket_naming_otpds_own_pam_socket_is_fine_and_libpam_otpd_is_recognised() {
    // Under cargo's name, pointing at the configured PAM socket (moved
    // from the default): nothing to say.
    let files = dir(&[(
        "sshd",
        "auth required /opt/otpd/libpam_otpd.so socket=/srv/otpd/pam.sock
",
    )]);
    assert_eq!(
        ids(&check(&files, "/etc/pam.d", "/srv/otpd/pam.sock")),
        Vec::<&str>::new()
    );
    // Another socket: named, with the configured one in the fix.
    let found = check(&files, "/etc/pam.d", PAM_SOCKET);
    assert_eq!(ids(&found), ["pam-socket-option"]);
    assert!(
        found[0].fix.contains("socket=/run/otpd/pam.sock"),
        "{}",
        found[0].fix
    );
    // The module is recognised: nullok alone is PAM_IGNORE only.
    let files = dir(&[(
        "sshd",
        "auth required /opt/otpd/libpam_otpd.so nullok
",
    )]);
    assert_eq!(
        ids(&check(&files, "/etc/pam.d", PAM_SOCKET)),
        ["ignore-only"]
    );
}

#[test]
fn pam_ignore_as_the_only_result_is_an_error() {
    let files = dir(&[(
        "sshd",
        "auth required pam_env.so\nauth required pam_otpd.so nullok\n",
    )]);
    let found = check(&files, "/etc/pam.d", PAM_SOCKET);
    assert_eq!(ids(&found), ["ignore-only"]);
    assert_eq!(found[0].line, Some(2));
    // The fix names the key + code way out (pam_permit after pam_otpd).
    assert!(
        found[0]
            .fix
            .contains("`auth required pam_permit.so` after the pam_otpd line"),
        "{}",
        found[0].fix
    );
    // The README's key + code stack (Protect SSH) with nullok is fine.
    let files = dir(&[(
        "sshd",
        "# @include common-auth\nauth required pam_otpd.so nullok\n\
         auth required pam_permit.so\n",
    )]);
    assert_eq!(check(&files, "d", PAM_SOCKET), vec![]);
    // Without nullok the module decides itself.
    let files = dir(&[("sshd", "auth required pam_otpd.so\n")]);
    assert_eq!(check(&files, "d", PAM_SOCKET), vec![]);
    // With a module that decides, nullok is fine.
    let files = dir(&[(
        "sshd",
        "auth required pam_unix.so\nauth required pam_otpd.so nullok\n",
    )]);
    assert_eq!(check(&files, "d", PAM_SOCKET), vec![]);
}

#[test]
fn stacks_without_pam_otpd_are_not_judged() {
    let files = dir(&[("other", "auth sufficient pam_permit.so\n")]);
    assert_eq!(check(&files, "d", PAM_SOCKET), vec![]);
}

#[test]
fn nullok_after_the_deadline_is_named_once() {
    let files = dir(&[
        ("common-auth", COMMON_AUTH),
        (
            "sudo",
            "@include common-auth\nauth required pam_otpd.so nullok\n",
        ),
        ("sshd", "auth required pam_otpd.so\n"),
        ("su", "auth include sudo\n"),
    ]);
    let found = nullok_after_deadline(&files, "/etc/pam.d", "2026-12-15");
    assert_eq!(ids(&found), ["nullok-after-deadline"]);
    assert_eq!(found[0].file, "/etc/pam.d/sudo");
    assert_eq!(found[0].line, Some(2));
    assert!(found[0].what.contains("2026-12-15"));
}

#[test]
fn files_that_include_each_other_many_times_take_bounded_work() {
    // Each file includes the next one 50 times: 50^15 rules unbounded.
    let mut files = Vec::new();
    for i in 0..20 {
        let text = format!(
            "auth required pam_unix.so\n{}",
            format!("@include f{}\n", i + 1).repeat(50)
        );
        files.push((format!("f{i}"), text));
    }
    let files: Files = files
        .iter()
        .map(|(name, text)| (name.clone(), parse(text)))
        .collect();
    let stack = auth_stack(&files, "f0");
    assert!(stack.len() <= MAX_EXPANSIONS, "{}", stack.len());
    assert!(check(&files, "d", PAM_SOCKET).is_empty());
}

#[test]
fn option_typos_are_errors_that_name_the_option_meant() {
    let files = dir(&[(
        "sshd",
        "auth required pam_unix.so\n\
         auth required pam_otpd.so nulok debug=1 fail_mode=sideways [prompt=Code: ] timeout_ms=0\n",
    )]);
    let found = check(&files, "/etc/pam.d", PAM_SOCKET);
    assert_eq!(ids(&found), ["pam-option"]);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].line, Some(2));
    assert_eq!(found[0].severity, crate::doctor::Severity::Error);
    assert!(
        found[0].what.starts_with(
            "pam_otpd ignores unknown option `nulok` (did you mean nullok?); \
             `debug=1`: debug takes no value (write `debug`); \
             `fail_mode=sideways`: expected fail_mode=closed or fail_mode=open; \
             `timeout_ms=0`: expected milliseconds from 1 to 60000: "
        ),
        "{}",
        found[0].what
    );
    // Every option the module knows passes.
    let files = dir(&[(
        "sshd",
        "auth required pam_unix.so\n\
         auth required pam_otpd.so nullok debug echo_code grace app_passwords \
         forward_pass fail_mode=closed timeout_ms=60000 socket=/run/otpd/pam.sock \
         [prompt=One-time code: ]\n",
    )]);
    assert_eq!(check(&files, "d", PAM_SOCKET), vec![]);
}

#[test]
fn a_stack_where_only_pam_permit_decides_beside_an_ignoring_pam_otpd_is_found() {
    let stack = |text: &str| dir(&[("sshd", text)]);
    let found = |files: &Files| permits_without_a_secret(files, "sshd").map(|r| r.line);
    let readme = "# @include common-auth\nauth required pam_otpd.so nullok\n\
                  auth required pam_permit.so\n";
    assert_eq!(found(&stack(readme)), Some(2));
    assert_eq!(
        found(&stack(&readme.replace("nullok", "fail_mode=open"))),
        Some(2)
    );
    // pam_otpd decides itself (no nullok), or a password module decides.
    assert_eq!(found(&stack(&readme.replace(" nullok", ""))), None);
    assert_eq!(
        found(&stack(&format!("auth required pam_unix.so\n{readme}"))),
        None
    );
    // No pam_permit: PAM_IGNORE only (ignore-only's business), not this.
    assert_eq!(found(&stack("auth required pam_otpd.so nullok\n")), None);
}

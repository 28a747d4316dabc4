//! PAM configuration files (`/etc/pam.d/*`): a parser that keeps each
//! rule's line, the expansion of a service's `auth` stack through
//! `@include`, `include` and `substack`, and the checks of every stack
//! that reaches pam_otpd.
//!
//! The parser follows Linux-PAM's reading of a file: `#` starts a comment
//! anywhere on a line, a trailing `\` continues the line, a `[...]` control
//! or argument is one token (`\]` inside it is a `]`), a leading `-` on the
//! type marks a module that may be missing. Lines it cannot read are
//! skipped, as libpam skips them.

use std::collections::BTreeMap;

use super::Finding;

/// How deep includes are followed (libpam's own limit is smaller); deeper
/// ones, and loops, are cut off.
pub const MAX_DEPTH: usize = 16;

/// Lines longer than this (after joining continuations) are not read.
pub const MAX_LINE: usize = 64 * 1024;

/// At most this many files are opened while expanding one stack (a
/// directory whose files include each other many times over would
/// otherwise take exponential time); the rest is left out.
pub const MAX_EXPANSIONS: usize = 4096;

/// What a `value=action` pair of a `[...]` control does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Ignore,
    Bad,
    Die,
    Ok,
    Done,
    Reset,
    /// Skip this many following rules.
    Jump(u32),
}

/// The second field of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Required,
    Requisite,
    Sufficient,
    Optional,
    /// `include FILE`: FILE's rules of the same type, inline.
    Include,
    /// `substack FILE`: as include, but `done` and `die` end only FILE.
    Substack,
    /// `[value=action ...]`, in order.
    Actions(Vec<(String, Action)>),
    /// A control libpam does not know (the rule then fails).
    Unknown(String),
}

/// One logical line of a PAM file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `@include FILE`: every rule of FILE.
    IncludeAll { file: String },
    /// `[-]TYPE CONTROL MODULE [ARGS...]` (for include and substack,
    /// MODULE is the file).
    Rule {
        /// `auth`, `account`, `password` or `session` (lower case).
        ty: String,
        /// The type had a leading `-`: a missing module is not an error.
        optional: bool,
        control: Control,
        module: String,
        args: Vec<String>,
    },
}

/// A logical line and the physical line (from 1) it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub line: u32,
    pub entry: Entry,
}

/// Reads a PAM file. Never fails: what libpam would not read is left out.
pub fn parse(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut pending: Option<(u32, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let number = u32::try_from(index).unwrap_or(u32::MAX).saturating_add(1);
        let code = raw.split('#').next().unwrap_or("");
        let (code, continues) = match code.trim_end().strip_suffix('\\') {
            Some(head) => (head, true),
            None => (code, false),
        };
        let (start, mut joined) = pending.take().unwrap_or((number, String::new()));
        if joined.len() + code.len() <= MAX_LINE {
            joined.push(' ');
            joined.push_str(code);
        }
        if continues {
            pending = Some((start, joined));
            continue;
        }
        if let Some(entry) = parse_line(&joined) {
            out.push(Line { line: start, entry });
        }
    }
    if let Some((start, joined)) = pending
        && let Some(entry) = parse_line(&joined)
    {
        out.push(Line { line: start, entry });
    }
    out
}

fn parse_line(text: &str) -> Option<Entry> {
    let tokens = tokens(text);
    let first = tokens.first()?;
    if first.starts_with('@') {
        return match (first.as_str(), tokens.get(1)) {
            ("@include", Some(file)) => Some(Entry::IncludeAll { file: file.clone() }),
            _ => None,
        };
    }
    let [ty, control, module, args @ ..] = tokens.as_slice() else {
        return None;
    };
    let (optional, ty) = match ty.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, ty.as_str()),
    };
    let ty = ty.to_ascii_lowercase();
    if !matches!(ty.as_str(), "auth" | "account" | "password" | "session") {
        return None;
    }
    let control = parse_control(control);
    let args = args.iter().map(|a| unbracket(a)).collect();
    Some(Entry::Rule {
        ty,
        optional,
        control,
        module: module.clone(),
        args,
    })
}

/// Splits on white space; a token that starts with `[` runs to the first
/// `]` not escaped as `\]`.
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&c) = chars.peek() else {
            return out;
        };
        let mut token = String::new();
        if c == '[' {
            let mut escaped = false;
            for c in chars.by_ref() {
                token.push(c);
                if c == ']' && !escaped {
                    break;
                }
                escaped = c == '\\';
            }
            // `[a b]rest` is one token with its tail.
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                token.push(c);
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                token.push(c);
            }
        }
        out.push(token);
    }
}

/// `[prompt=One-time code: ]` as the module sees it.
fn unbracket(arg: &str) -> String {
    match arg.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        Some(inner) => inner.replace("\\]", "]"),
        None => arg.to_owned(),
    }
}

fn parse_control(token: &str) -> Control {
    let Some(inner) = token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
        return match token.to_ascii_lowercase().as_str() {
            "required" => Control::Required,
            "requisite" => Control::Requisite,
            "sufficient" => Control::Sufficient,
            "optional" => Control::Optional,
            "include" => Control::Include,
            "substack" => Control::Substack,
            _ => Control::Unknown(token.to_owned()),
        };
    };
    let mut actions = Vec::new();
    for pair in inner.split_whitespace() {
        let Some((value, action)) = pair.split_once('=') else {
            return Control::Unknown(token.to_owned());
        };
        let action = match action.to_ascii_lowercase().as_str() {
            "ignore" => Action::Ignore,
            "bad" => Action::Bad,
            "die" => Action::Die,
            "ok" => Action::Ok,
            "done" => Action::Done,
            "reset" => Action::Reset,
            n => match n.parse() {
                Ok(n) => Action::Jump(n),
                Err(_) => return Control::Unknown(token.to_owned()),
            },
        };
        actions.push((value.to_ascii_lowercase(), action));
    }
    Control::Actions(actions)
}

/// One rule of a service's expanded `auth` stack, with where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackRule<'a> {
    /// The file (a name in the PAM directory) holding the rule.
    pub file: &'a str,
    pub line: u32,
    pub control: &'a Control,
    pub module: &'a str,
    pub args: &'a [String],
    /// Reached through a `substack`: its `done`, `die` and `sufficient` end
    /// only the substack.
    pub in_substack: bool,
}

/// The PAM files of a directory, by file name.
pub type Files = BTreeMap<String, Vec<Line>>;

/// The `auth` rules libpam runs for `service`, in order, includes
/// expanded. A missing included file contributes nothing.
pub fn auth_stack<'a>(files: &'a Files, service: &str) -> Vec<StackRule<'a>> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    let mut budget = MAX_EXPANSIONS;
    expand(files, service, false, &mut path, &mut budget, &mut out);
    out
}

fn expand<'a>(
    files: &'a Files,
    name: &str,
    in_substack: bool,
    path: &mut Vec<&'a str>,
    budget: &mut usize,
    out: &mut Vec<StackRule<'a>>,
) {
    // An include names a file in the directory; libpam also takes an
    // absolute path, of which only the name matters here.
    let name = name.rsplit('/').next().unwrap_or(name);
    let Some((file, lines)) = files.get_key_value(name) else {
        return;
    };
    if path.len() >= MAX_DEPTH || path.contains(&file.as_str()) || *budget == 0 {
        return;
    }
    *budget -= 1;
    path.push(file);
    for line in lines {
        match &line.entry {
            Entry::IncludeAll { file: included } => {
                expand(files, included, in_substack, path, budget, out);
            }
            Entry::Rule {
                ty,
                control,
                module,
                args,
                ..
            } if ty == "auth" => match control {
                Control::Include => expand(files, module, in_substack, path, budget, out),
                Control::Substack => expand(files, module, true, path, budget, out),
                _ => out.push(StackRule {
                    file,
                    line: line.line,
                    control,
                    module,
                    args,
                    in_substack,
                }),
            },
            Entry::Rule { .. } => {}
        }
    }
    path.pop();
}

/// Whether `module` (a name or a path) is pam_otpd.
pub fn is_otpd(module: &str) -> bool {
    // `libpam_otpd.so` is the name cargo builds it under.
    matches!(
        module.rsplit('/').next(),
        Some("pam_otpd.so" | "libpam_otpd.so")
    )
}

/// Whether `service`'s auth stack runs pam_otpd.
pub fn reaches_otpd(files: &Files, service: &str) -> bool {
    auth_stack(files, service).iter().any(|r| is_otpd(r.module))
}

/// Modules whose `auth` step never decides a login (they return
/// `PAM_IGNORE`, or matter only for the environment): a stack of these and
/// a pam_otpd that returns `PAM_IGNORE` has no result.
const NEVER_DECIDE: &[&str] = &[
    "pam_env.so",
    "pam_faildelay.so",
    "pam_nologin.so",
    "pam_warn.so",
    "pam_echo.so",
    "pam_cap.so",
    "pam_group.so",
    "pam_keyinit.so",
    "pam_motd.so",
    "pam_mail.so",
    "pam_gnome_keyring.so",
    "pam_kwallet5.so",
    "pam_selinux.so",
    "pam_loginuid.so",
];

/// pam_otpd's options that take no value (pam-module/src/options.rs:
/// keep in step).
pub const OTPD_FLAGS: &[&str] = &[
    "nullok",
    "forward_pass",
    "use_first_pass",
    "try_first_pass",
    "echo_code",
    "debug",
    "app_passwords",
    "app_passwords_only",
    "grace",
];

/// pam_otpd's `NAME=VALUE` options.
pub const OTPD_VALUED: &[&str] = &["socket", "fail_mode", "prompt", "timeout_ms"];

/// What is wrong with one pam_otpd argument, as the module would log it
/// (it ignores the argument); `None` when the module takes it.
pub fn otpd_option_problem(arg: &str) -> Option<String> {
    let (name, value) = match arg.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (arg, None),
    };
    let known = OTPD_FLAGS.contains(&name) || OTPD_VALUED.contains(&name);
    if !known {
        let folded = |s: &str| s.to_ascii_lowercase().replace(['-', '_'], "");
        // No option name is longer than 20 bytes: a long word is no typo.
        let near = OTPD_FLAGS
            .iter()
            .chain(OTPD_VALUED)
            .filter(|_| name.len() <= 32)
            .map(|k| {
                let d = if folded(k) == folded(name) {
                    0
                } else {
                    edit_distance(k.as_bytes(), name.as_bytes())
                };
                (d, *k)
            })
            .filter(|(d, _)| *d <= 2)
            .min_by_key(|(d, _)| *d)
            .map_or_else(String::new, |(_, k)| format!(" (did you mean {k}?)"));
        let shown: String = arg.chars().take(64).collect();
        let cut = if shown.len() < arg.len() { "..." } else { "" };
        return Some(format!("unknown option `{shown}{cut}`{near}"));
    }
    match (name, value) {
        (flag, Some(_)) if OTPD_FLAGS.contains(&flag) => {
            Some(format!("`{arg}`: {flag} takes no value (write `{flag}`)"))
        }
        (valued, None) if OTPD_VALUED.contains(&valued) => {
            Some(format!("`{valued}` needs a value (`{valued}=...`)"))
        }
        ("fail_mode", Some(v)) if v != "closed" && v != "open" => Some(format!(
            "`{arg}`: expected fail_mode=closed or fail_mode=open"
        )),
        ("timeout_ms", Some(v)) if !v.parse::<u64>().is_ok_and(|ms| (1..=60_000).contains(&ms)) => {
            Some(format!("`{arg}`: expected milliseconds from 1 to 60000"))
        }
        ("socket", Some(v)) if !v.starts_with('/') => {
            Some(format!("`{arg}`: the socket must be an absolute path"))
        }
        _ => None,
    }
}

/// Levenshtein distance (option names are short).
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The pam_otpd rule of `service`'s auth stack that may answer
/// `PAM_IGNORE` (`nullok`, `fail_mode=open`) in a stack where no other
/// module checks anything: besides pam_otpd only `pam_permit.so` decides
/// (the README's key + code stack). Such a stack lets a user who has not
/// enrolled (or anyone, while otpd is down) in with no secret at all, so
/// sshd must have checked a key first. `None` otherwise.
pub fn permits_without_a_secret<'a>(files: &'a Files, service: &str) -> Option<StackRule<'a>> {
    let stack = auth_stack(files, service);
    let ignorer = stack
        .iter()
        .find(|r| is_otpd(r.module) && may_ignore(r.args))?
        .clone();
    let name = |r: &StackRule<'_>| r.module.rsplit('/').next().unwrap_or(r.module).to_owned();
    let mut permits = false;
    for rule in stack.iter().filter(|r| !is_otpd(r.module)) {
        let module = name(rule);
        if module == "pam_permit.so" {
            permits = true;
        } else if !NEVER_DECIDE.contains(&module.as_str()) {
            return None;
        }
    }
    permits.then_some(ignorer)
}

/// The shared files distributions include from every service.
const SHARED: &[&str] = &["common-auth", "system-auth", "password-auth"];

/// Whether a pam_otpd rule may answer `PAM_IGNORE`.
fn may_ignore(args: &[String]) -> bool {
    args.iter()
        .any(|a| a == "nullok" || a == "fail_mode=open" || a == "app_passwords_only")
}

/// What ends the stack (or jumps over pam_otpd at `otpd`) on success of the
/// rule at `index`, before pam_otpd runs.
fn skips(control: &Control, index: usize, otpd: usize) -> Option<&'static str> {
    match control {
        Control::Sufficient => Some("`sufficient` ends the stack with success"),
        Control::Actions(actions) => {
            let find = |key: &str| actions.iter().find(|(v, _)| v == key).map(|(_, a)| a);
            match find("success").or_else(|| find("default")) {
                Some(Action::Done) => Some("`success=done` ends the stack with success"),
                Some(Action::Jump(n))
                    if index
                        .saturating_add(1)
                        .saturating_add(usize::try_from(*n).unwrap_or(usize::MAX))
                        > otpd =>
                {
                    Some("its `success=N` jump lands after pam_otpd")
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn ends_on_failure(control: &Control) -> bool {
    match control {
        Control::Requisite => true,
        Control::Actions(actions) => actions.iter().any(|(_, a)| *a == Action::Die),
        _ => false,
    }
}

/// The findings of every stack in `files` that reaches pam_otpd. `dir` is
/// the directory they were read from (for the file names in findings).
/// A rule shared by several stacks (a line of `common-auth`) is reported
/// once, naming the stacks.
pub fn check(files: &Files, dir: &str, pam_socket: &str) -> Vec<Finding> {
    let mut found: BTreeMap<(&'static str, String, u32), (Finding, Vec<String>)> = BTreeMap::new();
    let mut add = |service: &str, f: Finding| {
        let key = (f.id, f.file.clone(), f.line.unwrap_or(0));
        let entry = found.entry(key).or_insert_with(|| (f, Vec::new()));
        entry.1.push(service.to_owned());
    };
    let path = |file: &str| format!("{}/{file}", dir.trim_end_matches('/'));
    for service in files.keys() {
        let stack = auth_stack(files, service);
        let Some(first) = stack.iter().position(|r| is_otpd(r.module)) else {
            continue;
        };
        for (index, rule) in stack.iter().enumerate() {
            let at = Some(rule.line);
            if is_otpd(rule.module) {
                if SHARED.contains(&rule.file) {
                    add(
                        service,
                        Finding::warning(
                            "otpd-in-common-auth",
                            &path(rule.file),
                            at,
                            format!(
                                "pam_otpd is in {}, so every stack that includes it asks for a \
                             code (su, cron's and other services' too)",
                                rule.file
                            ),
                            "move the line into the service files (/etc/pam.d/sshd, sudo, su, \
                         login) after their `@include common-auth` (README: Protect SSH, \
                         Traps)"
                                .into(),
                        ),
                    );
                }
                let problems: Vec<String> = rule
                    .args
                    .iter()
                    .filter_map(|a| otpd_option_problem(a))
                    .collect();
                if !problems.is_empty() {
                    add(
                        service,
                        Finding::error(
                            "pam-option",
                            &path(rule.file),
                            at,
                            format!(
                                "pam_otpd ignores {}: the line does not do what it says (the \
                                 module logs this as an error at each login)",
                                problems.join("; ")
                            ),
                            "fix the spelling; the options are listed in README: pam_otpd(8)"
                                .into(),
                        ),
                    );
                }
                if rule.args.iter().any(|a| a == "fail_mode=open") {
                    add(
                        service,
                        Finding::warning(
                            "fail-open",
                            &path(rule.file),
                            at,
                            "fail_mode=open lets logins through without a code whenever otpd is \
                         not running, a way around the second factor for anyone who can \
                         stop it"
                                .into(),
                            "remove `fail_mode=open` (the default, closed, refuses logins while \
                         otpd is down; keep a root shell or the console for that case) \
                         (README: Traps, fail_mode; pam_otpd(8))"
                                .into(),
                        ),
                    );
                }
                let elsewhere = rule
                    .args
                    .iter()
                    .filter_map(|a| a.strip_prefix("socket="))
                    .find(|s| *s != pam_socket);
                if let Some(socket) = elsewhere {
                    add(
                        service,
                        Finding::warning(
                            "pam-socket-option",
                            &path(rule.file),
                            at,
                            format!(
                                "`socket={socket}` points pam_otpd away from otpd's root-only \
                                 PAM socket ({pam_socket}); on the public socket any local \
                                 user can fill the queue logins wait in"
                            ),
                            format!(
                                "set `socket={pam_socket}`, or leave `socket=` out when that \
                                 is the default /run/otpd/pam.sock (README: Traps)"
                            ),
                        ),
                    );
                }
                continue;
            }
            if index >= first || rule.in_substack {
                continue;
            }
            if let Some(how) = skips(rule.control, index, first) {
                add(
                    service,
                    Finding::error(
                        "skips-otpd",
                        &path(rule.file),
                        at,
                        format!(
                            "{} runs before pam_otpd and {how}: that module alone (a password) \
                         logs in without a code",
                            rule.module
                        ),
                        "make the rule `required`, or put the pam_otpd line before it \
                     (README: Protect SSH)"
                            .into(),
                    ),
                );
            } else if ends_on_failure(rule.control) {
                add(
                    service,
                    Finding::warning(
                        "requisite",
                        &path(rule.file),
                        at,
                        format!(
                            "{} is `requisite` (or `die`) before pam_otpd: a wrong password ends \
                         the exchange before the code prompt, which tells an attacker the \
                         password was wrong",
                            rule.module
                        ),
                        "use `required`, not `requisite`, before pam_otpd; for Debian's \
                     common-auth (`requisite pam_deny.so`), write `auth required \
                     pam_unix.so` instead of `@include common-auth` before the pam_otpd \
                     line (README: Traps)"
                            .into(),
                    ),
                );
            }
        }
        let ignorers: Vec<&StackRule<'_>> = stack
            .iter()
            .filter(|r| is_otpd(r.module) && may_ignore(r.args))
            .collect();
        let decides = stack.iter().any(|r| {
            let name = r.module.rsplit('/').next().unwrap_or(r.module);
            let ignores = is_otpd(r.module) && may_ignore(r.args);
            !ignores && !NEVER_DECIDE.contains(&name)
        });
        if let (Some(rule), false) = (ignorers.first(), decides) {
            add(
                service,
                Finding::error(
                    "ignore-only",
                    &path(rule.file),
                    Some(rule.line),
                    "with nullok (or fail_mode=open), pam_otpd answers PAM_IGNORE and no other \
                 module of the stack decides: libpam then refuses the login (every user \
                 not enrolled is locked out)"
                        .into(),
                    "keep a module that decides beside it: with key + code (sshd checks \
                 the key first), `auth required pam_permit.so` after the pam_otpd line; \
                 with a password, `@include common-auth` or `auth required pam_unix.so`; \
                 or remove nullok (README: Protect SSH, Key + code; Traps, nullok)"
                        .into(),
                ),
            );
        }
    }
    found
        .into_values()
        .map(|(mut f, services)| {
            f.what = format!("{} (stack: {})", f.what, services.join(", "));
            f
        })
        .collect()
}

/// The pam_otpd lines with `nullok` in stacks that reach pam_otpd, once the
/// enforcement deadline `date` has passed for everyone: `nullok` then only
/// lets in users the policy exempts, and is a leftover of the rollout.
pub fn nullok_after_deadline(files: &Files, dir: &str, date: &str) -> Vec<Finding> {
    let mut found: BTreeMap<(String, u32), Finding> = BTreeMap::new();
    for service in files.keys() {
        for rule in auth_stack(files, service) {
            if !is_otpd(rule.module) || !rule.args.iter().any(|a| a == "nullok") {
                continue;
            }
            let file = format!("{}/{}", dir.trim_end_matches('/'), rule.file);
            found.entry((file.clone(), rule.line)).or_insert_with(|| {
                Finding::warning(
                    "nullok-after-deadline",
                    &file,
                    Some(rule.line),
                    format!(
                        "nullok is still on although the enforcement deadline ({date}) has \
                             passed for everyone: it now only lets users the policy exempts \
                             in without a code"
                    ),
                    "remove `nullok` from the line once the rollout is over (README: \
                         Traps, nullok; Configuration, [enforcement])"
                        .into(),
                )
            });
        }
    }
    found.into_values().collect()
}

#[cfg(test)]
mod tests;

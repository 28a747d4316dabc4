//! sshd's settings, from `sshd -T` (the effective configuration, lower-case
//! keywords) or, when sshd is not installed, from the global part of an
//! `sshd_config` file; and the checks of the settings the code prompt
//! depends on (README: Protect SSH).

use std::collections::BTreeMap;

use super::Finding;

/// One setting: its value (keyword lower case, value as written) and the
/// line of the config file that set it, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub line: Option<u32>,
}

/// sshd's settings by lower-case keyword.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, Setting>,
    /// `Include` lines of a config file (not followed: the caller may).
    pub includes: Vec<String>,
    /// Whether the settings hold sshd's own defaults (from `sshd -T`);
    /// from a config file, absent keywords take OpenSSH's defaults here.
    pub effective: bool,
}

/// OpenSSH's defaults of the keywords checked, for a config file without
/// them (a distribution's sshd may differ: prefer `sshd -T`).
const DEFAULTS: &[(&str, &str)] = &[
    ("usepam", "no"),
    ("kbdinteractiveauthentication", "yes"),
    ("passwordauthentication", "yes"),
    ("authenticationmethods", "any"),
];

/// Old names sshd still reads.
const ALIASES: &[(&str, &str)] = &[(
    "challengeresponseauthentication",
    "kbdinteractiveauthentication",
)];

impl Settings {
    /// The setting of `keyword` (lower case), or OpenSSH's default.
    pub fn get(&self, keyword: &str) -> Setting {
        if let Some(s) = self.values.get(keyword) {
            return s.clone();
        }
        let value = DEFAULTS
            .iter()
            .find(|(k, _)| *k == keyword)
            .map_or("", |(_, v)| v);
        Setting {
            value: value.to_owned(),
            line: None,
        }
    }

    /// The lines of `config` (a parsed config file) for the keywords it
    /// sets, so that findings from `sshd -T` name the line to edit.
    pub fn with_lines_from(mut self, config: &Settings) -> Self {
        for (key, setting) in &mut self.values {
            setting.line = config.values.get(key).and_then(|s| s.line);
        }
        self
    }
}

/// Reads `sshd -T` output: `keyword value...` per line.
pub fn parse_dump(text: &str) -> Settings {
    let mut values = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.trim().splitn(2, char::is_whitespace);
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        // A few keywords repeat (one line per value); the checked ones do
        // not. The first is kept.
        values.entry(key).or_insert(Setting {
            value: value.trim().to_owned(),
            line: None,
        });
    }
    Settings {
        values,
        includes: Vec::new(),
        effective: true,
    }
}

/// Reads the global part of an `sshd_config` file (up to the first
/// `Match`): the first value of a keyword wins, as in sshd.
pub fn parse_config(text: &str) -> Settings {
    let mut settings = Settings::default();
    for (index, raw) in text.lines().enumerate() {
        let number = u32::try_from(index).unwrap_or(u32::MAX).saturating_add(1);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let split = line
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(line.len());
        let (key, rest) = line.split_at(split);
        let value = rest
            .trim_start()
            .strip_prefix('=')
            .unwrap_or(rest.trim_start())
            .trim();
        let value = value.trim_matches('"');
        let mut key = key.to_ascii_lowercase();
        if let Some((_, new)) = ALIASES.iter().find(|(old, _)| *old == key) {
            key = (*new).to_owned();
        }
        match key.as_str() {
            "match" => break,
            "include" => settings
                .includes
                .extend(value.split_whitespace().map(str::to_owned)),
            _ => {
                settings.values.entry(key).or_insert(Setting {
                    value: value.to_owned(),
                    line: Some(number),
                });
            }
        }
    }
    settings
}

fn is_yes(s: &Setting) -> bool {
    s.value.eq_ignore_ascii_case("yes")
}

/// The lists of `AuthenticationMethods` that run PAM
/// (keyboard-interactive or password) without a public key first (all of
/// them: `any`).
pub fn lists_without_key(methods: &str) -> Vec<String> {
    if methods.trim().eq_ignore_ascii_case("any") || methods.trim().is_empty() {
        return vec!["any".to_owned()];
    }
    methods
        .split_whitespace()
        .filter(|list| {
            let list = list.to_ascii_lowercase();
            let has = |m: &str| list.split(',').any(|x| x.starts_with(m));
            (has("keyboard-interactive") || has("password")) && !has("publickey")
        })
        .map(str::to_owned)
        .collect()
}

/// The lists of `AuthenticationMethods` that do not include
/// keyboard-interactive (all of them: `any`).
fn lists_without_code(methods: &str) -> Vec<String> {
    if methods.trim().eq_ignore_ascii_case("any") || methods.trim().is_empty() {
        return vec!["any".to_owned()];
    }
    methods
        .split_whitespace()
        .filter(|list| {
            !list
                .split(',')
                .any(|m| m.to_ascii_lowercase().starts_with("keyboard-interactive"))
        })
        .map(str::to_owned)
        .collect()
}

/// The findings of sshd's settings; `file` is the config file to edit.
pub fn check(settings: &Settings, file: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let use_pam = settings.get("usepam");
    if !is_yes(&use_pam) {
        out.push(Finding::error(
            "use-pam",
            file,
            use_pam.line,
            "UsePAM is not yes: sshd never runs the PAM stack, so pam_otpd never asks for \
             a code"
                .into(),
            "set `UsePAM yes` (README: Protect SSH)".into(),
        ));
    }
    let kbd = settings.get("kbdinteractiveauthentication");
    if !is_yes(&kbd) {
        out.push(Finding::error(
            "kbd-interactive",
            file,
            kbd.line,
            "KbdInteractiveAuthentication is not yes: the code is asked with \
             keyboard-interactive, so no client can answer it"
                .into(),
            "set `KbdInteractiveAuthentication yes` (`ChallengeResponseAuthentication yes` \
             before OpenSSH 8.7) (README: Protect SSH)"
                .into(),
        ));
    }
    let methods = settings.get("authenticationmethods");
    let open = lists_without_code(&methods.value);
    if !open.is_empty() {
        let what = if open.iter().any(|l| l == "any") {
            "AuthenticationMethods is not set: a client may log in with a public key (or a \
             password) alone, without the code"
                .to_owned()
        } else {
            format!(
                "AuthenticationMethods lets clients in with {} without keyboard-interactive, \
                 so without the code",
                open.join(" or ")
            )
        };
        out.push(Finding::error(
            "authentication-methods",
            file,
            methods.line,
            what,
            "set `AuthenticationMethods publickey,keyboard-interactive` (key + code, \
             recommended) or `AuthenticationMethods keyboard-interactive` (README: Protect \
             SSH)"
                .into(),
        ));
        let password = settings.get("passwordauthentication");
        if is_yes(&password) {
            out.push(Finding::error(
                "password-authentication",
                file,
                password.line,
                "PasswordAuthentication yes lets clients use the password method, in \
                 which sshd answers the code prompt with the password: password logins fail"
                    .into(),
                "set `PasswordAuthentication no` and AuthenticationMethods as in README: \
                 Protect SSH (Password + code, Key + code); check with `ssh -v` that \
                 keyboard-interactive is what succeeds"
                    .into(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.id).collect()
    }

    #[test]
    fn lists_that_reach_pam_without_a_key() {
        assert_eq!(lists_without_key(""), ["any"]);
        assert_eq!(lists_without_key("any"), ["any"]);
        assert!(lists_without_key("publickey,keyboard-interactive").is_empty());
        assert!(lists_without_key("publickey,keyboard-interactive:pam").is_empty());
        assert_eq!(
            lists_without_key("publickey,keyboard-interactive keyboard-interactive password"),
            ["keyboard-interactive", "password"]
        );
        // A key alone never reaches PAM: authentication-methods' business.
        assert!(lists_without_key("publickey").is_empty());
    }

    #[test]
    fn the_recommended_key_and_code_setup_is_clean() {
        let dump = "port 22\nusepam yes\nkbdinteractiveauthentication yes\n\
                    passwordauthentication yes\n\
                    authenticationmethods publickey,keyboard-interactive\n";
        assert_eq!(check(&parse_dump(dump), "/etc/ssh/sshd_config"), vec![]);
        let dump = "usepam yes\nkbdinteractiveauthentication yes\n\
                    passwordauthentication no\n\
                    authenticationmethods keyboard-interactive:pam\n";
        assert_eq!(check(&parse_dump(dump), "f"), vec![]);
    }

    #[test]
    fn each_trap_is_named_with_its_line() {
        let config = "# comment\nUsePAM no\nKbdInteractiveAuthentication no\n\
                      PasswordAuthentication yes\nMatch user bob\n  UsePAM yes\n";
        let found = check(&parse_config(config), "/etc/ssh/sshd_config");
        assert_eq!(
            ids(&found),
            [
                "use-pam",
                "kbd-interactive",
                "authentication-methods",
                "password-authentication"
            ]
        );
        assert_eq!(found[0].line, Some(2));
        assert_eq!(found[1].line, Some(3));
        assert_eq!(found[2].line, None);
        assert_eq!(found[3].line, Some(4));
        assert!(found.iter().all(|f| f.fix.contains("README")));
    }

    #[test]
    fn a_method_list_without_the_code_is_named() {
        let dump = "usepam yes\nkbdinteractiveauthentication yes\npasswordauthentication no\n\
                    authenticationmethods publickey,keyboard-interactive publickey\n";
        let found = check(&parse_dump(dump), "f");
        assert_eq!(ids(&found), ["authentication-methods"]);
        assert!(
            found[0].what.contains("with publickey without"),
            "{}",
            found[0].what
        );
    }

    #[test]
    fn config_files_use_the_first_value_aliases_and_equals() {
        let s = parse_config(
            "ChallengeResponseAuthentication=no\nKbdInteractiveAuthentication yes\n\
             UsePAM = yes\nInclude /etc/ssh/sshd_config.d/*.conf\n",
        );
        assert_eq!(s.get("kbdinteractiveauthentication").value, "no");
        assert_eq!(s.get("kbdinteractiveauthentication").line, Some(1));
        assert_eq!(s.get("usepam").value, "yes");
        assert_eq!(s.includes, ["/etc/ssh/sshd_config.d/*.conf"]);
        // Absent: OpenSSH's default.
        assert_eq!(s.get("passwordauthentication").value, "yes");
        let dump = parse_dump("usepam no\n").with_lines_from(&s);
        assert_eq!(dump.get("usepam").line, Some(3));
    }
}

//! The hand-written man pages keep up with the code: pam_otpd(8) documents
//! every option the module's parser knows (pam-module/src/options.rs),
//! otpd.toml(5) every key of otpd.toml.example (which the config tests
//! load, so it has every key), each in its own section. The generated
//! pages (otpd(8), otpctl(8)) cannot drift: tests/tests/deb.rs renders
//! them from the binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn pam_otpd_8_documents_every_module_option() {
    let parser = repo_file("pam-module/src/options.rs");
    // The match arms of parse(): `("nullok", _) =>`, `("socket" | ...`.
    let options: Vec<&str> = parser
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("(\""))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(options.len() >= 13, "{options:?}");
    let page = repo_file("dist/man/pam_otpd.8");
    for option in options {
        assert!(
            [
                format!("\n.B {option}\n"),
                format!("\n.BI {option}= "),
                format!("\n.BR {option}="),
            ]
            .iter()
            .any(|entry| page.contains(entry)),
            "pam_otpd.8 has no entry for the option {option}"
        );
    }
}

#[test]
fn otpd_toml_5_documents_every_key_in_its_section() {
    let example = repo_file("otpd.toml.example");
    let page = repo_file("dist/man/otpd.toml.5");
    let mut section = String::from("TOP-LEVEL KEYS");
    let mut keys = 0;
    for line in example.lines() {
        if let Some(name) = line.strip_prefix('[') {
            section = format!("[{name}");
            continue;
        }
        // `# key = value`: a key with its default, commented out.
        let Some((key, _)) = line.strip_prefix("# ").and_then(|l| l.split_once(" = ")) else {
            continue;
        };
        if !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            continue;
        }
        let start = page
            .find(&format!("\n.SH \"{section}\"\n"))
            .unwrap_or_else(|| panic!("otpd.toml.5 has no section {section}"));
        let body = &page[start + 1..];
        let body = &body[..body[4..].find("\n.SH ").map_or(body.len(), |i| i + 4)];
        assert!(
            body.contains(&format!("\n.BR {key} ")),
            "otpd.toml.5 has no entry for {key} in {section}"
        );
        keys += 1;
    }
    assert!(keys >= 30, "only {keys} keys found in otpd.toml.example");
}

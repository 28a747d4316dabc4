//! The users the scale benchmarks import (`bulk_import`, `scale`): a
//! pam_oath `users.oath` mixing time tokens, 8-digit time tokens and
//! counter tokens, every 50th user with a second token; and the memory and
//! disk readings they report.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A user's 20-byte key, as hex (distinct per user and token).
pub fn key(user: usize, token: usize) -> String {
    let a = (user as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed;
    let b = (token as u64 + 1).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    format!("{a:016x}{b:016x}{:08x}", (user as u32) ^ 0xa5a5_a5a5)
}

/// The key of `key(user, token)` as bytes.
pub fn key_bytes(user: usize, token: usize) -> Vec<u8> {
    let hex = key(user, token);
    (0..20)
        .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap())
        .collect()
}

/// How many tokens user `i` has.
pub fn tokens(i: usize) -> usize {
    if i % 50 == 49 { 2 } else { 1 }
}

/// What user `i`'s first token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// HOTP, next counter as given.
    Counter(u64),
    /// TOTP, 8 digits.
    Time8,
    /// TOTP, 6 digits.
    Time6,
}

/// User `i`'s token `t`.
pub fn token(i: usize, t: usize) -> Token {
    match (i + t) % 4 {
        0 => Token::Counter((i % 1000) as u64),
        1 => Token::Time8,
        _ => Token::Time6,
    }
}

/// The name of user `i`.
pub fn name(i: usize) -> String {
    format!("user{i}")
}

/// The users file for `n` users, and its number of lines.
pub fn users_file(n: usize) -> (String, usize) {
    let mut text = String::with_capacity(n * 80);
    let mut lines = 0;
    for i in 0..n {
        for t in 0..tokens(i) {
            lines += 1;
            let k = key(i, t);
            match token(i, t) {
                Token::Counter(c) => writeln!(text, "HOTP\tuser{i}\t-\t{k}\t{c}"),
                Token::Time8 => writeln!(text, "HOTP/T30/8\tuser{i}\t-\t{k}"),
                Token::Time6 => writeln!(text, "HOTP/T30\tuser{i}\t-\t{k}"),
            }
            .unwrap();
        }
    }
    (text, lines)
}

/// Bytes on disk (allocated blocks) under `dir`.
pub fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_usage(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

/// A `/proc/<pid>/status` field in KiB (VmRSS, VmHWM).
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A `/proc/<pid>/status` field in MiB.
pub fn proc_mib(pid: u32, field: &str) -> f64 {
    proc_kib(pid, field) as f64 / 1024.0
}

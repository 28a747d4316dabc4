//! Where log lines go: stderr, one event per line, nothing invisible.
//!
//! The audit module records request-supplied text as `&str` values, which
//! `tracing-subscriber` quotes and escapes: the text format writes them with
//! `{:?}` (Rust's escapes: `\"`, `\\`, `\n`, `\u{202e}` for every control,
//! invisible, bidi or line-separator character), the JSON format as JSON
//! strings. JSON escapes only `"`, `\` and U+0000–U+001F, though, so U+2028,
//! U+202E and the like would reach the file raw; and a value recorded with
//! `%` (Display) anywhere is written as it is in the text format.
//!
//! This writer is the second line: it receives each formatted event whole
//! (tracing-subscriber writes an event with one `write_all` on a fresh
//! writer; the writer here buffers until it is dropped anyway) and, before
//! writing it out,
//! * JSON: writes every non-ASCII character that Rust would escape as a
//!   JSON `\uXXXX` escape (and DEL as `\u007f`). These characters can only
//!   stand inside JSON strings, so the line decodes to exactly the same
//!   values;
//! * text: writes line breaks, other control characters and every
//!   non-ASCII character that Rust would escape as `\n`, `\r`, `\t` or
//!   `\u{XXXX}` (ANSI colour sequences are kept when colours are on).
//!
//! The event's final newline is the only one that reaches the file.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Makes a writer per event for `tracing_subscriber::fmt`.
#[derive(Debug, Clone, Copy)]
pub struct SafeStderr {
    json: bool,
    ansi: bool,
}

impl SafeStderr {
    /// For the JSON format (`json`), or the text format with or without
    /// ANSI colours.
    pub fn new(json: bool, ansi: bool) -> Self {
        Self { json, ansi }
    }
}

impl<'a> MakeWriter<'a> for SafeStderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            json: self.json,
            ansi: self.ansi,
            buf: Vec::new(),
        }
    }
}

/// Collects one event; escapes it and writes it to stderr when dropped.
#[derive(Debug)]
pub struct EventWriter {
    json: bool,
    ansi: bool,
    buf: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = one_line(&String::from_utf8_lossy(&self.buf), self.json, self.ansi);
        // Nowhere to report a failure to write the log.
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }
}

/// Would Rust's `{:?}` escape this character? (Controls, line and
/// paragraph separators, bidi and other format characters, unassigned and
/// private-use code points, combining marks.)
fn invisible(c: char) -> bool {
    c.is_control() || c.escape_debug().next() == Some('\\') && !c.is_ascii()
}

/// One formatted event as exactly one line.
pub fn one_line(event: &str, json: bool, ansi: bool) -> String {
    let body = event.strip_suffix('\n').unwrap_or(event);
    let mut out = String::with_capacity(body.len() + 1);
    for c in body.chars() {
        if !invisible(c) || (ansi && !json && c == '\u{1b}') {
            out.push(c);
        } else if json {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            }
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NASTY: &str = "a\u{2028}b\u{2029}c\u{202e}d\u{2066}e\u{61c}f\u{200e}g\u{feff}h\u{85}i\u{7f}j\u{1d173}k\nl\rm";

    #[test]
    fn json_keeps_the_values_and_loses_the_raw_characters() {
        let event = serde_json::json!({ "service": NASTY, "user": "é\"\\" }).to_string() + "\n";
        let line = one_line(&event, true, false);
        assert_eq!(line.matches('\n').count(), 1);
        assert!(!line.trim_end().chars().any(invisible), "{line}");
        let back: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(back["service"], NASTY);
        assert_eq!(back["user"], "é\"\\");
        assert!(
            line.contains("\\u2028") && line.contains("\\ud834\\udd73"),
            "{line}"
        );
    }

    #[test]
    fn text_escapes_breaks_and_invisible_characters_outside_quotes_too() {
        let line = one_line(&format!("message={NASTY} user=\"x\"\n"), false, false);
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(
            line[..line.len() - 1].chars().all(|c| !invisible(c)),
            "{line}"
        );
        assert!(line.contains("\\u{2028}") && line.contains("\\n") && line.contains("\\u{202e}"));
        // Visible text is untouched; ANSI colours only when on.
        assert_eq!(one_line("é ü 日本\n", false, false), "é ü 日本\n");
        assert_eq!(one_line("\u{1b}[1mX\n", false, true), "\u{1b}[1mX\n");
        assert_eq!(one_line("\u{1b}[1mX\n", false, false), "\\u{1b}[1mX\n");
    }
}
